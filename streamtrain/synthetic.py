"""Generated logistic-regression data, written chunk by chunk to Zarr or HDF5.

x ~ N(0, I) in R^n_x, y ~ Bernoulli(sigmoid(w_true . x + b_true)) with ||w_true|| = w_norm.
Columns are generated in fixed blocks of BLOCK samples, each from its own seeded stream,
so the same seed gives the same data whatever the format, chunk size or codec. The store's
attributes record w_true, b_true and the Bayes loss: the mean log-loss of the true model
on these very samples, the floor a fitted model can approach.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._errors import ConfigError, DataError, check_int
from ._progress import Progress
from .batches import Prefetcher
from .sources import default_chunk_size

__all__ = ["CODECS", "FORMATS", "make_data"]

BLOCK = 16384
FORMATS = ("zarr", "hdf5")
CODECS = ("none", "zstd", "gzip")
# Columns written per call: a multiple of the chunk size, about this many bytes of X.
SLAB_BYTES = 32 * 2**20


def make_data(path: str | os.PathLike, *, m: int = 200_000, n_x: int = 100, format: str = "zarr",
              chunk: int | None = None, codec: str = "none", seed: int = 0, w_norm: float = 3.0,
              overwrite: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """Write a logistic dataset X (n_x, m) float32, Y (1, m) uint8 to ``path``; return its attributes.

    The store is built under a temporary name and renamed into place when complete, so an
    interrupted run never leaves a half-written store at ``path``. ``progress`` draws a
    progress line on stderr (default: only when stderr is a terminal).
    """
    path = os.fspath(path)
    _check_options(path, m=m, n_x=n_x, format=format, chunk=chunk, codec=codec, seed=seed,
                   w_norm=w_norm, overwrite=overwrite)
    chunk = min(chunk or default_chunk_size(n_x, 4), m)
    w, b = true_weights(n_x, seed, w_norm)
    tmp = f"{path}.partial-{os.getpid()}"
    write = _write_zarr if format == "zarr" else _write_hdf5
    try:
        bar = Progress(f"writing {os.path.basename(path)}", m,
                       enabled=sys.stderr.isatty() if progress is None else progress)
        slabs = _shown(_slabs(m, n_x, chunk, seed, w, b), bar)
        loss_sum = write(tmp, slabs, m=m, n_x=n_x, chunk=chunk, codec=codec)
        bar.close()
        attrs = {"task": "logistic", "m": m, "n_x": n_x, "seed": seed, "w_norm": w_norm,
                 "w_true": w.ravel().tolist(), "b_true": b, "bayes_loss": loss_sum / m}
        _set_attrs(tmp, format, attrs)
        if os.path.exists(path):  # only with overwrite=True, checked above
            _remove(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            _remove(tmp)
    return attrs


def true_weights(n_x: int, seed: int, w_norm: float) -> tuple[np.ndarray, float]:
    """w_true (1, n_x) with norm ``w_norm`` and a small intercept b_true, from the seed."""
    rng = np.random.default_rng([seed, 0])
    w = rng.standard_normal((1, n_x))
    w *= w_norm / np.linalg.norm(w)
    return w, float(rng.normal(0.0, 0.5))


def block(j: int, n_x: int, seed: int, w: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Block j: X (n_x, BLOCK) float32, Y (1, BLOCK) uint8, and the true model's loss per column."""
    rng = np.random.default_rng([seed, 1, j])
    X = rng.standard_normal((n_x, BLOCK), dtype=np.float32)
    Z = (w.astype(np.float32) @ X).astype(np.float64) + b
    Y = rng.random((1, BLOCK)) < 0.5 * (1.0 + np.tanh(0.5 * Z))
    losses = np.logaddexp(0.0, Z) - Y * Z
    return X, Y.astype(np.uint8), losses


def _slabs(m: int, n_x: int, chunk: int, seed: int, w: np.ndarray, b: float
           ) -> Iterator[tuple[int, np.ndarray, np.ndarray, float]]:
    """(start, X, Y, loss_sum) for consecutive slabs of whole chunks covering [0, m)."""
    slab = chunk * max(1, SLAB_BYTES // (4 * n_x * chunk))
    blocks = Prefetcher((block(j, n_x, seed, w, b) for j in range(-(-m // BLOCK))), depth=2)
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    have, start = 0, 0
    try:
        for X, Y, losses in blocks:
            pending.append((X, Y, losses))
            have += X.shape[1]
            while have >= slab or (have and start + have >= m):
                Xs, Ys, Ls = (np.concatenate(p, axis=1) for p in zip(*pending))
                n = min(slab, m - start)
                yield start, Xs[:, :n], Ys[:, :n], float(Ls[:, :n].sum())
                start += n
                rest = (Xs[:, n:], Ys[:, n:], Ls[:, n:])
                pending, have = ([rest], rest[0].shape[1]) if start < m else ([], 0)
    finally:
        blocks.close()


def _shown(slabs: Iterator, bar: Progress) -> Iterator:
    for slab in slabs:
        yield slab
        bar.update(slab[0] + slab[1].shape[1])  # after the slab is written


def _write_zarr(path: str, slabs: Iterator, *, m: int, n_x: int, chunk: int, codec: str) -> float:
    import zarr

    compressors = {"none": None, "zstd": zarr.codecs.ZstdCodec(level=3),
                   "gzip": zarr.codecs.GzipCodec(level=5)}[codec]
    group = zarr.open_group(path, mode="w")
    # Write every chunk, even one equal to the fill value: a missing chunk reads as an error.
    config = {"write_empty_chunks": True}
    X = group.create_array("X", shape=(n_x, m), chunks=(n_x, chunk), dtype="float32",
                           compressors=compressors, fill_value=0, config=config)
    Y = group.create_array("Y", shape=(1, m), chunks=(1, chunk), dtype="uint8",
                           compressors=compressors, fill_value=0, config=config)
    return _write_slabs(X, Y, slabs)


def _write_hdf5(path: str, slabs: Iterator, *, m: int, n_x: int, chunk: int, codec: str) -> float:
    import h5py

    comp = {"none": {}, "gzip": {"compression": "gzip", "compression_opts": 4}}[codec]
    with h5py.File(path, "w") as f:
        X = f.create_dataset("X", shape=(n_x, m), chunks=(n_x, chunk), dtype="float32", **comp)
        Y = f.create_dataset("Y", shape=(1, m), chunks=(1, chunk), dtype="uint8", **comp)
        return _write_slabs(X, Y, slabs)


def _write_slabs(X: Any, Y: Any, slabs: Iterator) -> float:
    """Write each slab into the zarr arrays or HDF5 datasets X, Y; the sum of the true losses."""
    loss_sum = 0.0
    for start, Xs, Ys, ls in slabs:
        X[:, start:start + Xs.shape[1]] = Xs
        Y[:, start:start + Ys.shape[1]] = Ys
        loss_sum += ls
    return loss_sum


def _set_attrs(path: str, format: str, attrs: dict[str, Any]) -> None:
    if format == "zarr":
        import zarr

        zarr.open_group(path, mode="r+").attrs["streamtrain"] = attrs
    else:
        import h5py

        with h5py.File(path, "r+") as f:
            f.attrs["streamtrain"] = json.dumps(attrs)  # HDF5 attributes hold no nested dicts


def _remove(path: str) -> None:
    shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)


def _check_options(path: str, **o: Any) -> None:
    if os.path.exists(path) and not o["overwrite"]:
        raise DataError(f"{path}: already exists (pass overwrite=True / --overwrite to replace it)")
    if o["format"] not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}; got {o['format']!r}")
    if o["codec"] not in CODECS:
        raise ConfigError(f"codec must be one of {', '.join(CODECS)}; got {o['codec']!r}")
    if o["format"] == "hdf5" and o["codec"] == "zstd":
        raise ConfigError("zstd is not built into HDF5; use --codec gzip or none with --format hdf5")
    for name in ("m", "n_x") + (("chunk",) if o["chunk"] is not None else ()):
        check_int(name, o[name])
    check_int("seed", o["seed"], minimum=0)
    if not math.isfinite(o["w_norm"]) or o["w_norm"] < 0:
        raise ConfigError(f"w_norm must be a non-negative number, got {o['w_norm']!r}")
