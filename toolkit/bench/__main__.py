"""`python -m toolkit.bench`: the code is toolkit/cli/bench.py."""
import sys

from toolkit.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
