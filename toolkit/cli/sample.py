"""Sample text from any checkpoint: `python -m toolkit.sample CHECKPOINT --steps 32 --length 128`.

Prints one sample per block (or a JSON document with --json); --trace writes one JSON line
per reverse step (tokens, changed positions, confidence, t, s, NFE, time) for later study.
Prompting: --prompt TEXT is a prefix; --infill POS=TEXT fixes TEXT's tokens from position
POS on (diffusion families). Family sampling options: --option KEY=VALUE (listed by --help).
Decoding strategy: --sampler NAME (ancestral, confidence, remdm, block; `--sampler list` shows
them) with its options as --option KEY=VALUE too, e.g. --sampler confidence --option k=4.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toolkit.cli.common import ArgParser, add_sampling_args, load_model, parse_options
from toolkit.cli.usage import sampling_options_text
from toolkit.errors import UserError, cli_main
from toolkit.samplers.requests import listing, request_fields
from toolkit.sample_request import SampleRequest


def parse_infill(model, specs: list[str]) -> dict[int, int]:
    fixed: dict[int, int] = {}
    for spec in specs:
        pos, sep, text = spec.partition("=")
        if not sep or not pos.strip().isdigit():
            raise UserError(f"--infill expects POS=TEXT (got '{spec}')")
        for j, tok in enumerate(model.encode(text)):
            fixed[int(pos) + j] = tok
    return fixed


def write_trace(f, model, step) -> None:
    rec = step.to_dict()
    rec["text"] = [model.decode(row, show_mask=True) for row in step.tokens]
    f.write(json.dumps(rec) + "\n")


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = ArgParser(prog="python -m toolkit.sample", description=__doc__.splitlines()[0],
                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=sampling_options_text())
    ap.add_argument("checkpoint", help="checkpoint or run directory, or an embedded model name")
    ap.add_argument("--steps", type=int, default=32)
    add_sampling_args(ap)
    ap.add_argument("--prompt", default="", help="prefix text held fixed")
    ap.add_argument("--infill", action="append", default=[], metavar="POS=TEXT",
                    help="tokens of TEXT held fixed from position POS (diffusion families)")
    ap.add_argument("--trace", default=None, metavar="FILE.jsonl", help="write every step as a JSON line")
    ap.add_argument("--json", action="store_true", help="print a JSON document")
    a = ap.parse_args(argv)
    model = load_model(a.checkpoint, a.device, a.threads)
    if a.sampler == "list":
        print(listing(model.family))
        return 0
    req = SampleRequest(num_samples=a.num_samples, length=model.max_length if a.length is None else a.length, steps=a.steps,
                        temperature=a.temperature, top_p=a.top_p, seed=a.seed,
                        prompt=model.encode(a.prompt) if a.prompt else [],
                        fixed=parse_infill(model, a.infill), use_cache=not a.no_cache,
                        **request_fields(model.family, a.sampler, parse_options(a.option)))
    model.check_request(req)
    trace = None
    if a.trace:
        try:
            Path(a.trace).parent.mkdir(parents=True, exist_ok=True)
            trace = open(a.trace, "w", encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write trace {a.trace}: {e.strerror}") from None
    last = None
    try:
        for last in model.sample(req):
            if trace is not None:
                write_trace(trace, model, last)
    finally:
        if trace is not None:
            trace.close()
    texts = [model.decode(row) for row in last.tokens]
    if a.json:
        print(json.dumps({"checkpoint": a.checkpoint, "family": model.name, "sampler": req.sampler, "steps": a.steps,
                          "length": req.length, "seed": a.seed, "nfe": last.nfe,
                          "seconds": round(last.elapsed, 4), "samples": texts,
                          "tokens": last.tokens.tolist()}, ensure_ascii=False))
    else:
        for i, text in enumerate(texts):
            print(f"--- sample {i} ({model.name}, {req.sampler}, {last.nfe} NFE, {last.elapsed:.2f}s)")
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
