"""`python -m training.train key=value ...`: the training command (its code: toolkit/cli/train.py)."""
from toolkit.cli.train import main

if __name__ == "__main__":
    main()
