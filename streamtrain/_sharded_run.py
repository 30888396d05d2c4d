"""``--shards K``: a run whose epochs are taken in rounds of local SGD (see ``streamtrain.shards``).

The run is ``train.Run`` (epochs, records, exact passes, checkpoints, stop requests, resume); only
an epoch's steps differ: each round sends the params to the K shards, each takes up to H steps on
its own chunks, and the samples-weighted average is the next round's start. A checkpoint is written
after every round (with the K cursors), so a run killed anywhere resumes at its last round, exactly.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np

from ._errors import ConfigError, DivergedError
from ._progress import Progress
from .batches import Cursor
from .divergence import Monitor
from .optim import OptimizerState, rate_of
from .records import EpochRecord, StepRecord
from .resume import TrainState
from .shards import RoundResult, RoundTask, Shards, average, shard_chunks, shard_seed
from .train import Run

__all__ = ["ShardedRun"]


class ShardedRun(Run):
    """A ``Run`` whose mini-batch epochs are rounds over ``config.shards`` shards on ``config.scheduler``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        K, n = self.config.shards, self.source.n_chunks
        if n < K:
            raise ConfigError(f"--shards {K} needs at least {K} chunks to deal; the store has {n}: store more chunks")
        self.small = None  # rounds step batch by batch, in numpy
        self.every = math.ceil(self.source.m / K / self.batch_size)  # a shard's steps per epoch, about
        self.rate = rate_of(self.config, self.source.m, self.every)
        self.rounds: Shards | None = None

    def _monitor(self, start: float | None = None) -> Monitor:
        """The monitor takes a loss a round, each the mean of the K shards' H steps: the window of
        one process's steps is window / H rounds (one at the default H, where one round may be the
        whole epoch)."""
        steps = super()._monitor(start)
        assert self.config.sync_every is not None
        return dataclasses.replace(steps, window=math.ceil(steps.window / self.config.sync_every))

    def train(self, state: TrainState) -> Any:
        config, log = self.config, self.step_log
        assert config.sync_every is not None and config.scheduler is not None
        task = RoundTask(
            self.source, self.model, config, (), config.sync_every, self.source.m, self.every, self.seen.weighting,
            log_every=None if log is None else log.every,
        )  # fmt: skip
        with Shards(task, config.shards, config.scheduler) as self.rounds:
            self._cluster_client = self.rounds.client  # exact passes (--eval-exact-every) on the same cluster
            return super().train(state)

    def _run_epoch(self, state: TrainState) -> EpochRecord:
        """The rest of the epoch in rounds, from the shards' cursors; the epoch's record."""
        config, K, sums = self.config, self.config.shards, state.sums
        chunks = shard_chunks(self.source.n_chunks, K, config.shuffle, config.seed, state.epoch - 1)
        cursors = state.shards or [Cursor(shard_seed(config.seed, K, k), state.epoch - 1) for k in range(K)]
        bar = Progress(f"epoch {state.epoch}/{config.epochs}", self.source.m, enabled=self.show)
        while any(c is not None for c in cursors):
            t0 = time.perf_counter()
            assert self.rounds is not None
            results = self.rounds.round(state.params, state.opt, cursors, chunks)
            wall = time.perf_counter() - t0
            done = [r for r in results if r is not None]
            self._log_round(state, done)
            sums.barrier_s += sum(wall - r.seconds for r in done) / len(done)  # the shards' mean wait for the slowest
            loss = self._step_to_average(state, results)
            cursors = [_going_on(r, len(c)) for r, c in zip(results, chunks)]
            state.shards = cursors if any(c is not None for c in cursors) else None
            sums.rounds += 1
            bar.update(
                sums.samples,
                sums.loss / max(sums.samples, 1),
                sums.barrier_s,
                on=f"at the barrier, round {sums.rounds}",
            )
            self._check_divergence(state, loss)
            if self.checkpoints is not None:
                self._save(state)
            self._stop_if_asked(state)
        bar.close()
        seconds = self._seconds()
        return EpochRecord(
            state.epoch, sums.loss / sums.samples, seconds, samples=sums.samples, steps=sums.steps,
            samples_per_s=sums.samples / seconds, rounds=sums.rounds, barrier_s=sums.barrier_s,
            accuracy=sums.correct / sums.samples if self.model.has_accuracy else None,
        )  # fmt: skip

    def _log_round(self, state: TrainState, done: list[RoundResult]) -> None:
        """Step records (--log-every) of the round's due steps, before its average: a step's batch
        loss is the mean over the shards that took it, weighted by their batches' sizes."""
        if self.step_log is None:
            return
        before = sum(r.samples or 0 for r in state.history) + state.sums.samples
        seconds = sum(r.seconds for r in state.history) + self._seconds()
        by_step = [{entry[0]: entry for entry in r.logged} for r in done]  # each shard's logged steps, once
        for step in sorted({t for steps in by_step for t in steps}):
            taken = [steps[step] for steps in by_step if step in steps]
            loss = sum(e[1] * e[2] for e in taken) / sum(e[2] for e in taken)
            # the samples of each shard's round up to this step: all of them for a shard that ended before it
            seen = sum(steps[step][3] if step in steps else r.samples for steps, r in zip(by_step, done))
            self.step_log.record(StepRecord(step, state.epoch, before + seen, loss, self.rate(step - 1), seconds))

    def _step_to_average(self, state: TrainState, results: list[RoundResult | None]) -> float:
        """The round's average as the run's params and optimizer state; the round's mean batch loss."""
        done = [r for r in results if r is not None and r.samples]
        if not done:  # the shards' last batches were all taken already: nothing to average
            return state.monitor.average
        samples = sum(r.samples for r in done)
        loss = sum(r.loss for r in done) / samples if samples else 0.0
        if not math.isfinite(loss):
            raise DivergedError(
                f"the loss of round {state.sums.rounds + 1} of epoch {state.epoch} is {loss} (the data it read is "
                f"finite): {self._too_large}"
            )
        params, v, s = average(done, np.dtype(self.config.dtype))
        state.params = params
        state.opt = OptimizerState(state.opt.step + max(r.steps for r in done), v, s)
        sums = state.sums
        sums.loss, sums.correct = sums.loss + sum(r.loss for r in done), sums.correct + sum(r.correct for r in done)
        sums.samples, sums.steps = sums.samples + samples, sums.steps + max(r.steps for r in done)
        return loss


def _going_on(result: RoundResult | None, n_chunks: int) -> Cursor | None:
    """Where a shard goes on next round: its cursor, None once its epoch is done."""
    if result is None or result.cursor.position >= n_chunks or not result.steps:
        return None
    return result.cursor
