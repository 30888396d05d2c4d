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
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FACTOR", "WINDOW_SAMPLES", "Monitor"]

FACTOR = 10.0
WINDOW_SAMPLES = 2048
WINDOW_STEPS = 10


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
        self.steps += 1
        beta = 1.0 - 1.0 / self.window
        previous = self.average
        # The uncorrected average is average * (1 - beta**(t-1)); fold the new loss in, re-correct.
        kept = beta * previous * (1.0 - beta ** (self.steps - 1))
        self.average = (kept + (1.0 - beta) * loss) / (1.0 - beta**self.steps) if beta else loss
        if self.start is None:
            self.start = loss
        if self.steps < self.window or self.average <= previous:
            return None
        if self.average > FACTOR * self.start:
            what = "the loss" if self.window == 1 else f"the loss (averaged over the last {self.window} steps)"
            return f"{what} rose to {self.average:.4g}, more than {FACTOR:g} times its starting {self.start:.4g}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Monitor:
        return cls(**d)
