"""Models as pure functions of a flat parameter dict.

Conventions
-----------
X (n_x, B) holds one sample per column, Y (1, B) its labels in {0, 1}.
Parameters are ``{"W1": (1, n_x), "b1": (1, 1)}``: logistic regression is the 1-layer
network Z = W1 @ X + b1, A = sigmoid(Z).

Each model has one per-chunk function, ``totals(params, X, Y)``, that returns *sums* over
the columns it was given (loss, gradient, correct predictions). Sums add up across chunks,
so the streaming step, the chunked numpy pass and the Dask pass all run this same function
and differ only in how they add up its results.

The objective
-------------
    J(W, b) = (1/m) Σ_i loss_i + (λ / 2m) Σ_l ‖W[l]‖²_F      (the b's are not penalised)

over all m samples of the store. A mini-batch of B samples estimates it with
(1/B) Σ_batch loss_i + (λ / 2m) Σ_l ‖W[l]‖²_F, whose gradient is an unbiased estimate of
∇J, and B-weighted mini-batch gradients over one epoch add up to ∇J exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ._errors import ConfigError

__all__ = ["MODELS", "Model", "Params", "Totals", "add_totals", "batch_objective", "check_data", "check_params",
           "get_model", "logistic_loss_and_grad", "norm", "objective", "sigmoid"]

Params = dict[str, np.ndarray]


class Totals(NamedTuple):
    """Sums over a set of samples (a batch, a chunk, a whole store)."""

    loss: float  # Σ per-sample loss, accumulated in float64
    grads: Params | None  # Σ per-sample gradients (None when not asked for)
    count: int  # samples summed over
    correct: int  # samples whose thresholded prediction equals the label
    grad_sq: float | None = None  # Σ ‖per-sample gradient‖², for gradient-noise statistics


def add_totals(a: Totals, b: Totals) -> Totals:
    """``a + b``, field by field; gradient sums are accumulated in float64."""
    grads = None
    if a.grads is not None and b.grads is not None:
        grads = {k: np.add(g, b.grads[k], dtype=np.float64) for k, g in a.grads.items()}
    grad_sq = None if a.grad_sq is None or b.grad_sq is None else a.grad_sq + b.grad_sq
    return Totals(a.loss + b.loss, grads, a.count + b.count, a.correct + b.correct, grad_sq)


def norm(params: Params) -> float:
    """Euclidean norm of all the arrays in a dict taken as one vector, in float64."""
    return math.sqrt(sum(float(np.square(v, dtype=np.float64).sum()) for v in params.values()))


def softplus(Z: np.ndarray) -> np.ndarray:
    """log(1 + e^z), the cross-entropy of a sigmoid output: -[y log a + (1-y) log(1-a)] = softplus(z) - y z.

    Written as max(z, 0) + log1p(e^-|z|): it never takes log(0) or overflows, and these
    ufuncs are vectorised where np.logaddexp is not (2-3x faster).
    """
    return np.maximum(Z, 0) + np.log1p(np.exp(-np.abs(Z)))


def sigmoid(Z: np.ndarray) -> np.ndarray:
    # tanh form: one ufunc, no overflow warning for large |Z| (exp(-Z) would overflow).
    return 0.5 * (1.0 + np.tanh(0.5 * Z))


def logistic_totals(params: Params, X: np.ndarray, Y: np.ndarray, *, grad: bool = True,
                    sample_norms: bool = False) -> Totals:
    """Cross-entropy sums of a logistic model over the columns of X.

    dZ = A - Y, Σ dW1 = dZ @ X.T, Σ db1 = Σ dZ. With ``sample_norms`` also Σ ‖g_i‖²: the
    gradient of sample i is dz_i · [x_i; 1], so ‖g_i‖² = dz_i² (‖x_i‖² + 1).
    """
    W, b = params["W1"], params["b1"]
    Z = W @ X + b
    loss = float((softplus(Z) - Y * Z).sum(dtype=np.float64))
    correct = int(np.count_nonzero((Z >= 0) == (Y == 1)))  # a >= 0.5 exactly when z >= 0
    if not grad:
        return Totals(loss, None, X.shape[1], correct)
    dZ = sigmoid(Z) - Y
    grads = {"W1": dZ @ X.T, "b1": dZ.sum(axis=1, keepdims=True)}
    grad_sq = None
    if sample_norms:
        x_sq = np.einsum("ij,ij->j", X, X, dtype=np.float64)
        grad_sq = float((np.square(dZ, dtype=np.float64) * (x_sq + 1.0)).sum())
    return Totals(loss, grads, X.shape[1], correct, grad_sq)


def objective(params: Params, totals: Totals, *, l2: float = 0.0,
              m: int | None = None) -> tuple[float, Params | None]:
    """J and ∇J (see the module docstring) from the sums over ``totals.count`` samples.

    ``m`` is the number of samples in the whole store, which scales the L2 term; it
    defaults to ``totals.count`` (the sums cover the whole store).
    """
    n, m = totals.count, totals.count if m is None else m
    loss = totals.loss / n
    grads = None if totals.grads is None else {k: g / n for k, g in totals.grads.items()}
    if l2:
        for k, W in params.items():
            if k.startswith("W"):
                loss += l2 / (2 * m) * float(np.square(W, dtype=np.float64).sum())
                if grads is not None:
                    grads[k] = grads[k] + (l2 / m) * W
    return loss, grads


def batch_objective(model: Model, params: Params, X: np.ndarray, Y: np.ndarray, *, l2: float = 0.0,
                    m: int | None = None) -> tuple[float, Params, int]:
    """Mini-batch estimate of J and ∇J, and the number of correct predictions in the batch."""
    totals = model.totals(params, X, Y)
    loss, grads = objective(params, totals, l2=l2, m=m)
    return loss, grads, totals.correct


def logistic_loss_and_grad(params: Params, X: np.ndarray, Y: np.ndarray) -> tuple[float, Params]:
    """Mean cross-entropy of a logistic model on one batch, and its gradient."""
    return objective(params, logistic_totals(params, X, Y))


def logistic_predict_proba(params: Params, X: np.ndarray) -> np.ndarray:
    """P(y = 1 | x) for every column of X, shape (1, m)."""
    return sigmoid(params["W1"] @ X + params["b1"])


def logistic_init(n_x: int, k: int, dtype: np.dtype, seed: int) -> Params:
    # Cross-entropy is convex in (W, b): zeros are a fine, seed-free start.
    del seed
    return {"W1": np.zeros((k, n_x), dtype=dtype), "b1": np.zeros((k, 1), dtype=dtype)}


class Model(NamedTuple):
    name: str
    totals: Callable[..., Totals]  # (params, X, Y, *, grad=True, sample_norms=False)
    predict_proba: Callable[[Params, np.ndarray], np.ndarray]
    init: Callable[[int, int, np.dtype, int], Params]
    binary_labels: bool  # labels must be 0/1
    k: int | None  # rows of Y the model needs (None: any)


MODELS: dict[str, Model] = {
    "logistic": Model("logistic", logistic_totals, logistic_predict_proba, logistic_init,
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


def check_data(model: Model, source) -> None:
    """Raise ConfigError unless ``source``'s labels have the rows ``model`` needs."""
    if model.k is not None and source.k != model.k:
        raise ConfigError(f"{source.name}/{source.y_name} has {source.k} rows; the {model.name} model "
                          f"needs Y shaped ({model.k}, m)")


def _shapes(shapes: dict[str, tuple]) -> str:
    return ", ".join(f"{k}{tuple(v)}" for k, v in shapes.items())
