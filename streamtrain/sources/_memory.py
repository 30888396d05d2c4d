"""In-memory numpy arrays behind the same contract, for tests and pipelines."""

from __future__ import annotations

import numpy as np

from ._base import ChunkSource, bounds_from_chunk_size, default_chunk_size

__all__ = ["ArraySource"]


class ArraySource(ChunkSource):
    format = "memory"

    def __init__(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        *,
        chunk_size: int | None = None,
        name: str = "<arrays>",
    ) -> None:
        super().__init__(name)
        X, Y = np.asarray(X), np.asarray(Y)
        self._validate(X.shape, X.dtype, Y.shape, Y.dtype)
        self._X, self._Y = X, Y
        chunk = default_chunk_size(self.n_x, self.dtype.itemsize) if chunk_size is None else chunk_size
        self.chunk_bounds = bounds_from_chunk_size(self.m, chunk)
