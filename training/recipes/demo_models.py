"""Copy trained demo runs into the package as the embedded models (one per family, named after it).

    python -m training.recipes.demo_models export runs        # runs/demo-<name>/checkpoint -> toolkit/assets/models/<name>

Only what inference needs travels (weights, config, tokenizer): the optimizer state (state.pt)
would triple the size and is useless to a user of the demo.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import toolkit
from toolkit.checkpoints import EMBEDDED_DIR, resolve_path
from toolkit.errors import UserError, cli_main
from toolkit.families import REGISTRY

NAMES = tuple(REGISTRY)   # one embedded demo model per family, named after it
KEEP = ("model.safetensors", "config.json", "tokenizer.json")


def export(run_dir: str | Path, name: str, dest_root: Path = EMBEDDED_DIR) -> Path:
    """Copy one run's final checkpoint into `dest_root/name` and check that it loads."""
    src = resolve_path(str(run_dir))
    missing = [f for f in KEEP if not (src / f).is_file()]
    if missing:
        raise UserError(f"{src} lacks {', '.join(missing)}")
    dest = Path(dest_root) / name
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for f in KEEP:
        shutil.copyfile(src / f, tmp / f)
    toolkit.load(str(tmp))       # refuse to install something that does not load
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m training.recipes.demo_models", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="copy RUNS/demo-<name> into toolkit/assets/models/<name>")
    ex.add_argument("runs", help="folder holding demo-<name> for each family name")
    ex.add_argument("--names", nargs="+", default=list(NAMES))
    args = ap.parse_args(argv)
    total = 0
    for name in args.names:
        dest = export(Path(args.runs) / f"demo-{name}", name)
        size = sum(f.stat().st_size for f in dest.iterdir())
        total += size
        print(f"{name}: {dest} ({size / 1e6:.2f} MB)")
    print(f"total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
