"""Optimizers and learning-rate schedules: update rules against hand computations, dtypes, purity,
schedules, validation, and convergence on a convex quadratic."""

import math

import numpy as np
import pytest

from streamtrain._errors import ConfigError
from streamtrain.optim import (
    OPTIMIZERS,
    SCHEDULES,
    OptimizerState,
    adam,
    get_optimizer,
    lr_at,
    lr_steps,
    momentum,
    rmsprop,
    schedule,
    sgd,
)

LR = 0.1
B1, B2, EPS = 0.9, 0.999, 1e-8  # the usual hyperparameters (fit's defaults)
BUILD = {
    "sgd": lambda lr: sgd(lr),
    "momentum": lambda lr: momentum(lr, B1),
    "rmsprop": lambda lr: rmsprop(lr, B2, EPS),
    "adam": lambda lr: adam(lr, B1, B2, EPS),
}


def make_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {"W1": rng.normal(size=(2, 3)).astype(dtype), "b1": rng.normal(size=(2, 1)).astype(dtype)}


def grad_sequence(n=3, dtype=np.float64):
    """n different gradients, each entry away from 0, so sign(g) and |g| are well defined."""
    return [
        {k: np.where(v >= 0, v + 0.1, v - 0.1) for k, v in make_params(dtype, seed=10 + i).items()} for i in range(n)
    ]


def run(opt, params, grads_seq):
    state, history = opt.init(params), []
    for g in grads_seq:
        params, state = opt.update(g, state, params)
        history.append((params, state))
    return history


def assert_params_close(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-15)


# -- update rules, against the formulas written out by hand --------------------------------------


def test_sgd_first_three_updates():
    W, gs = make_params(), grad_sequence()
    for params, _ in run(sgd(LR), W, gs):
        W = {k: W[k] - LR * g for k, g in gs.pop(0).items()}
        assert_params_close(params, W)


def test_momentum_averages_gradients_with_weight_one_minus_beta():
    beta, W0, (g1, g2, g3) = 0.8, make_params(), grad_sequence()
    history = run(momentum(LR, beta=beta), W0, [g1, g2, g3])
    for k in W0:
        v1 = (1 - beta) * g1[k]  # not g1: the (1 - β) convention, v is an average of the gradients
        v2 = beta * (1 - beta) * g1[k] + (1 - beta) * g2[k]
        v3 = beta**2 * (1 - beta) * g1[k] + beta * (1 - beta) * g2[k] + (1 - beta) * g3[k]
        expected_W = [W0[k] - LR * v1, W0[k] - LR * (v1 + v2), W0[k] - LR * (v1 + v2 + v3)]
        for (params, state), v, W in zip(history, [v1, v2, v3], expected_W):
            np.testing.assert_allclose(state.v[k], v, rtol=1e-12)
            np.testing.assert_allclose(params[k], W, rtol=1e-12)


def test_rmsprop_first_three_updates():
    beta2, eps, W, s = 0.9, 1e-8, make_params(), dict.fromkeys(("W1", "b1"), 0.0)
    gs = grad_sequence()
    for (params, state), g in zip(run(rmsprop(LR, beta2=beta2, eps=eps), W, gs), gs):
        s = {k: beta2 * s[k] + (1 - beta2) * g[k] ** 2 for k in g}
        W = {k: W[k] - LR * g[k] / (np.sqrt(s[k]) + eps) for k in g}
        assert_params_close(params, W)
        assert_params_close(state.s, s)


def test_adam_first_three_updates_with_bias_correction():
    b1, b2, eps, W = 0.9, 0.999, 1e-8, make_params()
    v, s, gs = dict.fromkeys(W, 0.0), dict.fromkeys(W, 0.0), grad_sequence()
    for t, ((params, state), g) in enumerate(zip(run(adam(LR, b1, b2, eps), W, gs), gs), start=1):
        v = {k: b1 * v[k] + (1 - b1) * g[k] for k in g}
        s = {k: b2 * s[k] + (1 - b2) * g[k] ** 2 for k in g}
        W = {k: W[k] - LR * (v[k] / (1 - b1**t)) / (np.sqrt(s[k] / (1 - b2**t)) + eps) for k in g}
        assert_params_close(params, W)
        assert_params_close(state.v, v)  # the state holds the raw averages, not the corrected ones
        assert_params_close(state.s, s)


def test_first_adam_step_moves_each_coordinate_by_about_lr():
    # v̂ = g and ŝ = g² after one step, so ΔW = -α·g/(|g| + ε) ≈ -α·sign(g). Without the bias
    # correction it would be -α·(1-β1)/√(1-β2)·sign(g) ≈ -3.16·α·sign(g).
    params, g = make_params(), grad_sequence(1)[0]
    new, _ = BUILD["adam"](LR).update(g, BUILD["adam"](LR).init(params), params)
    for k in params:
        np.testing.assert_allclose(new[k] - params[k], -LR * np.sign(g[k]), rtol=1e-6)


@pytest.mark.parametrize(
    "name, fields",
    [("sgd", ()), ("momentum", ("v",)), ("rmsprop", ("s",)), ("adam", ("v", "s"))],
)
def test_state_is_a_namedtuple_of_plain_arrays_and_a_step_count(name, fields):
    params = make_params()
    opt = BUILD[name](LR)
    init = opt.init(params)
    assert type(init) is OptimizerState and init._fields == ("step", "v", "s")
    states = [init] + [state for _, state in run(opt, params, grad_sequence())]
    for step, state in enumerate(states):
        assert type(state.step) is int and state.step == step
        for field in ("v", "s"):
            arrays = getattr(state, field)
            if field not in fields:
                assert arrays == {}  # an average this optimizer does not keep
                continue
            assert arrays.keys() == params.keys()
            for k, a in arrays.items():
                assert type(a) is np.ndarray and a.shape == params[k].shape and a.dtype == params[k].dtype
                if step == 0:
                    assert not a.any()  # zeros at init


# -- dtypes and purity ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize(
    "lr", [LR, np.float64(LR), schedule("inverse-time", np.float64(LR), decay=0.5), lambda step: np.float64(LR)]
)
@pytest.mark.parametrize("grad_dtype", [np.float32, np.float64])
def test_float32_params_and_state_stay_float32(name, lr, grad_dtype):
    params = make_params(np.float32)
    for new, state in run(BUILD[name](lr), params, grad_sequence(dtype=grad_dtype)):
        assert all(p.dtype == np.float32 for p in new.values())
        for field in state[1:]:
            assert all(a.dtype == np.float32 for a in field.values())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_state_restored_with_numpy_integers_keeps_float32_and_an_int_step(name):
    # np.load gives the step back as a NumPy integer; Adam's beta**t must not turn float64.
    opt, params = BUILD[name](LR), make_params(np.float32)
    state = opt.init(params)._replace(step=np.int64(5))
    new, state = opt.update(grad_sequence(1, np.float32)[0], state, params)
    assert all(p.dtype == np.float32 for p in new.values())
    assert type(state.step) is int and state.step == 6


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_update_does_not_modify_its_inputs(name):
    opt, params, (g1, g2) = BUILD[name](LR), make_params(), grad_sequence(2)
    _, state = opt.update(g1, opt.init(params), params)  # a state with non-zero arrays
    copies = [{k: v.copy() for k, v in d.items()} for d in (params, g2)]
    state_copy = [{k: v.copy() for k, v in f.items()} for f in state[1:]]
    opt.update(g2, state, params)
    for before, after in zip(copies + state_copy, [params, g2, *state[1:]]):
        for k in before:
            np.testing.assert_array_equal(after[k], before[k])
    assert state.step == 1


def test_get_optimizer_maps_beta1_to_momentum_and_beta2_to_rmsprop():
    params, gs = make_params(), grad_sequence()
    pairs = [
        (get_optimizer("sgd", LR, beta1=B1, beta2=B2, eps=EPS), sgd(LR)),
        (get_optimizer("momentum", LR, beta1=0.5, beta2=0.7, eps=EPS), momentum(LR, beta=0.5)),
        (get_optimizer("rmsprop", LR, beta1=0.5, beta2=0.7, eps=1e-3), rmsprop(LR, beta2=0.7, eps=1e-3)),
        (get_optimizer("adam", LR, beta1=0.5, beta2=0.7, eps=1e-3), adam(LR, 0.5, 0.7, 1e-3)),
    ]
    for got, expected in pairs:
        assert_params_close(run(got, params, gs)[-1][0], run(expected, params, gs)[-1][0])
    assert tuple(OPTIMIZERS) == ("sgd", "momentum", "rmsprop", "adam")


# -- learning-rate schedules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("constant", {}, [1.0] * 7),
        ("inverse-time", {}, [1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6, 1 / 7]),  # default decay 1.0
        ("inverse-time", {"decay": 0.5}, [1.0, 1 / 1.5, 1 / 2, 1 / 2.5, 1 / 3, 1 / 3.5, 1 / 4]),
        ("inverse-time", {"decay": 0.0}, [1.0] * 7),
        ("exponential", {}, [0.95**t for t in range(7)]),  # default decay 0.95
        ("exponential", {"decay": 0.5}, [1, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625]),
        ("step", {}, [1, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625]),  # default decay 0.5, step_size 1
        ("exponential", {"decay": 1.0}, [1.0] * 7),  # decay 1 is in range: no decay
        ("step", {"decay": 1.0}, [1.0] * 7),
        ("step", {"decay": 0.1, "step_size": 3}, [1, 1, 1, 0.1, 0.1, 0.1, 0.01]),
    ],
)
def test_schedule_values_per_step(name, kwargs, expected):
    sched = schedule(name, 2.0, **kwargs)
    np.testing.assert_allclose([sched(s) for s in range(7)], [2.0 * e for e in expected], rtol=1e-12)


@pytest.mark.parametrize(
    "name, kwargs, per_epoch",
    [
        ("constant", {}, [1.0, 1.0, 1.0]),
        ("inverse-time", {"decay": 1.0}, [1.0, 1 / 2, 1 / 3]),
        ("exponential", {"decay": 0.5}, [1.0, 0.5, 0.25]),
        ("step", {"decay": 0.5, "step_size": 2}, [1.0, 1.0, 0.5]),
    ],
)
def test_schedule_per_epoch_changes_once_every_steps(name, kwargs, per_epoch):
    steps_per_epoch = 4
    sched = schedule(name, 0.3, every=steps_per_epoch, **kwargs)
    got = [sched(s) for s in range(3 * steps_per_epoch)]
    np.testing.assert_allclose(got, [0.3 * e for e in per_epoch for _ in range(steps_per_epoch)], rtol=1e-12)


def test_schedules_return_python_floats_and_are_pure():
    for name in SCHEDULES:
        sched = schedule(name, 0.1, every=2)
        assert [type(sched(s)) for s in range(5)] == [float] * 5
        assert [sched(s) for s in (4, 0, 4)] == [sched(4), sched(0), sched(4)]  # no hidden state


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_scheduled_optimizer_uses_the_rate_at_state_step(name):
    asked = []

    def lr(step):
        asked.append(step)
        return 0.1 / (1 + step)

    params, gs = make_params(), grad_sequence()
    run(BUILD[name](lr), params, gs)
    assert asked == [0, 1, 2]
    if name == "sgd":  # and the second update really moves by schedule(1)·g
        (p1, _), (p2, _) = run(sgd(lr), params, gs)[:2]
        for k in params:
            np.testing.assert_allclose(p2[k], p1[k] - lr(1) * gs[1][k], rtol=1e-12)


def test_adam_under_a_schedule_is_adam_with_that_rate_at_each_step():
    sched, params, gs = schedule("exponential", 0.2, decay=0.5), make_params(), grad_sequence()
    (_, s1), _ = run(BUILD["adam"](0.2), params, gs)[:2]
    (p1, _), (p2, _) = run(BUILD["adam"](sched), params, gs)[:2]
    expected, _ = BUILD["adam"](sched(1)).update(gs[1], s1, p1)  # the same state, a constant rate of schedule(1)
    assert_params_close(p2, expected)


@pytest.mark.parametrize(
    "name, decay", [("constant", None), ("inverse-time", 0.01), ("exponential", 0.999), ("step", 0.9)]
)
@pytest.mark.parametrize("every", [1, 7])
def test_lr_steps_are_lr_at_of_each_step_to_the_bit(name, decay, every):
    # numpy's vectorised power rounds the last bit otherwise at ~5% of these steps (d ** t, d = 0.999).
    rate = schedule(name, 0.37, decay=decay, step_size=3, every=every)
    expected = np.array([lr_at(rate, s) for s in range(5, 3005)])
    assert lr_steps(rate, 5, 3000).tobytes() == expected.tobytes()
    assert lr_steps(0.25, 5, 3).tolist() == [0.25] * 3


def test_lr_at_resolves_numbers_and_schedules():
    assert lr_at(0.5, 7) == 0.5
    assert lr_at(schedule("step", 1.0, decay=0.5), 2) == 0.25
    assert type(lr_at(lambda step: np.float64(0.1), 0)) is float


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: sgd(0.0), "learning rate must be a positive number, got 0.0"),
        (lambda: sgd(-1.0), "learning rate must be a positive number, got -1.0"),
        (lambda: sgd(math.nan), "learning rate must be a positive number"),
        (lambda: sgd(math.inf), "learning rate must be a positive number"),
        (lambda: sgd("0.1"), "learning rate must be a positive number"),
        (lambda: sgd(True), "learning rate must be a positive number"),
        (lambda: adam(-0.1, B1, B2, EPS), "learning rate must be a positive number"),
        (lambda: momentum(LR, beta=1.0), r"beta must be a number in \[0, 1\), got 1.0"),
        (lambda: momentum(LR, beta=-0.1), r"beta must be a number in \[0, 1\)"),
        (lambda: rmsprop(LR, beta2=1.0, eps=EPS), r"beta2 must be a number in \[0, 1\)"),
        (lambda: rmsprop(LR, beta2=B2, eps=0.0), "eps must be a positive number, got 0.0"),
        (lambda: adam(LR, beta1=1.5, beta2=B2, eps=EPS), r"beta1 must be a number in \[0, 1\)"),
        (lambda: adam(LR, beta1=B1, beta2=math.nan, eps=EPS), r"beta2 must be a number in \[0, 1\)"),
        (lambda: adam(LR, beta1=B1, beta2=B2, eps=-1e-8), "eps must be a positive number"),
        (
            lambda: get_optimizer("adamw", LR, beta1=B1, beta2=B2, eps=EPS),
            "unknown optimizer 'adamw'; choose from sgd, momentum, rmsprop, adam",
        ),
        (lambda: get_optimizer("sgd", 0.0, beta1=B1, beta2=B2, eps=EPS), "learning rate must be a positive number"),
        (
            lambda: get_optimizer("sgd", LR, beta1=1.0, beta2=B2, eps=EPS),
            r"beta1 must be a number in \[0, 1\)",
        ),  # unused, still checked
        (lambda: get_optimizer("momentum", LR, beta1=1.0, beta2=B2, eps=EPS), r"beta1 must be a number in \[0, 1\)"),
        (lambda: get_optimizer("rmsprop", LR, beta1=B1, beta2=B2, eps=0), "eps must be a positive number"),
        (
            lambda: schedule("cosine", LR),
            "unknown schedule 'cosine'; choose from constant, inverse-time, exponential, step",
        ),
        (lambda: schedule("constant", 0.0), "learning rate must be a positive number"),
        (lambda: schedule("constant", lambda s: LR), "learning rate must be a positive number"),
        (lambda: schedule("inverse-time", LR, decay=-0.1), "decay must be a number >= 0 for the inverse-time schedule"),
        (lambda: schedule("exponential", LR, decay=0.0), r"decay must be a number in \(0, 1\] for the exponential"),
        (lambda: schedule("exponential", LR, decay=1.5), r"decay must be a number in \(0, 1\] for the exponential"),
        (lambda: schedule("step", LR, decay=0.0), r"decay must be a number in \(0, 1\] for the step schedule"),
        (lambda: schedule("step", LR, decay="0.5"), r"decay must be a number in \(0, 1\]"),
        (lambda: schedule("step", LR, step_size=0), "step_size must be a positive integer, got 0"),
        (lambda: schedule("step", LR, step_size=1.5), "step_size must be a positive integer"),
        (lambda: schedule("exponential", LR, every=0), "every must be a positive integer, got 0"),
        (lambda: schedule("constant", LR, every="4"), "every must be a positive integer"),
    ],
)
def test_bad_hyperparameters_are_config_errors(make, message):
    with pytest.raises(ConfigError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_whole_float_step_size_and_every_are_accepted():
    sched = schedule("step", 1.0, decay=0.5, step_size=2.0, every=3.0)
    assert [sched(s) for s in (0, 5, 6, 11, 12)] == [1.0, 1.0, 0.5, 0.5, 0.25]


# -- convergence ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, lr",
    [
        ("sgd", 0.1),
        ("momentum", 0.1),
        ("rmsprop", 0.01),
        ("adam", schedule("exponential", 0.05, decay=0.98, every=10)),  # Adam moves ~α a step: α must shrink
    ],
)
def test_each_optimizer_minimises_a_convex_quadratic(name, lr):
    # J = 0.5·‖W - W*‖², so dJ/dW = W - W*; from W = 0 every optimizer must reach W*.
    target = make_params(seed=3)
    params, opt = {k: np.zeros_like(v) for k, v in target.items()}, BUILD[name](lr)
    state = opt.init(params)
    for _ in range(400):
        params, state = opt.update({k: params[k] - target[k] for k in params}, state, params)
    for k in params:
        np.testing.assert_allclose(params[k], target[k], rtol=0, atol=1e-3)
