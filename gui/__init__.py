"""The live demo: `python -m gui` serves the side-by-side sampler and the speed-quality explorer."""
