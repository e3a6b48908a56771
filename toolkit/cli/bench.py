"""`python -m toolkit.bench`: how fast every path of the toolkit is on this machine, against its own
measured matrix-product peak and (with --reference) against the paper's backbone, in one run.

    python -m toolkit.bench                      # the full plan for this device (CPU: ~10 min)
    python -m toolkit.bench --quick              # tiny shapes, every part (CI checks the report's structure)
    python -m toolkit.bench --reference ~/scaling-dllms --json bench.json
    python -m toolkit.bench --readme docs/performance.md --from bench_cpu.json --from bench_gpu.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from toolkit.bench import report as report_lib
from toolkit.bench.suite import CPU_SIZES, GPU_SIZES, PARTS, make_plan, run
from toolkit.bench.train_speed import QUICK_SIZE
from toolkit.cli.common import ArgParser
from toolkit.errors import UserError, cli_main
from toolkit.families import REGISTRY
from toolkit.options import parse_pairs
from toolkit.resolve import resolve


def _names(value: str, known, what: str) -> list[str]:
    names = [v for v in value.split(",") if v]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown {what} {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}' (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: this machine has no CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: only cpu and cuda are benchmarked")
    return device


def _variant(text: str) -> tuple[str, ...]:
    """'a=1,b=2' -> ('a=1', 'b=2'), each checked against the run config now, not minutes into the run."""
    pairs = tuple(f"{k}={v}" for k, v in parse_pairs(text, f"--variant {text}").items())
    if not pairs:
        raise UserError(f"--variant {text}: expected KEY=VALUE[,KEY=VALUE]")
    resolve(list(pairs))   # an unknown key or a bad value is a one-line error here
    return pairs


def _load_report(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError:
        raise UserError(f"{path} is not a JSON benchmark report") from None
    if not isinstance(data, dict) or "machine" not in data:
        raise UserError(f"{path} is not a JSON benchmark report (no 'machine')")
    return data


@cli_main
def main(argv: list[str] | None = None):
    ap = ArgParser(prog="python -m toolkit.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes and short timings (checks that every part runs)")
    ap.add_argument("--json", metavar="FILE", help="write the report as JSON ('-' = print JSON instead of tables)")
    ap.add_argument("--reference", metavar="DIR", help="a clone of s-sahoo/scaling-dllms: time its models/dit.py too")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--families", default=",".join(REGISTRY), help="families to time")
    sizes = [s.name for s in (*CPU_SIZES, *GPU_SIZES, QUICK_SIZE)]
    ap.add_argument("--sizes", default="", help=f"training sizes (default: the device's plan; known: {','.join(sizes)})")
    ap.add_argument("--compile", choices=("off", "on", "both"), default=None,
                    help="torch.compile for training (default: both on a GPU, off on a CPU)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    ap.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                    help="also time the first family with these trainer overrides (repeatable)")
    ap.add_argument("--readme", metavar="README", help="write the tables of --from reports into the bench section of this Markdown file (docs/performance.md)")
    ap.add_argument("--from", dest="sources", action="append", default=[], metavar="JSON",
                    help="with --readme: a saved report (repeatable), instead of measuring")
    a = ap.parse_args(argv)
    if a.readme:
        if not a.sources:
            raise UserError("--readme needs at least one --from REPORT.json")
        reports = [_load_report(s) for s in a.sources]
        report_lib.write_readme_section(Path(a.readme), reports)
        print(f"wrote the benchmark section of {a.readme} from {', '.join(a.sources)}")
        return 0
    if a.threads < 0:
        raise UserError(f"--threads must be >= 0 (got {a.threads})")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.reference and not (Path(a.reference).expanduser() / "models" / "dit.py").is_file():
        raise UserError(f"--reference {a.reference}: no models/dit.py there (expected a clone of s-sahoo/scaling-dllms)")
    if a.json and a.json != "-" and Path(a.json).is_dir():
        raise UserError(f"--json {a.json} is a folder; give a file name")
    compile_ = {"off": (False,), "on": (True,), "both": (True, False), None: None}[a.compile]
    plan = make_plan(_device(a.device), a.quick, tuple(_names(a.parts, PARTS, "part")),
                     tuple(_names(a.families, list(REGISTRY), "family")), a.reference,
                     _names(a.sizes, sizes, "size") or None, compile_, [_variant(v) for v in a.variant])
    quiet = a.json == "-"

    def log(row: dict) -> None:
        if not quiet:
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            print("  " + json.dumps(shown), file=sys.stderr, flush=True)

    def save(partial: dict) -> None:   # after every part: a run stopped half-way keeps what it measured
        if a.json and a.json != "-":
            path = Path(a.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(json.dumps(partial, indent=2) + "\n")
            tmp.replace(path)

    result = run(plan, log, save)
    if a.json == "-":
        print(json.dumps(result, indent=2))
        return 0
    print(report_lib.text(result))
    if a.json:
        print(f"wrote {a.json}")
    return 0
