"""Checks of parameters at the boundary: their shapes for a model on a store, their values, and
the memory training them takes.

Parameters come from users (warm starts, ``evaluate(params, model=...)``), from model files and
from checkpoints; each is checked here once, with a message naming the parameter.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ._errors import ConfigError
from .models import Model, Params

__all__ = ["PARAM_DTYPES", "check_memory", "check_params", "check_values"]

PARAM_DTYPES = ("float16", "float32", "float64")  # what parameters may be: real floating-point numbers


def check_params(model: Model, params: Params, n_x: int, k: int) -> None:
    """Raise ConfigError unless ``params`` has the keys and shapes ``model`` needs for this data,
    and holds finite real numbers (see ``check_values``)."""
    check_values(params)
    expected = model.shapes(n_x, k)  # not model.init: a damaged model file's sizes may be huge
    got = {k_: np.shape(v) for k_, v in params.items()}
    if got != expected:
        raise ConfigError(
            f"parameters do not fit a {model.name} model on n_x={n_x}: expected shapes "
            f"{_shapes(expected)}, got {_shapes(got)}"
        )


# Training holds about this many arrays of the parameters' size: the parameters, their gradients,
# two optimizer moments, and init's float64 draw.
TRAINING_COPIES = 6


def check_memory(model: Model, n_x: int, k: int, dtype: Any) -> None:
    """Raise ConfigError, before anything is allocated, when training ``model`` on n_x features and
    k label rows would need more memory than this machine has (a typo in a layer size, a label
    read as a huge class id)."""
    count = sum(math.prod(shape) for shape in model.shapes(n_x, k).values())
    need, have = count * np.dtype(dtype).itemsize * TRAINING_COPIES, _physical_memory()
    if need > have:
        sizes = [n_x, *model.hidden, model.n_out(k)]
        raise ConfigError(
            f"a {model.name} model of layer sizes {sizes} has {count:,} parameters: training it needs about "
            f"{need / 2**30:,.0f} GiB of memory, this machine has {have / 2**30:,.0f} GiB"
        )


def _physical_memory() -> int:
    """Bytes of memory of this machine (where the system does not say: more than any array can hold)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 2**63


def _shapes(shapes: dict[str, tuple]) -> str:
    return ", ".join(f"{k}{tuple(v)}" for k, v in shapes.items())


def check_values(params: Params) -> None:
    """Raise ConfigError, naming the parameter, unless every one is an array of finite real
    floating-point numbers: complex numbers are not cast to real, NaN or inf not evaluated."""
    for key, value in params.items():
        array = np.asarray(value)
        if array.dtype.name not in PARAM_DTYPES:
            raise ConfigError(
                f"parameter {key} holds {array.dtype} values; parameters are real floating-point numbers "
                f"({', '.join(PARAM_DTYPES)})"
            )
        bad = np.argwhere(~np.isfinite(array))
        if len(bad):
            where = tuple(int(i) for i in bad[0])
            raise ConfigError(
                f"parameter {key} holds {array[where]} at {where}: parameters must be finite (a diverged model?)"
            )
