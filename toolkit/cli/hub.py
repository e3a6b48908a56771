"""`python -m toolkit.hub push CHECKPOINT OWNER/NAME | pull OWNER/NAME`: the Hugging Face Hub."""
from __future__ import annotations

import sys

from toolkit.checkpoints.hub_client import from_pretrained, push_to_hub
from toolkit.cli.common import ArgParser
from toolkit.errors import cli_main


@cli_main
def main(argv: list[str] | None = None):
    ap = ArgParser(prog="python -m toolkit.hub", description="Push or fetch toolkit checkpoints.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    push = sub.add_parser("push", help="upload a checkpoint directory")
    push.add_argument("checkpoint")
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    pull = sub.add_parser("pull", help="download (and convert, for a reference release) into the cache")
    pull.add_argument("repo_id")
    pull.add_argument("--family")
    pull.add_argument("--revision")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.cmd == "push":
        print(push_to_hub(args.checkpoint, args.repo_id, private=args.private))
    else:
        print(from_pretrained(args.repo_id, revision=args.revision, family=args.family).path)


if __name__ == "__main__":
    main()
