"""The command lines. `python -m toolkit COMMAND ...` runs COMMANDS[COMMAND]'s `main`; the older
`python -m toolkit.sample` (etc.) spellings are shims onto the same modules.

A new command is one module here with a `main(argv)` and one row below (tests/test_architecture.py
checks the table against this folder).
"""
COMMANDS: dict[str, tuple[str, str]] = {
    "sample": ("toolkit.cli.sample", "sample text from a checkpoint"),
    "evaluate": ("toolkit.cli.evaluate", "NELBO, Gen PPL, entropy, throughput, multiple choice"),
    "train": ("toolkit.cli.train", "train one model from key=value overrides"),
    "convert": ("toolkit.cli.convert", "import a reference checkpoint"),
    "hub": ("toolkit.cli.hub", "push to / pull from the Hugging Face Hub"),
    "scaling": ("toolkit.cli.scaling", "FLOPs, model grids, scaling-law fits"),
    "bench": ("toolkit.cli.bench", "throughput against this machine's measured peak (and the reference)"),
}
