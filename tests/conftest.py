"""Shared fixtures: small column-wise data sets and writers for each on-disk backend.

Conventions: X has shape (n_x, m), Y shape (k, m); samples are columns. Writers chunk the
last (sample) axis by ``chunk`` and keep every other axis whole, so they also accept the
malformed shapes that validation tests need.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr


def random_xy(n_x: int = 3, m: int = 103, seed: int = 0, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """X (n_x, m) standard normal and Y (1, m) of 0/1, both of ``dtype``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_x, m)).astype(dtype)
    Y = rng.integers(0, 2, size=(1, m)).astype(dtype)
    return X, Y


def logistic_xy(m: int = 1000, n_x: int = 4, seed: int = 1, intercept: float = 0.3, dtype=np.float64):
    """X (n_x, m) standard normal and Y (1, m) drawn from a logistic model: learnable, not separable."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_x, m))
    w = rng.standard_normal((1, n_x))
    Y = (rng.random((1, m)) < 1 / (1 + np.exp(-(w @ X + intercept)))).astype(np.float64)
    return X.astype(dtype), Y.astype(dtype)


def logistic_params(n_x: int, seed: int = 2, dtype=np.float64) -> dict:
    """Random (not zero) logistic parameters W1 (1, n_x), b1 (1, 1)."""
    rng = np.random.default_rng(seed)
    return {"W1": rng.standard_normal((1, n_x)).astype(dtype), "b1": rng.standard_normal((1, 1)).astype(dtype)}


def flat(grads: dict) -> np.ndarray:
    """A dict of arrays as one vector, in sorted key order."""
    return np.concatenate([np.ravel(grads[k]) for k in sorted(grads)])


def _numeric_grad(loss, params: dict, eps: float = 1e-6) -> dict:
    """Central finite differences of ``loss(params) -> float`` for every parameter entry."""
    out = {}
    for name, p in params.items():
        out[name] = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][idx] += eps
            minus[name][idx] -= eps
            out[name][idx] = (loss(plus) - loss(minus)) / (2 * eps)
    return out


def _chunks(shape: tuple[int, ...], chunk: int) -> tuple[int, ...]:
    # HDF5 rejects a chunk longer than the axis; clip it (only malformed test data is that short).
    return (*tuple(shape[:-1]), max(1, min(chunk, shape[-1])))


def _fill(dtype: np.dtype):
    return np.zeros((), dtype)[()]  # 0, 0.0, '' or b''


def _chunk_ranges(m: int, chunk: int, which) -> list[tuple[int, int]]:
    """Sample ranges of the chunks numbered in ``which``."""
    return [(s, min(s + chunk, m)) for i, s in enumerate(range(0, m, chunk)) if i in which]


def write_zarr(
    path: Path,
    X: np.ndarray,
    Y: np.ndarray,
    chunk: int,
    *,
    x: str = "X",
    y: str = "Y",
    skip: dict[str, set[int]] | None = None,
    write_empty_chunks: bool = True,
) -> Path:
    """A zarr v3 group with arrays ``x``, ``y``; chunks listed in ``skip[name]`` are never written."""
    g = zarr.open_group(path, mode="w")
    for name, data in ((x, np.asarray(X)), (y, np.asarray(Y))):
        arr = g.create_array(
            name,
            shape=data.shape,
            chunks=_chunks(data.shape, chunk),
            dtype=data.dtype,
            compressors=None,
            fill_value=_fill(data.dtype),
            config={"write_empty_chunks": write_empty_chunks},
        )
        _write_except(arr, data, chunk, (skip or {}).get(name, ()))
    return Path(path)


def write_hdf5(
    path: Path,
    X: np.ndarray,
    Y: np.ndarray,
    chunk: int | None,
    *,
    x: str = "X",
    y: str = "Y",
    skip: dict[str, set[int]] | None = None,
) -> Path:
    """An HDF5 file with datasets ``x``, ``y``; ``chunk=None`` stores them contiguous."""
    with h5py.File(path, "w") as f:
        for name, data in ((x, np.asarray(X)), (y, np.asarray(Y))):
            ds = f.create_dataset(
                name, shape=data.shape, dtype=data.dtype, chunks=_chunks(data.shape, chunk) if chunk else None
            )
            _write_except(ds, data, chunk or max(data.shape[-1], 1), (skip or {}).get(name, ()))
    return Path(path)


def _write_except(arr, data: np.ndarray, chunk: int, skip) -> None:
    if data.size == 0:
        return
    if not skip:
        arr[...] = data
        return
    m = data.shape[-1]
    for a, b in _chunk_ranges(m, chunk, set(range(-(-m // chunk))) - set(skip)):
        arr[..., a:b] = data[..., a:b]


@pytest.fixture
def make_xy():
    """``make_xy(n_x=3, m=103, seed=0, dtype=float32) -> (X, Y)``."""
    return random_xy


@pytest.fixture
def zarr_store(tmp_path):
    """``zarr_store(X, Y, chunk, **kw) -> path`` of a fresh zarr group under tmp_path."""
    names = (tmp_path / f"data{i}.zarr" for i in itertools.count())
    return lambda X, Y, chunk, **kw: write_zarr(next(names), X, Y, chunk, **kw)


@pytest.fixture
def hdf5_store(tmp_path):
    """``hdf5_store(X, Y, chunk, **kw) -> path`` of a fresh HDF5 file under tmp_path."""
    names = (tmp_path / f"data{i}.h5" for i in itertools.count())
    return lambda X, Y, chunk, **kw: write_hdf5(next(names), X, Y, chunk, **kw)


def write_rows(path: Path, X: np.ndarray, Y: np.ndarray, chunk: int | None, *, skip: set[int] = frozenset(), **array):
    """A store written samples-first, as most tools write: X.T (m, n_x), and Y.T, (m,) for one row
    of labels, chunked along the samples (HDF5 by suffix; ``chunk=None``: contiguous HDF5). X's
    sample chunks in ``skip`` are never written; ``array``: create_array's or create_dataset's options."""
    Xr, Yr = np.ascontiguousarray(X.T), np.ascontiguousarray(Y[0] if Y.shape[0] == 1 else Y.T)
    m = Xr.shape[0]
    if str(path).endswith(".h5"):
        with h5py.File(path, "w") as f:
            for name, A in (("X", Xr), ("Y", Yr)):
                chunks = (min(chunk, m), *A.shape[1:]) if chunk else None
                ds = f.create_dataset(name, shape=A.shape, dtype=A.dtype, chunks=chunks, **array)
                for a in range(0, m, chunk or m):
                    if name == "Y" or a // (chunk or m) not in skip:
                        ds[a : a + (chunk or m)] = A[a : a + (chunk or m)]
        return Path(path)
    g = zarr.open_group(path, mode="w")
    for name, A in (("X", Xr), ("Y", Yr)):
        arr = g.create_array(
            name, shape=A.shape, chunks=(chunk, *A.shape[1:]), dtype=A.dtype, fill_value=_fill(A.dtype),
            config={"write_empty_chunks": True}, **{"compressors": None, **array},
        )  # fmt: skip
        for a in range(0, m, chunk):
            if name == "Y" or a // chunk not in skip:
                arr[a : a + chunk] = A[a : a + chunk]
    return Path(path)


@pytest.fixture
def rows_store(tmp_path):
    """``rows_store(X, Y, chunk, suffix=".zarr", **kw) -> path``: see ``write_rows``."""
    counter = itertools.count()
    return lambda X, Y, chunk, suffix=".zarr", **kw: write_rows(
        tmp_path / f"rows{next(counter)}{suffix}", X, Y, chunk, **kw
    )


@pytest.fixture
def numeric_grad():
    """``numeric_grad(loss, params)``: central finite differences of ``loss(params) -> float``."""
    return _numeric_grad


# The logistic helpers, for the tests of training, the exact path and compare.
@pytest.fixture
def make_logistic_xy():
    """``make_logistic_xy(m=1000, n_x=4, seed=1, intercept=0.3, dtype=float64) -> (X, Y)``."""
    return logistic_xy


@pytest.fixture
def make_logistic_params():
    """``make_logistic_params(n_x, seed=2, dtype=float64) -> {"W1", "b1"}``."""
    return logistic_params


@pytest.fixture
def flatten():
    """``flatten(grads) -> vector`` in sorted key order."""
    return flat


@pytest.fixture(scope="session")
def task_stores(tmp_path_factory):
    """``task_stores(m, n_x, chunk, seed)``: a generated zarr store for each model, by model name
    (an mlp trains on the logistic store), made once per session for each size."""
    import streamtrain

    made: dict = {}

    def make(m: int, n_x: int, chunk: int, seed: int) -> dict[str, str]:
        key = (m, n_x, chunk, seed)
        if key not in made:
            root = tmp_path_factory.mktemp("tasks")
            paths = {}
            for task in ("logistic", "softmax", "linear"):
                paths[task] = str(root / f"{task}.zarr")
                streamtrain.make_data(paths[task], task=task, m=m, n_x=n_x, chunk=chunk, seed=seed)
            made[key] = {**paths, "mlp": paths["logistic"]}
        return made[key]

    return make
