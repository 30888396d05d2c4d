"""``fit(state=...)``: a run goes on from where another left off, as one longer run would."""

import dataclasses

import numpy as np
import pytest

import streamtrain
from streamtrain import ArraySource, ConfigError

OPTIONS = [
    dict(model="logistic", optimizer="adam", batch_size=32, lr=0.05, lr_schedule="inverse-time", lr_per="step"),
    dict(model="logistic", optimizer="momentum", batch_size=8, lr=0.1),  # the compiled small-batch path
    dict(model="mlp", hidden=[6], optimizer="rmsprop", batch_size=50, lr=0.01, lr_schedule="exponential"),
]


def _source(make_logistic_xy, m=500, seed=1):
    X, Y = make_logistic_xy(m=m, n_x=4, seed=seed, dtype=np.float32)
    return ArraySource(X, Y, chunk_size=64)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: f"{o['model']}-{o['optimizer']}")
def test_runs_going_on_from_each_others_state_equal_one_longer_run(options, make_logistic_xy):
    source = _source(make_logistic_xy)
    whole = streamtrain.fit(source, epochs=3, progress=False, **options)
    run = streamtrain.fit(source, epochs=1, progress=False, **options)
    for epochs in (2, 3):
        run = streamtrain.fit(source, epochs=epochs, state=run.state, progress=False, **options)
    for name, value in whole.params.items():
        np.testing.assert_array_equal(run.params[name], value)  # bit for bit: the same steps, in the same order
    assert [r.epoch for r in run.history] == [1, 2, 3]
    assert run.state.opt.step == whole.state.opt.step == sum(r.steps for r in whole.history)
    restarted = streamtrain.fit(source, epochs=1, init=run.params, progress=False, **options)
    assert not np.array_equal(restarted.params["W1"], run.state.params["W1"])  # the optimizer's state mattered


def test_momentum_goes_on_across_other_data_as_hand_written(make_logistic_xy):
    """Two batch gradient descent steps with momentum, on two stores, against the formulas."""
    A, B = (_source(make_logistic_xy, m=300, seed=s) for s in (1, 2))
    options = dict(optimizer="momentum", beta1=0.8, lr=0.5, dtype="float64", shuffle="none", progress=False)
    first = streamtrain.fit(A, batch_size=A.m, epochs=1, **options)
    second = streamtrain.fit(B, batch_size=B.m, epochs=2, state=first.state, **options)
    W, b, vW, vb = np.zeros((1, 4)), np.zeros((1, 1)), np.zeros((1, 4)), np.zeros((1, 1))
    for source in (A, B):
        X, Y = (np.asarray(a, np.float64) for a in source.read(0, source.m))
        dZ = 1 / (1 + np.exp(-(W @ X + b))) - Y
        vW, vb = 0.8 * vW + 0.2 * dZ @ X.T / source.m, 0.8 * vb + 0.2 * dZ.mean(keepdims=True)
        W, b = W - 0.5 * vW, b - 0.5 * vb
    np.testing.assert_allclose(second.params["W1"], W, rtol=1e-12)
    np.testing.assert_allclose(second.params["b1"], b, rtol=1e-12)
    np.testing.assert_allclose(second.state.opt.v["W1"], vW, rtol=1e-12)


def test_going_on_leaves_the_earlier_result_as_it_was(make_logistic_xy):
    source = _source(make_logistic_xy)
    first = streamtrain.fit(source, epochs=1, batch_size=8, optimizer="adam", lr=0.01, progress=False)
    kept = {k: v.copy() for k, v in first.params.items()}
    streamtrain.fit(source, epochs=2, batch_size=8, optimizer="adam", lr=0.01, state=first.state, progress=False)
    for name, value in kept.items():
        np.testing.assert_array_equal(first.params[name], value)
        np.testing.assert_array_equal(first.state.params[name], value)
    assert len(first.history) == 1


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (dict(epochs=1), "epochs counts from the first: more than the state's 1"),
        (dict(epochs=2, optimizer="adam"), "cannot go on from the state: the optimizer's moments v"),
        (dict(epochs=2, model="mlp", hidden=[3]), "W1"),
        (dict(epochs=2, standardize=True), "cannot go on from a state: standardize"),
        (dict(optimizer="lbfgs"), "cannot go on from a state: L-BFGS"),
        (dict(epochs=2, init={"W1": np.zeros((1, 4)), "b1": np.zeros((1, 1))}), "leave init and resume unset"),
    ],
)
def test_a_run_that_cannot_go_on_from_a_state_says_why(options, match, make_logistic_xy):
    source = _source(make_logistic_xy)
    state = streamtrain.fit(source, epochs=1, progress=False).state
    with pytest.raises(ConfigError, match=match):
        streamtrain.fit(source, state=state, progress=False, **options)


def test_a_state_whose_run_stopped_early_does_not_go_on(make_logistic_xy):
    source = _source(make_logistic_xy)
    state = streamtrain.fit(source, epochs=1, progress=False).state
    state.history[-1] = dataclasses.replace(state.history[-1], stop="early stopping: no lower validation loss")
    with pytest.raises(ConfigError, match="stopped early; to train on from its parameters, use init"):
        streamtrain.fit(source, epochs=2, state=state, progress=False)


def test_runs_that_cannot_go_on_return_no_state(make_logistic_xy):
    source = _source(make_logistic_xy)
    assert streamtrain.fit(source, optimizer="lbfgs", epochs=3).state is None
    assert streamtrain.fit(source, standardize=True, epochs=1, progress=False).state is None
