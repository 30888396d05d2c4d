"""Damaged data, named: chunks that cannot be read, hold NaN/inf, or were never written.

Every message names ``file/array``, the chunk and its samples, on one line. These functions
take plain values (an array, a sample range, ``where``, the chunks' first samples), so the
Dask path can run them on workers, where no ChunkSource exists.

Conventions: an array is (rows, samples); ``chunk_starts`` holds each chunk's first sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import DataError

__all__ = [
    "DEFAULT_MISSING",
    "MISSING_CHUNKS",
    "Missing",
    "brief",
    "cause",
    "chunk_index",
    "chunk_span",
    "nonfinite_error",
    "read_columns",
]

# What a chunk that was never written becomes: the choices of --missing-chunks.
MISSING_CHUNKS = {
    "error": "refuse the store",
    "fill": "read them as the array's fill value, with a warning",
}
# Without a choice: the Zarr spec's fill value is safe for labels (zarr skips writing a chunk of
# fill values, so an imbalanced or label-sorted store has such Y chunks), never for features.
DEFAULT_MISSING = {"x": "error", "y": "fill"}
MISSING_FLAG = "--missing-chunks fill"
_MAX_CAUSE = 200  # characters of the underlying error kept in a message
_CAUSES = ((PermissionError, "permission denied"), (FileNotFoundError, "the file is gone"))  # else: damage


def chunk_index(sample: int, chunk_starts: np.ndarray) -> int:
    """Index of the chunk that holds ``sample``."""
    return int(np.searchsorted(chunk_starts, sample, side="right") - 1)


def chunk_span(start: int, stop: int, chunk_starts: np.ndarray) -> str:
    """``chunk 3 (samples 6144..8192)`` for a read of samples ``[start, stop)``."""
    first, last = chunk_index(start, chunk_starts), chunk_index(stop - 1, chunk_starts)
    chunks = f"chunk {first}" if first == last else f"chunks {first}..{last}"
    return f"{chunks} (samples {start}..{stop})"


def read_columns(arr: Any, start: int, stop: int, where: str, chunk_starts: np.ndarray) -> np.ndarray:
    """``arr[:, start:stop]`` as a numpy array; DataError naming the chunk when it cannot be read or
    decodes to the wrong shape (a truncated file, random bytes, a failing codec or HDF5 filter)."""
    try:
        block = np.asarray(arr[:, start:stop])
    except MemoryError:
        raise
    except Exception as e:  # zarr, numcodecs and h5py raise many types for a damaged chunk
        raise DataError(f"{where}: {chunk_span(start, stop, chunk_starts)} cannot be read: {cause(e)}") from e
    expected = (arr.shape[0], stop - start)
    if block.shape != expected:
        raise DataError(
            f"{where}: {chunk_span(start, stop, chunk_starts)} decodes to shape {block.shape}, not {expected}"
        )
    return block


def cause(e: Exception) -> str:
    """Why a chunk cannot be read, for a message: permission, a file gone, or damage, and the error itself."""
    what = next((text for kind, text in _CAUSES if isinstance(e, kind)), "truncated or corrupt")
    return f"{what} ({brief(e, _MAX_CAUSE)})"


def brief(e: Exception, limit: int | None = None) -> str:
    """``Type: message`` of an exception on one line, cut to ``limit`` characters of message."""
    text = " ".join(str(e).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def nonfinite_error(
    A: np.ndarray, start: int, where: str, chunk_starts: np.ndarray, dtype: Any = None
) -> DataError | None:
    """The first NaN or ±inf in ``A`` (samples from ``start``) as a DataError naming the sample,
    chunk and row; None when every value is finite. With ``dtype`` (the training precision), a
    value beyond its range is one too: it trains as ±inf."""
    cast = A
    if dtype is not None and A.dtype.kind in "fiu" and A.dtype != dtype:
        with np.errstate(over="ignore"):
            cast = A.astype(dtype)
    if cast.dtype.kind not in "fc":  # integers and bools are always finite
        return None
    bad = ~np.isfinite(cast)
    if not bad.any():
        return None
    col = int(np.argmax(bad.any(axis=0)))
    row = int(np.argmax(bad[:, col]))
    value = A[row, col]
    if np.isfinite(value):
        kind, fix = f"{value:g}", f", beyond {np.dtype(dtype)}'s range; rescale it or train in float64"
    else:
        kind, fix = "NaN" if np.isnan(value) else "+inf" if value > 0 else "-inf", "; clean or drop it"
    sample = start + col
    return DataError(
        f"{where}: sample {sample} (chunk {chunk_index(sample, chunk_starts)}) holds {kind} in row {row}{fix}"
    )


@dataclass(frozen=True)
class Missing:
    """The chunks of one array that were never written: the first one's samples, how many, and
    what they read as."""

    where: str  # file/array
    first: tuple[int, int]  # samples of the first missing chunk
    count: int
    fill_value: Any
    hint: str = ""  # how such chunks come about, for this backend

    def error(self) -> DataError:
        a, b = self.first
        more = f" and {self.count - 1} more" if self.count > 1 else ""
        return DataError(
            f"{self.where}: chunk for samples {a}..{b} is missing{more}; it would read as fill values, "
            f"not data{self.hint}; {MISSING_FLAG} reads such chunks as the fill value"
        )

    def note(self) -> str:
        a, b = self.first
        chunks = "1 chunk was" if self.count == 1 else f"{self.count} chunks were"
        first = "" if self.count == 1 else "the first "
        return (
            f"{self.where}: {chunks} never written ({first}samples {a}..{b}); "
            f"read as the fill value {_plain(self.fill_value)}"
        )


def _plain(value: Any) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)
