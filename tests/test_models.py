"""Logistic model maths: finite differences, the textbook formula, numerical safety."""

import numpy as np
import pytest

from streamtrain import ConfigError
from streamtrain.models import check_params, get_model, logistic_loss_and_grad, sigmoid
from streamtrain.optim import sgd


def _problem(B, n_x=4, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_x, B)).astype(dtype)
    Y = (rng.random((1, B)) < 0.5).astype(dtype)
    params = {"W1": rng.standard_normal((1, n_x)).astype(dtype), "b1": rng.standard_normal((1, 1)).astype(dtype)}
    return params, X, Y


@pytest.mark.parametrize("B", [1, 2, 9])
def test_gradient_matches_central_finite_differences(B, numeric_grad):
    params, X, Y = _problem(B)
    _, grads = logistic_loss_and_grad(params, X, Y)
    numeric = numeric_grad(lambda p: logistic_loss_and_grad(p, X, Y)[0], params)
    for name, p in params.items():
        np.testing.assert_allclose(grads[name], numeric[name], rtol=1e-6, atol=1e-9)
        assert grads[name].shape == p.shape


def test_loss_is_the_textbook_cross_entropy():
    params, X, Y = _problem(50)
    A = 1 / (1 + np.exp(-(params["W1"] @ X + params["b1"])))
    expected = -np.mean(Y * np.log(A) + (1 - Y) * np.log(1 - A))
    loss, _ = logistic_loss_and_grad(params, X, Y)
    assert loss == pytest.approx(expected, rel=1e-12)


def test_gradient_is_the_vectorized_formula():
    params, X, Y = _problem(30)
    A = 1 / (1 + np.exp(-(params["W1"] @ X + params["b1"])))
    _, grads = logistic_loss_and_grad(params, X, Y)
    np.testing.assert_allclose(grads["W1"], (A - Y) @ X.T / 30, rtol=1e-12)
    np.testing.assert_allclose(grads["b1"], np.sum(A - Y, keepdims=True) / 30, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturated_logits_give_finite_exact_loss(dtype):
    # |z| = 1000: a naive log(sigmoid(z)) would take log(0) = -inf.
    X = np.array([[1.0, 1.0]], dtype=dtype)
    Y = np.array([[0.0, 1.0]], dtype=dtype)
    params = {"W1": np.array([[1000.0]], dtype=dtype), "b1": np.zeros((1, 1), dtype=dtype)}
    loss, grads = logistic_loss_and_grad(params, X, Y)
    assert loss == pytest.approx(500.0)  # (1000 + 0) / 2: the wrong sample costs |z|
    assert all(np.isfinite(g).all() and g.dtype == dtype for g in grads.values())


def test_float32_stays_float32():
    params, X, Y = _problem(8, dtype=np.float32)
    _, grads = logistic_loss_and_grad(params, X, Y)
    assert {g.dtype for g in grads.values()} == {np.dtype(np.float32)}
    new, _ = sgd(0.1).update(grads, sgd(0.1).init(params), params)
    assert {p.dtype for p in new.values()} == {np.dtype(np.float32)}


def test_sigmoid_is_stable_and_symmetric():
    z = np.array([-1000.0, -5.0, 0.0, 5.0, 1000.0])
    s = sigmoid(z)
    np.testing.assert_allclose(s, [0.0, 1 / (1 + np.exp(5)), 0.5, 1 / (1 + np.exp(-5)), 1.0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(s + sigmoid(-z), 1.0)


def test_predict_proba_shape_and_values():
    params, X, _ = _problem(6)
    p = get_model("logistic").predict_proba(params, X)
    assert p.shape == (1, 6)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(params["W1"] @ X + params["b1"]))))


def test_init_is_zeros_of_the_right_shapes():
    params = get_model("logistic").init(7, 1, np.dtype(np.float64), 0)
    assert params["W1"].shape == (1, 7) and params["b1"].shape == (1, 1)
    assert not any(p.any() for p in params.values())


def test_check_params_names_the_expected_shapes():
    params = {"W1": np.zeros((1, 3)), "b1": np.zeros((1, 1))}
    check_params(get_model("logistic"), params, 3, 1)
    with pytest.raises(ConfigError, match=r"W1\(1, 4\)"):
        check_params(get_model("logistic"), params, 4, 1)
    with pytest.raises(ConfigError):
        check_params(get_model("logistic"), {"W1": np.zeros(3), "b1": np.zeros((1, 1))}, 3, 1)


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model 'svm'"):
        get_model("svm")


def test_sgd_update_rule():
    params = {"W1": np.array([[1.0, 2.0]]), "b1": np.array([[0.5]])}
    grads = {"W1": np.array([[0.1, -0.2]]), "b1": np.array([[1.0]])}
    opt = sgd(0.5)
    new, state = opt.update(grads, opt.init(params), params)
    np.testing.assert_allclose(new["W1"], [[0.95, 2.1]])
    np.testing.assert_allclose(new["b1"], [[0.0]])
    assert state.step == 1
    assert params["W1"][0, 0] == 1.0  # the input is not modified


@pytest.mark.parametrize("lr", [0.0, -1.0, float("nan")])
def test_sgd_rejects_bad_learning_rates(lr):
    with pytest.raises(ConfigError):
        sgd(lr)
