"""Divergence caught before the loss is NaN: the smoothed loss far above where it started, and rising.

A step size that is too large makes the loss grow geometrically: ``fit --lr 1e6`` reaches
losses of 10^4 or 10^24 long before any NaN. Mini-batch losses are noisy, so the rule looks
at their moving average over a window of about ``WINDOW_SAMPLES`` samples (at least
``WINDOW_STEPS`` steps, at most one epoch); exact full-batch steps have no noise and use each J
as it is. The starting value is the loss at the initial parameters: for mini-batch runs over
the first chunks read, at least ``WINDOW_SAMPLES`` samples (a too-large step can wreck the model
in its first step, so the first window's losses are no reference; one small chunk is no reference
either: its labels may all be 0), the first J for exact steps. The run has diverged when the
average is more than ``FACTOR`` times the start and still rising: SGD noise, momentum's
overshoot and a warm start's first steps stay far below it (tested for every model and
optimizer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["FACTOR", "WINDOW_SAMPLES", "Fold", "Monitor", "fold_losses"]

FACTOR = 10.0
WINDOW_SAMPLES = 2048
WINDOW_STEPS = 10
# (window, steps, average, start, losses) -> (steps, average, start, index of the diverged step or -1)
Fold = Callable[[int, int, float, float, Any], tuple[int, float, float, int]]


def fold_losses(window: int, steps: int, average: float, start: float, losses: Any) -> tuple[int, float, float, int]:
    """The monitor's rule over ``losses`` one at a time: its new (steps, average, start) and the index of
    the first loss at which the run diverged (-1: none; the state is then the one after that loss).

    ``start`` NaN stands for "not yet known" (the first loss). Plain floats and a loop, so that numba
    compiles this same function for the small-batch path (``beta ** float(n)``: C's pow, as Python's
    ``beta ** n`` computes it, where numba would multiply for an integer power).
    """
    beta = 1.0 - 1.0 / window
    for i in range(len(losses)):
        loss = losses[i]
        steps += 1
        previous = average
        # The uncorrected average is average * (1 - beta**(t-1)); fold the new loss in, re-correct.
        kept = beta * previous * (1.0 - beta ** float(steps - 1))
        average = (kept + (1.0 - beta) * loss) / (1.0 - beta ** float(steps)) if beta > 0.0 else loss
        if math.isnan(start):
            start = loss
        if steps >= window and average > previous and average > FACTOR * start:
            return steps, average, start, i
    return steps, average, start, -1


@dataclass
class Monitor:
    """A moving average of the step losses, and the verdict on it; a checkpoint keeps its fields."""

    window: int  # steps in the moving average (1: each loss as it is)
    steps: int = 0
    average: float = 0.0  # bias-corrected, like Adam's moments: a plain mean over the first steps
    start: float | None = None  # the loss at the initial parameters (None: the first step's)

    @classmethod
    def for_steps(cls, batch_size: int, m: int, start: float | None = None) -> Monitor:
        """A monitor for steps of ``batch_size`` samples out of m (``batch_size = m``: exact)."""
        samples = min(m, max(WINDOW_STEPS * batch_size, WINDOW_SAMPLES))
        return cls(window=math.ceil(samples / batch_size), start=start)

    def update(self, loss: float) -> str | None:
        """Take one step's loss; a sentence saying why the run diverged, or None."""
        diverged = self.update_many((loss,))
        return None if diverged is None else diverged[1]

    def update_many(self, losses: Sequence[float] | np.ndarray, fold: Fold = fold_losses) -> tuple[int, str] | None:
        """Take the losses of several steps in a row (a sequence or an array), exactly as ``update`` one at a
        time, stopping at the first that diverged: (its index, the sentence saying why), or None. ``fold`` is
        ``fold_losses`` or the same function compiled (the small-batch path's twin)."""
        start = math.nan if self.start is None else float(self.start)
        steps, average, start, at = fold(int(self.window), int(self.steps), float(self.average), start, losses)
        self.steps, self.average, self.start = int(steps), float(average), None if math.isnan(start) else float(start)
        if at < 0:
            return None
        what = "the loss" if self.window == 1 else f"the loss (averaged over the last {self.window} steps)"
        return at, f"{what} rose to {self.average:.4g}, more than {FACTOR:g} times its starting {self.start:.4g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Monitor:
        return cls(**d)
