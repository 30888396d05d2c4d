"""The metrics people report, over a whole store, streamed in one pass and exact (``evaluate``).

- sigmoid (one row of 0/1): ROC-AUC, from every sample's score (the only metric that needs
  them all: 9 bytes a sample, 45 MB at m = 5M), ranked with ties averaged (Mann-Whitney U);
- softmax: the confusion matrix (rows: the true class, columns: the predicted one) and each
  class's precision and recall (0 where nothing was predicted, or present, as scikit-learn);
- identity: each output's RMSE and R², and their means over the outputs (scikit-learn's
  uniform average). The targets' variance is merged chunk by chunk (``Moments``: Chan et al.'s
  parallel update), which neither overflows nor cancels for large m or large offsets.

With a weighting (``streamtrain.weights``), each sample counts as its weight, as scikit-learn's
``sample_weight`` makes it count: the confusion matrix holds sums of weights (normalised to mean 1,
so that it still adds up to m), RMSE and R² are
weighted means (the targets' weighted variance merged by the same update).

Conventions: X (n_x, m), Y (k, m); class-id labels are one row, one-hot labels one row per class.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .models import Model, Params
from .sources import ChunkSource
from .weights import Weighting

__all__ = ["Moments", "metrics", "roc_auc"]


class Moments:
    """Count, mean and sum of squared deviations of each row of columns added chunk by chunk (float64);
    with weights, the count is their sum and each column counts as its weight."""

    def __init__(self, rows: int) -> None:
        self.n: float = 0
        self.mean, self.m2 = np.zeros(rows), np.zeros(rows)

    def add(self, A: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Merge the columns of A (rows, b), weighted by ``weights`` (1, b) if given: Chan, Golub and
        LeVeque's update of two groups."""
        A = np.asarray(A, dtype=np.float64)
        w = np.ones(A.shape[1]) if weights is None else np.asarray(weights[0], dtype=np.float64)
        b: float = A.shape[1] if weights is None else float(w.sum())
        if b == 0:
            return
        mean_b = A.mean(axis=1) if weights is None else (A @ w) / b
        deviations = np.square(A - mean_b[:, None])
        m2_b = deviations.sum(axis=1) if weights is None else deviations @ w
        n = self.n + b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (b / n)
        self.m2 = self.m2 + m2_b + np.square(delta) * (self.n * b / n)
        self.n = n

    @property
    def variance(self) -> np.ndarray:
        """The population variance of each row (0 with fewer than one column)."""
        return self.m2 / self.n if self.n else np.zeros_like(self.m2)


def metrics(source: ChunkSource, model: Model, params: Params, weighting: Weighting | None = None) -> dict[str, Any]:
    """The metrics of ``model`` (see the module docstring) over every sample of ``source``, each
    sample counting as its weight by ``weighting`` (None: once)."""
    chunks = _chunks(source, model, weighting)
    if model.output == "sigmoid":
        scores, labels, weights = [], [], []
        for X, Y, w in chunks:
            scores.append(model.predict_proba(params, X)[0].astype(np.float64))
            labels.append(Y[0] == 1)
            weights += [] if w is None else [w[0]]
        w_all = np.concatenate(weights) if weights else None
        return {"roc_auc": roc_auc(np.concatenate(scores), np.concatenate(labels), w_all)}
    if model.output == "softmax":
        return _classes(chunks, model, params)
    return _regression(chunks, source.k, model, params)


def roc_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray | None = None) -> float | None:
    """The area under the ROC curve: the chance that a positive scores above a negative (pairs
    weighted by the product of their weights), ties counting half; None when one of the classes is
    absent (or weighs nothing).

    Sorted by score, each run of tied scores adds its positives' weight times the negatives' weight
    below the run plus half the negatives' weight in it (the Mann-Whitney U, weighted)."""
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(scores, kind="stable")
    ordered, w_pos = scores[order], np.where(positive[order], w[order], 0.0)
    w_neg = w[order] - w_pos
    total_pos, total_neg = float(w_pos.sum()), float(w_neg.sum())
    if total_pos == 0 or total_neg == 0:
        return None
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first index of each run of ties
    pos_in, neg_in = np.add.reduceat(w_pos, starts), np.add.reduceat(w_neg, starts)
    neg_below = np.cumsum(neg_in) - neg_in
    return float((pos_in * (neg_below + 0.5 * neg_in)).sum() / (total_pos * total_neg))


Chunks = Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]


def _classes(chunks: Chunks, model: Model, params: Params) -> dict[str, Any]:
    classes = params[f"W{len(params) // 2}"].shape[0]
    confusion: np.ndarray = np.zeros((classes, classes), dtype=np.int64)
    for X, Y, w in chunks:
        true = Y[0].astype(np.int64) if Y.shape[0] == 1 else np.argmax(Y, axis=0)
        predicted = model.predict(params, X)[0].astype(np.int64)
        counts = np.bincount(true * classes + predicted, None if w is None else w[0], minlength=classes * classes)
        confusion = confusion + counts.reshape(classes, classes)  # float64 once weights are summed
    right = np.diag(confusion).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(right / confusion.sum(axis=0), nan=0.0)
        recall = np.nan_to_num(right / confusion.sum(axis=1), nan=0.0)
    return {"confusion": confusion.tolist(), "precision": precision.tolist(), "recall": recall.tolist()}


def _regression(chunks: Chunks, k: int, model: Model, params: Params) -> dict[str, Any]:
    targets, squared_error = Moments(k), np.zeros(k)
    for X, Y, w in chunks:
        targets.add(Y, w)
        errors = np.square(model.predict(params, X).astype(np.float64) - Y)
        squared_error += errors.sum(axis=1) if w is None else errors @ w[0]
    n = targets.n
    rmse = np.sqrt(squared_error / n)
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant target: R² 1 if predicted exactly, else 0
        r2 = np.where(targets.m2 > 0, 1.0 - squared_error / targets.m2, np.where(squared_error == 0, 1.0, 0.0))
    return {"rmse": rmse.tolist(), "r2": r2.tolist(), "rmse_mean": float(rmse.mean()), "r2_mean": float(r2.mean())}


def _chunks(source: ChunkSource, model: Model, weighting: Weighting | None) -> Chunks:
    """Each chunk's X, Y and weights (None without a weighting), in order, the labels checked by the model's rule."""
    for a, b in source.chunk_bounds:
        X, Y = source.read(a, b, labels=model.labels)
        yield X, Y, None if weighting is None else weighting(Y, a, b)
