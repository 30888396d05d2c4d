"""``streamtrain inspect``: what a store holds, and what would spoil a run on it, before the run.

One report: the arrays (shapes, dtypes, chunking, codec, bytes stored), the chunks never written,
an estimate of one epoch's read time from reading a few chunks, the labels (what they are, and
how evenly they are spread along the samples) and, with ``scan``, every feature (constant or not
finite) from one streamed pass over X. Each problem found is a warning that says its fix.

Labels in store order matter because training reads chunks in sequence: when a chunk's label mix
is far from the store's (sorted or clustered labels), its batches are too. A chunk is "far" when
its share of a class (or, for real-valued labels, its mean) differs from the whole store's by more
than ``CLUSTERED_SIGMAS`` standard errors of a random chunk of its size and by more than
``CLUSTERED_SHARE`` (a tenth of the standard deviation for real values): random orders stay
within about 4 standard errors over thousands of chunks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from .binding import labels_seen
from .sources import ChunkSource, nonfinite_error

__all__ = ["CLUSTERED_SHARE", "CLUSTERED_SIGMAS", "inspect"]

CLUSTERED_SIGMAS = 6.0
CLUSTERED_SHARE = 0.1
TINY_CHUNK_BYTES = 2**20  # below it, per-chunk costs (a file, a request, a decode call) dominate reads
SMALL_STORE_BYTES = 64 * 2**20  # X smaller than this reads in moments whatever its chunks
HUGE_CHUNK_BYTES = 2**28  # above it, --shuffle buffer's default 192 MB holds less than one chunk
GOOD_CHUNK = "chunks of about 8 MB"
READ_SAMPLES = 3  # chunks read to estimate an epoch's read time


def inspect(
    data: ChunkSource | str | os.PathLike,
    *,
    x: str = "X",
    y: str = "Y",
    layout: str = "columns",
    scan: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report on a store (a dict of plain values; see the module docstring). Chunks never written
    are reported, not refused; a store that cannot be opened is a DataError as for training (a
    samples-first store opened as columns says to pass ``layout="rows"``). ``storage_options``:
    for a store at a URL (see ``open_source``)."""
    if isinstance(data, ChunkSource):
        return _report(data, scan)
    from .sources import open_source

    options = storage_options
    with open_source(data, x=x, y=y, missing_chunks="fill", layout=layout, storage_options=options) as source:
        return _report(source, scan)


def _report(source: ChunkSource, scan: bool) -> dict[str, Any]:
    chunk = source.chunk_bounds[0][1] - source.chunk_bounds[0][0]
    chunk_bytes = source.n_x * chunk * source.dtype.itemsize
    x_bytes, y_bytes = source.stored_bytes()
    report: dict[str, Any] = {
        "data": source.name,
        "format": source.format,
        "layout": source.layout,
        "read_path": source.read_path,
        "n_x": source.n_x,
        "m": source.m,
        "k": source.k,
        "dtype": source.dtype.name,
        "y_dtype": np.dtype(source.arrays()[1].dtype).name,
        "chunk": chunk,
        "chunks": source.n_chunks,
        "chunk_bytes": chunk_bytes,
        "codec": source.codec,
        "stored_bytes": {"X": x_bytes, "Y": y_bytes},
        "missing": list(source.warnings),
        "epoch_read_s": _epoch_read_s(source),
    }
    warnings = _chunk_warnings(chunk_bytes, source.n_x * source.m * source.dtype.itemsize)
    report["labels"], clustered = _labels(source)
    warnings += [clustered] if clustered else []
    if scan:
        report["features"], found = _features(source)
        warnings += found
    report["warnings"] = warnings
    return report


def _epoch_read_s(source: ChunkSource) -> float:
    """Seconds to read every chunk once, from reading READ_SAMPLES chunks spread over the store."""
    picks = sorted({round(i * (source.n_chunks - 1) / max(READ_SAMPLES - 1, 1)) for i in range(READ_SAMPLES)})
    t0 = time.perf_counter()
    for c in picks:
        source.read(*source.chunk_bounds[c])
    return (time.perf_counter() - t0) / len(picks) * source.n_chunks


def _chunk_warnings(chunk_bytes: int, x_bytes: int) -> list[str]:
    """Chunks too small to read fast (in a store big enough for it to matter), or too big to buffer."""
    mb = chunk_bytes / 2**20
    if chunk_bytes < TINY_CHUNK_BYTES and x_bytes > SMALL_STORE_BYTES:
        return [f"tiny chunks ({mb:.2g} MB of X each): reading pays per chunk; rewrite the store with {GOOD_CHUNK}"]
    if chunk_bytes > HUGE_CHUNK_BYTES:
        return [
            f"huge chunks ({mb:,.0f} MB of X each): --shuffle buffer holds less than one in its default budget "
            f"(--buffer-mb) and every chunk in flight costs memory; rewrite the store with {GOOD_CHUNK}"
        ]
    return []


def _labels(source: ChunkSource) -> tuple[dict[str, Any], str | None]:
    """What the labels are and how far the chunk furthest from the store's mix is, with a warning
    when that is far beyond chance (see the module docstring)."""
    seen = labels_seen(source)
    classes = (int(source.label_max()) + 1 if source.k == 1 else source.k) if seen.output == "softmax" else 0
    sizes, mixes, squares = [], [], np.zeros(source.k)
    for _, Y in source.label_chunks():
        sizes.append(Y.shape[1])
        mixes.append(_mix(Y, seen.output, classes))
        squares += np.square(Y, dtype=np.float64).sum(axis=1)
    n = np.array(sizes, dtype=np.float64)[:, None]
    values = np.stack(mixes)  # (chunks, ·): class shares, or the mean of each row of real values
    overall = (values * n).sum(axis=0) / n.sum()
    if seen.output == "identity":
        scale = np.sqrt(np.maximum(squares / n.sum() - overall**2, 0.0))
        floor = CLUSTERED_SHARE * scale
    else:
        scale, floor = np.sqrt(overall * (1 - overall)), np.full_like(overall, CLUSTERED_SHARE)
    gap = np.abs(values - overall)
    sigmas = gap / np.maximum(scale / np.sqrt(n), 1e-300)  # standard errors of a random chunk
    info = {"kind": seen.described, "output": seen.output, "furthest_chunk_sigmas": float(sigmas.max())}
    far = np.where(gap > floor, sigmas, 0.0)
    c, j = (int(i) for i in np.unravel_index(int(np.argmax(far)), far.shape))
    if far[c, j] <= CLUSTERED_SIGMAS:
        return info, None
    where = f"chunk {c} (samples from {source.chunk_bounds[c][0]:,})"
    if seen.output == "identity":
        row = f"row {j}'s mean" if values.shape[1] > 1 else "mean"
        what = f"{where} has {row} {values[c, j]:.4g} against {overall[j]:.4g} overall"
    else:
        name = f"class {j}" if seen.output == "softmax" else "label 1"
        what = f"{where} holds {values[c, j]:.0%} {name} against {overall[j]:.0%} overall"
    return info, (
        f"labels are sorted or clustered along the samples: {what}; batches read in store order are too: "
        f"use --shuffle buffer (the default), or shuffle the store once"
    )


def _mix(Y: np.ndarray, output: str, classes: int) -> np.ndarray:
    """A chunk's label mix: the share of each class (of label 1 for 0/1), or each row's mean."""
    if output == "identity":
        return Y.mean(axis=1, dtype=np.float64)
    if output == "sigmoid":
        return np.array([np.count_nonzero(Y == 1) / Y.shape[1]])
    ids = Y[0] if Y.shape[0] == 1 else np.argmax(Y, axis=0)
    return np.bincount(ids.astype(np.int64), minlength=classes) / Y.shape[1]


def _features(source: ChunkSource) -> tuple[dict[str, Any], list[str]]:
    """Per-feature minimum and maximum over finite values, and the non-finite values, in one pass over X."""
    low, high = np.full(source.n_x, np.inf), np.full(source.n_x, -np.inf)
    nonfinite, first = 0, None
    for a, b in source.chunk_bounds:
        X, _ = source.read(a, b)
        X = np.asarray(X, dtype=np.float64)
        finite = np.isfinite(X)
        if not finite.all():
            nonfinite += int(X.size - np.count_nonzero(finite))
            first = first or str(nonfinite_error(X, a, source.x_where, source.chunk_starts))
        low = np.minimum(low, np.where(finite, X, np.inf).min(axis=1))
        high = np.maximum(high, np.where(finite, X, -np.inf).max(axis=1))
    constant = [int(i) for i in np.flatnonzero(low == high)]
    warnings = []
    if constant:
        shown = ", ".join(map(str, constant[:8])) + (", ..." if len(constant) > 8 else "")
        which = "1 constant feature (row" if len(constant) == 1 else f"{len(constant)} constant features (rows"
        warnings.append(f"{which} {shown} of X): the same value in every sample, nothing to learn from")
    if first is not None:
        warnings.append(f"{nonfinite:,} NaN or infinite values in X, where training stops; the first: {first}")
    features = {"min": low.tolist(), "max": high.tolist(), "constant": constant, "nonfinite": nonfinite}
    return features, warnings
