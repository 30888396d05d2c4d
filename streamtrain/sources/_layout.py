"""Stores written samples-first, (m, n_x) with labels (m,) or (m, k), read as the (n_x, m) arrays
streamtrain streams: ``layout="rows"``.

Most tools write one sample per row. Such a store trains as it is, chunk by chunk: a chunk of rows
is read through its library and transposed into columns (one copy of the chunk, C-ordered, as a
column store's chunk is). Converting the store once to columns reads faster; this lets a user try
a file first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import DataError, check_choice

__all__ = ["LAYOUTS", "NoLabels", "RowsArray", "check_layout"]

LAYOUTS = ("columns", "rows")  # samples as columns (streamtrain's own), or as rows


def check_layout(layout: object) -> str:
    return check_choice(layout, LAYOUTS, "layout")


class RowsArray:
    """A samples-first array, (m, n) or (m,), seen as (n, m) (or (1, m)): ``[:, a:b]`` reads rows
    ``a:b`` and returns them transposed, C-contiguous. Picklable when the array is (for Dask)."""

    def __init__(self, array: Any, where: str) -> None:
        if len(array.shape) not in (1, 2):
            raise DataError(f"{where}: expected a 1-D or 2-D array (samples, ...), got shape {tuple(array.shape)}")
        self.array = array
        self.shape = (1, array.shape[0]) if len(array.shape) == 1 else (array.shape[1], array.shape[0])
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, samples = key
        block = np.asarray(self.array[samples])
        block = block[:, None] if block.ndim == 1 else block
        return np.ascontiguousarray(block.T[rows])


class NoLabels:
    """The Y of a store opened without labels (``y=None``: samples to predict): (0, m), read as
    empty columns, from the files (``read(c)``) or as an array (``[:, a:b]``) alike."""

    dtype = np.dtype("float32")
    rows = 0
    raw = False

    def __init__(self, m: int, chunk: int) -> None:
        self.shape, self.m, self.chunk = (0, m), m, chunk

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        return np.zeros((0, len(range(*key[1].indices(self.m)))), self.dtype)

    def read(self, c: int, into: np.ndarray | None = None) -> np.ndarray:
        return np.zeros((0, min(self.chunk, self.m - c * self.chunk)), self.dtype)

    def will_read(self, c: int) -> None:
        pass
