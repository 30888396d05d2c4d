"""``convert --shuffle``: samples in a random order, in bounded memory, with sequential I/O.

Two passes (an external shuffle). The first streams the input and scatters each sample, by a
seeded draw, into one of ``n`` bucket files, sample-major; ``n`` is chosen so that a bucket is
about ``budget`` bytes. The second reads the buckets one at a time, permutes each in memory and
yields its samples. Every permutation of the samples is equally likely given the draws, the result
depends only on the seed, and the output is a permutation of the input (tested).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np

__all__ = ["shuffled"]


def shuffled(
    blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    m: int,
    dtypes: tuple[np.dtype, np.dtype],
    scratch: str,
    seed: int,
    budget: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The samples of ``blocks`` (X (n_x, b), Y (k, b), m in all) in a random order, as blocks of
    one bucket each, X and Y cast to ``dtypes``; bucket files go in the directory ``scratch``."""
    rng = np.random.default_rng([seed, 2])
    x_dtype, y_dtype = (np.dtype(d) for d in dtypes)
    os.makedirs(scratch, exist_ok=True)
    files: list[tuple[str, str]] = []
    shapes = None
    with contextlib.ExitStack() as opened:
        handles: list[tuple[BinaryIO, BinaryIO]] = []
        for X, Y in blocks:
            if shapes is None:
                shapes = X.shape[0], Y.shape[0]
                per_sample = shapes[0] * x_dtype.itemsize + shapes[1] * y_dtype.itemsize
                n = max(1, -(-m * per_sample // budget))
                files = [(os.path.join(scratch, f"{i}.x"), os.path.join(scratch, f"{i}.y")) for i in range(n)]
                handles = [(opened.enter_context(open(a, "wb")), opened.enter_context(open(b, "wb"))) for a, b in files]
            _scatter(X.astype(x_dtype, copy=False), Y.astype(y_dtype, copy=False), rng, handles)
    if shapes is None:
        return
    for x_path, y_path in files:
        X = np.fromfile(x_path, dtype=x_dtype).reshape(-1, shapes[0])
        Y = np.fromfile(y_path, dtype=y_dtype).reshape(-1, shapes[1])
        for path in (x_path, y_path):
            os.remove(path)  # the disk holds one copy of the data at a time, plus the store
        order = rng.permutation(len(X))
        yield np.ascontiguousarray(X[order].T), np.ascontiguousarray(Y[order].T)


def _scatter(X: np.ndarray, Y: np.ndarray, rng: np.random.Generator, handles: list[tuple[BinaryIO, BinaryIO]]) -> None:
    """Each column of X, Y appended, sample-major, to the bucket a uniform draw picks."""
    buckets = rng.integers(0, len(handles), size=X.shape[1])
    order = np.argsort(buckets, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(buckets, minlength=len(handles)))])
    rows_x, rows_y = X.T[order], Y.T[order]  # samples as rows, grouped by bucket
    for i, (hx, hy) in enumerate(handles):
        a, b = bounds[i], bounds[i + 1]
        if b > a:
            hx.write(np.ascontiguousarray(rows_x[a:b]).tobytes())
            hy.write(np.ascontiguousarray(rows_y[a:b]).tobytes())
