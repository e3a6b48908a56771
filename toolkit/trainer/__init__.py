"""Training: the loop (loop.py) and its parts; `Trainer(resolve([...])).fit()` trains one run."""
from toolkit.trainer.distributed import Distributed  # noqa: F401
from toolkit.trainer.loop import Trainer  # noqa: F401
from toolkit.trainer.metrics_log import TIMING_KEYS  # noqa: F401
from toolkit.trainer.state import TrainState  # noqa: F401
from toolkit.trainer.step import chunk_rows, local_chunk, lr_at  # noqa: F401

__all__ = ["Trainer", "TrainState", "Distributed", "TIMING_KEYS", "lr_at", "chunk_rows", "local_chunk"]
