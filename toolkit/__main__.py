"""`python -m toolkit COMMAND [args]`: one entry point for the commands in toolkit/cli/."""
import importlib
import sys

from toolkit.cli import COMMANDS


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        rows = "\n".join(f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items())
        print(f"usage: python -m toolkit COMMAND [args]   (COMMAND --help for its options)\n\n{rows}",
              file=sys.stderr if argv else sys.stdout)
        return 2 if argv and argv[0] not in ("-h", "--help") else 0
    module = importlib.import_module(COMMANDS[argv[0]][0])   # only the chosen command is imported
    result = module.main(argv[1:])
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
