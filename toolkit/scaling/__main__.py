"""`python -m toolkit.scaling ...`: the code is toolkit/cli/scaling.py."""
from toolkit.cli.scaling import main

if __name__ == "__main__":
    main()
