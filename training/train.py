"""Train one model: `python -m training.train family=mdlm model=tiny data=austen max_steps=200 out=runs/x`.

Every setting is a `key=value` override (see toolkit/config.py); `config=recipe.yaml` reads a
recipe first. Works as a plain process or under `torchrun --nproc_per_node=N`.
"""
from __future__ import annotations

import sys

from toolkit.finetune import resolve_run
from toolkit.errors import cli_main

USAGE = __doc__ + """
Common keys: family (ar, mdlm, duo, esolm), model (tiny, cpu-4xs..cpu-xxl, 6M..2121M), data,
max_steps, batch_size, grad_accum, seq_len, lr, warmup_steps, device, precision (auto|bf16|fp32),
attention (auto|sdpa|xformers|math), compile, fsdp, seed, out, resume, log_every, eval_every,
save_every; family options: loss=elbo|low_var (mdlm, esolm), alpha_0 (esolm).
Fine-tuning (or `python -m training.finetune`): format=pairs, prompt_field, response_field,
data_config, init=CHECKPOINT, lora_rank, lora_alpha, lora_dropout, lora_targets.
"""


@cli_main
def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return {}
    cfg = resolve_run(argv)   # resolve(), with an init= checkpoint as the base
    from toolkit.train import Trainer
    trainer = Trainer(cfg)
    result = trainer.fit()
    if trainer.dist.main:
        print(f"done: {result['step']} steps, run in {result['out']}")
    return result


if __name__ == "__main__":
    main()
