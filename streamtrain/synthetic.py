"""Generated regression data, written chunk by chunk to Zarr or HDF5.

Conventions: x ~ N(0, I) in R^n_x; the true model is W (r, n_x), b (r, 1), each row of W
of norm w_norm / sqrt(r) so that ||W||_F = w_norm; Z = W x + b.
- logistic  r = 1:        y ~ Bernoulli(sigmoid(z)),       Y (1, m) uint8 in {0, 1}
- softmax   r = classes:  y ~ Categorical(softmax(Z)),     Y (1, m) uint8 class ids 0..classes-1
- linear    r = outputs:  y = Z + noise * N(0, I),         Y (outputs, m) float32
Columns are generated in fixed blocks of BLOCK samples, each from its own seeded stream,
so the same seed gives the same data whatever the format, chunk size or codec (and the same
X whatever the task). The store's attributes record the true model and the Bayes loss: the
mean loss of the true model on these very (stored) samples, the floor a fitted model can
approach (log-loss, cross-entropy, or 0.5 * ||y - W x - b||^2 per sample).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from ._errors import ConfigError, DataError, check_int
from ._progress import Progress
from .batches import Prefetcher
from .sources import default_chunk_size

__all__ = ["CODECS", "FORMATS", "TASKS", "make_data"]

BLOCK = 16384
FORMATS = ("zarr", "hdf5")
CODECS = ("none", "zstd", "gzip")
TASKS = ("logistic", "softmax", "linear")
# Columns written per call: a multiple of the chunk size, about this many bytes of X.
SLAB_BYTES = 32 * 2**20


def make_data(
    path: str | os.PathLike,
    *,
    m: int = 200_000,
    n_x: int = 100,
    task: str = "logistic",
    classes: int = 3,
    outputs: int = 1,
    noise: float = 1.0,
    format: str = "zarr",
    chunk: int | None = None,
    codec: str = "none",
    seed: int = 0,
    w_norm: float = 3.0,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Write a dataset X (n_x, m) float32, Y for ``task`` (see the module) to ``path``; return its attributes.

    ``classes`` is read only for task="softmax", ``outputs`` and ``noise`` (the standard
    deviation of each entry of the noise) only for task="linear"; other tasks ignore them
    unchecked. The store is built under a temporary name and renamed into place when
    complete, so an interrupted run never leaves a half-written store at ``path``.
    ``progress`` draws a progress line on stderr (default: only when stderr is a terminal).
    """
    path = os.fspath(path)
    _check_options(
        path,
        m=m,
        n_x=n_x,
        task=task,
        classes=classes,
        outputs=outputs,
        noise=noise,
        format=format,
        chunk=chunk,
        codec=codec,
        seed=seed,
        w_norm=w_norm,
        overwrite=overwrite,
    )
    m, n_x, seed = int(m), int(n_x), int(seed)
    chunk = min(int(chunk or default_chunk_size(n_x, 4)), m)
    rows = int({"softmax": classes, "linear": outputs}.get(task, 1))  # of W, b
    extra: dict[str, Any] = {"softmax": {"classes": rows}, "linear": {"outputs": rows, "noise": float(noise)}}.get(
        task, {}
    )
    W, b = true_weights(rows, n_x, seed, w_norm)
    truth = Truth(task, W, b, float(noise))
    y_rows, y_dtype = (rows, "float32") if task == "linear" else (1, "uint8")
    tmp = f"{path}.partial-{os.getpid()}"
    write = _write_zarr if format == "zarr" else _write_hdf5
    try:
        bar = Progress(
            f"writing {os.path.basename(path)}", m, enabled=sys.stderr.isatty() if progress is None else progress
        )
        slabs = _shown(_slabs(m, n_x, chunk, seed, truth), bar)
        loss_sum = write(tmp, slabs, m=m, n_x=n_x, k=y_rows, y_dtype=y_dtype, chunk=chunk, codec=codec)
        bar.close()
        # Logistic keeps its original flat w_true and scalar b_true, which older readers expect.
        w_true, b_true = (
            (W.ravel().tolist(), float(b[0, 0])) if task == "logistic" else (W.tolist(), b.ravel().tolist())
        )
        attrs = {
            "task": task,
            "m": m,
            "n_x": n_x,
            **extra,
            "seed": seed,
            "w_norm": w_norm,
            "w_true": w_true,
            "b_true": b_true,
            "bayes_loss": loss_sum / m,
        }
        _set_attrs(tmp, format, attrs)
        if os.path.exists(path):  # only with overwrite=True, checked above
            _remove(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            _remove(tmp)
    return attrs


class Truth(NamedTuple):
    """The true model: W (r, n_x), b (r, 1), and the noise's standard deviation (linear only)."""

    task: str
    W: np.ndarray
    b: np.ndarray
    noise: float


def true_weights(rows: int, n_x: int, seed: int, w_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """W (rows, n_x), each row of norm w_norm / sqrt(rows), and a small intercept b (rows, 1)."""
    rng = np.random.default_rng([seed, 0])
    W = rng.standard_normal((rows, n_x))
    # Row norms one at a time, as np.linalg.norm(w) always did: the same bits for logistic.
    norms = np.array([[np.linalg.norm(row)] for row in W])
    W *= w_norm / (math.sqrt(rows) * norms)
    return W, rng.normal(0.0, 0.5, (rows, 1))


def block(j: int, n_x: int, seed: int, truth: Truth) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block j: X (n_x, BLOCK) float32, Y (k, BLOCK), and the true model's loss per column (1, BLOCK)."""
    rng = np.random.default_rng([seed, 1, j])
    X = rng.standard_normal((n_x, BLOCK), dtype=np.float32)
    if truth.task == "logistic":  # its original float32 product: old seeds keep their labels
        Z = (truth.W.astype(np.float32) @ X).astype(np.float64) + truth.b
        Y = rng.random((1, BLOCK)) < 0.5 * (1.0 + np.tanh(0.5 * Z))
        return X, Y.astype(np.uint8), np.logaddexp(0.0, Z) - Y * Z
    Z = truth.W @ X.astype(np.float64) + truth.b  # (r, BLOCK)
    if truth.task == "softmax":
        top = Z.max(axis=0, keepdims=True)
        lse = top + np.log(np.exp(Z - top).sum(axis=0, keepdims=True))  # log sum_c exp(Z_c), (1, BLOCK)
        cdf = np.cumsum(np.exp(Z - lse), axis=0)
        y = (cdf[:-1] < rng.random((1, BLOCK))).sum(axis=0, keepdims=True)  # inverse CDF: ids 0..r-1
        return X, y.astype(np.uint8), lse - np.take_along_axis(Z, y, axis=0)
    Y = (Z + truth.noise * rng.standard_normal(Z.shape)).astype(np.float32)
    return X, Y, 0.5 * ((Y - Z) ** 2).sum(axis=0, keepdims=True)  # the noise as stored


def _slabs(
    m: int, n_x: int, chunk: int, seed: int, truth: Truth
) -> Iterator[tuple[int, np.ndarray, np.ndarray, float]]:
    """(start, X, Y, loss_sum) for consecutive slabs of whole chunks covering [0, m)."""
    slab = chunk * max(1, SLAB_BYTES // (4 * n_x * chunk))
    blocks = Prefetcher((block(j, n_x, seed, truth) for j in range(-(-m // BLOCK))), depth=2)
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


def _write_zarr(path: str, slabs: Iterator, *, m: int, n_x: int, k: int, y_dtype: str, chunk: int, codec: str) -> float:
    import zarr

    compressors = {"none": None, "zstd": zarr.codecs.ZstdCodec(level=3), "gzip": zarr.codecs.GzipCodec(level=5)}[codec]
    group = zarr.open_group(path, mode="w")
    # Write every chunk, even one equal to the fill value: a missing chunk reads as an error.
    config = {"write_empty_chunks": True}
    X = group.create_array(
        "X", shape=(n_x, m), chunks=(n_x, chunk), dtype="float32", compressors=compressors, fill_value=0, config=config
    )
    Y = group.create_array(
        "Y", shape=(k, m), chunks=(k, chunk), dtype=y_dtype, compressors=compressors, fill_value=0, config=config
    )
    return _write_slabs(X, Y, slabs)


def _write_hdf5(path: str, slabs: Iterator, *, m: int, n_x: int, k: int, y_dtype: str, chunk: int, codec: str) -> float:
    import h5py

    comp = {"none": {}, "gzip": {"compression": "gzip", "compression_opts": 4}}[codec]
    with h5py.File(path, "w") as f:
        X = f.create_dataset("X", shape=(n_x, m), chunks=(n_x, chunk), dtype="float32", **comp)
        Y = f.create_dataset("Y", shape=(k, m), chunks=(k, chunk), dtype=y_dtype, **comp)
        return _write_slabs(X, Y, slabs)


def _write_slabs(X: Any, Y: Any, slabs: Iterator) -> float:
    """Write each slab into the zarr arrays or HDF5 datasets X, Y; the sum of the true losses."""
    loss_sum = 0.0
    for start, Xs, Ys, ls in slabs:
        X[:, start : start + Xs.shape[1]] = Xs
        Y[:, start : start + Ys.shape[1]] = Ys
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
    if o["task"] not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}; got {o['task']!r}")
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
    if o["task"] == "softmax":
        check_int("classes", o["classes"])
        if not 2 <= o["classes"] <= 255:  # class ids are stored as uint8
            raise ConfigError(f"classes must be an integer from 2 to 255, got {o['classes']!r}")
    if o["task"] == "linear":
        check_int("outputs", o["outputs"])
        if not math.isfinite(o["noise"]) or o["noise"] <= 0:
            raise ConfigError(f"noise must be a positive number, got {o['noise']!r}")
