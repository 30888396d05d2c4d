"""Model maths for every model: finite differences, the textbook formulas, numerical safety, learning."""

import tracemalloc

import numpy as np
import pytest

import streamtrain
from streamtrain import ArraySource, ConfigError
from streamtrain.models import get_model, loss_of, objective, sigmoid
from streamtrain.optim import sgd
from streamtrain.parameters import check_params

LOGISTIC = get_model("logistic")


def _problem(B, n_x=4, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_x, B)).astype(dtype)
    Y = (rng.random((1, B)) < 0.5).astype(dtype)
    params = {"W1": rng.standard_normal((1, n_x)).astype(dtype), "b1": rng.standard_normal((1, 1)).astype(dtype)}
    return params, X, Y


@pytest.mark.parametrize("B", [1, 2, 9])
def test_gradient_matches_central_finite_differences(B, numeric_grad):
    params, X, Y = _problem(B)
    _, grads = objective(params, LOGISTIC.totals(params, X, Y))
    numeric = numeric_grad(lambda p: objective(p, LOGISTIC.totals(p, X, Y))[0], params)
    for name, p in params.items():
        np.testing.assert_allclose(grads[name], numeric[name], rtol=1e-6, atol=1e-9)
        assert grads[name].shape == p.shape


def test_loss_is_the_textbook_cross_entropy():
    params, X, Y = _problem(50)
    A = 1 / (1 + np.exp(-(params["W1"] @ X + params["b1"])))
    expected = -np.mean(Y * np.log(A) + (1 - Y) * np.log(1 - A))
    loss, _ = objective(params, LOGISTIC.totals(params, X, Y))
    assert loss == pytest.approx(expected, rel=1e-12)


def test_gradient_is_the_vectorized_formula():
    params, X, Y = _problem(30)
    A = 1 / (1 + np.exp(-(params["W1"] @ X + params["b1"])))
    _, grads = objective(params, LOGISTIC.totals(params, X, Y))
    np.testing.assert_allclose(grads["W1"], (A - Y) @ X.T / 30, rtol=1e-12)
    np.testing.assert_allclose(grads["b1"], np.sum(A - Y, keepdims=True) / 30, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturated_logits_give_finite_exact_loss(dtype):
    # |z| = 1000: a naive log(sigmoid(z)) would take log(0) = -inf.
    X = np.array([[1.0, 1.0]], dtype=dtype)
    Y = np.array([[0.0, 1.0]], dtype=dtype)
    params = {"W1": np.array([[1000.0]], dtype=dtype), "b1": np.zeros((1, 1), dtype=dtype)}
    loss, grads = objective(params, LOGISTIC.totals(params, X, Y))
    assert loss == pytest.approx(500.0)  # (1000 + 0) / 2: the wrong sample costs |z|
    assert all(np.isfinite(g).all() and g.dtype == dtype for g in grads.values())


def test_float32_stays_float32():
    params, X, Y = _problem(8, dtype=np.float32)
    _, grads = objective(params, LOGISTIC.totals(params, X, Y))
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


@pytest.mark.parametrize(
    "dtype, b",
    [(np.float64, 0.0), (np.float32, 0.0), (np.float64, -0.0), (np.float64, -1e-20), (np.float32, -1e-9)],
)
def test_sigmoid_accuracy_counts_what_predict_gets_right_at_the_boundary(dtype, b):
    # z = 0 gives a = 0.5, which predict calls class 1; so does a tiny negative z whose
    # sigmoid rounds to 0.5. Accuracy must count those samples as predict classifies them.
    _, X, Y = _problem(25, n_x=3, dtype=dtype)  # 8 ones: the other class would count 17
    params = {"W1": np.zeros((1, 3), dtype), "b1": np.full((1, 1), b, dtype)}
    predicted = LOGISTIC.predict(params, X)
    assert predicted.tolist() == [[1] * 25]
    ones = np.count_nonzero(Y == 1)
    assert ones == 8
    assert LOGISTIC.totals(params, X, Y).correct == ones
    assert LOGISTIC.totals(params, X, Y, grad=False).correct == ones


def test_a_sigmoid_output_of_several_rows_is_right_only_when_every_row_is():
    # Several 0/1 labels per sample (an mlp with a sigmoid output on Y of k rows): rows z = (+1, -1).
    model = get_model("mlp", hidden=[2], output="sigmoid")
    params = {"W1": np.ones((2, 3)), "b1": np.zeros((2, 1)), "W2": np.zeros((2, 2)), "b2": np.array([[1.0], [-1.0]])}
    X = np.ones((3, 4))
    Y = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]])  # both rows right, one, one, none
    assert model.predict(params, X).tolist() == [[1] * 4, [0] * 4]
    assert model.totals(params, X, Y).correct == 1


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


@pytest.mark.parametrize("model", [get_model("mlp", hidden=[10**12]), get_model("softmax", classes=10**12)])
def test_check_params_compares_shapes_without_building_the_network(model):
    # It built the network to read its shapes: terabytes for sizes a damaged model file may say.
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=r"expected shapes W1\(1000000000000, 3\)"):
            check_params(model, {"W1": np.zeros((1, 3)), "b1": np.zeros((1, 1))}, 3, 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20


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


# -- every model: softmax, linear and L-layer networks ---------------------------------------------

CASES = [
    ("logistic", {}, 1),
    ("softmax", {}, 4),
    ("softmax-ids", {}, 1),
    ("linear", {}, 2),
    ("mlp", {"hidden": (5, 3), "activation": "relu", "output": "sigmoid"}, 1),
    ("mlp", {"hidden": (4,), "activation": "tanh", "output": "softmax"}, 3),
    ("mlp", {"hidden": (3, 4), "activation": "sigmoid", "output": "identity"}, 2),
]


def _model_problem(case, options, k, B, n_x=3, seed=0):
    """A model, random params (not at zero: every path of the gradient is exercised) and labels."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_x, B))
    name = "softmax" if case == "softmax-ids" else case
    model = get_model(name, **options)
    if model.output == "sigmoid":
        Y = (rng.random((1, B)) < 0.5).astype(float)
    elif case == "softmax-ids":
        model = get_model(name, classes=3)
        Y = rng.integers(0, 3, size=(1, B)).astype(float)
    elif model.output == "softmax":
        Y = np.eye(k)[:, rng.integers(0, k, size=B)]
    else:
        Y = rng.standard_normal((k, B))
    params = {key: rng.standard_normal(v.shape) for key, v in model.init(n_x, k, np.dtype(np.float64), 0).items()}
    return model, params, X, Y


@pytest.mark.parametrize("l2", [0.0, 0.7])
@pytest.mark.parametrize("B", [1, 6])
@pytest.mark.parametrize("case, options, k", CASES)
def test_every_model_gradient_matches_finite_differences(case, options, k, B, l2, numeric_grad):
    model, params, X, Y = _model_problem(case, options, k, B)
    m = 10  # the store's size scales the L2 term
    _, grads = objective(params, model.totals(params, X, Y), l2=l2, m=m)
    numeric = numeric_grad(lambda p: loss_of(p, model.totals(p, X, Y, grad=False), l2=l2, m=m), params)
    assert list(grads) == list(params)
    for name in params:
        np.testing.assert_allclose(grads[name], numeric[name], rtol=1e-5, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("case, options, k", CASES)
def test_per_sample_gradient_norms_are_summed_exactly(case, options, k):
    model, params, X, Y = _model_problem(case, options, k, 7)
    expected = 0.0
    for i in range(7):  # a reference loop over single samples
        g = model.totals(params, X[:, i : i + 1], Y[:, i : i + 1]).grads
        expected += sum(float(np.sum(v**2)) for v in g.values())
    assert model.totals(params, X, Y, sample_norms=True).grad_sq == pytest.approx(expected, rel=1e-12)


def test_losses_are_the_textbook_formulas():
    model, params, X, Y = _model_problem("softmax", {}, 4, 9)
    Z = params["W1"] @ X + params["b1"]
    P = np.exp(Z) / np.exp(Z).sum(axis=0)
    assert model.totals(params, X, Y).loss == pytest.approx(-np.sum(Y * np.log(P)), rel=1e-12)
    model, params, X, Y = _model_problem("linear", {}, 2, 9)
    Z = params["W1"] @ X + params["b1"]
    assert model.totals(params, X, Y).loss == pytest.approx(0.5 * np.sum((Z - Y) ** 2), rel=1e-12)


def test_class_ids_and_one_hot_labels_give_the_same_sums():
    model, params, X, Y = _model_problem("softmax-ids", {}, 1, 8)
    onehot = np.eye(3)[:, Y[0].astype(int)]
    by_ids, by_onehot = model.totals(params, X, Y), get_model("softmax").totals(params, X, onehot)
    assert by_ids.loss == pytest.approx(by_onehot.loss) and by_ids.correct == by_onehot.correct
    for name in params:
        np.testing.assert_allclose(by_ids.grads[name], by_onehot.grads[name])


def test_softmax_with_two_classes_is_logistic_regression():
    # With W = [0; w], b = [0; b] softmax gives P(class 1) = sigmoid(w.x + b): the same loss,
    # and row 2 of its gradient is logistic's gradient (row 1 is its negative).
    params, X, Y = _problem(40)
    logistic = get_model("logistic").totals(params, X, Y)
    two = {
        "W1": np.vstack([np.zeros_like(params["W1"]), params["W1"]]),
        "b1": np.vstack([np.zeros_like(params["b1"]), params["b1"]]),
    }
    softmax = get_model("softmax").totals(two, X, np.vstack([1 - Y, Y]))
    assert softmax.loss == pytest.approx(logistic.loss, rel=1e-12)
    assert softmax.correct == logistic.correct
    for name in params:
        np.testing.assert_allclose(softmax.grads[name][1:], logistic.grads[name], rtol=1e-12)
        np.testing.assert_allclose(softmax.grads[name][:1], -logistic.grads[name], rtol=1e-12)


def test_saturated_softmax_logits_give_a_finite_exact_loss():
    X = np.array([[1.0]])
    params = {"W1": np.array([[1000.0], [-1000.0]]), "b1": np.zeros((2, 1))}
    totals = get_model("softmax").totals(params, X, np.array([[0.0], [1.0]]))
    assert totals.loss == pytest.approx(2000.0) and np.isfinite(totals.grads["W1"]).all()


@pytest.mark.parametrize("activation, expected_var", [("relu", 2 / 50), ("tanh", 2 / 80), ("sigmoid", 2 / 80)])
def test_init_is_he_for_relu_and_xavier_otherwise_from_the_seed(activation, expected_var):
    model = get_model("mlp", hidden=(30,), activation=activation, output="sigmoid")
    params = model.init(50, 1, np.dtype(np.float64), seed=4)
    assert params["W1"].shape == (30, 50) and params["W2"].shape == (1, 30) and params["b2"].shape == (1, 1)
    assert params["W1"].var() == pytest.approx(expected_var, rel=0.1)
    assert not params["b1"].any()
    np.testing.assert_array_equal(model.init(50, 1, np.dtype(np.float64), seed=4)["W1"], params["W1"])
    assert not np.array_equal(model.init(50, 1, np.dtype(np.float64), seed=5)["W1"], params["W1"])


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(name="mlp", hidden=()), "at least one hidden layer"),
        (dict(name="mlp", hidden=(4, 0)), "hidden layer size"),
        (dict(name="mlp", activation="gelu"), "unknown activation"),
        (dict(name="mlp", output="tanh"), "unknown output"),
        (dict(name="logistic", hidden=(4,)), "no hidden layers"),
        (dict(name="linear", output="softmax"), "output is identity"),
    ],
)
def test_bad_model_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        get_model(options.pop("name"), **options)


def _xor(m=2000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.choice([-1.0, 1.0], size=(2, m)) + 0.1 * rng.standard_normal((2, m))
    Y = ((X[0] * X[1]) > 0).astype(float)[None, :]
    return X, Y


def test_an_mlp_learns_xor_which_logistic_regression_cannot():
    X, Y = _xor()
    source = ArraySource(X, Y, chunk_size=500)
    mlp = streamtrain.fit(
        source,
        model="mlp",
        hidden=[8],
        activation="tanh",
        optimizer="adam",
        lr=0.02,
        batch_size=32,
        epochs=30,
        dtype="float64",
    )
    linear = streamtrain.fit(
        source, model="logistic", optimizer="adam", lr=0.02, batch_size=32, epochs=30, dtype="float64"
    )
    assert np.mean(mlp.predict(X) == Y) > 0.97
    assert np.mean(linear.predict(X) == Y) < 0.7


def test_softmax_recovers_well_separated_classes():
    rng = np.random.default_rng(3)
    centres = np.array([[4.0, 0.0], [-4.0, 4.0], [0.0, -4.0]]).T  # (n_x, k)
    ids = rng.integers(0, 3, size=1500)
    X = centres[:, ids] + rng.standard_normal((2, 1500))
    result = streamtrain.fit(
        ArraySource(X, ids[None, :].astype(float), chunk_size=256),
        model="softmax",
        lr=0.5,
        batch_size=64,
        epochs=10,
        dtype="float64",
    )
    assert result.model.classes == 3
    assert np.mean(result.predict(X)[0] == ids) > 0.98
