"""`python -m toolkit.sample`: kept so the documented command works; the code is toolkit/cli/sample.py."""
import sys

from toolkit.cli.sample import main

if __name__ == "__main__":
    sys.exit(main())
