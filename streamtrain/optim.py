"""Optimizers as pure ``init`` / ``update`` functions over parameter dicts (optax style).

State is a NamedTuple of plain arrays and a step counter, so it can be checkpointed as-is.
``update(grads, state, params) -> (new_params, new_state)`` never modifies its inputs and keeps
each parameter's dtype. With g = dW, α the learning rate and t = step + 1 (deeplearning.ai style):

    sgd        W := W - α·g
    momentum   v := β·v + (1-β)·g;                     W := W - α·v
    rmsprop    s := β2·s + (1-β2)·g²;                  W := W - α·g / (√s + ε)
    adam       v, s as above with β1, β2;  v̂ = v / (1-β1^t),  ŝ = s / (1-β2^t);
                                                       W := W - α·v̂ / (√ŝ + ε)

The learning rate α is a number or a schedule: a pure function ``step -> α`` of the number of
updates already taken (``state.step`` before the update, 0-based). Schedules are per-step; a
per-epoch schedule is the same function with ``every = steps per epoch``, so α changes once an epoch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ._errors import ConfigError, check_int

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "AdamState",
    "LearningRate",
    "MomentumState",
    "Optimizer",
    "RMSpropState",
    "SGDState",
    "adam",
    "get_optimizer",
    "lr_at",
    "momentum",
    "rmsprop",
    "schedule",
    "sgd",
]

Params = dict[str, np.ndarray]
LearningRate = float | Callable[[int], float]

OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam")
SCHEDULES = ("constant", "inverse-time", "exponential", "step")
_DEFAULT_DECAY = {"inverse-time": 1.0, "exponential": 0.95, "step": 0.5}


class SGDState(NamedTuple):
    step: int


class MomentumState(NamedTuple):
    step: int
    velocity: Params


class RMSpropState(NamedTuple):
    step: int
    sq: Params


class AdamState(NamedTuple):
    step: int
    mu: Params
    nu: Params


class Optimizer(NamedTuple):
    init: Callable[[Params], NamedTuple]
    update: Callable[[Params, NamedTuple, Params], tuple[Params, NamedTuple]]


# The checks return Python floats: a NumPy float64 scalar would promote float32 params to float64.
def _number(name: str, x: float, ok: Callable[[float], bool], expected: str) -> float:
    if not (isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and ok(x)):
        raise ConfigError(f"{name} must be {expected}, got {x!r}")
    return float(x)


def _positive(name: str, x: float) -> float:
    return _number(name, x, lambda v: v > 0, "a positive number")


def _check_beta(name: str, beta: float) -> float:
    return _number(name, beta, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _check_lr(lr: LearningRate) -> LearningRate:
    return lr if callable(lr) else _positive("learning rate", lr)


def lr_at(lr: LearningRate, step: int) -> float:
    """The learning rate for the update taken when ``step`` updates are already done."""
    return float(lr(step)) if callable(lr) else lr


def _zeros(params: Params) -> Params:
    return {k: np.zeros_like(p) for k, p in params.items()}


def _grads(grads: Params, params: Params) -> Params:
    # Casting (a no-op when dtypes already match) keeps float32 params and state float32.
    return {k: np.asarray(grads[k], dtype=p.dtype) for k, p in params.items()}


def sgd(lr: LearningRate) -> Optimizer:
    """Plain gradient descent: W := W - α·dW."""
    lr = _check_lr(lr)

    def init(params: Params) -> SGDState:
        return SGDState(step=0)

    def update(grads: Params, state: SGDState, params: Params) -> tuple[Params, SGDState]:
        a, g = lr_at(lr, state.step), _grads(grads, params)  # a Python float keeps p's dtype
        return {k: p - a * g[k] for k, p in params.items()}, SGDState(step=int(state.step) + 1)

    return Optimizer(init, update)


def momentum(lr: LearningRate, beta: float = 0.9) -> Optimizer:
    """Gradient descent with momentum, v := β·v + (1-β)·g; W := W - α·v (v is an average of g)."""
    lr, beta = _check_lr(lr), _check_beta("beta", beta)

    def init(params: Params) -> MomentumState:
        return MomentumState(step=0, velocity=_zeros(params))

    def update(grads: Params, state: MomentumState, params: Params) -> tuple[Params, MomentumState]:
        a, g = lr_at(lr, state.step), _grads(grads, params)
        v = {k: beta * state.velocity[k] + (1 - beta) * g[k] for k in params}
        return {k: p - a * v[k] for k, p in params.items()}, MomentumState(int(state.step) + 1, v)

    return Optimizer(init, update)


def rmsprop(lr: LearningRate, beta2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """RMSprop: s := β2·s + (1-β2)·g²; W := W - α·g / (√s + ε)."""
    lr, beta2, eps = _check_lr(lr), _check_beta("beta2", beta2), _positive("eps", eps)

    def init(params: Params) -> RMSpropState:
        return RMSpropState(step=0, sq=_zeros(params))

    def update(grads: Params, state: RMSpropState, params: Params) -> tuple[Params, RMSpropState]:
        a, g = lr_at(lr, state.step), _grads(grads, params)
        s = {k: beta2 * state.sq[k] + (1 - beta2) * g[k] ** 2 for k in params}
        new = {k: p - a * g[k] / (np.sqrt(s[k]) + eps) for k, p in params.items()}
        return new, RMSpropState(int(state.step) + 1, s)

    return Optimizer(init, update)


def adam(lr: LearningRate, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam: momentum and RMSprop averages, bias-corrected by 1 - β^t with t = step + 1.

    Without the correction the first steps would be tiny, since both averages start at 0;
    with it the first step is α·g/(|g| + ε), about α per coordinate.
    """
    lr, eps = _check_lr(lr), _positive("eps", eps)
    beta1, beta2 = _check_beta("beta1", beta1), _check_beta("beta2", beta2)

    def init(params: Params) -> AdamState:
        return AdamState(step=0, mu=_zeros(params), nu=_zeros(params))

    def update(grads: Params, state: AdamState, params: Params) -> tuple[Params, AdamState]:
        # int(): a step restored from a checkpoint may be a NumPy integer, and beta1**t must stay a
        # Python float so that float32 params stay float32.
        a, g, t = lr_at(lr, state.step), _grads(grads, params), int(state.step) + 1
        c1, c2 = 1 - beta1**t, 1 - beta2**t
        mu = {k: beta1 * state.mu[k] + (1 - beta1) * g[k] for k in params}
        nu = {k: beta2 * state.nu[k] + (1 - beta2) * g[k] ** 2 for k in params}
        new = {k: p - a * (mu[k] / c1) / (np.sqrt(nu[k] / c2) + eps) for k, p in params.items()}
        return new, AdamState(t, mu, nu)

    return Optimizer(init, update)


def get_optimizer(
    name: str, lr: LearningRate, *, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
) -> Optimizer:
    """The optimizer called ``name`` (one of OPTIMIZERS); momentum's β is ``beta1``, RMSprop's is ``beta2``.

    All hyperparameters are checked, even those ``name`` does not use, so a bad value never hides.
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    _check_beta("beta1", beta1)
    _check_beta("beta2", beta2)
    _positive("eps", eps)
    if name == "sgd":
        return sgd(lr)
    if name == "momentum":
        return momentum(lr, beta1)
    if name == "rmsprop":
        return rmsprop(lr, beta2, eps)
    return adam(lr, beta1, beta2, eps)


def schedule(
    name: str, lr: float, *, decay: float | None = None, step_size: int = 1, every: int = 1
) -> Callable[[int], float]:
    """A learning-rate schedule ``step -> α``, where t = step // every:

        constant       α                      (decay and step_size are ignored)
        inverse-time   α / (1 + decay·t)      decay >= 0, default 1.0
        exponential    α · decay**t           0 < decay <= 1, default 0.95
        step           α · decay**(t // step_size)   0 < decay <= 1, default 0.5

    ``every = 1`` changes α each update; ``every = steps per epoch`` changes it once an epoch.
    """
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
    lr = _positive("learning rate", lr)
    check_int("step_size", step_size)
    check_int("every", every)
    every, step_size = int(every), int(step_size)
    if name == "constant":
        return lambda step: lr
    decay = _DEFAULT_DECAY[name] if decay is None else decay
    if name == "inverse-time":
        decay = _number("decay", decay, lambda v: v >= 0, "a number >= 0 for the inverse-time schedule")
    else:
        decay = _number("decay", decay, lambda v: 0 < v <= 1, f"a number in (0, 1] for the {name} schedule")

    def at(step: int) -> float:
        t = step // every
        if name == "inverse-time":
            return lr / (1 + decay * t)
        if name == "exponential":
            return lr * decay**t
        return lr * decay ** (t // step_size)  # "step"

    return at
