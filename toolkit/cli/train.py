"""Train one model: `python -m training.train family=mdlm model=tiny data=austen max_steps=200 out=runs/x`.

Every setting is a `key=value` override; `config=recipe.yaml` reads a recipe first. Works as a
plain process or under `torchrun --nproc_per_node=N`.
"""
from __future__ import annotations

import sys

from toolkit.cli.usage import train_usage
from toolkit.errors import cli_main
from toolkit.resolve import resolve
from toolkit.trainer import Trainer


@cli_main
def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(train_usage(__doc__))
        return {}
    trainer = Trainer(resolve(argv))   # init= a checkpoint: its config is the base
    result = trainer.fit()
    if trainer.dist.main:
        print(f"done: {result['step']} steps, run in {result['out']}")
    return result


if __name__ == "__main__":
    main()
