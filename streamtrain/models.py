"""Models as pure functions of a flat parameter dict.

Conventions
-----------
X (n_x, B) holds one sample per column, Y (1, B) its labels in {0, 1}.
Parameters are ``{"W1": (1, n_x), "b1": (1, 1)}``: logistic regression is the 1-layer
network Z = W1 @ X + b1, A = sigmoid(Z). Every ``loss_and_grad`` returns the *mean* loss
over the batch (a Python float, accumulated in float64) and gradients of that mean, in the
parameters' dtype, so a streamed epoch of mini-batch gradients weighted by batch size sums
to the full-batch gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ._errors import ConfigError

__all__ = ["MODELS", "Model", "Params", "check_params", "get_model", "logistic_loss_and_grad",
           "sigmoid"]

Params = dict[str, np.ndarray]


def sigmoid(Z: np.ndarray) -> np.ndarray:
    # tanh form: one ufunc, no overflow warning for large |Z| (exp(-Z) would overflow).
    return 0.5 * (1.0 + np.tanh(0.5 * Z))


def logistic_loss_and_grad(params: Params, X: np.ndarray, Y: np.ndarray) -> tuple[float, Params]:
    """Mean cross-entropy of a logistic model on one batch, and its gradient.

    dZ = A - Y, dW1 = dZ @ X.T / B, db1 = sum(dZ) / B.
    """
    W, b = params["W1"], params["b1"]
    B = X.shape[1]
    Z = W @ X + b
    # -[y log a + (1 - y) log(1 - a)] = log(1 + e^z) - y z, which never takes log(0).
    losses = np.logaddexp(0.0, Z) - Y * Z
    dZ = sigmoid(Z) - Y
    grads = {"W1": dZ @ X.T / B, "b1": dZ.sum(axis=1, keepdims=True) / B}
    return float(losses.sum(dtype=np.float64)) / B, grads


def logistic_predict_proba(params: Params, X: np.ndarray) -> np.ndarray:
    """P(y = 1 | x) for every column of X, shape (1, m)."""
    return sigmoid(params["W1"] @ X + params["b1"])


def logistic_init(n_x: int, k: int, dtype: np.dtype, seed: int) -> Params:
    # Cross-entropy is convex in (W, b): zeros are a fine, seed-free start.
    del seed
    return {"W1": np.zeros((k, n_x), dtype=dtype), "b1": np.zeros((k, 1), dtype=dtype)}


class Model(NamedTuple):
    name: str
    loss_and_grad: Callable[[Params, np.ndarray, np.ndarray], tuple[float, Params]]
    predict_proba: Callable[[Params, np.ndarray], np.ndarray]
    init: Callable[[int, int, np.dtype, int], Params]
    binary_labels: bool  # labels must be 0/1
    k: int | None  # rows of Y the model needs (None: any)


MODELS: dict[str, Model] = {
    "logistic": Model("logistic", logistic_loss_and_grad, logistic_predict_proba, logistic_init,
                      binary_labels=True, k=1),
}


def get_model(name: str) -> Model:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODELS)}") from None


def check_params(model: Model, params: Params, n_x: int, k: int) -> None:
    """Raise ConfigError unless ``params`` has the keys and shapes ``model`` needs for this data."""
    expected = {k_: v.shape for k_, v in model.init(n_x, k, np.dtype(np.float32), 0).items()}
    got = {k_: np.shape(v) for k_, v in params.items()}
    if got != expected:
        raise ConfigError(
            f"parameters do not fit a {model.name} model on n_x={n_x}: expected shapes "
            f"{_shapes(expected)}, got {_shapes(got)}"
        )


def _shapes(shapes: dict[str, tuple]) -> str:
    return ", ".join(f"{k}{tuple(v)}" for k, v in shapes.items())
