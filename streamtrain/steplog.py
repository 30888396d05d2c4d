"""``log_every``: a ``StepRecord`` every N optimizer steps, appended to the metrics file.

Steps are numbered over the whole run, so a file's step records strictly increase. A resumed run
takes again the steps after its checkpoint, with the same results (resume is exact), and logs only
those after the file's last step record: the steps the stopped run had taken but not logged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from ._errors import ConfigError, check_int
from .records import StepRecord, append_jsonl, last_step

__all__ = ["StepLog"]


class StepLog:
    """Where step records go (``path``), how often (``every`` steps), and the last step already there."""

    def __init__(self, path: str | os.PathLike | None, every: int) -> None:
        check_int("log_every", every)
        if path is None:
            raise ConfigError("log_every writes step records to the metrics file: give metrics=FILE (--metrics)")
        self.path, self.every, self.after = path, int(every), last_step(path)

    def add(
        self,
        first_step: int,
        losses: Sequence[float] | np.ndarray,
        width: int,
        *,
        epoch: int,
        samples_before: int,
        lr: Callable[[int], float],
        seconds: float,
    ) -> None:
        """Log the due steps among ``len(losses)`` steps of ``width`` samples each, the first numbered
        ``first_step``, taken after ``samples_before`` samples; ``lr(t)``: the rate of update t (0-based)."""
        for j, loss in enumerate(losses):
            step = first_step + j
            if step % self.every == 0:
                seen = samples_before + (j + 1) * width
                self.record(StepRecord(step, epoch, seen, float(loss), float(lr(step - 1)), seconds))

    def record(self, record: StepRecord) -> None:
        """Append ``record`` unless the file has its step already (a resumed run's steps taken again)."""
        if record.step > self.after:
            append_jsonl(self.path, record)
