"""Models as pure functions of a flat parameter dict: dense networks of L layers.

Conventions
-----------
X (n_x, B) holds one sample per column, Y (k, B) its labels. An L-layer network has
parameters W1, b1, …, WL, bL with W[l] (n[l], n[l-1]), b[l] (n[l], 1) and n[0] = n_x:

    Z[l] = W[l] @ A[l-1] + b[l],   A[l] = g(Z[l]),   A[0] = X

Hidden layers use relu, tanh or sigmoid. The output layer and its loss go together so
that dZ[L] = A[L] - Y:

    output    loss per sample            labels Y                                 model
    sigmoid   cross-entropy              (1, B) of 0/1                            logistic
    softmax   cross-entropy              (k, B) one-hot, or (1, B) class ids       softmax
    identity  ½ ‖ŷ - y‖²                 (k, B) real values                        linear

logistic, softmax and linear are 1-layer networks; mlp has hidden layers and one of the
three outputs. Each model has one per-chunk function, ``Model.totals(params, X, Y)``, that
returns *sums* over the columns it was given (loss, gradient, correct predictions). Sums
add up across chunks, so the streaming step, the chunked numpy pass and the Dask pass all
run this same function and differ only in how they add up its results.

The objective
-------------
    J(W, b) = (1/m) Σ_i loss_i + (λ / 2m) Σ_l ‖W[l]‖²_F      (the b's are not penalised)

over all m samples of the store. A mini-batch of B samples estimates it with
(1/B) Σ_batch loss_i + (λ / 2m) Σ_l ‖W[l]‖²_F, whose gradient is an unbiased estimate of
∇J, and B-weighted mini-batch gradients over one epoch add up to ∇J exactly.

With per-sample weights w_i (``streamtrain.weights``), loss_i becomes w_i loss_i, the w's
normalised to mean 1 over the m samples: J is then the weighted mean loss, and the same
mini-batch sums stay unbiased estimates (dividing a batch by its own Σ w would not be).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ._errors import ConfigError, check_choice, check_int
from .labels import LabelRule
from .layers import ACTIVATIONS, MODELS, OUTPUTS, Activation, Output, output_of, sigmoid, softplus

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_ACTIVATION",
    "DEFAULT_HIDDEN",
    "MODELS",
    "OUTPUTS",
    "Activation",
    "Model",
    "Output",
    "Params",
    "Totals",
    "add_totals",
    "as_float64",
    "batch_objective",
    "get_model",
    "loss_of",
    "norm",
    "objective",
    "output_of",
    "sigmoid",
    "softplus",
]

Params = dict[str, np.ndarray]
DEFAULT_HIDDEN = (64,)  # an mlp's hidden layer sizes when none are given
DEFAULT_ACTIVATION = "relu"


class Totals(NamedTuple):
    """Sums over a set of samples (a batch, a chunk, a whole store)."""

    loss: float  # Σ per-sample loss (times its weight, see ``weights``), accumulated in float64
    grads: Params | None  # Σ per-sample gradients (None when not asked for)
    samples: int  # samples summed over
    correct: float  # samples whose predicted class equals the label, or their weights summed (0 for identity)
    grad_sq: float | None = None  # Σ ‖per-sample gradient‖², for gradient-noise statistics


def add_totals(a: Totals, b: Totals) -> Totals:
    """``a + b``, field by field; gradient sums are accumulated in float64."""
    grads = None
    if a.grads is not None and b.grads is not None:
        grads = {k: np.add(g, b.grads[k], dtype=np.float64) for k, g in a.grads.items()}
    grad_sq = None if a.grad_sq is None or b.grad_sq is None else a.grad_sq + b.grad_sq
    return Totals(a.loss + b.loss, grads, a.samples + b.samples, a.correct + b.correct, grad_sq)


def as_float64(params: Params) -> Params:
    """The same parameters in float64 (no copy of arrays that already are)."""
    return {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}


def norm(params: Params) -> float:
    """Euclidean norm of all the arrays in a dict taken as one vector, in float64 (inf past its range)."""
    with np.errstate(over="ignore"):
        return math.sqrt(sum(float(np.square(v, dtype=np.float64).sum()) for v in params.values()))


# -- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A dense network: its hidden layer sizes, hidden activation and output layer.

    ``classes`` is set for a softmax output trained on class ids (Y shaped (1, m)): the
    number of classes, so ids can be turned into one-hot columns chunk by chunk. An empty
    ``output`` is completed from the data when the model is bound to a store.
    """

    name: str
    hidden: tuple[int, ...] = ()
    activation: str = DEFAULT_ACTIVATION
    output: str = "sigmoid"
    classes: int | None = None

    @property
    def labels(self) -> LabelRule | None:
        """The rule this model's labels follow (0/1, class ids, one-hot), None for real values."""
        return OUTPUTS[self.output].labels(self.classes)

    @property
    def has_accuracy(self) -> bool:
        return OUTPUTS[self.output].has_accuracy

    def to_dict(self) -> dict[str, Any]:
        """What rebuilds this model with ``Model(**d)``, as JSON."""
        return {**dataclasses.asdict(self), "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Model:
        """The model ``to_dict`` described; ConfigError for a description no model has."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"unknown model options {unknown}; a model has {', '.join(known)}")
        hidden, classes = d.get("hidden", ()), d.get("classes")
        if not isinstance(hidden, (list, tuple)):
            raise ConfigError(f"hidden must be a list of layer sizes, got {hidden!r}")
        if classes is not None and (type(classes) is not int or classes < 2):
            raise ConfigError(f"classes must be a whole number >= 2, got {classes!r}")
        output = d.get("output") or None  # "": an mlp not yet bound to data
        activation = d.get("activation", DEFAULT_ACTIVATION)
        return get_model(d.get("name", ""), hidden=hidden, activation=activation, output=output, classes=classes)

    def n_out(self, k: int) -> int:
        """Output units for labels with k rows: the class count for class ids."""
        return self.classes if self.classes and k == 1 else k

    def shapes(self, n_x: int, k: int) -> dict[str, tuple[int, int]]:
        """The parameters' shapes for n_x features and labels with k rows: W[l] (n[l], n[l-1]), b[l] (n[l], 1)."""
        sizes = [n_x, *self.hidden, self.n_out(k)]
        shapes = {}
        for l, (n_in, n) in enumerate(itertools.pairwise(sizes), start=1):
            shapes[f"W{l}"], shapes[f"b{l}"] = (n, n_in), (n, 1)
        return shapes

    def init(self, n_x: int, k: int, dtype: np.dtype, seed: int) -> Params:
        """Zeros for 1-layer models (their loss is convex); otherwise random normal weights
        from ``seed`` (He for relu, Xavier otherwise), which break the symmetry between units."""
        rng = np.random.default_rng([seed, 2])
        params: Params = {}
        for name, (n, n_in) in self.shapes(n_x, k).items():
            if name.startswith("b") or not self.hidden:
                params[name] = np.zeros((n, n_in), dtype=dtype)
                continue
            W = rng.standard_normal((n, n_in)) * math.sqrt(ACTIVATIONS[self.activation].init_variance(n_in, n))
            params[name] = W.astype(dtype)
        return params

    def _targets(self, Y: np.ndarray, n_out: int) -> np.ndarray:
        """Y as the output layer sees it: class ids (1, B) become one-hot columns (n_out, B)."""
        if self.classes and Y.shape[0] == 1 and n_out > 1:
            return (np.arange(n_out, dtype=Y.dtype)[:, None] == Y).astype(Y.dtype)
        return Y

    def _forward(self, params: Params, X: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Pre-activations Z[1..L] and activations A[0..L-1] (A[0] = X)."""
        L, g = len(params) // 2, ACTIVATIONS[self.activation].g
        Zs, As = [], [X]
        for l in range(1, L + 1):
            Zs.append(params[f"W{l}"] @ As[-1] + params[f"b{l}"])
            if l < L:
                As.append(g(Zs[-1]))
        return Zs, As

    def scores(self, params: Params, X: np.ndarray) -> np.ndarray:
        """The output layer's Z[L] for each column of X, before its activation: logits (decision values)."""
        return self._forward(params, X)[0][-1]

    def predict_proba(self, params: Params, X: np.ndarray) -> np.ndarray:
        """The output layer A[L] for each column of X: probabilities, or values for identity."""
        return OUTPUTS[self.output].activation(self.scores(params, X))

    def predict(self, params: Params, X: np.ndarray) -> np.ndarray:
        """(1, m) 0/1 for sigmoid, (1, m) class ids for softmax, (k, m) values for identity."""
        return OUTPUTS[self.output].predict(self.predict_proba(params, X))

    def totals(
        self,
        params: Params,
        X: np.ndarray,
        Y: np.ndarray,
        *,
        weights: np.ndarray | None = None,
        grad: bool = True,
        sample_norms: bool = False,
    ) -> Totals:
        """Loss sums (and gradient sums by backpropagation) over the columns of X.

        dZ[L] = A[L] - Y; Σ dW[l] = dZ[l] @ A[l-1].T; Σ db[l] = Σ dZ[l];
        dZ[l-1] = (W[l].T @ dZ[l]) * g'(Z[l-1]). With ``sample_norms`` also Σ ‖g_i‖²:
        sample i's gradient of layer l is dz_i [a_i; 1]ᵀ, so its norm² is ‖dz_i‖² (‖a_i‖² + 1).
        ``weights`` (1, B): sample i's loss, gradient and correct prediction count w_i times
        (dz_i is scaled by w_i, and backpropagation carries the factor to every layer).
        """
        Zs, As = self._forward(params, X)
        Y = self._targets(Y, Zs[-1].shape[0])
        loss, correct, dZ = OUTPUTS[self.output].loss(Zs[-1], Y, grad, weights)
        if dZ is None:
            return Totals(loss, None, X.shape[1], correct)
        derivative = ACTIVATIONS[self.activation].derivative
        grads: Params = {}
        grad_sq = 0.0
        for l in range(len(Zs), 0, -1):
            A_prev = As[l - 1]
            grads[f"W{l}"], grads[f"b{l}"] = dZ @ A_prev.T, dZ.sum(axis=1, keepdims=True)
            if sample_norms:
                a_sq = np.einsum("ij,ij->j", A_prev, A_prev, dtype=np.float64)
                grad_sq += float((np.square(dZ, dtype=np.float64).sum(axis=0) * (a_sq + 1.0)).sum())
            if l > 1:
                dZ = (params[f"W{l}"].T @ dZ) * derivative(Zs[l - 2], A_prev)
        grads = {k: grads[k] for k in params}  # W1, b1, ... in the params' order
        return Totals(loss, grads, X.shape[1], correct, grad_sq if sample_norms else None)


def get_model(
    name: str,
    *,
    hidden: tuple[int, ...] | list[int] | None = None,
    activation: str = DEFAULT_ACTIVATION,
    output: str | None = None,
    classes: int | None = None,
) -> Model:
    """The model called ``name`` (logistic, softmax, linear or mlp) with these options.

    ``hidden`` (layer sizes, default DEFAULT_HIDDEN) and ``activation`` are for mlp; its
    ``output`` left None is completed from the data when the model is bound to a store.
    """
    check_choice(name, MODELS, "model")
    check_choice(activation, ACTIVATIONS, "activation")
    if output is not None:
        check_choice(output, OUTPUTS, "output")
    fixed = output_of(name)
    if fixed is not None:  # a 1-layer model: its output is its name's
        if hidden:
            raise ConfigError(f"the {name} model has no hidden layers; use --model mlp for hidden={list(hidden)}")
        if output is not None and output != fixed:
            raise ConfigError(f"the {name} model's output is {fixed}, not {output}")
        return Model(name, (), activation, fixed, classes)
    hidden = tuple(DEFAULT_HIDDEN if hidden is None else hidden)
    if not hidden:
        raise ConfigError("an mlp needs at least one hidden layer (e.g. hidden=[64])")
    for n in hidden:
        check_int("hidden layer size", n)
    return Model(name, tuple(int(n) for n in hidden), activation, output or "", classes)


def batch_objective(
    model: Model,
    params: Params,
    X: np.ndarray,
    Y: np.ndarray,
    *,
    l2: float = 0.0,
    m: int | None = None,
    weights: np.ndarray | None = None,
) -> tuple[float, Params, float]:
    """Mini-batch estimate of J and ∇J, and the number of correct predictions in the batch
    (their weights summed, with ``weights``: see ``Model.totals``)."""
    totals = model.totals(params, X, Y, weights=weights)
    loss, grads = objective(params, totals, l2=l2, m=m)
    return loss, grads, totals.correct


def objective(params: Params, totals: Totals, *, l2: float = 0.0, m: int | None = None) -> tuple[float, Params]:
    """J and ∇J (see the module docstring) from the sums over ``totals.samples`` samples.

    ``m`` is the number of samples in the whole store, which scales the L2 term; it
    defaults to ``totals.samples`` (the sums cover the whole store).
    """
    if totals.grads is None:
        raise ValueError("objective() needs gradient sums: Model.totals(..., grad=True)")
    n, m = totals.samples, totals.samples if m is None else m
    grads = {k: g / n for k, g in totals.grads.items()}
    if l2:
        for k, W in _weights(params):
            grads[k] = grads[k] + (l2 / m) * W
    return loss_of(params, totals, l2=l2, m=m), grads


def loss_of(params: Params, totals: Totals, *, l2: float = 0.0, m: int | None = None) -> float:
    """J alone (see ``objective``), from sums with or without gradients."""
    n, m = totals.samples, totals.samples if m is None else m
    loss = totals.loss / n
    if l2:
        for _, W in _weights(params):
            loss += l2 / (2 * m) * float(np.square(W, dtype=np.float64).sum())
    return loss


def _weights(params: Params) -> list[tuple[str, np.ndarray]]:
    """The W's, which the L2 term penalises (the b's are not)."""
    return [(k, W) for k, W in params.items() if k.startswith("W")]
