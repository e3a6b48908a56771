"""dlm-toolkit: autoregressive, masked, uniform-state and interpolating diffusion LMs.

    import toolkit
    model = toolkit.load("runs/x")          # a checkpoint directory or an embedded name
    texts, last_step = model.generate(toolkit.SampleRequest(length=64, steps=32))
"""
from toolkit.sampling import SampleRequest, Step  # noqa: F401


def load(name_or_path: str, device: str = "cpu"):
    """A ready LanguageModel from a checkpoint directory, run directory, embedded name or hub id."""
    from toolkit.checkpoint import load as _load
    from toolkit.hub import from_pretrained, looks_like_hub_id
    if looks_like_hub_id(name_or_path):
        return from_pretrained(name_or_path, device=device)
    return _load(name_or_path, device)


def push_to_hub(checkpoint, repo_id: str, **kwargs) -> str:
    """Upload a checkpoint directory (or a loaded model) to the Hugging Face Hub."""
    from toolkit.hub import push_to_hub as _push
    return _push(checkpoint, repo_id, **kwargs)


__all__ = ["load", "push_to_hub", "SampleRequest", "Step"]
