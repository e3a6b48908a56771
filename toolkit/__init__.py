"""dlm-toolkit: autoregressive, masked, uniform-state and interpolating diffusion LMs.

    import toolkit
    model = toolkit.load("runs/x")          # a checkpoint directory or an embedded name
    texts, last_step = model.generate(toolkit.SampleRequest(length=64, steps=32))
"""
from toolkit.sampling import SampleRequest, Step  # noqa: F401


def load(name_or_path: str, device: str = "cpu"):
    """A ready LanguageModel from a checkpoint directory, run directory or embedded name."""
    from toolkit.checkpoint import load as _load
    return _load(name_or_path, device)


__all__ = ["load", "SampleRequest", "Step"]
