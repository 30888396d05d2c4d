"""Divergence is caught before the loss is NaN, and never on a normal run."""

from __future__ import annotations

import numpy as np
import pytest

import streamtrain
from streamtrain import DivergedError
from streamtrain.divergence import FACTOR, Monitor
from streamtrain.optim import OPTIMIZERS

TASK_OF = {"logistic": "logistic", "softmax": "softmax", "linear": "linear", "mlp": "logistic"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    paths = {}
    for task in ("logistic", "softmax", "linear"):
        paths[task] = str(root / f"{task}.zarr")
        streamtrain.make_data(paths[task], task=task, m=4000, n_x=8, chunk=500, seed=5)
    return paths


@pytest.mark.parametrize("model", list(TASK_OF))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("batch_size", [1, 64, "full"])
def test_never_fires_on_normal_runs(stores, model, optimizer, batch_size):
    epochs = 1 if batch_size == 1 else 20 if batch_size == "full" else 5
    lr = {"sgd": 0.1, "momentum": 0.1, "rmsprop": 0.001, "adam": 0.001}[optimizer]  # the usual rates
    if batch_size == 1:
        lr /= 10
    streamtrain.fit(
        stores[TASK_OF[model]],
        model=model,
        optimizer=optimizer,
        batch_size=batch_size,
        epochs=epochs,
        lr=lr,
        scheduler="sync" if batch_size == "full" else None,
    )


@pytest.mark.parametrize("shuffle", ["none", "chunks"])
def test_never_fires_when_the_first_chunk_is_far_from_typical(shuffle):
    # Sparse targets: the first chunk's are all 0, so the loss at the start over it alone is 0, and any
    # loss "more than 10 times" that. The reference spans the moving average's window instead.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 4096)).astype(np.float32)
    Y = np.zeros((1, 4096), np.float32)
    Y[0, 1024:] = 0.5 * X[0, 1024:] + 1
    source = streamtrain.ArraySource(X, Y, chunk_size=1024)
    streamtrain.fit(source, model="linear", lr=0.01, batch_size=32, epochs=2, shuffle=shuffle, seed=1)


@pytest.mark.parametrize(
    "options",
    [
        dict(model="logistic", lr=1e6),
        dict(model="logistic", lr=1e6, optimizer="adam"),
        dict(model="softmax", lr=1e5, optimizer="momentum"),
        dict(model="linear", lr=1e6, batch_size="full", scheduler="sync"),
        dict(model="linear", lr=1.0, batch_size=8),
        dict(model="mlp", lr=50.0),
    ],
)
def test_fires_on_a_step_size_far_too_large(stores, options):
    with pytest.raises(DivergedError, match=r"diverged at epoch|loss is"):
        streamtrain.fit(stores[TASK_OF[options["model"]]], epochs=20, **options)


def test_the_rule_smooths_noise_and_needs_a_rise():
    monitor = Monitor(window=4, start=1.0)
    losses = [1.0, 3.0, 0.5, 0.5] + [0.4, 20.0, 0.4, 0.4] * 5  # one outlier in every four steps
    assert all(monitor.update(x) is None for x in losses)
    wrecked = Monitor(window=4, start=0.7)  # the first step already far off: caught after the window
    assert [wrecked.update(x) is None for x in (2e4, 1.5e4, 1.4e4, 1.6e4)] == [True, True, True, False]
    exact = Monitor(window=1)
    assert exact.update(1.0) is None and exact.update(FACTOR * 0.99) is None
    assert "rose to" in exact.update(FACTOR * 1.5)
    falling = Monitor.from_dict({**exact.to_dict(), "average": 1e9})
    assert falling.update(100.0) is None  # far above the start, but falling: not yet


def test_a_diverged_command_exits_3_and_leaves_the_model_file_alone(stores, tmp_path, capsys):
    from streamtrain.cli import main

    out = tmp_path / "m.npz"
    assert main(["fit", stores["logistic"], "--out", str(out), "--epochs", "1"]) == 0
    before = out.read_bytes()
    assert main(["fit", stores["logistic"], "--out", str(out), "--lr", "1e6"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diverged at epoch 1" in err[0]
    assert out.read_bytes() == before
    linear = ["fit", stores["linear"], "--model", "linear", "--lr", "1e6", "--batch-size", "full", "--out", str(out)]
    assert main([*linear, "--scheduler", "sync"]) == 3
    assert out.read_bytes() == before
