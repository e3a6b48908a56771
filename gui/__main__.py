"""`python -m gui [--port 7860] [--host 127.0.0.1] [--models NAME|DIR ...]`: start the demo.

Local only by default; a public share link only with --share.
"""
from __future__ import annotations

import argparse

from toolkit.errors import UserError, cli_main
from toolkit.evaluation.generation import DEFAULT_EVALUATOR


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gui", description="Watch diffusion LMs denoise, live.")
    ap.add_argument("--host", default="127.0.0.1", help="interface to bind (default: localhost only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--models", nargs="+", default=None,
                    help="embedded names or checkpoint directories (default: every embedded model)")
    ap.add_argument("--evaluator", default=DEFAULT_EVALUATOR, help="AR checkpoint scoring Gen PPL in the explorer")
    ap.add_argument("--concurrency", type=int, default=2, help="requests sampled at once (the rest queue)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    args = ap.parse_args(argv)
    if args.concurrency < 1:
        raise UserError("--concurrency must be >= 1")
    # deferred: torch and gradio take seconds to import; --help and argument errors should not wait
    import torch

    from gui.app import build_app, launch
    from gui.models import ModelRegistry   # deferred: see above
    if args.threads:
        torch.set_num_threads(args.threads)
    registry = ModelRegistry(args.models, evaluator=args.evaluator)
    if not registry.keys:
        raise UserError("no models: the embedded checkpoints are missing; pass --models DIR ...")
    for key in registry.keys:
        registry.get(key)       # fail now, with a clear message, rather than at the first click
    launch(build_app(registry, args.concurrency), args.host, args.port, args.share)


if __name__ == "__main__":
    main()
