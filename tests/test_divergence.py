"""Divergence is caught before the loss is NaN, and never on a normal run."""

from __future__ import annotations

import numpy as np
import pytest

import streamtrain
from streamtrain import ArraySource, DivergedError
from streamtrain.divergence import FACTOR, Monitor
from streamtrain.optim import OPTIMIZERS


@pytest.fixture(scope="module")
def stores(task_stores):
    return task_stores(m=4000, n_x=8, chunk=500, seed=5)


@pytest.mark.parametrize("model", ["logistic", "softmax", "linear", "mlp"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("batch_size", [1, 64, "full"])
def test_never_fires_on_normal_runs(stores, model, optimizer, batch_size):
    epochs = 1 if batch_size == 1 else 20 if batch_size == "full" else 5
    lr = {"sgd": 0.1, "momentum": 0.1, "rmsprop": 0.001, "adam": 0.001}[optimizer]  # the usual rates
    if batch_size == 1:
        lr /= 10
    streamtrain.fit(
        stores[model],
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
        streamtrain.fit(stores[options["model"]], epochs=20, **options)


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


def test_the_window_is_about_2048_samples_at_least_10_steps_at_most_an_epoch():
    sizes = [(32, 600), (1000, 10**6), (1, 10**6), (600, 600)]  # (batch size, m)
    assert [Monitor.for_steps(B, m).window for B, m in sizes] == [19, 10, 2048, 1]


def test_the_average_is_bias_corrected_like_adams_moments():
    losses = [1.0, 2.0, 3.0, 5.0, 8.0, 4.0]
    monitor, beta = Monitor(window=4), 0.75
    for t in range(1, len(losses) + 1):
        monitor.update(losses[t - 1])
        weights = [(1 - beta) * beta ** (t - i) for i in range(1, t + 1)]
        expected = sum(w * x for w, x in zip(weights, losses)) / (1 - beta**t)
        assert monitor.average == pytest.approx(expected, rel=1e-12)


def test_exactly_factor_times_the_start_or_a_flat_loss_is_not_divergence():
    assert Monitor(window=1, start=1.0).update(FACTOR) is None
    flat = Monitor(window=1, steps=5, average=20.0, start=1.0)  # far above the start, but not rising
    assert flat.update(20.0) is None
    assert flat.update(20.5) is not None


def test_a_first_sample_with_zero_loss_is_no_reference():
    """The reference is the loss over the first chunk, not the first batch's (with B = 1, one
    sample: a linear model at zero weights has loss 0 on a sample whose target is 0)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 300))
    Y = np.array([[1.0, -2.0, 0.5]]) @ X + 0.1 * rng.standard_normal((1, 300))
    Y[0, 0] = 0.0
    streamtrain.fit(ArraySource(X, Y, chunk_size=100), model="linear", batch_size=1, epochs=3, lr=0.01, shuffle="none")


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


def monitor_losses(seed: int = 0) -> list[float]:
    """Noisy losses that fall, then grow geometrically: divergence after a few hundred steps."""
    rng = np.random.default_rng(seed)
    losses = 0.7 * np.exp(-np.arange(300) / 100) * rng.uniform(0.5, 1.5, 300)
    return [*losses, *(0.3 * 1.05 ** np.arange(200))]


@pytest.mark.parametrize("start", [0.7, None])
def test_update_many_is_update_one_loss_at_a_time(start):
    losses = monitor_losses()
    one = Monitor(window=20, start=start)
    reasons = [one.update(x) for x in losses]
    at = next(i for i, r in enumerate(reasons) if r is not None)
    one = Monitor(window=20, start=start)
    for x in losses[: at + 1]:
        one.update(x)
    many = Monitor(window=20, start=start)
    assert many.update_many(losses[:100]) is None and many.update_many(np.array(losses[100:])) == (
        at - 100,
        reasons[at],
    )
    assert many == one
