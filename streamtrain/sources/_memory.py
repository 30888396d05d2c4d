"""In-memory numpy arrays behind the same contract, for tests and pipelines."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ._base import ChunkSource, bounds_from_chunk_size, default_chunk_size

__all__ = ["ArraySource"]


class ArraySource(ChunkSource):
    """X (n_x, m) and Y (k, m) in memory (Y None: samples without labels). ``arrays``: other
    per-sample arrays by name, such as weights (1, m) that ``weights="name"`` refers to."""

    format = "memory"

    def __init__(
        self,
        X: np.ndarray,
        Y: np.ndarray | None,
        *,
        chunk_size: int | None = None,
        name: str = "<arrays>",
        x: str = "X",
        arrays: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__(name, x, None if Y is None else "Y")
        X = np.asarray(X)
        self._X, self._Y = X, None if Y is None else np.asarray(Y)
        self._validate(X.shape, X.dtype, *self._y_shape_dtype())
        chunk = default_chunk_size(self.n_x, self.dtype.itemsize) if chunk_size is None else chunk_size
        self.chunk_bounds = bounds_from_chunk_size(self.m, chunk)
        if Y is None:
            self._no_labels(chunk)
        self.named = {k: np.asarray(v) for k, v in (arrays or {}).items()}
