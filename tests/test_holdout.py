"""``--holdout F``: whole chunks held out by the seed, never trained on, an exact validation loss per epoch."""

from __future__ import annotations

import os
import traceback

import numpy as np
import pytest

import streamtrain
from streamtrain import ArraySource, ConfigError
from streamtrain.cli import main
from streamtrain.holdout import split_holdout

M, C = 1200, 100  # 12 chunks


def data(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((3, M)).astype("float32")
    Y = (rng.random((1, M)) < 1 / (1 + np.exp(-X[:1] + X[1:2]))).astype("float32")
    return X, Y


class Recorded(ArraySource):
    """Records the first sample of every chunk the mini-batch stream reads (``batches.py`` is on the
    stack: the validation pass reads the held-out chunks too, by design)."""

    def __init__(self, X, Y):
        super().__init__(X, Y, chunk_size=C)
        self.starts: set[int] = set()

    def _read(self, start, stop, into=None):
        if any(
            frame.filename.endswith(os.path.join("streamtrain", "batches.py")) for frame in traceback.extract_stack()
        ):
            self.starts.add(start)
        return super()._read(start, stop, into)


@pytest.mark.parametrize("options", [{}, {"standardize": True}, {"shuffle": "none", "batch_size": 7}])
def test_held_out_chunks_are_never_trained_on(options):
    X, Y = data()
    source = Recorded(X, Y)
    _, held = split_holdout(source, 0.25, seed=4)
    held_starts = {a for a, _ in held.chunk_bounds}
    assert len(held_starts) == 3
    streamtrain.fit(source, holdout=0.25, seed=4, epochs=2, progress=False, **{"batch_size": 32, **options})
    assert source.starts and not source.starts & held_starts
    assert len(source.starts) == 9


def test_each_epochs_validation_loss_is_evaluate_over_the_held_out_samples():
    X, Y = data(1)
    result = streamtrain.fit(ArraySource(X, Y, chunk_size=C), holdout=0.25, epochs=3, batch_size=32, progress=False)
    _, held = split_holdout(ArraySource(X, Y, chunk_size=C), 0.25, seed=0)
    columns = np.concatenate([np.arange(a, b) for a, b in held.chunk_bounds])
    truth = streamtrain.evaluate(ArraySource(X[:, columns], Y[:, columns]), result, scheduler="sync")
    last = result.history[-1]
    assert last.validation_loss == pytest.approx(truth["loss"], rel=1e-6)
    assert last.validation_accuracy == truth["accuracy"]
    assert all(r.validation_loss is not None for r in result.history)


def test_a_resumed_run_holds_out_the_same_chunks_and_ends_identical(tmp_path):
    X, Y = data(2)
    options = dict(holdout=0.3, batch_size=16, checkpoint_every=15, checkpoint_dir=str(tmp_path), progress=False)
    whole = streamtrain.fit(ArraySource(X, Y, chunk_size=C), epochs=3, **options)
    sorted(tmp_path.iterdir())[-1].unlink()  # resume from the checkpoint before the end
    again = streamtrain.fit(ArraySource(X, Y, chunk_size=C), epochs=3, resume=True, **options)
    assert all(np.array_equal(again.params[k], whole.params[k]) for k in whole.params)
    assert [r.validation_loss for r in again.history] == [r.validation_loss for r in whole.history]


@pytest.mark.parametrize("fraction, says", [(1.5, "a fraction between 0 and 1"), (0.99, "leaves none to train")])
def test_a_fraction_that_cannot_split_is_refused(fraction, says):
    X, Y = data()
    with pytest.raises(ConfigError, match=says):
        streamtrain.fit(ArraySource(X, Y, chunk_size=C), holdout=fraction, progress=False)


def test_the_epoch_line_shows_the_validation_loss(zarr_store, tmp_path, capsys):
    X, Y = data()
    store = str(zarr_store(X, Y, C))
    assert (
        main(
            ["fit", store, "--holdout", "0.2", "--epochs", "1", "--batch-size", "32", "--out", str(tmp_path / "m.npz")]
        )
        == 0
    )
    assert "| validation loss " in capsys.readouterr().out


def overfitting(seed: int = 5):
    """Few noisy samples and a wide mlp: the validation loss turns up within a few epochs."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((6, 600)).astype("float32")
    Y = (rng.random((1, 600)) < 0.5).astype("float32")  # labels unrelated to X: everything learnt is noise
    return ArraySource(X, Y, chunk_size=50)


ES = dict(model="mlp", hidden=[32], optimizer="adam", lr=0.02, batch_size=16, holdout=0.25, epochs=30, progress=False)


def test_early_stopping_keeps_the_best_epochs_parameters():
    result = streamtrain.fit(overfitting(), early_stopping=True, patience=2, **ES)
    losses = [r.validation_loss for r in result.history]
    best = int(np.argmin(losses)) + 1
    assert len(result.history) == best + 2 < 30
    assert (
        result.history[-1].stop
        == f"early stopping: no lower validation loss in 2 epochs; kept epoch {best}'s parameters"
    )
    same = streamtrain.fit(overfitting(), **{**ES, "epochs": best})  # the same run, stopped there by hand
    assert all(np.array_equal(result.params[k], same.params[k]) for k in same.params)


def test_early_stopping_survives_a_resume(tmp_path):
    options = dict(early_stopping=True, patience=2, checkpoint_dir=str(tmp_path), checkpoint_every=25, **ES)
    whole = streamtrain.fit(overfitting(), **options)
    files = sorted(tmp_path.iterdir())
    for name in files[-1:]:
        name.unlink()  # resume from the checkpoint before the last
    again = streamtrain.fit(overfitting(), resume=True, **options)
    assert all(np.array_equal(again.params[k], whole.params[k]) for k in whole.params)
    assert [r.validation_loss for r in again.history] == [r.validation_loss for r in whole.history]
    ended = streamtrain.fit(overfitting(), resume=True, **options)  # resumed after it stopped: no more epochs
    assert len(ended.history) == len(whole.history)
    assert all(np.array_equal(ended.params[k], whole.params[k]) for k in whole.params)


@pytest.mark.parametrize(
    "options, says",
    [({}, "--early-stopping needs --holdout F"), ({"holdout": 0.2, "optimizer": "lbfgs"}, "not L-BFGS")],
)
def test_early_stopping_needs_a_holdout_and_gradient_descent(options, says):
    with pytest.raises(ConfigError, match=says):
        streamtrain.fit(overfitting(), early_stopping=True, progress=False, **options)
