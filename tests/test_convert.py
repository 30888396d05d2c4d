"""``streamtrain convert``: every input kind to a column store, exactly and atomically (streamtrain.convert)."""

from __future__ import annotations

import importlib
import os
import re

import numpy as np
import pytest

import streamtrain
from streamtrain import ConfigError, DataError, open_source
from streamtrain.cli import main
from streamtrain.convert import convert

M, N_X = 700, 5
CONVERT = importlib.import_module("streamtrain.convert")  # the module (streamtrain.convert is the function)


@pytest.fixture
def samples():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((M, N_X))  # samples as rows, as tools write them
    y = rng.integers(0, 3, M).astype("uint8")
    return X, y


def read_back(path, **kw):
    with open_source(path, **kw) as source:
        X = np.hstack([source.read(a, b)[0] for a, b in source.chunk_bounds])
        Y = np.hstack([source.read(a, b)[1] for a, b in source.chunk_bounds])
        return X, Y, source


@pytest.mark.parametrize("dst", ["out.zarr", "out.h5"])
def test_a_npy_with_a_label_column_round_trips(tmp_path, samples, dst):
    X, y = samples
    np.save(tmp_path / "a.npy", np.hstack([X[:, :2], y[:, None], X[:, 2:]]))
    r = convert(tmp_path / "a.npy", tmp_path / dst, layout="rows", label_column="2", chunk=128)
    assert (r["m"], r["n_x"], r["k"], r["chunk"]) == (M, N_X, 1, 128)
    Xs, Ys, source = read_back(tmp_path / dst)
    np.testing.assert_array_equal(Xs, X.T.astype("float32"))
    np.testing.assert_array_equal(Ys, y[None].astype("float32"))
    assert source.chunk_bounds[1] == (128, 256) and Xs.dtype == np.float32


def test_a_npy_in_columns_with_a_labels_file_and_float64(tmp_path, samples):
    X, y = samples
    np.save(tmp_path / "x.npy", X.T.copy())
    np.save(tmp_path / "y.npy", y)
    convert(tmp_path / "x.npy", tmp_path / "o.zarr", labels=str(tmp_path / "y.npy"), dtype="float64", codec="zstd")
    Xs, Ys, source = read_back(tmp_path / "o.zarr")
    np.testing.assert_array_equal(Xs, X.T)
    np.testing.assert_array_equal(Ys, y[None])
    assert Ys.dtype == np.uint8 and source.codec == "ZstdCodec"


def test_a_npz_keeps_its_labels_dtype(tmp_path, samples):
    X, y = samples
    np.savez(tmp_path / "d.npz", features=X, target=y)
    convert(tmp_path / "d.npz", tmp_path / "o.h5", x="features", y="target", layout="rows", codec="gzip")
    Xs, Ys, source = read_back(tmp_path / "o.h5")
    np.testing.assert_array_equal(Xs, X.T.astype("float32"))
    assert Ys.dtype == np.uint8 and source.codec == "gzip"


@pytest.mark.parametrize("column", ["label", "3", "-3"])
def test_a_csv_with_a_header_streams_in_blocks(tmp_path, samples, monkeypatch, column):
    monkeypatch.setattr(CONVERT, "BLOCK", 64)  # many blocks
    X, y = samples
    lines = ["a,b,c,label,d,e"] + [
        ",".join(f"{v:.17g}" for v in (*row[:3], label, *row[3:])) for row, label in zip(X, y)
    ]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n\n")  # a trailing empty line
    convert(tmp_path / "d.csv", tmp_path / "o.zarr", label_column=column, chunk=100)
    Xs, Ys, _ = read_back(tmp_path / "o.zarr")
    np.testing.assert_array_equal(Xs, X.T.astype("float32"))
    np.testing.assert_array_equal(Ys, y[None].astype("float32"))


def test_a_csv_without_a_header_and_another_delimiter(tmp_path):
    (tmp_path / "d.csv").write_text("1;2;0\n3;4;1\n5;6;1\n")
    convert(tmp_path / "d.csv", tmp_path / "o.zarr", label_column="-1", delimiter=";")
    Xs, Ys, _ = read_back(tmp_path / "o.zarr")
    np.testing.assert_array_equal(Xs, [[1, 3, 5], [2, 4, 6]])
    np.testing.assert_array_equal(Ys, [[0, 1, 1]])


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_samples_first_store_becomes_a_column_store(rows_store, tmp_path, samples, suffix):
    X, y = samples
    src = rows_store(X.T.astype("float32"), y[None], 64, suffix=suffix)
    convert(src, tmp_path / "o.zarr", layout="rows", chunk=256)
    Xs, Ys, source = read_back(tmp_path / "o.zarr")
    np.testing.assert_array_equal(Xs, X.T.astype("float32"))
    np.testing.assert_array_equal(Ys, y[None])
    assert source.read_path == "direct" and source.chunk_bounds[0] == (0, 256)


def test_a_failure_midway_leaves_no_store_and_keeps_the_old_one(tmp_path, samples, monkeypatch):
    monkeypatch.setattr(CONVERT, "BLOCK", 64)
    X, y = samples
    good = [",".join(map(str, (*row, label))) for row, label in zip(X, y)]
    (tmp_path / "bad.csv").write_text("\n".join([*good[:500], "1,2,x,4,5,6", *good[500:]]) + "\n")
    with pytest.raises(DataError, match=re.escape("bad.csv: lines 449..512: could not convert")):
        convert(tmp_path / "bad.csv", tmp_path / "o.zarr", label_column="-1", chunk=64)
    assert sorted(os.listdir(tmp_path)) == ["bad.csv"]  # no store, no partial one
    (tmp_path / "good.csv").write_text("\n".join(good) + "\n")
    convert(tmp_path / "good.csv", tmp_path / "o.zarr", label_column="-1")
    with pytest.raises(DataError):
        convert(tmp_path / "bad.csv", tmp_path / "o.zarr", label_column="-1", overwrite=True)
    np.testing.assert_array_equal(read_back(tmp_path / "o.zarr")[0], X.T.astype("float32"))  # the old store
    assert sorted(os.listdir(tmp_path)) == ["bad.csv", "good.csv", "o.zarr"]


@pytest.mark.parametrize(
    "make, options, error, says",
    [
        ("npy", {"layout": "rows"}, ConfigError, "where are the labels? Name them: --label-column J"),
        ("npy", {"layout": "rows", "label_column": "7"}, ConfigError, "column 7 is out of range: the samples have 6"),
        ("csv", {}, ConfigError, "name the column of labels: --label-column J"),
        ("csv", {"label_column": "nope"}, ConfigError, "no column 'nope' (the header: a, b, c, d, e, label)"),
        ("labels", {}, DataError, "700 samples but labels shaped (1, 699)"),
        ("rows", {}, DataError, "(or the other --layout)"),
    ],
)
def test_what_is_wrong_is_named(tmp_path, samples, make, options, error, says):
    X, y = samples
    src = tmp_path / ("d.csv" if make == "csv" else "d.npy")
    if make == "csv":
        src.write_text("a,b,c,d,e,label\n" + "\n".join(",".join(map(str, (*r, l))) for r, l in zip(X, y)) + "\n")
    elif make == "labels":
        np.save(src, X.T.copy())
        np.save(tmp_path / "y.npy", y[:-1])
        options = {"labels": str(tmp_path / "y.npy")}
    elif make == "rows":  # samples as rows, converted as columns
        np.save(src, X)
        np.save(tmp_path / "y.npy", y[None])
        options = {"labels": str(tmp_path / "y.npy"), "layout": "rows"}
    else:
        np.save(src, np.hstack([X, y[:, None]]))
    with pytest.raises(error, match=re.escape(says)):
        convert(src, tmp_path / "o.zarr", **options)
    assert not (tmp_path / "o.zarr").exists()


def test_the_command_line(tmp_path, samples, capsys):
    X, y = samples
    np.save(tmp_path / "a.npy", np.hstack([X, y[:, None]]))
    argv = ["convert", str(tmp_path / "a.npy"), str(tmp_path / "o.h5"), "--layout", "rows", "--label-column", "-1"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'o.h5'} (hdf5, codec none, chunks of 700)")
    assert main(argv) == 1  # exists
    assert "already exists (pass overwrite=True / --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--chunk", "100"]) == 0
    assert main(["fit", str(tmp_path / "o.h5"), "--model", "softmax", "--epochs", "1", "--batch-size", "50"]) == 0


def sorted_store(tmp_path, zarr_store, m: int = 4000):
    """A generated logistic store, and the same samples sorted by label: (X, Y, random, sorted)."""
    random = tmp_path / "random.zarr"
    streamtrain.make_data(random, m=m, n_x=8, chunk=250, progress=False)
    with open_source(random) as source:
        X, Y = source.read(0, m)
    order = np.argsort(Y[0], kind="stable")
    return X, Y, random, zarr_store(X[:, order], Y[:, order], 250)


@pytest.mark.parametrize("buckets", [1, 7])
def test_shuffle_writes_a_permutation_of_the_samples_in_bounded_buckets(tmp_path, zarr_store, monkeypatch, buckets):
    X, Y, _, ordered = sorted_store(tmp_path, zarr_store)
    monkeypatch.setattr(CONVERT, "SHUFFLE_BYTES", -(-Y.shape[1] * (8 * 4 + 1) // buckets))
    monkeypatch.setattr(CONVERT, "BLOCK", 300)
    files = sorted(os.listdir(tmp_path))
    convert(ordered, tmp_path / "s.zarr", shuffle=True, seed=3, chunk=250)
    Xs, Ys, _ = read_back(tmp_path / "s.zarr")
    samples = lambda A, B: sorted(map(tuple, np.vstack([A, B]).T.tolist()))  # noqa: E731
    assert samples(Xs, Ys) == samples(X, Y)  # the same samples, each once
    assert not np.array_equal(Xs, X)
    assert sorted(os.listdir(tmp_path)) == sorted([*files, "s.zarr"])  # the buckets are gone


def test_the_same_seed_gives_the_same_order_and_another_seed_another(tmp_path, zarr_store):
    ordered = sorted_store(tmp_path, zarr_store, m=1000)[3]
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        convert(ordered, tmp_path / f"{name}.zarr", shuffle=True, seed=seed)
    a, b, c = (read_back(tmp_path / f"{n}.zarr")[0] for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_a_sorted_store_converted_with_shuffle_trains_as_the_random_one(tmp_path, zarr_store):
    """Within 0.01 of the random-order store's loss; the sorted store itself, read in order, is not."""
    _, _, random, ordered = sorted_store(tmp_path, zarr_store, m=8000)
    convert(ordered, tmp_path / "shuffled.zarr", shuffle=True, chunk=250)
    options = dict(epochs=3, batch_size=50, lr=0.1, shuffle="none", progress=False)
    loss = {}
    for name, store in (("random", random), ("shuffled", tmp_path / "shuffled.zarr"), ("sorted", ordered)):
        loss[name] = streamtrain.evaluate(store, streamtrain.fit(store, **options))["loss"]
    assert abs(loss["shuffled"] - loss["random"]) < 0.01 < loss["sorted"] - loss["random"]
    report = streamtrain.inspect(tmp_path / "shuffled.zarr")
    assert not any(w.startswith("labels are sorted") for w in report["warnings"])


def test_a_parquet_file_round_trips_by_row_group_batches(tmp_path, samples, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    monkeypatch.setattr(CONVERT, "BLOCK", 100)
    X, y = samples
    columns = {f"f{i}": X[:, i] for i in range(N_X)} | {"target": y.astype("int16")}
    pq.write_table(pa.table(columns), tmp_path / "d.parquet", row_group_size=250)
    convert(tmp_path / "d.parquet", tmp_path / "o.zarr", label_column="target", chunk=128)
    Xs, Ys, _ = read_back(tmp_path / "o.zarr")
    np.testing.assert_array_equal(Xs, X.T.astype("float32"))
    np.testing.assert_array_equal(Ys, y[None])
    assert Ys.dtype == np.int16
    with pytest.raises(
        ConfigError, match=re.escape("name the column of labels: --label-column NAME (the columns: f0,")
    ):
        convert(tmp_path / "d.parquet", tmp_path / "p.zarr")
    pq.write_table(pa.table({"a": [1.0, 2.0], "name": ["x", "y"], "t": [0, 1]}), tmp_path / "s.parquet")
    with pytest.raises(DataError, match=re.escape("column 'name' is string, not numeric")):
        convert(tmp_path / "s.parquet", tmp_path / "p.zarr", label_column="t")


def _weights_back(path):
    with open_source(path, x="W", y=None) as w:
        return np.hstack([w.read(a, b)[0] for a, b in w.chunk_bounds])


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_weights_column_of_a_csv_is_written_as_w_and_shuffled_with_its_sample(tmp_path, samples, shuffle):
    X, y = samples
    w = np.arange(M) + 0.5  # each sample's weight names it
    lines = ["a,w,b,c,label,d,e"] + [
        ",".join(f"{v:.17g}" for v in (row[0], wi, *row[1:3], label, *row[3:])) for row, wi, label in zip(X, w, y)
    ]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    r = convert(tmp_path / "d.csv", tmp_path / "o.zarr", label_column="label", weights="w", chunk=100, shuffle=shuffle)
    assert (r["n_x"], r["weights"]) == (N_X, "W")
    Xs, Ys, _ = read_back(tmp_path / "o.zarr")
    Ws = _weights_back(tmp_path / "o.zarr")
    order = (Ws[0] - 0.5).astype(int)  # where each written sample came from
    assert sorted(order) == list(range(M)) and (order != np.arange(M)).any() == shuffle
    np.testing.assert_array_equal(Xs, X[order].T.astype("float32"))
    np.testing.assert_array_equal(Ys, y[None, order].astype("float32"))
    result = streamtrain.fit(tmp_path / "o.zarr", model="softmax", weights="W", batch_size=50, epochs=1)
    assert result.config.weights == "W"


def test_weights_from_a_npy_column_and_from_a_stores_array(tmp_path, samples, rows_store):
    X, y = samples
    w = np.random.default_rng(1).random(M)
    np.save(tmp_path / "a.npy", np.hstack([w[:, None], X, y[:, None]]))  # weights first: moved to the end
    convert(tmp_path / "a.npy", tmp_path / "o.zarr", layout="rows", label_column="-1", weights="0", chunk=128)
    Xs, _, _ = read_back(tmp_path / "o.zarr")
    np.testing.assert_array_equal(Xs, X.T.astype("float32"))
    np.testing.assert_array_equal(_weights_back(tmp_path / "o.zarr"), w[None].astype("float32"))
    src = rows_store(X.T.astype("float32"), y[None], 64, suffix=".h5")
    import h5py

    with h5py.File(src, "a") as f:
        f.create_dataset("sw", data=w, chunks=(64,))
    convert(src, tmp_path / "o2.zarr", layout="rows", weights="sw", chunk=256)
    np.testing.assert_array_equal(_weights_back(tmp_path / "o2.zarr"), w[None].astype("float32"))
    with pytest.raises(ConfigError, match="cannot hold both the labels and the weights"):
        convert(tmp_path / "a.npy", tmp_path / "o3.zarr", layout="rows", label_column="-1", weights="-1")
