"""Fine-tune on prompt/response pairs: `python -m training.finetune init=mdlm data=train.jsonl out=runs/ft`.

The same trainer, run directory, metrics and resume as `python -m training.train`, with
`format=pairs` preset: the loss covers the response only (see toolkit/data/pairs.py). Fields
default to GSM8K's (`prompt_field=question response_field=answer`); `init=` takes any checkpoint
the toolkit loads; `lora_rank=8` trains LoRA adapters instead of every weight.
"""
from __future__ import annotations

import sys

from toolkit.cli.train import main as train_main


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__ + "\nKeys: as for training.train, plus format, prompt_field, response_field,"
              " data_config (hub datasets), init, lora_rank, lora_alpha, lora_dropout, lora_targets.")
        return {}
    return train_main(["format=pairs", *argv])


if __name__ == "__main__":
    main()
