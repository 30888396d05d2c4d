"""``--standardize``: training on features scaled to mean 0 and variance 1, models in the data's units.

The scaling comes from one streamed pass over X in float64 (``feature_scaling``: per-chunk
moments merged by Chan et al.'s update, ``metrics.Moments``: no overflow or cancellation for
large m or large offsets). Training reads the store through ``StandardizedSource``, which scales
every chunk it reads (the mini-batch stream and the exact pass alike). The first layer of a model
trained so is then folded back into the data's units (``to_raw``: W₁ / s, b₁ − (W₁ / s) μ), so the
model file, evaluate, compare and predict work on the store as it is, with the same predictions.
A constant feature (variance 0) is centred, not divided: its scale is 1.

Checkpoints hold the scaled-space parameters; a resumed run computes the same scaling again from
the same data (the pass is deterministic), so it ends identical.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .metrics import Moments
from .models import Params
from .sources import ChunkSource, SourceView

__all__ = ["Scaling", "StandardizedSource", "feature_scaling", "to_raw", "to_scaled"]


class Scaling(NamedTuple):
    mean: np.ndarray  # (n_x,) float64
    scale: np.ndarray  # (n_x,) float64: the standard deviation, 1 for a constant feature

    def apply(self, X: np.ndarray) -> np.ndarray:
        """(X - mean) / scale for X (n_x, b), in float64."""
        return (np.asarray(X, dtype=np.float64) - self.mean[:, None]) / self.scale[:, None]


def feature_scaling(source: ChunkSource) -> Scaling:
    """Each feature's mean and standard deviation over the whole store, from one pass in chunk order."""
    moments = Moments(source.n_x)
    for a, b in source.chunk_bounds:
        moments.add(source.read(a, b)[0])
    std = np.sqrt(moments.variance)
    return Scaling(moments.mean, np.where(std > 0, std, 1.0))


def to_raw(params: Params, s: Scaling) -> Params:
    """Parameters for scaled features as parameters for the data as stored: W₁ / s, b₁ − (W₁ / s) μ."""
    W = np.asarray(params["W1"], dtype=np.float64) / s.scale[None, :]
    b = np.asarray(params["b1"], dtype=np.float64) - W @ s.mean[:, None]
    dtype = params["W1"].dtype
    return {**params, "W1": W.astype(dtype), "b1": b.astype(dtype)}


def to_scaled(params: Params, s: Scaling) -> Params:
    """``to_raw``'s inverse: a warm start's parameters for scaled features."""
    W = np.asarray(params["W1"], dtype=np.float64)
    b = np.asarray(params["b1"], dtype=np.float64) + W @ s.mean[:, None]
    dtype = params["W1"].dtype
    return {**params, "W1": (W * s.scale[None, :]).astype(dtype), "b1": b.astype(dtype)}


class StandardizedSource(SourceView):
    """``source`` with every chunk of X scaled by ``scaling`` as it is read (the labels as stored),
    through the storage library's path (direct arrays hold the stored values)."""

    def __init__(self, source: ChunkSource, scaling: Scaling) -> None:
        super().__init__(source)
        self.scaling, self.direct = scaling, None

    def _read(self, start: int, stop: int, into: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        X, Y = self.source._read(start, stop)
        return self.scaling.apply(X), Y

    def arrays(self) -> tuple[Any, Any]:
        X, Y = self.source.arrays()
        return _ScaledArray(X, self.scaling), Y


class _ScaledArray:
    """An (n_x, m) array whose ``[:, a:b]`` is scaled (the exact pass reads arrays, not ``read``)."""

    def __init__(self, array: Any, scaling: Scaling) -> None:
        self.array, self.scaling, self.shape, self.dtype = array, scaling, array.shape, np.dtype(np.float64)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, samples = key
        return self.scaling.apply(np.asarray(self.array[:, samples]))[rows]
