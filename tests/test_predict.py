"""``streamtrain predict``: a model's predictions for every sample, streamed into a store (streamtrain.predict)."""

from __future__ import annotations

import os
import re

import h5py
import numpy as np
import pytest
import zarr

import streamtrain
from streamtrain import ArraySource, DataError
from streamtrain.cli import main

M, N_X, C = 900, 4, 128


def task(name: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_X, M)).astype("float32")
    Y = {
        "logistic": lambda: (X[:1] + X[1:2] > 0).astype("float32"),
        "softmax": lambda: np.argmax(rng.standard_normal((3, N_X)) @ X, axis=0)[None].astype("float32"),
        "linear": lambda: np.vstack([X[0] - X[1], 2 * X[2]]),
        "mlp": lambda: (X[:1] * X[1:2] > 0).astype("float32"),
    }[name]()
    return X, Y


def read_p(path) -> np.ndarray:
    if str(path).endswith(".h5"):
        with h5py.File(path) as f:
            return f["P"][:]
    return zarr.open_group(path, mode="r")["P"][:]


@pytest.mark.parametrize("name", ["logistic", "softmax", "linear", "mlp"])
@pytest.mark.parametrize("proba", [False, True])
@pytest.mark.parametrize("out", ["p.zarr", "p.h5"])
def test_predictions_equal_the_in_memory_ones(tmp_path, zarr_store, name, proba, out):
    X, Y = task(name)
    options = {"hidden": [5]} if name == "mlp" else {}
    result = streamtrain.fit(ArraySource(X, Y), model=name, epochs=2, batch_size=32, progress=False, **options)
    store = zarr_store(X, Y, C)
    r = streamtrain.predict(result, store, tmp_path / out, proba=proba)
    P = read_p(tmp_path / out)
    want = result.model.predict_proba(result.params, X) if proba else result.model.predict(result.params, X)
    np.testing.assert_array_equal(P, want.astype(P.dtype))
    assert (r["m"], r["rows"], r["chunk"]) == (M, want.shape[0], C)
    assert P.dtype == (np.float32 if proba or name == "linear" else np.uint8)


def test_samples_without_labels_and_samples_first_stores(tmp_path, rows_store):
    X, Y = task("logistic")
    result = streamtrain.fit(ArraySource(X, Y), epochs=1, batch_size=32, progress=False)
    g = zarr.open_group(tmp_path / "x-only.zarr", mode="w")
    g.create_array("features", data=X, chunks=(N_X, C))
    streamtrain.predict(result, tmp_path / "x-only.zarr", tmp_path / "a.zarr", x="features")
    streamtrain.predict(result, rows_store(X, Y, C), tmp_path / "b.zarr", layout="rows")
    want = result.model.predict(result.params, X)
    np.testing.assert_array_equal(read_p(tmp_path / "a.zarr"), want)
    np.testing.assert_array_equal(read_p(tmp_path / "b.zarr"), want)
    with pytest.raises(DataError, match=re.escape("opened without labels (y=None); training, evaluate and compare")):
        streamtrain.fit(streamtrain.open_source(tmp_path / "x-only.zarr", x="features", y=None), progress=False)


def test_what_is_wrong_is_named_and_nothing_is_written(tmp_path, zarr_store):
    X, Y = task("logistic")
    result = streamtrain.fit(ArraySource(X, Y), epochs=1, batch_size=32, progress=False)
    X[2, 700] = np.nan
    with pytest.raises(DataError, match=re.escape("X: sample 700 (chunk 5) holds NaN in row 2")):
        streamtrain.predict(result, zarr_store(X, Y, C), tmp_path / "p.zarr")
    with pytest.raises(DataError, match=re.escape("the model takes 4 features per sample, the data has 3")):
        streamtrain.predict(result, zarr_store(X[:3], Y, C), tmp_path / "p.zarr")
    assert not any(name.startswith("p.zarr") for name in os.listdir(tmp_path))


def test_the_command_line(tmp_path, zarr_store, capsys):
    X, Y = task("softmax")
    store = str(zarr_store(X, Y, C))
    model = str(tmp_path / "m.npz")
    assert main(["fit", store, "--model", "softmax", "--epochs", "1", "--batch-size", "32", "--out", model]) == 0
    capsys.readouterr()
    out = str(tmp_path / "p.h5")
    assert main(["predict", model, store, "--out", out, "--proba", "--codec", "gzip"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (hdf5): probabilities P (3, 900) float32")
    assert main(["predict", model, store, "--out", out]) == 1
    assert "already exists (pass overwrite=True / --overwrite" in capsys.readouterr().err
    assert main(["predict", model, store, "--out", out, "--overwrite"]) == 0
    np.testing.assert_array_equal(read_p(out), streamtrain.load(model).predict(X))
