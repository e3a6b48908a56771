"""`python -m toolkit.convert SOURCE --family F --out DIR`: import a reference checkpoint (see
toolkit/checkpoints/reference_import.py for what SOURCE may be)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toolkit.checkpoints.reference_import import __doc__ as convert_doc
from toolkit.checkpoints.reference_import import convert
from toolkit.cli.common import ArgParser
from toolkit.cli.usage import family_names, family_options_text
from toolkit.errors import cli_main


@cli_main
def main(argv: list[str] | None = None) -> Path:
    ap = ArgParser(prog="python -m toolkit.convert", description=convert_doc.split("\n\n")[0],
                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog="family options:\n" + family_options_text())
    ap.add_argument("source", help="Lightning .ckpt, .pt/.bin/.safetensors state dict, or a local HF snapshot directory")
    ap.add_argument("--family", required=True, help=", ".join(family_names()))
    ap.add_argument("--out", required=True, help="checkpoint directory to write")
    ap.add_argument("--tokenizer", help="tokenizer.json, a .tiktoken file or a SentencePiece .model")
    ap.add_argument("--n-heads", type=int, help="attention heads (not in the weights' shapes)")
    ap.add_argument("--seq-len", type=int, help="context length (default: from the config, else 1024)")
    ap.add_argument("--mask-token", help="the tokenizer's mask token (default: [MASK] or <mask>)")
    ap.add_argument("--eos-token", help="the tokenizer's end-of-document token (default: [EOS] or </s>)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a family option (listed below)")
    ap.add_argument("--pad-vocab", action="store_true", help="add unused tokens when the embedding has more rows")
    ap.add_argument("--force", action="store_true", help="replace a non-empty --out")
    ap.add_argument("--tiktoken-pattern", help="the pre-tokenizer regex of a tiktoken vocabulary "
                    "(default: the cl100k/Llama-3 pattern)")
    ap.add_argument("--stub-objects", action="store_true",
                    help="read a pickle that names other classes (e.g. omegaconf) with inert placeholders")
    args = ap.parse_args(argv)
    out = convert(args.source, args.family, args.out, args.tokenizer, args.n_heads, args.seq_len,
                  args.mask_token, args.eos_token, args.option, args.pad_vocab, args.force,
                  stub_objects=args.stub_objects, pattern=args.tiktoken_pattern)
    meta = json.loads((out / "config.json").read_text())
    m, d = meta["model"], meta["data"]
    print(f"wrote {out}: {meta['family']}, {m['n_layers']} layers x {m['d_model']} wide, {m['n_heads']} heads, "
          f"vocabulary {m['vocab_size']} (mask {d['mask_token']}, eos {d['eos_token']}), context {d['seq_len']}",
          file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
