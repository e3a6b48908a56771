"""The live demo: `python -m gui` serves the side-by-side sampler and the speed-quality explorer."""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # offline: no telemetry calls (before gradio loads)
