"""Generated data: reproducible from the seed alone, with an honest Bayes loss."""

import os

import numpy as np
import pytest

import streamtrain
from streamtrain import ConfigError, DataError
from streamtrain.synthetic import BLOCK


def _read_all(path):
    src = streamtrain.open_source(path)
    return src.read(0, src.m), src


def test_same_seed_same_data_whatever_the_format_chunk_and_codec(tmp_path):
    m = BLOCK + 1234  # a block and a bit: the last block is cut
    streamtrain.make_data(tmp_path / "a.zarr", m=m, n_x=3, chunk=1000, seed=4)
    streamtrain.make_data(tmp_path / "b.zarr", m=m, n_x=3, chunk=777, codec="zstd", seed=4)
    streamtrain.make_data(tmp_path / "c.h5", m=m, n_x=3, chunk=5000, format="hdf5", codec="gzip", seed=4)
    (Xa, Ya), _ = _read_all(tmp_path / "a.zarr")
    for other in ("b.zarr", "c.h5"):
        (Xo, Yo), _ = _read_all(tmp_path / other)
        np.testing.assert_array_equal(Xo, Xa)
        np.testing.assert_array_equal(Yo, Ya)
    streamtrain.make_data(tmp_path / "d.zarr", m=m, n_x=3, chunk=1000, seed=5)
    assert not np.array_equal(_read_all(tmp_path / "d.zarr")[0][0], Xa)


def test_attributes_record_the_true_model_and_its_loss_on_the_stored_samples(tmp_path):
    attrs = streamtrain.make_data(tmp_path / "d.zarr", m=5000, n_x=4, chunk=512, seed=1, w_norm=2.0)
    (X, Y), src = _read_all(tmp_path / "d.zarr")
    assert src.attrs == attrs
    assert X.shape == (4, 5000) and X.dtype == np.float32 and Y.shape == (1, 5000) and Y.dtype == np.uint8
    w = np.array(attrs["w_true"]).reshape(1, 4)
    assert np.linalg.norm(w) == pytest.approx(2.0)
    Z = w @ X.astype(np.float64) + attrs["b_true"]
    A = 1 / (1 + np.exp(-Z))
    bayes = -np.mean(Y * np.log(A) + (1 - Y) * np.log(1 - A))
    assert attrs["bayes_loss"] == pytest.approx(bayes, rel=1e-5)
    # The labels really follow the model: the true model is much better than a coin.
    assert attrs["bayes_loss"] < 0.9 * np.log(2)
    assert 0.3 < Y.mean() < 0.7


def test_hdf5_attributes_are_read_back(tmp_path):
    attrs = streamtrain.make_data(tmp_path / "d.h5", m=100, n_x=2, format="hdf5", seed=0)
    assert streamtrain.open_source(tmp_path / "d.h5").attrs == attrs


def test_existing_output_needs_overwrite(tmp_path):
    streamtrain.make_data(tmp_path / "d.zarr", m=100, n_x=2, seed=0)
    with pytest.raises(DataError, match="already exists"):
        streamtrain.make_data(tmp_path / "d.zarr", m=100, n_x=2, seed=1)
    streamtrain.make_data(tmp_path / "d.zarr", m=50, n_x=2, seed=1, overwrite=True)
    assert streamtrain.open_source(tmp_path / "d.zarr").m == 50
    assert os.listdir(tmp_path) == ["d.zarr"]  # no partial or old copies left behind


@pytest.mark.parametrize("options, message", [
    (dict(m=0), "m must be"),
    (dict(n_x=-1), "n_x must be"),
    (dict(chunk=0), "chunk must be"),
    (dict(format="csv"), "format"),
    (dict(codec="lz4"), "codec"),
    (dict(format="hdf5", codec="zstd"), "zstd is not built into HDF5"),
    (dict(seed=-1), "seed"),
])
def test_bad_options(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        streamtrain.make_data(tmp_path / "d", **{"m": 10, "n_x": 2, **options})
    assert os.listdir(tmp_path) == []
