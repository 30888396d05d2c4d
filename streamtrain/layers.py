"""The layers a ``models.Model`` is built from: hidden activations, and output layers paired
with their losses so that dZ[L] = A[L] - Y (see ``streamtrain.models`` for the conventions).

Every loss returns sums over a batch's columns, in float64, optionally weighted per sample
(``streamtrain.weights``): what ``Model.totals`` adds up across chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .labels import BINARY, ONE_HOT, ClassIds, LabelRule

__all__ = ["ACTIVATIONS", "MODELS", "OUTPUTS", "Activation", "Loss", "Output", "output_of", "sigmoid", "softplus"]


# -- activations ---------------------------------------------------------------------------------


def softplus(Z: np.ndarray) -> np.ndarray:
    """log(1 + e^z), the cross-entropy of a sigmoid output: -[y log a + (1-y) log(1-a)] = softplus(z) - y z.

    Written as max(z, 0) + log1p(e^-|z|): it never takes log(0) or overflows, and these
    ufuncs are vectorised where np.logaddexp is not (2-3x faster).
    """
    return np.maximum(Z, 0) + np.log1p(np.exp(-np.abs(Z)))


def sigmoid(Z: np.ndarray) -> np.ndarray:
    # tanh form: one ufunc, no overflow warning for large |Z| (exp(-Z) would overflow).
    return 0.5 * (1.0 + np.tanh(0.5 * Z))


class Activation(NamedTuple):
    """A hidden layer's g, its derivative g'(Z) (written with A = g(Z) where that is cheaper),
    and the variance of its initial weights for a layer of n_in inputs and n units."""

    g: Callable[[np.ndarray], np.ndarray]
    derivative: Callable[[np.ndarray, np.ndarray], np.ndarray]
    init_variance: Callable[[int, int], float]


def _xavier(n_in: int, n: int) -> float:
    return 2.0 / (n_in + n)


ACTIVATIONS = {
    "relu": Activation(lambda Z: np.maximum(Z, 0), lambda Z, A: Z > 0, lambda n_in, n: 2.0 / n_in),  # He
    "tanh": Activation(np.tanh, lambda Z, A: 1.0 - A * A, _xavier),
    "sigmoid": Activation(sigmoid, lambda Z, A: A * (1.0 - A), _xavier),
}


# -- output layers: activation, loss, predictions and labels go together ---------------------------


def _softmax(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise softmax of Z, with the shifted logits S = Z - max and log Σ e^S."""
    S = Z - Z.max(axis=0, keepdims=True)  # e^S <= 1: no overflow
    E = np.exp(S)
    total = E.sum(axis=0, keepdims=True)
    return E / total, S, np.log(total)


def _sigmoid_class(A: np.ndarray) -> np.ndarray:
    """Class 1 where a >= 0.5: predict's rule, which accuracy shares. Not z >= 0: the sigmoid
    of a tiny negative z rounds to 0.5, and those samples must count as predict classes them."""
    return A >= 0.5


# Each loss returns sums over the batch's columns: Σ w_i loss_i, Σ w_i [correct_i] and dZ[L] with
# column i scaled by w_i; w (1, B) None counts every sample once (the unweighted sums, as fast as before).
Loss = tuple[float, float, np.ndarray | None]


def _weighed(per_sample: np.ndarray, w: np.ndarray | None) -> float:
    """Σ w_i x_i over per-sample values x (1, B) or (B,), in float64; Σ x_i when w is None."""
    if w is None:
        return float(per_sample.sum(dtype=np.float64))
    return float(np.dot(np.ravel(per_sample).astype(np.float64), np.ravel(w).astype(np.float64)))


def _hits(hit: np.ndarray, w: np.ndarray | None) -> float:
    """The samples predicted right (a bool per sample), counted, or their weights summed."""
    return int(np.count_nonzero(hit)) if w is None else _weighed(hit, w)


def _scaled(dZ: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    return dZ if w is None else dZ * w


def _sigmoid_loss(Z: np.ndarray, Y: np.ndarray, grad: bool, w: np.ndarray | None = None) -> Loss:
    per_sample = softplus(Z) - Y * Z
    loss = float(per_sample.sum(dtype=np.float64)) if w is None else _weighed(per_sample.sum(axis=0), w)
    A = sigmoid(Z)
    hit = _sigmoid_class(A) == (Y == 1)
    correct = _hits(hit[0] if hit.shape[0] == 1 else hit.all(axis=0), w)
    return loss, correct, _scaled(A - Y, w) if grad else None


def _softmax_loss(Z: np.ndarray, Y: np.ndarray, grad: bool, w: np.ndarray | None = None) -> Loss:
    A, S, log_total = _softmax(Z)
    # -Σ_j y_j log a_j = log Σ e^S - Σ_j y_j S_j for one-hot y: no log of a tiny a_j.
    if w is None:
        loss = float(log_total.sum(dtype=np.float64) - (Y * S).sum(dtype=np.float64))
    else:
        loss = _weighed(log_total, w) - _weighed((Y * S).sum(axis=0), w)
    correct = _hits(Z.argmax(axis=0) == Y.argmax(axis=0), w)
    return loss, correct, _scaled(A - Y, w) if grad else None


def _squared_loss(Z: np.ndarray, Y: np.ndarray, grad: bool, w: np.ndarray | None = None) -> Loss:
    D = Z - Y
    squares = np.square(D, dtype=np.float64)
    loss = 0.5 * (float(squares.sum()) if w is None else _weighed(squares.sum(axis=0), w))
    return loss, 0, _scaled(D, w) if grad else None


class Output(NamedTuple):
    """An output layer and its loss, paired so that dZ[L] = A[L] - Y."""

    model: str  # the 1-layer model with this output, and make-data's task of that name
    activation: Callable[[np.ndarray], np.ndarray]
    loss: Callable[[np.ndarray, np.ndarray, bool, np.ndarray | None], Loss]  # sums: loss, correct, dZ
    predict: Callable[[np.ndarray], np.ndarray]  # A[L] -> what ``Model.predict`` returns
    labels: Callable[[int | None], LabelRule | None]  # the label rule, given the class count of class ids
    has_accuracy: bool
    one_row: bool  # the labels must be one row (Y (1, m))
    class_ids: bool  # one row of labels holds class ids, turned into one-hot columns


OUTPUTS = {
    "sigmoid": Output(
        model="logistic",
        activation=sigmoid,
        loss=_sigmoid_loss,
        predict=lambda A: _sigmoid_class(A).astype(np.int8),
        labels=lambda classes: BINARY,
        has_accuracy=True,
        one_row=True,
        class_ids=False,
    ),
    "softmax": Output(
        model="softmax",
        activation=lambda Z: _softmax(Z)[0],
        loss=_softmax_loss,
        predict=lambda A: A.argmax(axis=0)[None, :],
        labels=lambda classes: ClassIds(classes) if classes else ONE_HOT,
        has_accuracy=True,
        one_row=False,
        class_ids=True,
    ),
    "identity": Output(
        model="linear",
        activation=lambda Z: Z,
        loss=_squared_loss,
        predict=lambda A: A,
        labels=lambda classes: None,
        has_accuracy=False,
        one_row=False,
        class_ids=False,
    ),
}
MODELS = (*(o.model for o in OUTPUTS.values()), "mlp")  # mlp: hidden layers and any of the outputs


def output_of(model: str) -> str | None:
    """The output layer of the 1-layer model (or make-data task) called ``model``; None for others."""
    return next((name for name, o in OUTPUTS.items() if o.model == model), None)
