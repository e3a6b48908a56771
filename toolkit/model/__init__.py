"""The shared transformer backbone and its attention backends."""
from toolkit.model.backbone import Backbone, KVCache  # noqa: F401
