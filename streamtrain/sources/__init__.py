"""Column-wise sample stores behind one contract: see ``_base.ChunkSource``."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ._base import ChunkSource, DataError, check_missing_chunks, default_chunk_size
from ._direct import stage_rows
from ._integrity import MISSING_CHUNKS, nonfinite_error, read_columns
from ._layout import LAYOUTS, check_layout
from ._memory import ArraySource
from ._remote import check_storage_options, is_url, local_path, parse_storage_options, url_only_zarr
from ._view import SourceView

__all__ = [
    "FORMATS",
    "LAYOUTS",
    "MISSING_CHUNKS",
    "ArraySource",
    "ChunkSource",
    "DataError",
    "SourceView",
    "default_chunk_size",
    "format_of",
    "is_hdf5",
    "is_url",
    "local_path",
    "nonfinite_error",
    "open_source",
    "opened",
    "parse_storage_options",
    "read_columns",
    "stage_rows",
    "url_only_zarr",
]

FORMATS = ("zarr", "hdf5")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def format_of(path: str | os.PathLike) -> str:
    """The store format a path names by its suffix: hdf5 for ``*.h5``, ``*.hdf5``, ``*.hdf``, ``*.he5``; else zarr."""
    return "hdf5" if os.fspath(path).lower().endswith(_HDF5_SUFFIXES) else "zarr"


def open_source(
    path: str | os.PathLike,
    *,
    x: str = "X",
    y: str | None = "Y",
    missing_chunks: str | None = None,
    direct: bool = True,
    layout: str = "columns",
    storage_options: Mapping[str, Any] | None = None,
) -> ChunkSource:
    """Open a Zarr group (a directory, or ``*.zarr``) or an HDF5 file (``*.h5``) for streaming.

    A URL that fsspec knows (``s3://bucket/data.zarr``, ``gs://``, ``memory://``, ``file://``)
    names a Zarr group read through zarr's ``FsspecStore``, its filesystem opened with
    ``storage_options`` (``{"anon": True}``, credentials, an endpoint: see ``_remote``); it needs
    ``pip install 'streamtrain[remote]'`` and the protocol's own package (s3fs, gcsfs).

    ``x`` and ``y`` name the arrays inside the store; ``y=None`` opens X alone, samples without
    labels (to predict: Y reads as empty columns, and training refuses the store). Raises
    ``DataError`` naming the file and array when the store cannot be used.

    ``missing_chunks`` says what a chunk that was never written becomes (both formats read one
    as the array's fill value): ``"error"`` refuses the store, ``"fill"`` reads it as the fill
    value; None (the default) refuses missing X chunks and fills missing Y chunks (zarr skips
    writing a chunk of fill values, so imbalanced or label-sorted labels have them). Chunks
    filled are reported once: in ``source.warnings`` and by a ``DataWarning``.

    ``direct=False`` reads every chunk through zarr/h5py, never from the files' bytes (see
    ``source.read_path``): the slower reference path, for a store the direct path refuses.

    ``layout="rows"`` reads a store written samples-first: X (m, n_x) chunked along its rows,
    Y (m,) or (m, k); each chunk of rows is read through the library and transposed (see ``_layout``).
    """
    missing_chunks, layout = check_missing_chunks(missing_chunks), check_layout(layout)
    path = os.fspath(path)
    storage_options = check_storage_options(path, storage_options)
    url = is_url(path)
    if url and format_of(path) == "hdf5":  # h5py reads local files
        raise url_only_zarr(path, "an HDF5 file")
    if not url and not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory")
    # Backends import lazily: zarr and h5py cost ~0.3 s to import, and only one is needed.
    if not url and os.path.isfile(path) and (format_of(path) == "hdf5" or is_hdf5(path)):
        from ._hdf5 import HDF5Source

        return HDF5Source(path, x=x, y=y, missing_chunks=missing_chunks, direct=direct, layout=layout)
    if url or os.path.isdir(path):
        from ._zarr import ZarrSource

        return ZarrSource(
            path, x=x, y=y, missing_chunks=missing_chunks, direct=direct, layout=layout, storage_options=storage_options
        )
    raise DataError(f"{path}: neither a Zarr directory nor an HDF5 file")


@contextmanager
def opened(data: ChunkSource | str | os.PathLike, *, missing_chunks: str | None = None) -> Iterator[ChunkSource]:
    """The source itself, or the store at a path opened here (see ``open_source``) and closed afterwards."""
    if isinstance(data, ChunkSource):
        yield data
        return
    with open_source(data, missing_chunks=missing_chunks) as source:
        yield source


def is_hdf5(path: str | os.PathLike) -> bool:
    """Whether the file at ``path`` starts with HDF5's signature."""
    try:
        with open(path, "rb") as f:
            return f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE
    except OSError:
        return False
