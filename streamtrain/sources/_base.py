"""The ChunkSource contract every storage backend implements.

Conventions
-----------
Samples are columns: X has shape (n_x, m), Y has shape (k, m) (k = 1 for binary labels).
A source splits the sample axis into the store's own chunks (``chunk_bounds``) and reads
column ranges ``[start, stop)``; callers read whole chunks, in chunk order or a permutation
of it, so no backend ever does random I/O or loads a whole array.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cached_property
from types import MappingProxyType
from typing import Any

import numpy as np

from .._errors import DataError, DataWarning, check_choice, check_int
from ..labels import LabelRule, check_labels
from ._direct import DirectArray
from ._integrity import DEFAULT_MISSING, MISSING_CHUNKS, Missing, chunk_index, nonfinite_error, read_columns
from ._layout import NoLabels, RowsArray, check_layout
from ._remote import Remote
from ._stamp import ROOT, changed_parts, join_parts

__all__ = ["ChunkSource", "DataError", "check_missing_chunks", "default_chunk_size"]

# A chunk of about this many bytes keeps zarr/HDF5 per-call overhead negligible
# while a few chunks in flight still fit easily in memory.
TARGET_CHUNK_BYTES = 8 * 2**20


def default_chunk_size(n_x: int, itemsize: int) -> int:
    """Samples per chunk so that one (n_x, C) chunk of X is about TARGET_CHUNK_BYTES."""
    per_sample = max(1, n_x * itemsize)
    return max(1024, (TARGET_CHUNK_BYTES // per_sample) // 1024 * 1024)


def bounds_from_chunk_size(m: int, chunk: int) -> tuple[tuple[int, int], ...]:
    """Sample ranges of a regular chunk grid along the sample axis."""
    check_int("chunk size", chunk)
    return tuple((s, min(s + chunk, m)) for s in range(0, m, chunk))


class ChunkSource:
    """Base class: the validation and reads shared by every backend.

    Subclasses set ``name`` (for messages), keep the two stored arrays in ``_X``, ``_Y``
    (anything sliceable: zarr, h5py, numpy), call ``_validate`` once with their shapes and
    dtypes, and set ``chunk_bounds``.
    """

    name: str
    x_name: str
    y_name: str | None  # None: opened without labels
    n_x: int
    k: int
    m: int
    dtype: np.dtype
    chunk_bounds: tuple[tuple[int, int], ...]
    _X: Any  # the stored arrays: zarr, h5py or numpy
    _Y: Any
    # X's and Y's chunks read from the files themselves (see ``_direct``), when the backend found
    # nothing in their metadata that needs the library; None: every read goes through it.
    direct: tuple[DirectArray, DirectArray] | None = None
    # Other per-sample arrays by name, for a store held in memory (``ArraySource``'s ``arrays``).
    named: Mapping[str, np.ndarray] = MappingProxyType({})
    # A store read from a URL through fsspec: its filesystem and the storage options that opening
    # it again by name needs (see ``_remote``); None for a local path or arrays in memory.
    remote: Remote | None = None

    def __init__(
        self,
        name: str,
        x_name: str = "X",
        y_name: str | None = "Y",
        *,
        must_exist: bool = False,
        layout: str = "columns",
    ) -> None:
        self.name, self.x_name, self.y_name = name, x_name, y_name
        self.layout = check_layout(layout)  # "rows": the arrays are stored samples-first (see _layout)
        if must_exist and not os.path.exists(name):
            raise DataError(f"{name}: no such file or directory")
        # What ``make-data`` recorded about a generated store (true weights, Bayes loss).
        self.attrs: dict[str, Any] = {}
        # What was found at open that the user should know (one line each), also warned once.
        self.warnings: list[str] = []

    # -- validation at open time ---------------------------------------------------------
    @property
    def sample_axis(self) -> int:
        """The stored arrays' axis of samples: 1 (columns), or 0 for a samples-first store."""
        return 0 if self.layout == "rows" else 1

    def _as_stored(self, X: Any, Y: Any) -> tuple[Any, Any]:
        """X and Y as (n_x, m) and (k, m) arrays: themselves, or transposed views of a samples-first
        store; a store opened without labels (Y None) gets NoLabels once X's shape is checked."""
        if self.layout == "columns":
            return X, Y
        return RowsArray(X, self.x_where), None if Y is None else RowsArray(Y, self.y_where)

    def _no_labels(self, chunk: int) -> None:
        """Y for a store opened with ``y=None``: empty columns (see ``_layout.NoLabels``)."""
        self._Y = NoLabels(self.m, chunk)

    @property
    def has_labels(self) -> bool:
        return self.y_name is not None

    def require_labels(self) -> None:
        """DataError for a store opened without labels: training, evaluate and compare need them."""
        if not self.has_labels:
            raise DataError(f"{self.name}: opened without labels (y=None); training, evaluate and compare need them")

    def _y_shape_dtype(self) -> tuple[Any, Any]:
        """Y's shape and dtype for ``_validate``; (None, None) without labels."""
        return (None, None) if self._Y is None else (self._Y.shape, self._Y.dtype)

    def _validate(self, x_shape: tuple, x_dtype: Any, y_shape: tuple, y_dtype: Any) -> None:
        where = f"{self.name}/{self.x_name}"
        if y_shape is None:  # no labels (y=None): X alone
            y_shape, y_dtype = (1, x_shape[-1] if len(x_shape) == 2 else 0), np.float32
        for arr, shape, dtype in ((self.x_name, x_shape, x_dtype), (self.y_name, y_shape, y_dtype)):
            if len(shape) != 2:
                hint = "; one value per sample, as a store written samples-first holds: pass --layout rows"
                hint = hint if len(shape) == 1 and self.layout == "columns" else ""
                raise DataError(
                    f"{self.name}/{arr}: expected a 2-D array (rows, samples), got shape {tuple(shape)}{hint}"
                )
            if np.dtype(dtype).kind not in "biuf":
                raise DataError(f"{self.name}/{arr}: dtype {np.dtype(dtype)} is not numeric")
        (n_x, m), (k, m_y) = x_shape, y_shape
        if m != m_y:
            hint = ""
            if n_x == m_y:
                other = "columns" if self.layout == "rows" else "rows"
                hint = (
                    f" (X looks stored with samples as {other}: pass --layout {other}, layout={other!r} "
                    f"in the library, to read it so)"
                )
            raise DataError(f"{where} has m={m} samples but {self.name}/{self.y_name} has m={m_y}{hint}")
        if m == 0:
            raise DataError(f"{self.name}: the arrays hold no samples (m = 0)")
        if n_x == 0 or k == 0:
            raise DataError(f"{self.name}: X has {n_x} rows and Y has {k} rows; both need at least 1")
        self.n_x, self.m, self.k = int(n_x), int(m), int(k) if self.has_labels else 0
        self.dtype = np.dtype(x_dtype)

    def _use_direct(self, x: DirectArray | None, y: DirectArray | None) -> None:
        """Read chunks from the files (``direct``) when both arrays can be, on the source's chunk grid."""
        chunk = self.chunk_bounds[0][1]
        if x is not None and y is not None and x.chunk == y.chunk == chunk:
            self.direct = (x, y)

    def _fills(self, policy: str | None) -> dict[str, bool]:
        """Whether a chunk never written reads as the fill value, per role ("x", "y"), by ``policy``."""
        return {role: (policy or default) == "fill" for role, default in DEFAULT_MISSING.items()}

    def _apply_missing_chunks(self, found: dict[str, Missing | None], policy: str | None) -> None:
        """Raise or note the chunks never written, per array role ("x", "y"), by ``policy`` (see
        ``MISSING_CHUNKS``; None: ``DEFAULT_MISSING``)."""
        for role, missing in found.items():
            if missing is None:
                continue
            if (policy or DEFAULT_MISSING[role]) == "error":
                raise missing.error()
            self._warn(missing.note())

    def _warn(self, note: str) -> None:
        self.warnings.append(note)
        warnings.warn(note, DataWarning, stacklevel=5)  # at the caller of open_source

    # -- the contract ----------------------------------------------------------------------
    @property
    def n_chunks(self) -> int:
        return len(self.chunk_bounds)

    def read(
        self, start: int, stop: int, labels: LabelRule | None = None, *, into: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Columns ``[start, stop)``: X (n_x, stop-start) and Y (k, stop-start).

        ``labels``: the rule Y must follow (see ``streamtrain.labels``); a DataError names the
        first sample that breaks it. None reads Y as stored. ``into``: a C-contiguous array of
        ``chunk_items`` items of ``dtype`` that X may be read into when the columns are one chunk
        read from the files (X is then a view of it; see ``DirectArray.read``).
        """
        X, Y = self._read(start, stop, into)
        if labels is not None:
            check_labels(Y, start, labels, self.y_where, self.chunk_starts)
        return X, Y

    @property
    def x_where(self) -> str:
        """X's place, for messages: ``file/array``."""
        return f"{self.name}/{self.x_name}"

    @property
    def y_where(self) -> str:
        """Y's place, for messages: ``file/array``."""
        return f"{self.name}/{self.y_name}"

    def _read(self, start: int, stop: int, into: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        found = self._direct_chunk(start, stop)
        if found is not None:
            (x, y), c = found
            return x.read(c, into), y.read(c)
        X, Y = self.arrays()
        return (
            read_columns(X, start, stop, self.x_where, self.chunk_starts),
            read_columns(Y, start, stop, self.y_where, self.chunk_starts),
        )

    def _direct_chunk(self, start: int, stop: int) -> tuple[tuple[DirectArray, DirectArray], int] | None:
        """The direct arrays and the chunk that ``[start, stop)`` is, when it is read from the files
        (the direct path reads whole chunks); None: through the library."""
        if self.direct is None:
            return None
        c = self.chunk_of(start)
        return (self.direct, c) if self.chunk_bounds[c] == (start, stop) else None

    def read_labels(self, start: int, stop: int, labels: LabelRule | None = None) -> np.ndarray:
        """Y alone of ``read`` (columns ``[start, stop)``, checked by ``labels``)."""
        found = self._direct_chunk(start, stop)
        if found is not None:
            (_, y), c = found
            Y = y.read(c)
        else:
            Y = read_columns(self.arrays()[1], start, stop, self.y_where, self.chunk_starts)
        if labels is not None:
            check_labels(Y, start, labels, self.y_where, self.chunk_starts)
        return Y

    @property
    def chunk_items(self) -> int | None:
        """Items of X's stored chunk (``read``'s ``into``) when X's chunks are read from the files; else None."""
        return None if self.direct is None else self.direct[0].rows * self.direct[0].chunk

    @property
    def raw_x(self) -> bool:
        """Whether X's chunks are raw files, which ``read_x_rows`` reads."""
        return self.direct is not None and self.direct[0].raw

    def read_x_rows(
        self, chunks: Iterable[int], out: np.ndarray, arrange: Callable[[np.ndarray, np.ndarray], Any] | None = None
    ) -> np.ndarray:
        """X of whole ``chunks`` side by side into ``out`` (straight, or through ``arrange``: see
        ``DirectArray.read_rows``); only where ``raw_x``."""
        if self.direct is None or not self.raw_x:
            raise ValueError(f"{self.x_where}: its chunks are not raw files; read them with read()")
        self.direct[0].read_rows(chunks, out, arrange)
        return out

    def will_read(self, c: int) -> None:
        """A hint: chunk ``c`` is read soon, so the kernel may start reading its files from disk."""
        if self.direct is not None:
            for array in self.direct:
                array.will_read(c)

    @property
    def read_path(self) -> str:
        """How chunks are read: ``direct`` (the files' bytes, see ``_direct``) or through the storage
        library (over fsspec for a URL, which has no files to read directly)."""
        if self.direct is not None:
            return "direct"
        if self.remote is not None:
            return f"{self.format} library over fsspec ({self.remote.protocol})"
        return "in memory" if self.format == "memory" else f"{self.format} library"

    def arrays(self) -> tuple[Any, Any]:
        """The stored X and Y as sliceable array objects (zarr, h5py or numpy), for Dask.

        Reading them directly checks no labels: callers run ``labels.check_labels``.
        """
        return self._X, self._Y

    def stored_bytes(self) -> tuple[int, int]:
        """Bytes X and Y take where they are stored (on disk, compressed; in memory here)."""
        return int(np.asarray(self._X).nbytes), int(np.asarray(self._Y).nbytes)

    def label_max(self) -> float:
        """The largest label in the store, reading Y chunk by chunk (Y is small next to X); a
        DataError names the first NaN or inf."""
        return max(float(np.max(Y)) for _, Y in self.label_chunks())

    def label_chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first sample, Y) of every chunk in order, all finite: a DataError names the first NaN or inf."""
        self.require_labels()
        _, Y = self.arrays()
        for a, b in self.chunk_bounds:
            labels = read_columns(Y, a, b, self.y_where, self.chunk_starts)
            error = nonfinite_error(labels, a, self.y_where, self.chunk_starts)
            if error is not None:
                raise error
            yield a, labels

    @cached_property
    def chunk_starts(self) -> np.ndarray:
        """First sample of each of the store's chunks, shape (chunks stored,): what messages number
        chunks by. A view of some chunks (``holdout.ChunkSubset``) keeps the store's."""
        return np.fromiter((b[0] for b in self.chunk_bounds), dtype=np.int64, count=self.n_chunks)

    def chunk_of(self, sample: int) -> int:
        """Index in ``chunk_bounds`` of the chunk that holds ``sample``."""
        return chunk_index(sample, np.fromiter((b[0] for b in self.chunk_bounds), np.int64, count=self.n_chunks))

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data, for model files and checkpoints."""
        chunk = self.chunk_bounds[0][1] - self.chunk_bounds[0][0]
        return {
            "format": self.format,
            "path": self.name,
            "x": self.x_name,
            "y": self.y_name,
            "n_x": self.n_x,
            "k": self.k,
            "m": self.m,
            "dtype": self.dtype.name,
            "chunk": chunk,
            "codec": self.codec,
            **({"layout": self.layout} if self.layout != "columns" else {}),  # a column store's, as before
        }

    format = "unknown"
    codec = "none"

    # -- integrity -------------------------------------------------------------------------
    def stamp(self) -> str:
        """A cheap digest of the store's files (os.stat: inode, size, modification time; no
        contents read), as a JSON string that is the same in any process while the store is
        unchanged. See ``check_unchanged``."""
        return join_parts(self._stamp_parts())

    def _stamp_parts(self) -> dict[str, str]:
        """Named parts of the stamp (see ``_stamp``); arrays in memory have no files to watch."""
        return {ROOT: f"{self.format} arrays"}

    def check_unchanged(self, stamp: str, since: str = "the stamp was taken") -> None:
        """Raise DataError naming what changed when the store's files differ from ``stamp``
        (taken by ``stamp()``); ``since`` completes "the store changed since ..."."""
        changed = changed_parts(stamp, self.stamp())
        if changed:
            raise DataError(
                f"{self.name}: the store changed since {since} ({'; '.join(changed)}); "
                f"stop, and restart or resume once it is complete"
            )

    def find_nonfinite(self, chunks: Iterable[int], dtype: Any = None) -> DataError | None:
        """The first NaN or ±inf in the given chunks (by sample, X before Y) as a DataError
        naming the array, sample and chunk, or the error of a chunk that cannot be read; None
        when all are finite. For a loss that came out non-finite: is the data at fault?
        ``dtype``: the training precision, in which a value beyond its range is ±inf too."""
        for c in sorted(set(chunks)):
            a, b = self.chunk_bounds[c]
            try:
                X, Y = self.read(a, b)
            except DataError as e:
                return e
            error = nonfinite_error(X, a, self.x_where, self.chunk_starts, dtype) or nonfinite_error(
                Y, a, self.y_where, self.chunk_starts, dtype
            )
            if error is not None:
                return error
        return None

    def close(self) -> None:
        """Release file handles; a closed source must not be read."""

    def __enter__(self) -> ChunkSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} n_x={self.n_x} k={self.k} m={self.m} "
            f"dtype={self.dtype} chunks={self.n_chunks}>"
        )


def chunk_indices(
    shape: tuple[int, ...], chunks: tuple[int, ...], axis: int
) -> Iterator[tuple[tuple[int, ...], tuple[int, int]]]:
    """Every chunk of an array on a regular grid as (its grid index, the samples it holds along
    ``axis``), by sample first: the first chunk not written names the first samples missing."""
    counts = [-(-n // c) for n, c in zip(shape, chunks)]
    others = [range(n) for i, n in enumerate(counts) if i != axis]
    for j in range(counts[axis]):
        samples = (j * chunks[axis], min((j + 1) * chunks[axis], shape[axis]))
        for rest in itertools.product(*others):
            yield (*rest[:axis], j, *rest[axis:]), samples


def check_missing_chunks(policy: object) -> str | None:
    """The ``missing_chunks`` policy, or ConfigError: None (the default) or one of MISSING_CHUNKS."""
    return None if policy is None else check_choice(policy, MISSING_CHUNKS, "missing_chunks policy")
