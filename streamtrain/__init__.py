"""streamtrain: train on column-wise chunked Zarr/HDF5 data far larger than RAM.

>>> import streamtrain
>>> result = streamtrain.fit("data.zarr", batch_size=1000, lr=0.5, epochs=1)  # doctest: +SKIP
>>> result.params["W1"].shape                                                  # doctest: +SKIP
(1, 100)
"""

__version__ = "0.1.0"  # the package's version, read by pyproject.toml and every report of it

from ._errors import ConfigError, DataError, DataWarning, DivergedError, UserError
from ._signals import Interrupted
from .batches import BatchStream, Cursor
from .checkpoint import load_model, save_model
from .compare import CompareConfig, compare
from .config import CheckpointConfig, FitConfig
from .convert import ConvertConfig, convert
from .evaluation import evaluate, loss_and_grad
from .full_batch import FullBatch
from .inspection import inspect
from .loader import iter_batches
from .models import Model, get_model
from .plots import PlotConfig, plot
from .predict import predict
from .records import EpochRecord
from .result import FitResult, load
from .sources import ArraySource, ChunkSource, open_source
from .synthetic import DataConfig, make_data
from .train import fit

__all__ = [
    "ArraySource",
    "BatchStream",
    "CheckpointConfig",
    "ChunkSource",
    "CompareConfig",
    "ConfigError",
    "ConvertConfig",
    "Cursor",
    "DataConfig",
    "DataError",
    "DataWarning",
    "DivergedError",
    "EpochRecord",
    "FitConfig",
    "FitResult",
    "FullBatch",
    "Interrupted",
    "Model",
    "PlotConfig",
    "UserError",
    "__version__",
    "compare",
    "convert",
    "evaluate",
    "fit",
    "get_model",
    "inspect",
    "iter_batches",
    "load",
    "load_model",
    "loss_and_grad",
    "make_data",
    "open_source",
    "plot",
    "predict",
    "save_model",
]
