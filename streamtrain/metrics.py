"""The metrics people report, over a whole store, streamed in one pass and exact (``evaluate``).

- sigmoid (one row of 0/1): ROC-AUC, from every sample's score (the only metric that needs
  them all: 9 bytes a sample, 45 MB at m = 5M), ranked with ties averaged (Mann-Whitney U);
- softmax: the confusion matrix (rows: the true class, columns: the predicted one) and each
  class's precision and recall (0 where nothing was predicted, or present, as scikit-learn);
- identity: each output's RMSE and R², and their means over the outputs (scikit-learn's
  uniform average). The targets' variance is merged chunk by chunk (``Moments``: Chan et al.'s
  parallel update), which neither overflows nor cancels for large m or large offsets.

Conventions: X (n_x, m), Y (k, m); class-id labels are one row, one-hot labels one row per class.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .models import Model, Params
from .sources import ChunkSource

__all__ = ["Moments", "metrics", "roc_auc"]


class Moments:
    """Count, mean and sum of squared deviations of each row of columns added chunk by chunk (float64)."""

    def __init__(self, rows: int) -> None:
        self.n, self.mean, self.m2 = 0, np.zeros(rows), np.zeros(rows)

    def add(self, A: np.ndarray) -> None:
        """Merge the columns of A (rows, b): Chan, Golub and LeVeque's update of two groups."""
        b = A.shape[1]
        if b == 0:
            return
        A = np.asarray(A, dtype=np.float64)
        mean_b = A.mean(axis=1)
        m2_b = np.square(A - mean_b[:, None]).sum(axis=1)
        n = self.n + b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (b / n)
        self.m2 = self.m2 + m2_b + np.square(delta) * (self.n * b / n)
        self.n = n

    @property
    def variance(self) -> np.ndarray:
        """The population variance of each row (0 with fewer than one column)."""
        return self.m2 / self.n if self.n else np.zeros_like(self.m2)


def metrics(source: ChunkSource, model: Model, params: Params) -> dict[str, Any]:
    """The metrics of ``model`` (see the module docstring) over every sample of ``source``."""
    if model.output == "sigmoid":
        scores, labels = [], []
        for X, Y in _chunks(source, model):
            scores.append(model.predict_proba(params, X)[0].astype(np.float64))
            labels.append(Y[0] == 1)
        return {"roc_auc": roc_auc(np.concatenate(scores), np.concatenate(labels))}
    if model.output == "softmax":
        return _classes(source, model, params)
    return _regression(source, model, params)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """The area under the ROC curve: the chance that a positive scores above a negative, ties
    counting half; None when one of the classes is absent."""
    n_pos = int(np.count_nonzero(positive))
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first index of each run of ties
    ends = np.r_[starts[1:], len(ordered)]
    average_rank = (starts + ends + 1) / 2.0  # ranks start at 1
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(average_rank, ends - starts)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _classes(source: ChunkSource, model: Model, params: Params) -> dict[str, Any]:
    classes = params[f"W{len(params) // 2}"].shape[0]
    confusion = np.zeros((classes, classes), dtype=np.int64)
    for X, Y in _chunks(source, model):
        true = Y[0].astype(np.int64) if Y.shape[0] == 1 else np.argmax(Y, axis=0)
        predicted = model.predict(params, X)[0].astype(np.int64)
        confusion += np.bincount(true * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    right = np.diag(confusion).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(right / confusion.sum(axis=0), nan=0.0)
        recall = np.nan_to_num(right / confusion.sum(axis=1), nan=0.0)
    return {"confusion": confusion.tolist(), "precision": precision.tolist(), "recall": recall.tolist()}


def _regression(source: ChunkSource, model: Model, params: Params) -> dict[str, Any]:
    targets, squared_error = Moments(source.k), np.zeros(source.k)
    for X, Y in _chunks(source, model):
        targets.add(Y)
        squared_error += np.square(model.predict(params, X).astype(np.float64) - Y).sum(axis=1)
    n = targets.n
    rmse = np.sqrt(squared_error / n)
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant target: R² 1 if predicted exactly, else 0
        r2 = np.where(targets.m2 > 0, 1.0 - squared_error / targets.m2, np.where(squared_error == 0, 1.0, 0.0))
    return {"rmse": rmse.tolist(), "r2": r2.tolist(), "rmse_mean": float(rmse.mean()), "r2_mean": float(r2.mean())}


def _chunks(source: ChunkSource, model: Model) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each chunk's X and Y, in order, the labels checked by the model's rule."""
    for a, b in source.chunk_bounds:
        yield source.read(a, b, labels=model.labels)
