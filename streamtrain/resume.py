"""Training checkpoints: the whole state of a run, written atomically, resumed bit for bit.

A checkpoint is what the rest of a run depends on: the parameters, the optimizer's state
(its step counts the learning-rate schedule too), the epoch and the ``Cursor`` of its next
batch, the epoch's sums so far, the history, the divergence monitor, and what must not change
for the rest to be the same (the configuration, the model, the data's fingerprint and stamp).
Every random choice is a function of (seed, epoch, position), so no generator state is kept.

Files are ``DIR/ckpt-EEEEE-SSSSSSSSSS.npz`` (epoch in progress, optimizer steps), sorted by
name; they are written like model files (temp file, fsync, rename, directory fsync), so a
crash mid-write leaves the previous ones whole. Temp files start with a dot and are never
taken for checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import ConfigError, DataError
from .batches import Cursor
from .checkpoint import load_model, remove_stale_temps, save_model
from .divergence import Monitor
from .models import Params
from .optim import OptimizerState
from .parameters import check_values
from .records import EpochRecord, is_record

__all__ = ["FORMAT", "Checkpoints", "EpochSums", "TrainState", "check_resumable", "check_state"]

FORMAT = "streamtrain-checkpoint"
_NAME = re.compile(r"ckpt-(\d{5})-(\d{10})\.npz")
# Options that change neither the parameters nor the order of the samples: a run may resume with others.
RESUMABLE_CHANGES = ("epochs", "prefetch", "scheduler", "eval_exact_every")


@dataclass
class EpochSums:
    """What an epoch's record is built from, summed over its steps so far."""

    loss: float = 0.0  # Σ batch loss × batch size
    correct: float = 0  # correct predictions, or their weights summed (see ``streamtrain.weights``)
    samples: int = 0
    steps: int = 0
    seconds: float = 0.0  # before this process took over the epoch
    rounds: int = 0  # --shards: the rounds taken
    barrier_s: float = 0.0  # --shards: each round's mean wait of the shards for the slowest, summed


@dataclass
class TrainState:
    """Everything the rest of a run depends on; see the module docstring."""

    params: Params
    opt: OptimizerState
    monitor: Monitor
    epoch: int = 1  # the epoch in progress, 1-based
    cursor: Cursor | None = None  # where its next batch starts (None: at its start)
    sums: EpochSums = field(default_factory=EpochSums)
    history: list[EpochRecord] = field(default_factory=list)
    best: Params | None = None  # --early-stopping: the parameters of the epoch of lowest validation loss
    # --shards K: where each shard's next batch starts in the epoch (None: a shard done), None at its start
    shards: list[Cursor | None] | None = None

    def finish_epoch(self, record: EpochRecord) -> None:
        self.history.append(record)
        self.epoch, self.cursor, self.sums, self.shards = self.epoch + 1, None, EpochSums(), None


class Checkpoints:
    """The checkpoints of one run in ``directory``: write, keep the newest ``keep``, find the newest.

    ``run`` is what a resumed run must match (see ``check_resumable``).
    """

    def __init__(self, directory: str | os.PathLike, run: dict[str, Any], *, keep: int = 3) -> None:
        self.directory, self.run, self.keep = os.fspath(directory), run, keep
        self._stamps: dict[str, dict[str, str]] = {}

    def save(self, state: TrainState, seconds: float) -> str:
        """Write ``state`` (``seconds``: the epoch's time so far) and drop all but the newest ``keep``."""
        os.makedirs(self.directory, exist_ok=True)
        remove_stale_temps(self.directory, _NAME.pattern)  # of checkpoints killed mid-write
        path = os.path.join(self.directory, f"ckpt-{state.epoch:05d}-{int(state.opt.step):010d}.npz")
        arrays = {
            **{f"params.{k}": v for k, v in state.params.items()},
            **{f"v.{k}": v for k, v in state.opt.v.items()},
            **{f"s.{k}": v for k, v in state.opt.s.items()},
            **{f"best.{k}": v for k, v in (state.best or {}).items()},
        }
        meta = {
            "run": self.run,
            "epoch": state.epoch,
            "step": int(state.opt.step),
            "cursor": state.cursor.to_dict() if state.cursor is not None else None,
            "shards": None if state.shards is None else [c and c.to_dict() for c in state.shards],
            "sums": {**dataclasses.asdict(state.sums), "seconds": seconds},
            "monitor": state.monitor.to_dict(),
            "history": [r.to_dict() for r in state.history],
        }
        save_model(path, arrays, meta, format=FORMAT)
        for old in self.paths()[: -self.keep]:
            os.unlink(old)
        return path

    def paths(self) -> list[str]:
        """The checkpoint files, oldest first."""
        if not os.path.isdir(self.directory):
            return []
        names = sorted(n for n in os.listdir(self.directory) if _NAME.fullmatch(n))
        return [os.path.join(self.directory, n) for n in names]

    def newest(self) -> tuple[str, TrainState] | None:
        """The newest checkpoint that loads, and its state; None when there is none.

        A damaged newest file (a disk fault: writes are atomic) falls back to the one before it;
        a checkpoint of another run or other data is an error.
        """
        errors = []
        for path in reversed(self.paths()):
            try:
                run, state = _read(path)
            except DataError as e:
                errors.append(str(e))
                continue
            check_resumable(run, self.run, path)
            self._stamps[path] = {k: v for k, v in run.items() if k.endswith("stamp") and isinstance(v, str)}
            return path, state
        if errors:
            raise DataError(f"{self.directory}: no checkpoint can be read ({errors[0]})")
        return None

    def stamps_of(self, path: str) -> dict[str, str]:
        """The stamps of the data's files (``"stamp"``; ``"weights stamp"``) when the checkpoint ``newest``
        returned was written (see ``training_data.Seen.stamps``)."""
        return self._stamps[path]


# Counts a run can reach (float64 holds them exactly, as the schedules compute with them): a
# larger step, epoch or sample count in a checkpoint is damage, not progress.
_MAX_COUNT = 2**53


def _whole(minimum: int, most: float = _MAX_COUNT) -> Callable[[Any], bool]:
    return lambda v: type(v) is int and minimum <= v <= most


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _non_negative(v: Any) -> bool:
    return _real(v) and v >= 0


def _entries(checks: dict[str, Callable[[Any], bool]], optional: Collection[str] = ()) -> Callable[[Any], bool]:
    """A check of a dict that has the keys of ``checks`` (those ``optional`` may be missing), each
    value passing its check."""
    required = checks.keys() - set(optional)
    return lambda v: isinstance(v, dict) and required <= v.keys() <= checks.keys() and all(checks[k](v[k]) for k in v)


# A cursor's seed is the user's, of any size; its other fields count.
_CURSOR_CHECKS = {f.name: _whole(0, math.inf if f.name == "seed" else _MAX_COUNT) for f in dataclasses.fields(Cursor)}

# What each metadata entry of a checkpoint must be: one that is not is damaged (or not ours).
_META_CHECKS: dict[str, Callable[[Any], bool]] = {
    "run": lambda v: isinstance(v, dict) and all(isinstance(v.get(k, {}), dict) for k in ("model", "config", "data")),
    "epoch": _whole(1),
    "step": _whole(0),
    "cursor": lambda v: v is None or _entries(_CURSOR_CHECKS)(v),
    "sums": _entries(
        {
            "loss": _real,
            "correct": _non_negative,
            "samples": _whole(0),
            "steps": _whole(0),
            "seconds": _real,
            "rounds": _whole(0),
            "barrier_s": _non_negative,
        },
        optional=("rounds", "barrier_s"),  # checkpoints written before --shards
    ),
    "monitor": _entries(
        {"window": _whole(1), "steps": _whole(0), "average": _real, "start": lambda v: v is None or _real(v)}
    ),
    "history": lambda v: isinstance(v, list) and all(map(is_record, v)),
}


def _shard_cursors(saved: Any) -> list[Cursor | None] | None:
    """The shards' cursors a checkpoint holds (see ``TrainState.shards``); ValueError for anything else."""
    if saved is None:
        return None
    if not isinstance(saved, list) or not all(c is None or _entries(_CURSOR_CHECKS)(c) for c in saved):
        raise ValueError(f"'shards' is {saved!r}"[:200])
    return [None if c is None else Cursor.from_dict(c) for c in saved]


def _damage(meta: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's metadata, in words; None when nothing is."""
    for key, ok in _META_CHECKS.items():
        if key not in meta:
            return f"no {key!r} entry"
        if not ok(meta[key]):
            return f"{key!r} is {meta[key]!r}"[:200]
    cursor, seed = meta["cursor"], meta["run"].get("config", {}).get("seed")
    if cursor is not None and (cursor["seed"] != seed or cursor["epoch"] != meta["epoch"] - 1):
        return f"the cursor {cursor} is not of epoch {meta['epoch']} with seed {seed!r}"
    return None


def _read(path: str) -> tuple[dict[str, Any], TrainState]:
    """The run a checkpoint belongs to, and its state; DataError if it is damaged."""
    arrays, meta = load_model(path, format=FORMAT)
    damage = _damage(meta)
    if damage is not None:
        raise DataError(f"{path}: damaged checkpoint ({damage})")
    try:
        cursor = meta["cursor"]
        return meta["run"], TrainState(
            params=_prefixed(arrays, "params."),
            opt=OptimizerState(int(meta["step"]), _prefixed(arrays, "v."), _prefixed(arrays, "s.")),
            monitor=Monitor.from_dict(meta["monitor"]),
            epoch=int(meta["epoch"]),
            cursor=Cursor.from_dict(cursor) if cursor is not None else None,
            sums=EpochSums(**meta["sums"]),
            history=[EpochRecord.from_dict(r) for r in meta["history"]],
            best=_prefixed(arrays, "best.") or None,
            shards=_shard_cursors(meta.get("shards")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{path}: damaged checkpoint ({type(e).__name__}: {e})") from None


def check_resumable(saved: dict[str, Any], now: dict[str, Any], path: str) -> None:
    """DataError naming every difference between the run a checkpoint belongs to and this one
    (the data's files are compared by ``ChunkSource.check_unchanged`` with the saved stamp)."""
    differences = []
    for key, what in (("model", "model"), ("config", "option"), ("data", "data")):
        old, new = saved.get(key, {}), now.get(key, {})
        ignored = RESUMABLE_CHANGES if key == "config" else ("path",) if key == "data" else ()
        differences += [
            f"{what} {name} was {old.get(name)!r} there, {new.get(name)!r} now"
            for name in {**old, **new}
            if name not in ignored and old.get(name) != new.get(name)
        ]
    if differences:
        raise DataError(f"cannot resume from {path}: {'; '.join(differences)}")


def check_state(state: TrainState, fresh: OptimizerState, window: int) -> None:
    """ConfigError unless a checkpoint's state is what this run steps: the optimizer's moments of
    the keys and shapes of ``fresh`` (this run's optimizer started at the checkpoint's parameters),
    finite, and a divergence monitor of this run's ``window``. The parameters themselves are
    checked against the model by ``parameters.check_params``."""
    if state.monitor.window != window:
        raise ConfigError(f"its divergence monitor averages {state.monitor.window} steps, this run {window}")
    for name, saved, expected in (("v", state.opt.v, fresh.v), ("s", state.opt.s, fresh.s)):
        shapes, expected_shapes = ({k: np.shape(a) for k, a in d.items()} for d in (saved, expected))
        if shapes != expected_shapes:
            raise ConfigError(f"the optimizer's moments {name} should have shapes {expected_shapes}, not {shapes}")
        try:
            check_values(saved)
        except ConfigError as e:
            raise ConfigError(f"the optimizer's moments {name}: {e}") from None


def _prefixed(arrays: dict[str, Any], prefix: str) -> Params:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
