"""Zarr (v2 or v3 format) groups holding X (n_x, m) and Y (k, m)."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numcodecs
import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec
from zarr.core.sync import sync  # to list a store's keys, only when chunks are missing
from zarr.storage import LocalStore

from ._base import ChunkSource, DataError, bounds_from_chunk_size, chunk_indices
from ._direct import ChunkBytes, DirectArray
from ._integrity import Missing, brief
from ._remote import Remote, is_url
from ._stamp import ROOT, dir_part, file_part

__all__ = ["ZarrSource"]

_SKIPPED_HINT = (
    " (never written, or skipped by zarr because it equalled the fill value: "
    "write such arrays with config={'write_empty_chunks': True})"
)
_METADATA_FILES = ("zarr.json", ".zarray", ".zgroup")  # v3, then v2
# The compressors whose chunks are decoded here (by numcodecs, which releases the interpreter
# lock): Zarr v3's codecs by their numcodecs twin; v2 arrays name numcodecs codecs themselves.
_V3_CODECS = {ZstdCodec: numcodecs.Zstd, BloscCodec: numcodecs.Blosc, GzipCodec: numcodecs.GZip}
_V2_CODECS = (numcodecs.Zstd, numcodecs.Blosc, numcodecs.GZip, numcodecs.Zlib)
_UNSUPPORTED = object()


class ZarrSource(ChunkSource):
    format = "zarr"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        x: str = "X",
        y: str | None = "Y",
        missing_chunks: str | None = None,
        direct: bool = True,
        layout: str = "columns",
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        name = os.fspath(path)
        super().__init__(name, x, y, must_exist=not is_url(name), layout=layout)
        # A URL is read through fsspec (see _remote); a local path as a LocalStore, even one with "::" in it.
        self.remote = Remote.open(name, storage_options) if is_url(name) else None
        where, options = (Path(name), None) if self.remote is None else (name, dict(self.remote.storage_options))
        try:
            group = _quietly(zarr.open_group, where, mode="r", storage_options=options)
        except Exception as e:  # zarr raises several types for "not a group"
            raise DataError(f"{self._metadata_file('') or self.name}: not a Zarr group ({brief(e)})") from None
        X, Y = self._array(group, x), None if y is None else self._array(group, y)
        self._X, self._Y = self._as_stored(X, Y)
        self._validate(self._X.shape, self._X.dtype, *self._y_shape_dtype())
        axis = self.sample_axis
        self.chunk_bounds = bounds_from_chunk_size(self.m, X.chunks[axis])
        if Y is None:
            self._no_labels(X.chunks[axis])
        found = {"x": self._missing(X, x, axis), "y": None if Y is None or y is None else self._missing(Y, y, axis)}
        self._apply_missing_chunks(found, missing_chunks)
        if direct and layout == "columns":
            fills = self._fills(missing_chunks)
            y_direct = self._Y if Y is None else _direct_array(Y, self.y_where, fills["y"])
            self._use_direct(_direct_array(X, self.x_where, fills["x"]), y_direct)
        self.codec = ",".join(type(c).__name__ for c in X.compressors) or "none"
        attrs = group.attrs.get("streamtrain", {})
        self.attrs = dict(attrs) if isinstance(attrs, dict) else {}

    def _array(self, group: zarr.Group, key: str) -> zarr.Array:
        try:
            arr = _quietly(group.__getitem__, key)
        except Exception as e:  # KeyError, or what damaged metadata makes zarr raise
            metadata = self._metadata_file(key)
            if metadata is not None:  # there is an array, but zarr cannot read its metadata
                raise DataError(f"{metadata}: invalid array metadata ({brief(e)})") from None
            found = ", ".join(sorted(group.keys())) or "nothing"
            raise DataError(f"{self.name}: no array {key!r} (found: {found})") from None
        if not isinstance(arr, zarr.Array):
            raise DataError(f"{self.name}/{key}: is a group, not an array")
        try:
            chunks = arr.chunks
        except Exception as e:  # a chunk grid this reader does not know
            raise DataError(f"{self._metadata_file(key)}: invalid array metadata ({brief(e)})") from None
        if not all(n >= 1 for n in chunks):  # zarr reads a chunk shape of 0 from the metadata
            raise DataError(f"{self._metadata_file(key)}: invalid array metadata (chunk shape {list(chunks)})")
        return arr

    def _metadata_file(self, key: str) -> str | None:
        """The metadata file of the node at ``key`` ('' for the group), when one exists."""
        if self.remote is not None:
            return next((self.remote.join(key, f) for f in _METADATA_FILES if self.remote.isfile(key, f)), None)
        paths = (os.path.join(self.name, key, f) for f in _METADATA_FILES)
        return next((p for p in paths if os.path.isfile(p)), None)

    def _missing(self, arr: zarr.Array, key: str, axis: int) -> Missing | None:
        n_missing = arr.nchunks - arr.nchunks_initialized
        if n_missing == 0:
            return None
        grid = arr.shards or arr.chunks  # what is stored as one key
        written = sync(_list_keys(arr.store_path.store, arr.store_path.path))
        for index, samples in chunk_indices(arr.shape, grid, axis):
            if arr.metadata.encode_chunk_key(index) not in written:
                return Missing(f"{self.name}/{key}", samples, n_missing, arr.fill_value, _SKIPPED_HINT)
        return None

    def stored_bytes(self) -> tuple[int, int]:
        return self._array_bytes(self.x_name), 0 if self.y_name is None else self._array_bytes(self.y_name)

    def _array_bytes(self, key: str) -> int:
        """Bytes of the files of the array ``key`` (its metadata and chunks)."""
        return _tree_bytes(os.path.join(self.name, key)) if self.remote is None else self.remote.tree_bytes(key)

    def _stamp_parts(self) -> dict[str, str]:
        # The root directory (replaced or not), the group's own metadata files, and every file
        # of each array (metadata and chunks); at a URL, the same but the root (see _stamp).
        if self.remote is not None:
            arrays = {name: self.remote.stamp_part(name) for name in (self.x_name, self.y_name) if name is not None}
            return {"group metadata": self.remote.stamp_part("", recursive=False), **arrays}
        return {
            ROOT: file_part(self.name, contents=False),
            "group metadata": dir_part(self.name, recursive=False),
            self.x_name: dir_part(os.path.join(self.name, self.x_name)),
            **({self.y_name: dir_part(os.path.join(self.name, self.y_name))} if self.y_name is not None else {}),
        }


def _direct_array(arr: zarr.Array, where: str, fill: bool) -> DirectArray | None:
    """``arr`` read from its chunk files, when it is local, unsharded, one chunk across its rows,
    little-endian, and raw or compressed by one codec numcodecs decodes; else None."""
    store = arr.store_path.store
    if not isinstance(store, LocalStore) or arr.shards is not None or sys.byteorder != "little":
        return None
    rows, chunk = arr.chunks
    codec = _codec(arr)
    if rows != arr.shape[0] or codec is _UNSUPPORTED:
        return None
    # Absolute: a pickled copy may read from a Dask worker that runs in another directory.
    base = os.path.abspath(os.path.join(str(store.root), arr.store_path.path))
    n_chunks = -(-arr.shape[1] // chunk)
    return DirectArray(
        where=where,
        rows=rows,
        m=arr.shape[1],
        chunk=chunk,
        dtype=np.dtype(arr.dtype),
        chunks=tuple(ChunkBytes(os.path.join(base, arr.metadata.encode_chunk_key((0, j)))) for j in range(n_chunks)),
        chunk_starts=np.arange(0, arr.shape[1], chunk, dtype=np.int64),
        codec=codec,
        fill=_fill_value(arr) if fill else None,
    )


def _fill_value(arr: zarr.Array) -> Any:
    """What zarr reads an unwritten chunk of ``arr`` as: its fill value, or for a v2 array whose
    fill value is null, its dtype's default (zero)."""
    return arr.metadata.dtype.default_scalar() if arr.fill_value is None else arr.fill_value


def _codec(arr: zarr.Array) -> Any:
    """The numcodecs codec that decodes ``arr``'s stored chunks to its C-order bytes (None: they are
    those bytes), or _UNSUPPORTED: filters, another byte order or layout, several or other codecs."""
    metadata = arr.metadata
    if arr.filters or len(arr.compressors) > 1:
        return _UNSUPPORTED
    compressor = arr.compressors[0] if arr.compressors else None
    if metadata.zarr_format == 2:
        little = getattr(metadata.dtype, "endianness", "little") in ("little", None)
        plain = little and metadata.order == "C"
        if not plain or (compressor is not None and not isinstance(compressor, _V2_CODECS)):
            return _UNSUPPORTED
        return compressor
    if not isinstance(arr.serializer, BytesCodec):
        return _UNSUPPORTED
    if getattr(arr.serializer.endian, "value", None) not in (None, "little"):
        return _UNSUPPORTED
    if compressor is None:
        return None
    twin = _V3_CODECS.get(type(compressor))
    return _UNSUPPORTED if twin is None else twin()


T = TypeVar("T")


def _quietly(open_: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``open_(*args, **kw)`` without zarr's warnings about unreadable nodes: their error is ours to report."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_(*args, **kw)


async def _list_keys(store: Store, prefix: str) -> set[str]:
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    return {k[len(prefix) :] async for k in store.list_prefix(prefix)}


def _tree_bytes(path: str) -> int:
    """Bytes of the files under ``path`` (an array's directory: its metadata and chunks)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file gone meanwhile counts for nothing
                total += os.stat(os.path.join(root, name)).st_size
    return total
