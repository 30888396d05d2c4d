"""HDF5 files holding datasets X (n_x, m) and Y (k, m)."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import h5py

from ._base import ChunkSource, DataError, bounds_from_chunk_size, chunk_indices, default_chunk_size
from ._direct import ChunkBytes, DirectArray, Inflate
from ._integrity import Missing
from ._stamp import ROOT, file_part

__all__ = ["HDF5Source"]


class HDF5Source(ChunkSource):
    format = "hdf5"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        x: str = "X",
        y: str | None = "Y",
        missing_chunks: str | None = None,
        direct: bool = True,
        layout: str = "columns",
    ) -> None:
        super().__init__(os.fspath(path), x, y, must_exist=True, layout=layout)
        try:
            self._file = h5py.File(self.name, "r")
        except OSError as e:
            raise DataError(f"{self.name}: not an HDF5 file ({e})") from None
        try:
            X, Y = self._dataset(x), None if y is None else self._dataset(y)
            self._X, self._Y = self._as_stored(X, Y)
            self._validate(self._X.shape, self._X.dtype, *self._y_shape_dtype())
            # A contiguous dataset has no chunks: read it in slabs of the default size.
            axis = self.sample_axis
            chunk = X.chunks[axis] if X.chunks else default_chunk_size(self.n_x, self.dtype.itemsize)
            self.chunk_bounds = bounds_from_chunk_size(self.m, chunk)
            if Y is None:
                self._no_labels(chunk)
            found = {"x": self._missing(X, x, axis), "y": None if Y is None or y is None else self._missing(Y, y, axis)}
            self._apply_missing_chunks(found, missing_chunks)
            if direct and layout == "columns" and self._file.driver == "sec2" and sys.byteorder == "little":
                fills = self._fills(missing_chunks)
                y_direct = self._Y if Y is None else self._direct_array(Y, self.y_where, fills["y"])
                self._use_direct(self._direct_array(X, self.x_where, fills["x"]), y_direct)
        except BaseException:
            self._file.close()
            raise
        self.codec = X.compression or "none"
        self._datasets = X, Y  # as stored (self._X, self._Y: as read, see _as_stored)
        self.attrs = _json_attr(self._file.attrs.get("streamtrain"))

    def _dataset(self, key: str) -> h5py.Dataset:
        obj = self._file.get(key)
        if obj is None:
            found = ", ".join(sorted(self._file.keys())) or "nothing"
            raise DataError(f"{self.name}: no dataset {key!r} (found: {found})")
        if not isinstance(obj, h5py.Dataset):
            raise DataError(f"{self.name}/{key}: is a group, not a dataset")
        return obj

    def _missing(self, ds: h5py.Dataset, key: str, axis: int) -> Missing | None:
        """The chunks of ``ds`` never written (HDF5 reads them as the fill value)."""
        where, m = f"{self.name}/{key}", ds.shape[axis]
        if ds.chunks is None:
            if ds.id.get_storage_size() == 0:
                return Missing(where, (0, m), 1, ds.fillvalue, " (the dataset was never written)")
            return None
        n_expected = math.prod(-(-n // c) for n, c in zip(ds.shape, ds.chunks))
        n_written = ds.id.get_num_chunks()
        if n_written == n_expected:
            return None
        written = {ds.id.get_chunk_info(i).chunk_offset for i in range(n_written)}
        for index, samples in chunk_indices(ds.shape, ds.chunks, axis):
            if tuple(i * c for i, c in zip(index, ds.chunks)) not in written:
                return Missing(where, samples, n_expected - n_written, ds.fillvalue)
        return None

    def _direct_array(self, ds: h5py.Dataset, where: str, fill: bool) -> DirectArray | None:
        """``ds`` read from the byte ranges of the file that hold its chunks (or its rows, for a
        contiguous dataset), when they are little-endian and raw or deflated and nothing else
        (see ``_layout``); else None."""
        layout = _layout(ds, self.chunk_bounds[0][1])
        if layout is None:
            return None
        located, codec, chunk, row_stride = layout
        return DirectArray(
            where=where,
            rows=ds.shape[0],
            m=self.m,
            chunk=chunk,
            dtype=ds.dtype,
            chunks=located,
            chunk_starts=self.chunk_starts,
            codec=codec,
            fill=ds.fillvalue if fill else None,
            row_stride=row_stride,
        )

    def stored_bytes(self) -> tuple[int, int]:
        X, Y = self._datasets
        return int(X.id.get_storage_size()), 0 if Y is None else int(Y.id.get_storage_size())

    def _stamp_parts(self) -> dict[str, str]:
        return {ROOT: file_part(self.name)}

    def close(self) -> None:
        self._file.close()


def _layout(ds: h5py.Dataset, slab: int) -> tuple[tuple[ChunkBytes, ...], Inflate | None, int, int | None] | None:
    """Where ``ds``'s chunks lie, the codec they need (None: raw), their width and, for a
    contiguous dataset (read in slabs of ``slab`` samples, all located at its offset), the bytes
    between rows; None when HDF5 must
    read it: another byte order, external, virtual or compact storage, a chunk across part of
    the rows, or a filter other than deflate."""
    if ds.dtype.byteorder == ">" or ds.external or ds.is_virtual:
        return None
    rows, m = ds.shape
    path = os.path.abspath(ds.file.filename)  # a pickled copy may read in another directory
    plist = ds.id.get_create_plist()
    if ds.chunks is None:
        if plist.get_layout() != h5py.h5d.CONTIGUOUS:  # compact: the bytes lie in the header, at no offset
            return None
        offset = ds.id.get_offset()  # None: never written
        return (ChunkBytes(path, offset),) * -(-m // slab), None, slab, m * ds.dtype.itemsize
    filters = {plist.get_filter(i)[0] for i in range(plist.get_nfilters())}
    if ds.chunks[0] != rows or not filters <= {h5py.h5z.FILTER_DEFLATE}:
        return None
    width = ds.chunks[1]
    found = {}
    for i in range(ds.id.get_num_chunks()):
        info = ds.id.get_chunk_info(i)
        if info.filter_mask:  # a chunk stored without its filter: HDF5 knows how to read it
            return None
        found[info.chunk_offset[1] // width] = ChunkBytes(path, info.byte_offset, info.size)
    located = tuple(found.get(j, ChunkBytes(path, None)) for j in range(-(-m // width)))
    return located, Inflate() if filters else None, width, None


def _json_attr(value: Any) -> dict[str, Any]:
    try:
        attrs = json.loads(value) if value is not None else {}
    except (TypeError, ValueError):
        return {}
    return attrs if isinstance(attrs, dict) else {}
