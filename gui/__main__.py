"""`python -m gui [--port 7860] [--host 127.0.0.1] [--models NAME|DIR ...]`: start the demo.

Local only by default (127.0.0.1:7860, or Gradio's GRADIO_SERVER_NAME / GRADIO_SERVER_PORT when the
flags are not given); a public share link only with --share. Shared (another interface or --share),
the checkpoint-path field is off unless --allow-roots names the folders it may read, and each client
runs at most --runs-per-client requests at once.
"""
from __future__ import annotations

import argparse

from toolkit.errors import UserError, cli_main
from toolkit.evaluation.generation import DEFAULT_EVALUATOR

from gui.policy import AccessPolicy, check_port_free, host_and_port, port_message


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gui", description="Watch diffusion LMs denoise, live.")
    ap.add_argument("--host", default=None,
                    help="interface to bind (default: $GRADIO_SERVER_NAME, else 127.0.0.1: localhost only)")
    ap.add_argument("--port", type=int, default=None, help="default: $GRADIO_SERVER_PORT, else 7860")
    ap.add_argument("--allow-roots", nargs="+", default=(), metavar="DIR",
                    help="when shared: folders whose checkpoints users may load by path (default: none)")
    ap.add_argument("--runs-per-client", type=int, default=None,
                    help="requests one client may run at once (default: 2 when shared, unlimited locally)")
    ap.add_argument("--models", nargs="+", default=None,
                    help="embedded names or checkpoint directories (default: every embedded model)")
    ap.add_argument("--evaluator", default=DEFAULT_EVALUATOR, help="AR checkpoint scoring Gen PPL in the explorer")
    ap.add_argument("--concurrency", type=int, default=2, help="requests sampled at once (the rest queue)")
    ap.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                    help="sampling and scoring precision (auto: bf16 on a GPU or a CPU with native bf16, else fp32)")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads for all running requests together, each getting its share (0 = torch default)")
    ap.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    args = ap.parse_args(argv)
    if args.concurrency < 1:
        raise UserError("--concurrency must be >= 1")
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0 (got {args.threads})")
    host, port = host_and_port(args.host, args.port)
    policy = AccessPolicy.for_launch(host, args.share, args.allow_roots, args.runs_per_client)
    check_port_free(host, port)     # now, before the models load, and again (a race) when the server starts
    # deferred: torch and gradio take seconds to import; --help and argument errors should not wait
    import torch

    from gui.app import build_app, launch
    from gui.models import ModelRegistry   # deferred: see above
    if args.threads:
        torch.set_num_threads(args.threads)
    registry = ModelRegistry(args.models, evaluator=args.evaluator, precision=args.precision)
    if not registry.keys:
        raise UserError("no models: the embedded checkpoints are missing; pass --models DIR ...")
    for key in registry.keys:
        registry.get(key)       # fail now, with a clear message, rather than at the first click
    try:
        launch(build_app(registry, args.concurrency, policy, threads=args.threads), host, port, args.share)
    except OSError as e:
        raise UserError(port_message(host, port, e)) from None


if __name__ == "__main__":
    main()
