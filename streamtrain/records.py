"""What training reports: one typed record per epoch (or L-BFGS iteration), for every producer.

Mini-batch epochs, exact full-batch steps and L-BFGS iterations all build an ``EpochRecord``;
``FitResult.history``, the JSONL metrics file, ``on_epoch`` callbacks and the command line's
epoch lines all read the same record. Fields a producer does not measure stay None and are
left out of the JSON. With ``log_every`` the metrics file also holds a ``StepRecord`` every N
steps: the lines with a ``step`` key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Emit", "EpochRecord", "StepRecord", "append_jsonl", "emitter", "is_record", "last_step", "to_json"]


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based; an L-BFGS iteration counts as an epoch
    loss: float  # the epoch's mean mini-batch loss, or the exact J for full-batch steps and L-BFGS
    seconds: float
    samples: int | None = None  # samples stepped over (m for a full-batch step, m per pass for L-BFGS)
    steps: int | None = None  # optimizer updates in the epoch
    samples_per_s: float | None = None
    io_wait_s: float | None = None  # time the step waited on reads
    accuracy: float | None = None  # classifiers only; the mean over the epoch's batches
    grad_norm: float | None = None  # exact ‖∇J‖ of a full-batch step or an L-BFGS iteration
    passes: int | None = None  # L-BFGS: full passes over the data so far
    exact_loss: float | None = None  # eval_exact_every: J over all the data after the epoch
    exact_grad_norm: float | None = None
    exact_accuracy: float | None = None
    validation_loss: float | None = None  # --holdout: the mean loss over the held-out chunks after the epoch
    validation_accuracy: float | None = None
    rounds: int | None = None  # --shards: rounds of local SGD (in this process, when resumed mid-epoch)
    barrier_s: float | None = None  # --shards: the shards' mean time waiting for the slowest, summed over rounds
    converged: bool | None = None  # the last L-BFGS iteration: did it converge,
    stop: str | None = None  # and why it stopped

    @property
    def exact(self) -> bool:
        """True when ``loss`` is the exact J over all the data (full-batch steps, L-BFGS)."""
        return self.grad_norm is not None

    def to_dict(self) -> dict[str, Any]:
        """The measured fields, as JSON-ready values."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochRecord:
        return cls(**d)


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step, logged every ``log_every`` steps."""

    step: int  # optimizer updates so far in the run, this one included: strictly increasing in a file
    epoch: int
    samples_seen: int  # samples stepped over so far in the run, this step's batch included
    loss: float  # this step's batch loss (J of the batch)
    lr: float  # the learning rate this step was taken with
    seconds: float  # training time so far in the run (the finished epochs' and this one's)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def last_step(path: str | os.PathLike) -> int:
    """The largest step of a metrics file's step records, 0 when it has none (or no file): a resumed
    run logs the steps after it only, which are the steps a stopped run had not logged yet."""
    if not os.path.isfile(path):
        return 0
    last = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if '"step"' not in line:  # only step records are parsed
                continue
            try:
                record = json.loads(line)
            except ValueError:  # the line a killed run was writing
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                last = max(last, record["step"])
    return last


def is_record(d: Any) -> bool:
    """Whether ``d`` (read from a file) can be an ``EpochRecord``: its fields only, with at least
    the epoch, loss and time."""
    return isinstance(d, dict) and {"epoch", "loss", "seconds"} <= d.keys() <= _FIELDS


_FIELDS = {f.name for f in dataclasses.fields(EpochRecord)}


def append_jsonl(path: str | os.PathLike, record: EpochRecord | StepRecord) -> None:
    """Append the record to a JSON-lines metrics file, one object per line."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(to_json(record.to_dict()) + "\n")


def to_json(value: Any) -> str:
    """``value`` as strict JSON, which has no NaN or Infinity: an infinite number (a quantity with
    no bound, such as compare's B_noise at a zero gradient) becomes null; NaN, which no result
    should hold, is a ValueError rather than invalid JSON."""
    return json.dumps(_unbounded_as_null(value), allow_nan=False)


def _unbounded_as_null(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, dict):
        return {k: _unbounded_as_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_unbounded_as_null(v) for v in value]
    return value


Emit = Callable[[EpochRecord], None]


def emitter(metrics: str | os.PathLike | None, on_epoch: Emit | None) -> Emit:
    """What to do with each epoch's record: append it to the ``metrics`` file, call ``on_epoch`` with it."""

    def emit(record: EpochRecord) -> None:
        if metrics is not None:
            append_jsonl(metrics, record)
        if on_epoch is not None:
            on_epoch(record)

    return emit
