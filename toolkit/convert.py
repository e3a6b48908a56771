"""`python -m toolkit.convert`: kept so the documented command works; the code is toolkit/cli/convert.py."""
from toolkit.cli.convert import main

if __name__ == "__main__":
    main()
