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
