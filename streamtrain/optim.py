"""Optimizers as pure ``init`` / ``update`` functions over parameter dicts (optax style).

``update(grads, state, params) -> (new_params, new_state)`` never modifies its inputs and keeps
each parameter's dtype. Every optimizer here is one rule built from three shared pieces: a
moving average of the gradients (``v``, weight β1) and of their squares (``s``, weight β2),
Adam's bias correction, and the learning rate α at the current step. With g = dW and
t = step + 1 (deeplearning.ai style):

    sgd        W := W - α·g
    momentum   v := β1·v + (1-β1)·g;                    W := W - α·v
    rmsprop    s := β2·s + (1-β2)·g²;                   W := W - α·g / (√s + ε)
    adam       v, s as above;  v̂ = v / (1-β1^t),  ŝ = s / (1-β2^t);
                                                        W := W - α·v̂ / (√ŝ + ε)

State is a NamedTuple of plain arrays and a step counter, so it can be checkpointed as-is.
The learning rate α is a number or a schedule: a pure function ``step -> α`` of the number of
updates already taken (``state.step`` before the update, 0-based). Schedules are per-step; a
per-epoch schedule is the same function with ``every = steps per epoch``, so α changes once an epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ._errors import check_int, check_number, lookup

if TYPE_CHECKING:
    from .config import FitConfig  # which imports this module's registries

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "LearningRate",
    "Optimizer",
    "OptimizerState",
    "Rule",
    "Schedule",
    "adam",
    "check_decay",
    "get_optimizer",
    "lr_at",
    "lr_steps",
    "momentum",
    "optimizer_of",
    "rate_of",
    "rmsprop",
    "schedule",
    "sgd",
]

Params = dict[str, np.ndarray]
LearningRate = float | Callable[[int], float]


class OptimizerState(NamedTuple):
    step: int  # updates taken so far
    v: Params  # moving average of g (momentum, adam); empty when unused
    s: Params  # moving average of g² (rmsprop, adam); empty when unused


class Optimizer(NamedTuple):
    init: Callable[[Params], OptimizerState]
    update: Callable[[Params, OptimizerState, Params], tuple[Params, OptimizerState]]


class Rule(NamedTuple):
    """Which pieces an optimizer is made of."""

    v: bool  # keeps a moving average of g, weight beta1
    s: bool  # keeps a moving average of g², weight beta2 (and divides by √s + ε)
    bias_correction: bool = False


OPTIMIZERS = {
    "sgd": Rule(v=False, s=False),
    "momentum": Rule(v=True, s=False),
    "rmsprop": Rule(v=False, s=True),
    "adam": Rule(v=True, s=True, bias_correction=True),
}


# -- the shared pieces --------------------------------------------------------------------------


def _positive(name: str, x: object) -> float:
    return check_number(name, x, lambda v: v > 0, "a positive number")


def _check_beta(name: str, beta: object) -> float:
    return check_number(name, beta, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _check_lr(lr: LearningRate) -> LearningRate:
    return lr if callable(lr) else _positive("learning rate", lr)


def lr_at(lr: LearningRate, step: int) -> float:
    """The learning rate for the update taken when ``step`` updates are already done."""
    return float(lr(step)) if callable(lr) else lr


def lr_steps(lr: LearningRate, start: int, count: int) -> np.ndarray:
    """The learning rates of the ``count`` updates from ``start`` on, float64: ``lr_at`` of each step,
    without a Python call per step. ``lr`` is a number or a ``schedule`` (which also takes an array of steps)."""
    if not callable(lr):
        return np.full(count, lr, dtype=np.float64)
    by_step: Callable[[np.ndarray], Any] = lr  # type: ignore[assignment]  # a schedule's operators take arrays too
    rates = by_step(np.arange(start, start + count, dtype=np.int64))
    return np.array(np.broadcast_to(np.asarray(rates, dtype=np.float64), (count,)))  # constant: one number


def _moving_average(average: np.ndarray, x: np.ndarray, beta: float) -> np.ndarray:
    return beta * average + (1 - beta) * x


def _unbiased(average: np.ndarray, correction: float) -> np.ndarray:
    """Adam's correction: the averages start at 0, so their first values are too small by 1 - β^t."""
    return average / correction


def _zeros(params: Params) -> Params:
    return {k: np.zeros_like(p) for k, p in params.items()}


def _compose(lr: LearningRate, rule: Rule, beta1: float = 0.0, beta2: float = 0.0, eps: float = 0.0) -> Optimizer:
    """The optimizer ``rule`` describes, with checked hyperparameters (see the module docstring)."""

    def init(params: Params) -> OptimizerState:
        return OptimizerState(0, _zeros(params) if rule.v else {}, _zeros(params) if rule.s else {})

    def update(grads: Params, state: OptimizerState, params: Params) -> tuple[Params, OptimizerState]:
        # int(): a step restored from a checkpoint may be a NumPy integer. beta**t stays a
        # Python float, so float32 arrays stay float32.
        a, t = lr_at(lr, state.step), int(state.step) + 1
        c1, c2 = 1 - beta1**t, 1 - beta2**t
        new, v, s = {}, {}, {}
        for k, p in params.items():  # one pass per parameter: tiny steps (B = 1) pay little Python
            g = np.asarray(grads[k], dtype=p.dtype)  # float64 exact gradients keep float32 params float32
            direction = g
            if rule.v:
                direction = v[k] = _moving_average(state.v[k], g, beta1)
                if rule.bias_correction:
                    direction = _unbiased(direction, c1)
            if rule.s:  # a·g / (√s + ε), in this order: the same bits as the formulas above
                s_hat = s[k] = _moving_average(state.s[k], g**2, beta2)
                if rule.bias_correction:
                    s_hat = _unbiased(s_hat, c2)
                new[k] = p - a * direction / (np.sqrt(s_hat) + eps)
            else:
                new[k] = p - a * direction
        return new, OptimizerState(t, v, s)

    return Optimizer(init, update)


# -- the optimizers -----------------------------------------------------------------------------


def sgd(lr: LearningRate) -> Optimizer:
    """Plain gradient descent: W := W - α·dW."""
    return _compose(_check_lr(lr), OPTIMIZERS["sgd"])


def momentum(lr: LearningRate, beta: float) -> Optimizer:
    """Gradient descent with momentum, v := β·v + (1-β)·g; W := W - α·v (v is an average of g)."""
    return _compose(_check_lr(lr), OPTIMIZERS["momentum"], beta1=_check_beta("beta", beta))


def rmsprop(lr: LearningRate, beta2: float, eps: float) -> Optimizer:
    """RMSprop: s := β2·s + (1-β2)·g²; W := W - α·g / (√s + ε)."""
    beta2, eps = _check_beta("beta2", beta2), _positive("eps", eps)
    return _compose(_check_lr(lr), OPTIMIZERS["rmsprop"], beta2=beta2, eps=eps)


def adam(lr: LearningRate, beta1: float, beta2: float, eps: float) -> Optimizer:
    """Adam: momentum and RMSprop averages, bias-corrected by 1 - β^t with t = step + 1.

    Without the correction the first steps would be tiny, since both averages start at 0;
    with it the first step is α·g/(|g| + ε), about α per coordinate.
    """
    lr, eps = _check_lr(lr), _positive("eps", eps)
    beta1, beta2 = _check_beta("beta1", beta1), _check_beta("beta2", beta2)
    return _compose(lr, OPTIMIZERS["adam"], beta1, beta2, eps)


def get_optimizer(name: str, lr: LearningRate, *, beta1: float, beta2: float, eps: float) -> Optimizer:
    """The optimizer called ``name`` (one of OPTIMIZERS): its v average weighs by ``beta1``, its s by ``beta2``.

    All hyperparameters are checked, even those ``name`` does not use, so a bad value never hides.
    """
    rule = lookup(OPTIMIZERS, name, "optimizer")
    beta1, beta2 = _check_beta("beta1", beta1), _check_beta("beta2", beta2)
    return _compose(_check_lr(lr), rule, beta1, beta2, _positive("eps", eps))


# -- learning-rate schedules --------------------------------------------------------------------


class Schedule(NamedTuple):
    """α at t (counted in epochs or steps), with the decay d and the step size n of the schedule."""

    rate: Callable[[float, float, int, int], float]
    default_decay: float | None  # None: the schedule takes no decay
    decay_ok: Callable[[float], bool]
    decay_range: str


def _power(d: float, t: Any) -> Any:
    """d ** t for a whole t, or an array of them: each distinct t by Python's pow, as ``lr_at`` computes
    it (numpy's vectorised power may round the last bit otherwise)."""
    if np.ndim(t) == 0:
        return d**t
    exponents, where = np.unique(t, return_inverse=True)
    return np.array([d ** int(e) for e in exponents])[where]


# Each rate is written in operators that also take an array of t (``lr_steps``).
SCHEDULES = {
    "constant": Schedule(lambda lr, d, t, n: lr, None, lambda d: True, ""),
    "inverse-time": Schedule(lambda lr, d, t, n: lr / (1 + d * t), 1.0, lambda d: d >= 0, ">= 0"),
    "exponential": Schedule(lambda lr, d, t, n: lr * _power(d, t), 0.95, lambda d: 0 < d <= 1, "in (0, 1]"),
    "step": Schedule(lambda lr, d, t, n: lr * _power(d, t // n), 0.5, lambda d: 0 < d <= 1, "in (0, 1]"),
}


def check_decay(name: str, decay: float | None) -> float | None:
    """The decay schedule ``name`` uses: ``decay`` checked, or the schedule's default when None."""
    kind = lookup(SCHEDULES, name, "schedule")
    if kind.default_decay is None:
        return None  # constant: any decay is ignored
    if decay is None:
        return kind.default_decay
    return check_number("decay", decay, kind.decay_ok, f"a number {kind.decay_range} for the {name} schedule")


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
    kind, checked_decay = lookup(SCHEDULES, name, "schedule"), check_decay(name, decay)
    lr = _positive("learning rate", lr)
    check_int("step_size", step_size)
    check_int("every", every)
    every, step_size, d = int(every), int(step_size), checked_decay or 0.0
    return lambda step: kind.rate(lr, d, step // every, step_size)


def rate_of(config: FitConfig, m: int, epoch_steps: int | None = None) -> Callable[[int], float]:
    """The learning rate of ``config`` at each step, following the schedule; an epoch is
    ``epoch_steps`` steps (by default m / B; a shard's, with --shards)."""
    B = m if config.batch_size == "full" else int(config.batch_size)
    epoch_steps = -(-m // B) if epoch_steps is None else epoch_steps
    every = 1 if config.lr_per == "step" else epoch_steps
    return schedule(config.lr_schedule, config.lr, decay=config.lr_decay, step_size=config.lr_step, every=every)


def optimizer_of(config: FitConfig, rate: Callable[[int], float]) -> Optimizer:
    """The optimizer ``config`` names, with its hyperparameters, stepping at ``rate``."""
    return get_optimizer(config.optimizer, rate, beta1=config.beta1, beta2=config.beta2, eps=config.eps)
