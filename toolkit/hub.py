"""`python -m toolkit.hub`: kept so the documented command works; the code is toolkit/cli/hub.py."""
from toolkit.cli.hub import main

if __name__ == "__main__":
    main()
