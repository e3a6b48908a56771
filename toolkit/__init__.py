"""dlm-toolkit: autoregressive, masked, uniform-state and interpolating diffusion LMs.

    import toolkit
    model = toolkit.load("runs/x")          # a checkpoint directory or an embedded name
    texts, last_step = model.generate(toolkit.SampleRequest(length=64, steps=32))

The layers of the package are described in docs/architecture.md.
"""
from toolkit.sample_request import SampleRequest, Step  # noqa: F401


# The two functions below import toolkit.checkpoints when called, not here: every `import toolkit.X`
# runs this file first, and a leaf such as toolkit.errors must not pull in the whole library.
def load(name_or_path: str, device: str = "cpu", precision: str = "auto"):
    """A ready LanguageModel from a checkpoint directory, run directory, embedded name or hub id,
    computing in `precision` (auto | bf16 | fp32)."""
    from toolkit.checkpoints import load as _load   # deferred: see above
    return _load(name_or_path, device, precision)


def push_to_hub(checkpoint, repo_id: str, **kwargs) -> str:
    """Upload a checkpoint directory (or a loaded model) to the Hugging Face Hub."""
    from toolkit.checkpoints.hub_client import push_to_hub as _push   # deferred: see above
    return _push(checkpoint, repo_id, **kwargs)


__all__ = ["load", "push_to_hub", "SampleRequest", "Step"]
