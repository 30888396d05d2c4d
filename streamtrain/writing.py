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

from ._signals import signals_deferred

__all__ = ["CODECS", "Shapes", "reslab", "set_attrs", "slab_samples", "write_store"]

CODECS = ("none", "zstd", "gzip")
# Columns written per call: a multiple of the chunk size, about this many bytes of X.
SLAB_BYTES = 32 * 2**20


class Shapes(NamedTuple):
    m: int
    n_x: int
    k: int
    x_dtype: Any
    y_dtype: Any


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
    path: str, fmt: str, slabs: Iterable[tuple[int, np.ndarray, np.ndarray]], shapes: Shapes, chunk: int, codec: str
) -> None:
    """A new store at ``path`` (Zarr or HDF5, ``fmt``) with X and Y of ``shapes``, chunks of ``chunk``
    samples compressed by ``codec``, filled from ``slabs``."""
    if fmt == "zarr":
        _write_zarr(path, slabs, shapes, chunk, codec)
    else:
        _write_hdf5(path, slabs, shapes, chunk, codec)


def _write_zarr(path: str, slabs: Iterable, shapes: Shapes, chunk: int, codec: str) -> None:
    import zarr
    from zarr.codecs import GzipCodec, ZstdCodec
    from zarr.core.array_spec import ArrayConfig

    compressors = {"none": None, "zstd": ZstdCodec(level=3), "gzip": GzipCodec(level=5)}[codec]
    # Write every chunk, even one equal to the fill value: a missing chunk reads as an error.
    config = ArrayConfig(order="C", write_empty_chunks=True)
    with signals_deferred():  # see _write_slabs
        group = zarr.open_group(path, mode="w")
        X, Y = (
            group.create_array(
                name, shape=(rows, shapes.m), chunks=(rows, chunk), dtype=dtype, compressors=compressors,
                fill_value=0, config=config,
            )
            for name, rows, dtype in (("X", shapes.n_x, shapes.x_dtype), ("Y", shapes.k, shapes.y_dtype))
        )  # fmt: skip
    _write_slabs(X, Y, slabs)


def _write_hdf5(path: str, slabs: Iterable, shapes: Shapes, chunk: int, codec: str) -> None:
    import h5py

    comp = {"none": {}, "gzip": {"compression": "gzip", "compression_opts": 4}}[codec]
    with h5py.File(path, "w") as f:
        X = f.create_dataset(
            "X", shape=(shapes.n_x, shapes.m), chunks=(shapes.n_x, chunk), dtype=shapes.x_dtype, **comp
        )
        Y = f.create_dataset("Y", shape=(shapes.k, shapes.m), chunks=(shapes.k, chunk), dtype=shapes.y_dtype, **comp)
        _write_slabs(X, Y, slabs)


def _write_slabs(X: Any, Y: Any, slabs: Iterable) -> None:
    """Write each slab into the zarr arrays or HDF5 datasets X, Y."""
    for start, Xs, Ys in slabs:
        # Ctrl-C between slabs, not during one: zarr writes in its own thread, which an interrupt
        # does not stop, so its writes would go on into the partial store while it is deleted.
        with signals_deferred():
            X[:, start : start + Xs.shape[1]] = Xs
            Y[:, start : start + Ys.shape[1]] = Ys


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
