"""`python -m toolkit.evaluate`: kept so the documented command works; the code is toolkit/cli/evaluate.py."""
import sys

from toolkit.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
