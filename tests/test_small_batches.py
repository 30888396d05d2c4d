"""The compiled span path for small batches against the per-batch path, its slow twin.

Float64 runs agree to ~1e-12 (the two sum a dot product in different orders); every guarantee of
the training loop holds on both: checkpoints at the same steps, bit-identical resume, divergence
and non-finite data found at the same step.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import zarr

import streamtrain
from streamtrain import ArraySource, DataError, DivergedError
from streamtrain._signals import Interrupted
from streamtrain.config import FitConfig
from streamtrain.divergence import Monitor
from streamtrain.models import get_model
from streamtrain.optim import OPTIMIZERS
from streamtrain.resume import Checkpoints
from streamtrain.small_batches import MAX_BATCH, NO_JIT, small_batches


@pytest.fixture
def numba():
    return pytest.importorskip("numba")


def task_data(model: str, m: int = 300, n_x: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X (n_x, m) and labels for ``model``: 0/1, 3 class ids, or 2 rows of real values."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_x, m))
    if model == "logistic":
        return X, (rng.random((1, m)) < 1 / (1 + np.exp(-X[:1] - X[1:2]))).astype(float)
    if model == "softmax":
        return X, np.argmax(rng.standard_normal((3, n_x)) @ X + rng.standard_normal((3, m)), axis=0)[None] * 1.0
    return X, np.vstack([2 * X[0] + 0.1 * rng.standard_normal(m), X[1] - X[2]])


def fit(data, compiled: bool, monkeypatch, **options):
    monkeypatch.setenv(NO_JIT, "0" if compiled else "1")
    return streamtrain.fit(data, progress=False, **{"dtype": "float64", "epochs": 2, **options})


def assert_same_run(a, b, rtol: float = 1e-12) -> None:
    for k in b.params:
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=rtol, atol=1e-300)
    np.testing.assert_allclose([r.loss for r in a.history], [r.loss for r in b.history], rtol=rtol)
    assert [(r.samples, r.steps, r.accuracy) for r in a.history] == [
        (r.samples, r.steps, r.accuracy) for r in b.history
    ]


LR = {"sgd": 0.05, "momentum": 0.05, "rmsprop": 0.005, "adam": 0.005}


@pytest.mark.parametrize("schedule", ["constant", "exponential"])
@pytest.mark.parametrize("l2", [0.0, 2.0])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("model", ["logistic", "softmax", "linear"])
def test_b1_steps_equal_the_per_batch_path(numba, monkeypatch, model, optimizer, l2, schedule):
    data = ArraySource(*task_data(model), chunk_size=64)
    options = dict(model=model, optimizer=optimizer, l2=l2, lr=LR[optimizer], batch_size=1, shuffle="buffer")
    options.update(lr_schedule=schedule, lr_decay=0.999 if schedule == "exponential" else None, lr_per="step")
    assert_same_run(fit(data, True, monkeypatch, **options), fit(data, False, monkeypatch, **options))


@pytest.mark.parametrize("B, chunk, buffer_mb", [(7, 50, 0.01), (MAX_BATCH, 100, 1.0)])
def test_small_batches_across_units_with_a_short_last_one_equal_the_per_batch_path(
    numba, monkeypatch, B, chunk, buffer_mb
):
    data = ArraySource(*task_data("softmax", m=460), chunk_size=chunk)  # 460 = 65·7 + 5: a short last batch
    options = dict(
        model="softmax", optimizer="adam", l2=1.0, lr=0.01, batch_size=B, shuffle="buffer", buffer_mb=buffer_mb
    )
    options.update(lr_schedule="inverse-time", lr_decay=0.01)
    assert_same_run(fit(data, True, monkeypatch, **options), fit(data, False, monkeypatch, **options))


@pytest.mark.parametrize("shuffle", ["none", "buffer"])
def test_compressed_chunks_read_directly_step_as_the_in_memory_data(numba, monkeypatch, tmp_path, shuffle):
    X, Y = task_data("logistic", m=400)
    group = zarr.open_group(tmp_path / "z.zarr", mode="w")
    for name, data in (("X", X), ("Y", Y)):
        group.create_array(name, data=data, chunks=(data.shape[0], 64), compressors=zarr.codecs.ZstdCodec())
    store = streamtrain.open_source(tmp_path / "z.zarr")
    # Decoded chunks are read-only arrays, passed on as views with shuffle none.
    assert store.read_path == "direct" and not store.read(0, 64)[0].flags.writeable
    options = dict(lr=0.05, batch_size=1, shuffle=shuffle)
    in_memory = ArraySource(X, Y, chunk_size=64)
    assert_same_run(fit(store, True, monkeypatch, **options), fit(in_memory, False, monkeypatch, **options))


def test_thousands_of_steps_stay_equal_to_1e_12(numba, monkeypatch):
    data = ArraySource(*task_data("logistic", m=3000, n_x=20), chunk_size=1000)
    options = dict(optimizer="adam", lr=0.002, l2=0.5, batch_size=1, shuffle="chunks")
    assert_same_run(fit(data, True, monkeypatch, **options), fit(data, False, monkeypatch, **options))


def test_float32_runs_take_the_same_steps_rounded_differently(numba, monkeypatch):
    data = ArraySource(*task_data("logistic", m=600), chunk_size=100)
    a, b = (fit(data, c, monkeypatch, dtype="float32", batch_size=1) for c in (True, False))
    assert a.params["W1"].dtype == np.float32 and [r.steps for r in a.history] == [r.steps for r in b.history]
    np.testing.assert_allclose(a.params["W1"], b.params["W1"], rtol=1e-4)


def test_resume_from_any_checkpoint_of_the_compiled_path_is_bit_identical(numba, monkeypatch, tmp_path):
    monkeypatch.setattr(streamtrain.train, "SPAN_SAMPLES", 40)  # spans end mid-unit too
    data = ArraySource(*task_data("logistic", m=300), chunk_size=64)
    options = dict(optimizer="momentum", lr=0.05, batch_size=1, shuffle="buffer", buffer_mb=0.01)
    options.update(checkpoint_every=37, keep_checkpoints=100, lr_schedule="step", lr_per="step", lr_step=50)
    whole = fit(data, True, monkeypatch, checkpoint_dir=str(tmp_path / "whole"), **options)
    paths = Checkpoints(tmp_path / "whole", {}).paths()
    plain = fit(data, False, monkeypatch, checkpoint_dir=str(tmp_path / "plain"), **options)
    assert [os.path.basename(p) for p in paths] == [
        os.path.basename(p) for p in Checkpoints(tmp_path / "plain", {}).paths()
    ]
    assert_same_run(whole, plain)
    for path in paths[::3]:
        alone = tmp_path / f"alone-{os.path.basename(path)}"
        alone.mkdir()
        shutil.copy(path, alone)
        resumed = fit(data, True, monkeypatch, checkpoint_dir=str(alone), resume=True, **options)
        assert all(np.array_equal(resumed.params[k], whole.params[k]) for k in whole.params), path
        assert [r.loss for r in resumed.history] == [r.loss for r in whole.history]


class SignalAt(ArraySource):
    """An in-memory source that sends itself SIGTERM at its ``after``-th chunk read."""

    def __init__(self, X, Y, after):
        super().__init__(X, Y, chunk_size=50)
        self.after, self.reads = after, 0

    def _read(self, start, stop, into=None):
        self.reads += 1
        if self.reads == self.after:
            os.kill(os.getpid(), signal.SIGTERM)
        return super()._read(start, stop, into)


def test_a_stop_request_ends_the_span_with_a_checkpoint_and_resume_ends_identical(numba, monkeypatch, tmp_path):
    X, Y = task_data("logistic", m=300)
    options = dict(optimizer="adam", lr=0.01, batch_size=1, prefetch=0, epochs=1, shuffle="chunks")  # units of a chunk
    whole = fit(ArraySource(X, Y, chunk_size=50), True, monkeypatch, **options)
    # 6 reads for the starting loss, 2 chunks of steps, then the signal while the third is read: its span
    # (the steps of one chunk here) is finished, not cut: SPAN_SAMPLES bounds the wait.
    with pytest.raises(Interrupted, match="SIGTERM at epoch 1, step 150"):
        fit(SignalAt(X, Y, after=9), True, monkeypatch, checkpoint_dir=str(tmp_path), **options)
    resumed = fit(
        ArraySource(X, Y, chunk_size=50), True, monkeypatch, checkpoint_dir=str(tmp_path), resume=True, **options
    )
    assert all(np.array_equal(resumed.params[k], whole.params[k]) for k in whole.params)


def test_divergence_is_found_at_the_same_step(numba, monkeypatch):
    # A rate that grows the loss slowly: one much larger makes it overflow within the window, at a step
    # that rounding decides (the blow-up amplifies any difference in the last bit; 1857 or 1864 at 0.6).
    data = ArraySource(*task_data("linear", m=3000), chunk_size=500)
    errors = []
    for compiled in (True, False):
        with pytest.raises(DivergedError) as e:
            fit(data, compiled, monkeypatch, model="linear", lr=0.55, batch_size=1, epochs=3)
        errors.append(str(e.value))
    assert errors[0] == errors[1] and "diverged at epoch 1, step 2048" in errors[0]


def test_a_non_finite_loss_is_found_at_the_same_step(numba, monkeypatch):
    X, Y = task_data("linear", m=300)
    X[1, 123] = 1e200  # finite data; its loss overflows
    errors = []
    for compiled in (True, False):
        with pytest.raises(DivergedError) as e:
            fit(ArraySource(X, Y, chunk_size=50), compiled, monkeypatch, model="linear", batch_size=1, shuffle="none")
        errors.append(str(e.value))
    assert errors[0] == errors[1] and errors[0].startswith(
        "loss is inf at epoch 1, step 124 (the batch's data is finite)"
    )


@pytest.mark.parametrize("B", [1, 5])
def test_non_finite_data_is_named_as_on_the_per_batch_path(numba, monkeypatch, B):
    X, Y = task_data("logistic", m=600)
    X[2, 250] = np.nan
    for compiled in (True, False):
        with pytest.raises(DataError, match=r"X: sample 250 \(chunk 2\) holds NaN"):
            fit(ArraySource(X, Y, chunk_size=100), compiled, monkeypatch, batch_size=B, shuffle="buffer")


def test_the_compiled_monitor_rule_is_the_monitor(numba):
    from streamtrain._sgd_kernel import fold

    losses = np.concatenate([np.linspace(0.7, 0.2, 3000), 0.2 * 1.01 ** np.arange(1000)])
    plain, compiled = Monitor(window=100, start=0.7), Monitor(window=100, start=0.7)
    at = next(i for i, x in enumerate(losses) if plain.update(float(x)) is not None)
    assert compiled.update_many(losses[:2000], fold) is None
    assert compiled.update_many(losses[2000:], fold)[0] == at - 2000 and compiled == plain


def config(**options) -> FitConfig:
    return FitConfig.from_options(options)


def test_the_choice_of_path(numba, monkeypatch):
    logistic, mlp = get_model("logistic"), get_model("mlp", output="sigmoid")
    monkeypatch.delenv(NO_JIT, raising=False)
    assert small_batches(logistic, config(batch_size=1), 0.1, 100) is not None
    assert small_batches(logistic, config(batch_size=MAX_BATCH, dtype="float64"), 0.1, 100) is not None
    assert small_batches(logistic, config(batch_size=MAX_BATCH + 1), 0.1, 100) is None
    assert small_batches(mlp, config(model="mlp", batch_size=1), 0.1, 100) is None
    monkeypatch.setenv(NO_JIT, "1")
    assert small_batches(logistic, config(batch_size=1), 0.1, 100) is None


def test_without_numba_training_takes_the_per_batch_path(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # "import numba" raises ImportError
    monkeypatch.setitem(sys.modules, "streamtrain._sgd_kernel", None)
    monkeypatch.delattr(streamtrain, "_sgd_kernel", raising=False)
    monkeypatch.delenv(NO_JIT, raising=False)
    assert small_batches(get_model("logistic"), config(batch_size=1), 0.1, 100) is None
    data = ArraySource(*task_data("logistic"), chunk_size=64)
    without = streamtrain.fit(data, batch_size=1, epochs=1, dtype="float64")
    plain = fit(data, False, monkeypatch, batch_size=1, epochs=1)
    assert all(np.array_equal(without.params[k], plain.params[k]) for k in plain.params)


def test_numba_is_imported_only_by_a_run_that_takes_the_compiled_path(numba):
    script = """
import sys, numpy as np, streamtrain
from streamtrain.cli import main
try:
    main(["fit", "--help"])
except SystemExit:
    pass
X = np.random.default_rng(0).standard_normal((3, 200)); Y = (X[:1] > 0) * 1.0
streamtrain.fit(streamtrain.ArraySource(X, Y), batch_size=50, epochs=1)
streamtrain.fit(streamtrain.ArraySource(X, Y), model="mlp", batch_size=1, epochs=1)
assert "numba" not in sys.modules
streamtrain.fit(streamtrain.ArraySource(X, Y), batch_size=1, epochs=1)
assert "numba" in sys.modules
"""
    env = {k: v for k, v in os.environ.items() if k != NO_JIT}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
