"""Generated data: reproducible from the seed alone, with an honest Bayes loss."""

import os

import numpy as np
import pytest

import streamtrain
from streamtrain import ConfigError, DataError
from streamtrain.models import OUTPUTS, output_of
from streamtrain.synthetic import BLOCK, TASKS


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


@pytest.mark.parametrize(
    "name, fmt", [("d.h5", "hdf5"), ("d.HDF5", "hdf5"), ("d.hdf", "hdf5"), ("d.zarr", "zarr"), ("d", "zarr")]
)
def test_the_format_comes_from_the_suffix_as_on_the_command_line(tmp_path, name, fmt):
    streamtrain.make_data(tmp_path / name, m=100, n_x=2, seed=0)
    assert streamtrain.open_source(tmp_path / name).format == fmt
    assert os.path.isdir(tmp_path / name) == (fmt == "zarr")


def test_a_suffix_that_names_hdf5_refuses_zstd(tmp_path):
    with pytest.raises(ConfigError, match="zstd is not built into HDF5"):
        streamtrain.make_data(tmp_path / "d.h5", m=100, n_x=2, codec="zstd")
    assert os.listdir(tmp_path) == []


def test_one_task_per_one_layer_model_under_its_name():
    assert set(TASKS) == {o.model for o in OUTPUTS.values()}
    assert [output_of(task) for task in TASKS] == list(OUTPUTS)


def test_existing_output_needs_overwrite(tmp_path):
    streamtrain.make_data(tmp_path / "d.zarr", m=100, n_x=2, seed=0)
    with pytest.raises(DataError, match="already exists"):
        streamtrain.make_data(tmp_path / "d.zarr", m=100, n_x=2, seed=1)
    streamtrain.make_data(tmp_path / "d.zarr", m=50, n_x=2, seed=1, overwrite=True)
    assert streamtrain.open_source(tmp_path / "d.zarr").m == 50
    assert os.listdir(tmp_path) == ["d.zarr"]  # no partial or old copies left behind


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(m=0), "m must be"),
        (dict(n_x=-1), "n_x must be"),
        (dict(chunk=0), "chunk must be"),
        (dict(format="csv"), "format"),
        (dict(codec="lz4"), "codec"),
        (dict(format="hdf5", codec="zstd"), "zstd is not built into HDF5"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_options(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        streamtrain.make_data(tmp_path / "d", **{"m": 10, "n_x": 2, **options})
    assert os.listdir(tmp_path) == []


# -- softmax and linear ----------------------------------------------------------------------


def _read_any(path):
    """X, Y and the attributes, read straight from the arrays (no label rule applies)."""
    with streamtrain.open_source(path) as src:
        X, Y = (np.asarray(a[:]) for a in src.arrays())
        return X, Y, src.attrs


TASK_OPTIONS = [dict(task="softmax", classes=4), dict(task="linear", outputs=3, noise=0.5)]


@pytest.mark.parametrize("options", TASK_OPTIONS, ids=["softmax", "linear"])
def test_every_task_gives_the_same_data_whatever_the_format_chunk_and_codec(tmp_path, options):
    m = BLOCK + 1234
    a = streamtrain.make_data(tmp_path / "a.zarr", m=m, n_x=3, chunk=1000, seed=4, **options)
    streamtrain.make_data(tmp_path / "b.zarr", m=m, n_x=3, chunk=777, codec="zstd", seed=4, **options)
    streamtrain.make_data(tmp_path / "c.h5", m=m, n_x=3, chunk=5000, format="hdf5", codec="gzip", seed=4, **options)
    Xa, Ya, attrs = _read_any(tmp_path / "a.zarr")
    assert attrs == a
    for other in ("b.zarr", "c.h5"):
        Xo, Yo, attrs_o = _read_any(tmp_path / other)
        np.testing.assert_array_equal(Xo, Xa)
        np.testing.assert_array_equal(Yo, Ya)
        assert Yo.dtype == Ya.dtype and attrs_o == a
    # X depends on the seed only, not on the task; the labels or targets on the seed too.
    streamtrain.make_data(tmp_path / "l.zarr", m=m, n_x=3, seed=4)
    np.testing.assert_array_equal(_read_any(tmp_path / "l.zarr")[0], Xa)
    streamtrain.make_data(tmp_path / "d.zarr", m=m, n_x=3, seed=5, **options)
    assert not np.array_equal(_read_any(tmp_path / "d.zarr")[1], Ya)


def test_softmax_labels_follow_the_true_model(tmp_path):
    m, n_x, classes = 20_000, 4, 5
    attrs = streamtrain.make_data(
        tmp_path / "s.zarr", m=m, n_x=n_x, task="softmax", classes=classes, chunk=4096, seed=2, w_norm=3.0
    )
    X, Y, _ = _read_any(tmp_path / "s.zarr")
    assert X.shape == (n_x, m) and X.dtype == np.float32 and Y.shape == (1, m) and Y.dtype == np.uint8
    assert attrs["task"] == "softmax" and attrs["classes"] == classes
    W, b = np.array(attrs["w_true"]), np.array(attrs["b_true"])[:, None]
    assert W.shape == (classes, n_x) and b.shape == (classes, 1)
    assert np.linalg.norm(W) == pytest.approx(3.0)
    np.testing.assert_allclose(np.linalg.norm(W, axis=1), 3.0 / np.sqrt(classes))
    counts = np.bincount(Y[0], minlength=classes)
    assert len(counts) == classes and counts.min() > 0  # labels 0..classes-1, each one used
    # Bayes loss: the true model's cross-entropy on the stored samples, from the stored float32 X.
    Z = W @ X.astype(np.float64) + b
    Z -= Z.max(axis=0)
    log_p = Z - np.log(np.exp(Z).sum(axis=0))
    assert attrs["bayes_loss"] == pytest.approx(-log_p[Y[0], np.arange(m)].mean(), rel=1e-6)
    assert attrs["bayes_loss"] < 0.9 * np.log(classes)  # much better than a uniform guess
    # Each class turns up about as often as the true model expects (4 standard deviations).
    expected = np.exp(log_p).mean(axis=1)
    assert np.all(np.abs(counts / m - expected) < 4 * np.sqrt(expected * (1 - expected) / m))


@pytest.mark.parametrize("classes", [2, 255])
def test_softmax_class_count_limits(tmp_path, classes):
    attrs = streamtrain.make_data(tmp_path / "s.zarr", m=3000, n_x=2, task="softmax", classes=classes)
    _, Y, _ = _read_any(tmp_path / "s.zarr")
    assert Y.dtype == np.uint8 and Y.max() < classes and len(attrs["w_true"]) == classes


def test_linear_targets_are_the_true_model_plus_noise(tmp_path):
    m, n_x, outputs, noise = 3000, 4, 2, 0.5
    attrs = streamtrain.make_data(
        tmp_path / "r.h5", m=m, n_x=n_x, task="linear", outputs=outputs, noise=noise, format="hdf5", chunk=700, seed=3
    )
    X, Y, _ = _read_any(tmp_path / "r.h5")
    assert X.shape == (n_x, m) and Y.shape == (outputs, m) and Y.dtype == np.float32
    assert (attrs["task"], attrs["outputs"], attrs["noise"]) == ("linear", outputs, noise)
    W, b = np.array(attrs["w_true"]), np.array(attrs["b_true"])[:, None]
    assert W.shape == (outputs, n_x) and b.shape == (outputs, 1)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    # Bayes loss: mean 0.5 ||y - W x - b||^2 of the true model on the stored samples.
    bayes = 0.5 * ((Y64 - W @ X64 - b) ** 2).sum(axis=0).mean()
    assert attrs["bayes_loss"] == pytest.approx(bayes, rel=1e-6)
    assert attrs["bayes_loss"] == pytest.approx(0.5 * outputs * noise**2, rel=0.1)
    # Least squares on the stored data finds the true model, and can only do a little better.
    A = np.vstack([X64, np.ones((1, m))]).T  # (m, n_x + 1)
    coef, *_ = np.linalg.lstsq(A, Y64.T, rcond=None)
    np.testing.assert_allclose(coef[:n_x].T, W, atol=0.05)
    np.testing.assert_allclose(coef[n_x:].T, b, atol=0.05)
    fit_loss = 0.5 * ((A @ coef - Y64.T) ** 2).sum(axis=1).mean()
    assert 0.99 * attrs["bayes_loss"] < fit_loss <= attrs["bayes_loss"]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(task="poisson"), "unknown task 'poisson'; choose from logistic, softmax, linear"),
        (dict(task="softmax", classes=1), "classes must be"),
        (dict(task="softmax", classes=256), "classes must be"),
        (dict(task="softmax", classes=2.5), "classes must be"),
        (dict(task="linear", outputs=0), "outputs must be"),
        (dict(task="linear", noise=0.0), "noise must be"),
        (dict(task="linear", noise=-1.0), "noise must be"),
        (dict(task="linear", noise=float("nan")), "noise must be"),
    ],
)
def test_bad_task_options(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message) as e:
        streamtrain.make_data(tmp_path / "d", **{"m": 10, "n_x": 2, **options})
    assert "\n" not in str(e.value)
    assert os.listdir(tmp_path) == []


def test_options_of_another_task_are_ignored(tmp_path):
    attrs = streamtrain.make_data(tmp_path / "a.zarr", m=10, n_x=2, classes=1, outputs=0, noise=-1.0)
    assert not {"classes", "outputs", "noise"} & attrs.keys()
    attrs = streamtrain.make_data(tmp_path / "b.zarr", m=10, n_x=2, task="softmax", outputs=0, noise=0.0)
    assert attrs["classes"] == 3 and not {"outputs", "noise"} & attrs.keys()
    attrs = streamtrain.make_data(tmp_path / "c.zarr", m=10, n_x=2, task="linear", classes=1)
    assert (attrs["outputs"], attrs["noise"]) == (1, 1.0) and "classes" not in attrs
