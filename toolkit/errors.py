"""User-facing errors: one line, non-zero exit, never a traceback."""
from __future__ import annotations

import sys
from functools import wraps


class UserError(Exception):
    """A problem with the user's input (config, path, value); printed as one line."""

    def __str__(self) -> str:   # user text quoted in a message may hold line breaks: keep it one line
        return super().__str__().replace("\r", "\\r").replace("\n", "\\n")


def cli_main(fn):
    """Decorate a CLI entry point: UserError -> 'error: ...' on stderr and exit code 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
