"""Optimizers as pure ``init`` / ``update`` functions over parameter dicts (optax style).

State is a NamedTuple of plain arrays and a step counter, so it can be checkpointed as-is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ._errors import ConfigError

__all__ = ["Optimizer", "SGDState", "sgd"]

Params = dict[str, np.ndarray]


class SGDState(NamedTuple):
    step: int


class Optimizer(NamedTuple):
    init: Callable[[Params], NamedTuple]
    update: Callable[[Params, NamedTuple, Params], tuple[Params, NamedTuple]]


def sgd(lr: float) -> Optimizer:
    """Plain gradient descent: W := W - lr * dW, with a constant learning rate."""
    if not np.isfinite(lr) or lr <= 0:
        raise ConfigError(f"learning rate must be a positive number, got {lr!r}")

    def init(params: Params) -> SGDState:
        return SGDState(step=0)

    def update(grads: Params, state: SGDState, params: Params) -> tuple[Params, SGDState]:
        new = {k: p - lr * grads[k] for k, p in params.items()}  # a Python float keeps p's dtype
        return new, SGDState(step=state.step + 1)

    return Optimizer(init, update)
