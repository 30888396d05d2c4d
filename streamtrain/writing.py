"""Column stores written chunk by chunk: what ``make-data`` and ``convert`` write.

A store holds X (n_x, m) and Y (k, m), chunked along the samples, every chunk written (even one
of fill values: a chunk never written reads as an error). Writers take *slabs*: consecutive runs
of whole chunks, ``(start, X, Y)``, so memory stays at one slab whatever m is. Callers write into
``outputs.partial_name(path)`` and swap the finished store in (``outputs.swap_in``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np

from ._errors import ConfigError
from ._signals import signals_deferred

__all__ = ["CODECS", "Column", "Shapes", "check_codec", "reslab", "set_attrs", "slab_samples", "write_store"]

CODECS = ("none", "zstd", "gzip")
# Columns written per call: a multiple of the chunk size, about this many bytes of X.
SLAB_BYTES = 32 * 2**20


class Column(NamedTuple):
    """One array of a store: its name, rows (samples are its columns) and dtype."""

    name: str
    rows: int
    dtype: Any


class Shapes(NamedTuple):
    """A training store's two arrays: X (n_x, m), Y (k, m)."""

    m: int
    n_x: int
    k: int
    x_dtype: Any
    y_dtype: Any

    def columns(self) -> list[Column]:
        return [Column("X", self.n_x, self.x_dtype), Column("Y", self.k, self.y_dtype)]


def check_codec(fmt: str, codec: str) -> None:
    """ConfigError unless ``codec`` is one of CODECS that the store format ``fmt`` has."""
    if codec not in CODECS:
        raise ConfigError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
    if fmt == "hdf5" and codec == "zstd":
        raise ConfigError("zstd is not built into HDF5; use --codec gzip or none with --format hdf5")


def slab_samples(chunk: int, bytes_per_sample: int) -> int:
    """Samples per slab: whole chunks, about SLAB_BYTES."""
    return chunk * max(1, SLAB_BYTES // max(bytes_per_sample * chunk, 1))


def reslab(blocks: Iterable[tuple[np.ndarray, ...]], m: int, slab: int) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
    """Blocks of columns (arrays of equal widths, in sample order) regrouped as (start, arrays) of
    ``slab`` columns each up to m columns, the last one shorter; columns past m are dropped."""
    pending: list[tuple[np.ndarray, ...]] = []
    have, start = 0, 0
    for block in blocks:
        pending.append(block)
        have += block[0].shape[1]
        while start < m and (have >= slab or start + have >= m):
            joined = tuple(np.concatenate(p, axis=1) if len(p) > 1 else p[0] for p in zip(*pending))
            n = min(slab, m - start)
            yield start, tuple(a[:, :n] for a in joined)
            start, have = start + n, have - n
            pending = [tuple(a[:, n:] for a in joined)] if have else []


def write_store(
    path: str, fmt: str, slabs: Iterable[tuple[Any, ...]], columns: list[Column], m: int, chunk: int, codec: str
) -> None:
    """A new store at ``path`` (Zarr or HDF5, ``fmt``) with an (rows, m) array per column, chunks of
    ``chunk`` samples compressed by ``codec``, filled from ``slabs``: (start, one array per column)."""
    if fmt == "zarr":
        import zarr
        from zarr.codecs import GzipCodec, ZstdCodec
        from zarr.core.array_spec import ArrayConfig

        compressors = {"none": None, "zstd": ZstdCodec(level=3), "gzip": GzipCodec(level=5)}[codec]
        # Write every chunk, even one equal to the fill value: a missing chunk reads as an error.
        config = ArrayConfig(order="C", write_empty_chunks=True)
        with signals_deferred():  # see _write_slabs
            group = zarr.open_group(path, mode="w")
            arrays = [
                group.create_array(
                    c.name, shape=(c.rows, m), chunks=(c.rows, chunk), dtype=c.dtype, compressors=compressors,
                    fill_value=0, config=config,
                )
                for c in columns
            ]  # fmt: skip
        _write_slabs(arrays, slabs)
        return
    import h5py

    comp = {"none": {}, "gzip": {"compression": "gzip", "compression_opts": 4}}[codec]
    with h5py.File(path, "w") as f:
        datasets = [
            f.create_dataset(c.name, shape=(c.rows, m), chunks=(c.rows, chunk), dtype=c.dtype, **comp) for c in columns
        ]
        _write_slabs(datasets, slabs)


def _write_slabs(arrays: list[Any], slabs: Iterable[tuple[Any, ...]]) -> None:
    """Write each slab into the zarr arrays or HDF5 datasets."""
    for start, *parts in slabs:
        # Ctrl-C between slabs, not during one: zarr writes in its own thread, which an interrupt
        # does not stop, so its writes would go on into the partial store while it is deleted.
        with signals_deferred():
            for array, part in zip(arrays, parts, strict=True):
                array[:, start : start + part.shape[1]] = part


def set_attrs(path: str, fmt: str, attrs: dict[str, Any]) -> None:
    """Record ``attrs`` under the store's ``streamtrain`` attribute (what sources read as ``attrs``)."""
    if fmt == "zarr":
        import zarr

        with signals_deferred():  # see _write_slabs
            zarr.open_group(path, mode="r+").attrs["streamtrain"] = attrs
    else:
        import h5py

        with h5py.File(path, "r+") as f:
            f.attrs["streamtrain"] = json.dumps(attrs)  # HDF5 attributes hold no nested dicts
