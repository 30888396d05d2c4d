"""Generated data: reproducible from the seed alone, with an honest Bayes loss."""

import contextlib
import glob
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import streamtrain
from streamtrain import ConfigError, DataError, outputs
from streamtrain._signals import signals_deferred
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


class Tripwire:
    """Interrupts the ``n``-th operation of the main thread on an entry of ``directory`` (a store,
    not a file inside one) as Ctrl-C would: before a rename or exchange, halfway through a deletion."""

    def __init__(self, monkeypatch, directory, n):
        self.directory, self.n, self.calls = str(directory), n, 0
        for owner, name in [
            (os, "rename"),
            (os, "replace"),
            (os, "unlink"),
            (shutil, "rmtree"),
            (outputs, "_exchange"),
        ]:
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name), name))

    def _wrap(self, real, name):
        def call(path, *args, **kwargs):
            # Ctrl-C interrupts the main thread only (zarr works in its own, which would hang).
            main = threading.current_thread() is threading.main_thread()
            if main and os.path.dirname(os.path.abspath(path)) == self.directory:
                self.calls += 1
                if self.calls == self.n:
                    if name == "rmtree":
                        for half in sorted(p for p in glob.glob(f"{path}/*") if os.path.isdir(p))[:1]:
                            real(half)
                    raise KeyboardInterrupt
            return real(path, *args, **kwargs)

        return call


def _complete(path):
    """The m of the complete store at ``path``: every sample readable, attributes written last."""
    (X, Y), source = _read_all(path)
    assert X.shape[1] == Y.shape[1] == source.m == source.attrs["m"]
    return source.m


@pytest.mark.parametrize("name", ["d.zarr", "d.h5"])
@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_overwrite_interrupted_at_any_step_leaves_the_old_or_the_new_store(tmp_path, monkeypatch, name, exchange):
    path = tmp_path / name
    if not exchange:  # a system or filesystem without renameat2
        monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    outcomes = []
    for n in itertools.count(1):
        streamtrain.make_data(path, m=600, n_x=3, chunk=200, seed=0, overwrite=path.exists())
        with monkeypatch.context() as patched:
            trip = Tripwire(patched, tmp_path, n)
            with contextlib.suppress(KeyboardInterrupt):
                streamtrain.make_data(path, m=400, n_x=3, chunk=200, seed=1, overwrite=True)
        outcomes.append(_complete(path))
        streamtrain.make_data(path, m=400, n_x=3, seed=1, overwrite=True)  # a new run cleans what was left
        assert os.listdir(tmp_path) == [name]
        if trip.calls < n:  # ran to the end: every step was interrupted once
            break
    assert outcomes[0] == 600 and outcomes[-1] == 400 and len(outcomes) >= 3, outcomes


def test_a_signal_between_the_two_renames_waits_until_the_new_store_is_in_place(tmp_path, monkeypatch):
    path = tmp_path / "d.zarr"
    streamtrain.make_data(path, m=600, n_x=3, seed=0)
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    rename = os.rename

    def rename_then_signal(src, dst):
        rename(src, dst)
        if dst == outputs.aside_name(str(path)):  # the old store moved aside, the new one not yet in
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "rename", rename_then_signal)
    with pytest.raises(KeyboardInterrupt):
        streamtrain.make_data(path, m=400, n_x=3, seed=1, overwrite=True)
    assert _complete(path) == 400 and os.listdir(tmp_path) == ["d.zarr"]


@pytest.mark.parametrize("made", ["dir", "file", "v2-array"])
def test_overwrite_never_deletes_what_is_not_a_store(tmp_path, made):
    path = tmp_path / "out.zarr"
    if made == "file":
        path.write_text("mine")
    else:
        path.mkdir()
        (path / ("zarr.json" if made == "dir" else ".zarray")).write_text('{"node_type": "array"}')
    before = sorted(os.walk(path)) if path.is_dir() else path.read_text()
    with pytest.raises(DataError, match=r"out\.zarr: is neither a Zarr group nor an HDF5 file"):
        streamtrain.make_data(path, m=100, n_x=2, overwrite=True)
    assert (sorted(os.walk(path)) if path.is_dir() else path.read_text()) == before
    assert os.listdir(tmp_path) == ["out.zarr"]


def test_leftovers_of_dead_runs_are_cleaned_and_a_live_run_is_left_alone(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    path = tmp_path / "d.zarr"
    streamtrain.make_data(path, m=100, n_x=2, seed=0)
    dead, live = outputs.partial_name(str(path), child.pid), outputs.partial_name(str(path), os.getppid())
    for leftover in (dead, live, outputs.aside_name(str(path), child.pid)):
        streamtrain.make_data(leftover, m=100, n_x=2, seed=0)
    streamtrain.make_data(path, m=50, n_x=2, seed=1, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == sorted(["d.zarr", os.path.basename(live)])


def test_an_old_store_aside_is_kept_while_it_is_the_only_copy(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    path = tmp_path / "d.zarr"
    aside = outputs.aside_name(str(path), child.pid)  # killed between the two renames: path is empty
    streamtrain.make_data(aside, m=100, n_x=2, seed=0)
    streamtrain.make_data(tmp_path / "e.zarr", m=50, n_x=2, seed=1)  # another store: not its business
    outputs.remove_stale_partials(str(path))
    assert os.path.isdir(aside)


def test_ctrl_c_during_a_zarr_write_takes_effect_once_the_slab_is_written(tmp_path, monkeypatch):
    """zarr writes in its own thread, which Ctrl-C does not stop: interrupted mid-slab, it went on
    writing into the partial store while that was being deleted (leftovers, 'Directory not empty')."""
    import zarr

    written = []
    setitem = zarr.Array.__setitem__

    def interrupted_setitem(self, key, value):
        os.kill(os.getpid(), signal.SIGINT)
        setitem(self, key, value)
        written.append(self.name)

    monkeypatch.setattr(zarr.Array, "__setitem__", interrupted_setitem)
    with pytest.raises(KeyboardInterrupt):
        streamtrain.make_data(tmp_path / "d.zarr", m=400, n_x=3, seed=1)
    assert written == ["/X", "/Y"] and os.listdir(tmp_path) == []


def test_signals_deferred_delivers_them_after_the_block():
    steps = []
    with pytest.raises(KeyboardInterrupt), signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("after the signal")
    assert steps == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
