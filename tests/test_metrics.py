"""evaluate's metrics equal scikit-learn's on the same arrays (streamtrain.metrics), streamed chunk by chunk."""

from __future__ import annotations

import numpy as np
import pytest

import streamtrain
from streamtrain import ArraySource
from streamtrain.metrics import Moments, roc_auc

metrics = pytest.importorskip("sklearn.metrics")
M, N_X = 1500, 4


def trained(model: str, Y: np.ndarray, X: np.ndarray, **options):
    source = ArraySource(X, Y, chunk_size=128)
    options = {"epochs": 2, "batch_size": 32, "lr": 0.05, **options}
    result = streamtrain.fit(source, model=model, progress=False, **options)
    return source, result, streamtrain.evaluate(source, result, scheduler="sync")


def test_binary_roc_auc_and_log_loss():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_X, M)).astype("float32")
    Y = (X[:1] + 0.5 * rng.standard_normal((1, M)) > 0).astype("float32")
    _, result, r = trained("logistic", Y, X)
    p = result.model.predict_proba(result.params, X)[0].astype(np.float64)
    assert r["roc_auc"] == pytest.approx(metrics.roc_auc_score(Y[0], p), abs=1e-12)
    assert r["loss"] == pytest.approx(metrics.log_loss(Y[0], p), rel=1e-5)  # float32 scores, float64 sums
    assert r["accuracy"] == metrics.accuracy_score(Y[0], p >= 0.5)


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_confusion_precision_and_recall(one_hot):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((N_X, M)).astype("float32")
    ids = np.argmax(rng.standard_normal((4, N_X)) @ X + rng.standard_normal((4, M)), axis=0)
    ids[ids == 3] = 2  # class 3 never appears: its precision and recall are 0, as scikit-learn says
    Y = np.eye(4)[ids].T.astype("float32") if one_hot else ids[None].astype("float32")
    _, result, r = trained("softmax", Y, X)
    predicted = result.model.predict(result.params, X)[0]
    labels = list(range(len(r["confusion"])))
    assert r["confusion"] == metrics.confusion_matrix(ids, predicted, labels=labels).tolist()
    with np.errstate(all="ignore"):
        precision = metrics.precision_score(ids, predicted, labels=labels, average=None, zero_division=0)
        recall = metrics.recall_score(ids, predicted, labels=labels, average=None, zero_division=0)
    np.testing.assert_allclose(r["precision"], precision, rtol=1e-12)
    np.testing.assert_allclose(r["recall"], recall, rtol=1e-12)


def test_linear_rmse_and_r2_per_output_and_averaged():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((N_X, M)).astype("float32")
    Y = np.vstack([X[0] - X[1], 1e6 + 3 * X[2]]) + 0.3 * rng.standard_normal((2, M))  # a large offset
    _, result, r = trained("linear", Y, X, dtype="float64", lr=0.1, epochs=20)
    P = result.model.predict(result.params, X.astype(np.float64))
    np.testing.assert_allclose(r["r2"], metrics.r2_score(Y.T, P.T, multioutput="raw_values"), rtol=1e-9)
    np.testing.assert_allclose(r["rmse"], np.sqrt(metrics.mean_squared_error(Y.T, P.T, multioutput="raw_values")))
    assert r["r2_mean"] == pytest.approx(metrics.r2_score(Y.T, P.T), rel=1e-9)


def test_chans_merge_matches_numpy_on_large_offsets():
    rng = np.random.default_rng(3)
    A = 1e9 + rng.standard_normal((2, 100_001))
    moments = Moments(2)
    for a in range(0, A.shape[1], 7919):
        moments.add(A[:, a : a + 7919])
    np.testing.assert_allclose(moments.mean, A.mean(axis=1), rtol=1e-15)
    np.testing.assert_allclose(moments.variance, A.var(axis=1), rtol=1e-9)


def test_roc_auc_with_ties_and_one_class():
    scores = np.array([0.1, 0.4, 0.4, 0.4, 0.8, 0.8])
    positive = np.array([False, True, False, True, True, False])
    assert roc_auc(scores, positive) == pytest.approx(metrics.roc_auc_score(positive, scores), abs=1e-15)
    assert roc_auc(scores, np.ones(6, bool)) is None


def _weighted(model: str, Y: np.ndarray, X: np.ndarray, **options):
    """A model trained, and evaluated with per-sample weights w (an array of the source named "w")."""
    w = np.random.default_rng(7).random((1, X.shape[1])) * 3
    source = ArraySource(X, Y, chunk_size=128, arrays={"w": w})
    result = streamtrain.fit(source, model=model, progress=False, **{"epochs": 2, "batch_size": 32, **options})
    return result, streamtrain.evaluate(source, result, scheduler="sync", weights="w"), w[0]


def test_weighted_metrics_equal_scikit_learns_with_sample_weight():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((N_X, M)).astype("float32")
    Y = (X[:1] + rng.standard_normal((1, M)) > 0).astype("float32")
    result, r, w = _weighted("logistic", Y, X, lr=0.05)
    p = result.model.predict_proba(result.params, X)[0].astype(np.float64)
    assert r["roc_auc"] == pytest.approx(metrics.roc_auc_score(Y[0], p, sample_weight=w), abs=1e-12)
    assert r["loss"] == pytest.approx(metrics.log_loss(Y[0], p, sample_weight=w), rel=1e-5)
    assert r["accuracy"] == pytest.approx(metrics.accuracy_score(Y[0], p >= 0.5, sample_weight=w), rel=1e-12)

    ids = np.argmax(rng.standard_normal((3, N_X)) @ X + rng.standard_normal((3, M)), axis=0)
    result, r, w = _weighted("softmax", ids[None].astype("float32"), X, lr=0.05)
    predicted = result.model.predict(result.params, X)[0]
    normalised = w * M / w.sum()  # the weights as every pass sees them: mean 1, the matrix adds up to m
    confusion = metrics.confusion_matrix(ids, predicted, labels=[0, 1, 2], sample_weight=normalised)
    np.testing.assert_allclose(r["confusion"], confusion, rtol=1e-12)
    precision = metrics.precision_score(ids, predicted, average=None, sample_weight=w, zero_division=0)
    np.testing.assert_allclose(r["precision"], precision, rtol=1e-12)
    recall = metrics.recall_score(ids, predicted, average=None, sample_weight=w, zero_division=0)
    np.testing.assert_allclose(r["recall"], recall, rtol=1e-12)

    Y = np.vstack([X[0] - X[1], 1e6 + 3 * X[2]]) + 0.3 * rng.standard_normal((2, M))
    result, r, w = _weighted("linear", Y, X, dtype="float64", lr=0.1, epochs=20)
    P = result.model.predict(result.params, X.astype(np.float64))
    r2 = metrics.r2_score(Y.T, P.T, sample_weight=w, multioutput="raw_values")
    np.testing.assert_allclose(r["r2"], r2, rtol=1e-9)
    mse = metrics.mean_squared_error(Y.T, P.T, sample_weight=w, multioutput="raw_values")
    np.testing.assert_allclose(r["rmse"], np.sqrt(mse), rtol=1e-12)


def test_weighted_roc_auc_with_ties_and_zero_weights():
    scores = np.array([0.1, 0.4, 0.4, 0.4, 0.8, 0.8, 0.3])
    positive = np.array([False, True, False, True, True, False, True])
    w = np.array([0.5, 2.0, 1.0, 0.0, 3.0, 1.5, 0.7])
    expected = metrics.roc_auc_score(positive, scores, sample_weight=w)
    assert roc_auc(scores, positive, w) == pytest.approx(expected, abs=1e-15)
    assert roc_auc(scores, positive, np.where(positive, 0.0, 1.0)) is None  # the positives weigh nothing


def test_weighted_moments_are_numpys_weighted_mean_and_variance():
    rng = np.random.default_rng(4)
    A, w = 1e6 + rng.standard_normal((2, 10_007)), rng.random((1, 10_007))
    moments = Moments(2)
    for a in range(0, A.shape[1], 1000):
        moments.add(A[:, a : a + 1000], w[:, a : a + 1000])
    mean = np.average(A, axis=1, weights=w[0])
    np.testing.assert_allclose(moments.mean, mean, rtol=1e-15)
    np.testing.assert_allclose(moments.variance, np.average((A - mean[:, None]) ** 2, axis=1, weights=w[0]), rtol=1e-9)
