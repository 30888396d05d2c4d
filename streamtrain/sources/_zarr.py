"""Zarr (v2 or v3 format) groups holding X (n_x, m) and Y (k, m)."""

from __future__ import annotations

import os

import zarr
from zarr.abc.store import Store
from zarr.core.sync import sync  # to list a store's keys, only when chunks are missing

from ._base import ChunkSource, DataError, bounds_from_chunk_size, missing_chunks_error

__all__ = ["ZarrSource"]

_SKIPPED_HINT = (
    " (never written, or skipped by zarr because it equalled the fill value: "
    "write such arrays with config={'write_empty_chunks': True})"
)


class ZarrSource(ChunkSource):
    format = "zarr"

    def __init__(self, path: str | os.PathLike, *, x: str = "X", y: str = "Y") -> None:
        super().__init__(os.fspath(path), x, y, must_exist=True)
        try:
            group = zarr.open_group(self.name, mode="r")
        except Exception as e:  # zarr raises several types for "not a group"
            raise DataError(f"{self.name}: not a Zarr group ({type(e).__name__}: {e})") from None
        self._X, self._Y = (self._array(group, a) for a in (x, y))
        self._validate(self._X.shape, self._X.dtype, self._Y.shape, self._Y.dtype)
        self.chunk_bounds = bounds_from_chunk_size(self.m, self._X.chunks[1])
        for arr, a in ((self._X, x), (self._Y, y)):
            self._check_chunks_written(arr, a)
        self.codec = ",".join(type(c).__name__ for c in self._X.compressors) or "none"
        attrs = group.attrs.get("streamtrain", {})
        self.attrs = dict(attrs) if isinstance(attrs, dict) else {}

    def _array(self, group: zarr.Group, key: str) -> zarr.Array:
        try:
            arr = group[key]
        except KeyError:
            found = ", ".join(sorted(group.keys())) or "nothing"
            raise DataError(f"{self.name}: no array {key!r} (found: {found})") from None
        if not isinstance(arr, zarr.Array):
            raise DataError(f"{self.name}/{key}: is a group, not an array")
        return arr

    def _check_chunks_written(self, arr: zarr.Array, key: str) -> None:
        n_missing = arr.nchunks - arr.nchunks_initialized
        if n_missing == 0:
            return
        grid = arr.shards or arr.chunks  # what is stored as one key
        written = sync(_list_keys(arr.store_path.store, arr.store_path.path))
        for j in range(-(-arr.shape[1] // grid[1])):
            for i in range(-(-arr.shape[0] // grid[0])):
                if arr.metadata.encode_chunk_key((i, j)) not in written:
                    first = (j * grid[1], min((j + 1) * grid[1], arr.shape[1]))
                    raise missing_chunks_error(f"{self.name}/{key}", first, n_missing, _SKIPPED_HINT)


async def _list_keys(store: Store, prefix: str) -> set[str]:
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    return {k[len(prefix) :] async for k in store.list_prefix(prefix)}
