"""streamtrain: train on column-wise chunked Zarr/HDF5 data far larger than RAM.

>>> import streamtrain
>>> result = streamtrain.fit("data.zarr", batch_size=1000, lr=0.5, epochs=1)  # doctest: +SKIP
>>> result.params["W1"].shape                                                  # doctest: +SKIP
(1, 100)
"""

from ._errors import ConfigError, DataError, DivergedError, UserError
from .batches import BatchStream, Cursor
from .checkpoint import load_model, save_model
from .compare import compare
from .full_batch import FullBatch, evaluate, loss_and_grad
from .models import get_model, logistic_loss_and_grad
from .sources import ArraySource, ChunkSource, open_source
from .synthetic import make_data
from .train import FitResult, fit, load

__all__ = [
    "ArraySource",
    "BatchStream",
    "ChunkSource",
    "ConfigError",
    "Cursor",
    "DataError",
    "DivergedError",
    "FitResult",
    "FullBatch",
    "UserError",
    "compare",
    "evaluate",
    "fit",
    "get_model",
    "load",
    "load_model",
    "logistic_loss_and_grad",
    "loss_and_grad",
    "make_data",
    "open_source",
    "save_model",
]
