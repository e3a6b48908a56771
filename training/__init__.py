"""Scripted training entry points: `python -m training.train`, sweeps, launch templates."""
