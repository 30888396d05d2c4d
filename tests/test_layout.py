"""Stores written samples-first, read with ``layout="rows"`` (streamtrain.sources._layout): the same
chunks, batches, models and exact passes as the column store holding the same samples."""

from __future__ import annotations

import re

import numpy as np
import pytest
from zarr.codecs import ZstdCodec

import streamtrain
from streamtrain import ConfigError, DataError, DataWarning, open_source
from streamtrain.cli import main
from streamtrain.sources import _hdf5

N_X, M, C = 4, 230, 50  # 5 chunks, the last of 30 samples


def data(k: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_X, M)).astype("float32")
    Y = (rng.random((k, M)) < 0.4).astype("float32") if k == 1 else rng.standard_normal((k, M)).astype("float32")
    return X, Y


LAYOUTS = [
    pytest.param(".zarr", {}, id="zarr raw"),
    pytest.param(".zarr", {"compressors": ZstdCodec()}, id="zarr zstd"),
    pytest.param(".h5", {}, id="hdf5 chunked"),
    pytest.param(".h5", {"compression": "gzip"}, id="hdf5 gzip"),
]


@pytest.mark.parametrize("suffix, options", LAYOUTS)
@pytest.mark.parametrize("k", [1, 3])
def test_every_chunk_reads_as_the_column_store_holds_it(rows_store, suffix, options, k):
    X, Y = data(k)
    with open_source(rows_store(X, Y, C, suffix=suffix, **options), layout="rows") as source:
        assert (source.n_x, source.m, source.k, source.layout) == (N_X, M, k, "rows")
        assert source.chunk_bounds == ((0, 50), (50, 100), (100, 150), (150, 200), (200, 230))
        assert source.read_path.endswith("library")  # rows are transposed by the library path
        for a, b in source.chunk_bounds:
            Xc, Yc = source.read(a, b)
            assert Xc.flags.c_contiguous and Xc.dtype == X.dtype
            np.testing.assert_array_equal(Xc, X[:, a:b])
            np.testing.assert_array_equal(Yc, Y[:, a:b])
        assert source.fingerprint()["layout"] == "rows"


def test_a_contiguous_hdf5_dataset_is_read_in_slabs(rows_store, monkeypatch):
    monkeypatch.setattr(_hdf5, "default_chunk_size", lambda n_x, itemsize: 64)
    X, Y = data()
    with open_source(rows_store(X, Y, None, suffix=".h5"), layout="rows") as source:
        assert source.chunk_bounds[:2] == ((0, 64), (64, 128))
        np.testing.assert_array_equal(np.hstack([source.read(a, b)[0] for a, b in source.chunk_bounds]), X)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
@pytest.mark.parametrize("shuffle", ["none", "buffer"])
def test_training_and_the_exact_pass_equal_the_column_stores(rows_store, zarr_store, suffix, shuffle):
    X, Y = data(seed=3)
    options = dict(epochs=2, batch_size=16, lr=0.3, shuffle=shuffle, seed=5, progress=False)
    with open_source(rows_store(X, Y, C, suffix=suffix), layout="rows") as rows:
        by_rows = streamtrain.fit(rows, eval_exact_every=1, **options)
        exact_rows = streamtrain.evaluate(rows, by_rows)
    with open_source(zarr_store(X, Y, C)) as columns:
        by_columns = streamtrain.fit(columns, eval_exact_every=1, **options)
        exact_columns = streamtrain.evaluate(columns, by_columns)
    for name in by_columns.params:
        np.testing.assert_array_equal(by_rows.params[name], by_columns.params[name])
    assert [r.exact_loss for r in by_rows.history] == [r.exact_loss for r in by_columns.history]
    assert exact_rows == exact_columns


def test_an_x_chunk_never_written_is_an_error_naming_its_samples_and_a_y_one_is_filled(rows_store):
    X, Y = data()
    with pytest.raises(DataError, match=re.escape("/X: chunk for samples 100..150 is missing")):
        open_source(rows_store(X, Y, C, skip={2}), layout="rows")
    with pytest.warns(DataWarning, match=re.escape("1 chunk was never written (samples 100..150)")):
        source = open_source(rows_store(X, Y, C, skip={2}, suffix=".h5"), layout="rows", missing_chunks="fill")
    assert not source.read(100, 150)[0].any()


def test_each_layout_opened_as_the_other_names_the_flag(rows_store, zarr_store):
    X, Y = data()
    with pytest.raises(DataError, match=re.escape("samples as rows: pass --layout rows, layout='rows'")):
        open_source(zarr_store(X.T.copy(), Y, C))
    with pytest.raises(DataError, match=re.escape("samples as columns: pass --layout columns, layout='columns'")):
        open_source(zarr_store(X, np.ascontiguousarray(Y.T), C), layout="rows")
    with pytest.raises(ConfigError, match="layout"):
        open_source(rows_store(X, Y, C), layout="samples")


def test_a_three_dimensional_array_is_refused(tmp_path):
    import zarr

    g = zarr.open_group(tmp_path / "d.zarr", mode="w")
    g.create_array("X", data=np.zeros((M, N_X, 2), "float32"))
    g.create_array("Y", data=np.zeros(M, "float32"))
    with pytest.raises(DataError, match=re.escape("X: expected a 1-D or 2-D array (samples, ...), got shape")):
        open_source(tmp_path / "d.zarr", layout="rows")


def test_fit_and_evaluate_on_the_command_line(rows_store, tmp_path, capsys):
    X, Y = data(seed=4)
    store = str(rows_store(X, Y, C))
    out = str(tmp_path / "m.npz")
    assert main(["fit", store, "--layout", "rows", "--batch-size", "16", "--epochs", "1", "--out", out]) == 0
    assert main(["evaluate", out, store, "--layout", "rows", "--json"]) == 0
    assert main(["fit", store, "--batch-size", "16", "--out", out]) == 1
    assert "pass --layout rows" in capsys.readouterr().err
