"""Zarr (v2 or v3 format) groups holding X (n_x, m) and Y (k, m)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import zarr
from zarr.abc.store import Store
from zarr.core.sync import sync  # to list a store's keys, only when chunks are missing

from ._base import ChunkSource, DataError, bounds_from_chunk_size
from ._integrity import Missing, brief
from ._stamp import ROOT, dir_part, file_part

__all__ = ["ZarrSource"]

_SKIPPED_HINT = (
    " (never written, or skipped by zarr because it equalled the fill value: "
    "write such arrays with config={'write_empty_chunks': True})"
)
_METADATA_FILES = ("zarr.json", ".zarray", ".zgroup")  # v3, then v2


class ZarrSource(ChunkSource):
    format = "zarr"

    def __init__(
        self, path: str | os.PathLike, *, x: str = "X", y: str = "Y", missing_chunks: str | None = None
    ) -> None:
        super().__init__(os.fspath(path), x, y, must_exist=True)
        try:
            group = _quietly(zarr.open_group, self.name, mode="r")
        except Exception as e:  # zarr raises several types for "not a group"
            raise DataError(f"{self._metadata_file('') or self.name}: not a Zarr group ({brief(e)})") from None
        self._X, self._Y = (self._array(group, a) for a in (x, y))
        self._validate(self._X.shape, self._X.dtype, self._Y.shape, self._Y.dtype)
        self.chunk_bounds = bounds_from_chunk_size(self.m, self._X.chunks[1])
        self._apply_missing_chunks({"x": self._missing(self._X, x), "y": self._missing(self._Y, y)}, missing_chunks)
        self.codec = ",".join(type(c).__name__ for c in self._X.compressors) or "none"
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
        paths = (os.path.join(self.name, key, f) for f in _METADATA_FILES)
        return next((p for p in paths if os.path.isfile(p)), None)

    def _missing(self, arr: zarr.Array, key: str) -> Missing | None:
        n_missing = arr.nchunks - arr.nchunks_initialized
        if n_missing == 0:
            return None
        grid = arr.shards or arr.chunks  # what is stored as one key
        written = sync(_list_keys(arr.store_path.store, arr.store_path.path))
        for j in range(-(-arr.shape[1] // grid[1])):
            for i in range(-(-arr.shape[0] // grid[0])):
                if arr.metadata.encode_chunk_key((i, j)) not in written:
                    first = (j * grid[1], min((j + 1) * grid[1], arr.shape[1]))
                    return Missing(f"{self.name}/{key}", first, n_missing, arr.fill_value, _SKIPPED_HINT)
        return None

    def _stamp_parts(self) -> dict[str, str]:
        # The root directory (replaced or not), the group's own metadata files, and every file
        # of each array (metadata and chunks).
        return {
            ROOT: file_part(self.name, contents=False),
            "group metadata": dir_part(self.name, recursive=False),
            self.x_name: dir_part(os.path.join(self.name, self.x_name)),
            self.y_name: dir_part(os.path.join(self.name, self.y_name)),
        }


T = TypeVar("T")


def _quietly(open_: Callable[..., T], *args: Any, **kw: Any) -> T:
    """``open_(*args, **kw)`` without zarr's warnings about unreadable nodes: their error is ours to report."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_(*args, **kw)


async def _list_keys(store: Store, prefix: str) -> set[str]:
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    return {k[len(prefix) :] async for k in store.list_prefix(prefix)}
