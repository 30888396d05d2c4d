"""The training loop: stream mini-batches, take gradient steps, record what happened.

``batch_size = 1`` is stochastic gradient descent, anything up to m is mini-batch gradient
descent, and ``batch_size = m`` is batch gradient descent from streamed batches. ``"full"``
takes the same steps from the exact full-batch path (``full_batch.py``), which can run on
Dask, and ``optimizer="lbfgs"`` minimises the same J with L-BFGS on exact gradients.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from ._errors import ConfigError, DivergedError
from ._progress import Progress
from ._run_start import Starts, stopped_early
from ._signals import Interrupted, StopRequest, stop_requests
from .batches import BatchStream, Cursor
from .binding import bind
from .config import CheckpointConfig, FitConfig
from .evaluation import exact_fields, validation_fields
from .full_batch import FullBatch
from .lbfgs import LBFGS, lbfgs
from .models import Model, Params, batch_objective, get_model, norm
from .optim import optimizer_of, rate_of
from .outputs import check_output
from .provenance import provenance
from .records import Emit, EpochRecord, emitter
from .result import FitResult
from .resume import Checkpoints, TrainState
from .small_batches import SPAN_SAMPLES, SmallBatches, small_batches
from .sources import ChunkSource
from .standardize import to_raw, to_scaled
from .steplog import StepLog
from .training_data import Seen, initial_params, training_data

__all__ = ["fit"]


def fit(
    data: ChunkSource | str | os.PathLike,
    config: FitConfig | None = None,
    /,
    *,
    init: Params | str | os.PathLike | None = None,
    state: TrainState | None = None,
    progress: bool | None = None,
    metrics: str | os.PathLike | None = None,
    log_every: int | None = None,
    on_epoch: Emit | None = None,
    resume: bool = False,
    on_resume: Callable[[str, int, int], None] | None = None,
    **options: Any,
) -> FitResult:
    """Train a model on a store (path) or a ``ChunkSource`` by minimising J (see ``streamtrain.models``).

    ``options`` are the training options, each declared once in ``FitConfig`` with its default
    and allowed values (``streamtrain fit --help`` lists the same): the model (``model``,
    ``hidden``, ``activation``, ``output``), the steps (``batch_size``, ``epochs``, ``optimizer``
    and its ``lr``, ``beta1``, ``beta2``, ``eps``, ``lr_schedule``...), ``l2``, the order of the
    samples (``shuffle``, ``seed``) and where exact passes run (``scheduler``). A whole
    ``config`` can be passed instead; ``options`` then change some of its fields. The options of
    ``CheckpointConfig`` (``checkpoint_dir``, ``checkpoint_every``...) say where and how often
    the run writes checkpoints; ``resume=True`` continues from the newest one in
    ``checkpoint_dir`` (from the start when there is none) and ends bit-identical to a run never
    stopped; ``on_resume(path, epoch, step)`` is told which checkpoint it continues from.

    ``init`` warm-starts from a params dict or a model file. ``state`` goes on from where an
    earlier run of this process left off (its ``FitResult.state``), on the same or other data:
    its parameters, the optimizer's moments and step count (which the schedule follows), its
    epochs (the next one shuffles as that epoch of one longer run would) and history, up to epoch
    ``epochs`` (counted from the first, as when resuming); ``streamtrain.sklearn``'s
    ``partial_fit`` is built on it. ``progress`` draws a progress line on stderr (default: only
    when stderr is a terminal). ``metrics`` appends one JSON line per epoch to that file, and
    ``on_epoch`` is called with the same ``EpochRecord``; with ``log_every=N`` the file also gets a
    ``StepRecord`` every N steps (see ``streamtrain.steplog``).

    SIGINT and SIGTERM stop the run after the current step, with a checkpoint when a directory
    is set, by raising ``Interrupted`` (a ``KeyboardInterrupt``). A diverged run raises
    ``DivergedError``; NaN or inf in the data a ``DataError`` naming the sample and chunk.
    """
    saving = CheckpointConfig.from_options({k: options.pop(k) for k in _CHECKPOINT_OPTIONS & options.keys()})
    config = FitConfig.from_options({**(config.to_dict() if config else {}), **options})
    if resume and saving.checkpoint_dir is None:
        raise ConfigError("resume needs checkpoint_dir: the directory the checkpoints were written to")
    if state is not None and (resume or init is not None):
        raise ConfigError("state goes on from its own parameters: leave init and resume unset")
    _check_outputs(data, metrics, saving.checkpoint_dir)
    step_log = None if log_every is None else StepLog(metrics, log_every)
    model = get_model(config.model, hidden=config.hidden, activation=config.activation, output=config.output)
    with (
        bind(model, data, missing_chunks=config.missing_chunks) as (model, source),
        training_data(model, source, config) as seen,
    ):
        config = dataclasses.replace(config, output=model.output)  # an mlp's output may come from the data
        kind = Run if config.sync_every is None else _sharded()  # None: one process, not in rounds
        run = kind(model, seen, config, saving, progress, emitter(metrics, on_epoch), step_log)
        continued = state is not None
        state = run.resumed() if resume else None if state is None else run.continued(state)
        if resume and state is not None and on_resume is not None:
            on_resume(str(run.last_checkpoint), state.epoch, int(state.opt.step))
        scaling = seen.scaling
        if state is None:
            initial = initial_params(model, source, init, config)
            state = run.start(initial if scaling is None or init is None else to_scaled(initial, scaling))
        params = run.train(state)
        params = params if scaling is None else to_raw(params, scaling)  # for the data as stored
        going_on = None if run.lbfgs or scaling is not None else state  # a state whose params are those returned
        made = provenance(init, continued=continued)
        return FitResult(params, model, config, state.history, source.fingerprint(), made, going_on)


def _sharded() -> type[Run]:
    from ._sharded_run import ShardedRun  # which builds on Run

    return ShardedRun


_CHECKPOINT_OPTIONS = {f.name for f in dataclasses.fields(CheckpointConfig)}


def _check_outputs(data: ChunkSource | str | os.PathLike, metrics: Any, checkpoint_dir: str | None) -> None:
    """Where the run will write, checked before any work (see ``outputs.check_output``)."""
    where = data.name if isinstance(data, ChunkSource) else os.fspath(data)
    if metrics is not None:
        check_output(metrics, "metrics", data=where)
    if checkpoint_dir is not None:
        check_output(checkpoint_dir, "checkpoint-dir", data=where)


class Run(Starts):
    """One training run on a bound store: its steps, checkpoints, divergence checks and stop requests."""

    def __init__(
        self,
        model: Model,
        seen: Seen,
        config: FitConfig,
        saving: CheckpointConfig,
        progress: bool | None,
        emit: Emit,
        step_log: StepLog | None = None,
    ) -> None:
        source = seen.training
        self.model, self.source, self.config, self.emit, self.seen = model, source, config, emit, seen
        self.step_log = step_log
        self.show = sys.stderr.isatty() if progress is None else progress
        self.batch_size = source.m if config.batch_size == "full" else int(config.batch_size)
        self.lbfgs = config.optimizer == LBFGS
        if self.lbfgs and saving.checkpoint_dir is not None:
            raise ConfigError(
                "L-BFGS runs cannot be checkpointed: scipy keeps its curvature pairs to itself, so a resumed run "
                "would differ; leave checkpoint_dir unset (each iteration is one exact pass)"
            )
        self.rate = rate = rate_of(config, source.m)
        self.opt = None if self.lbfgs else optimizer_of(config, rate)
        self.small = None if seen.weighting else small_batches(model, config, rate, source.m)  # None: per batch
        self.stamps = seen.stamps()
        self.checkpoints = None
        if saving.checkpoint_dir is not None:
            run = {"config": config.to_dict(), "model": model.to_dict(), "data": source.fingerprint()}
            self.checkpoints = Checkpoints(saving.checkpoint_dir, {**run, **self.stamps}, keep=saving.keep_checkpoints)
        self.every_steps, self.every_seconds = saving.checkpoint_every, saving.checkpoint_seconds
        self.last_checkpoint: str | None = None
        self.stop = StopRequest()
        self._clock = (time.perf_counter(), 0.0)  # the epoch's (start in this process, seconds before it)
        self._saved_at = time.monotonic()

    _cluster_client: Any = None  # a Dask client the run already holds, for its exact passes too (--shards)

    def train(self, state: TrainState) -> Params:
        """Run from ``state`` to the last epoch; the final parameters."""
        config = self.config
        seen, model = self.seen, self.model
        exact = None
        if config.uses_exact_path:
            exact = FullBatch(
                self.source, model, scheduler=config.scheduler, weighting=seen.weighting, client=self._cluster_client
            )
        self.held_out = None
        if seen.validation is not None:
            scheduler = config.scheduler or "sync"
            self.held_out = FullBatch(seen.validation, model, scheduler=scheduler, weighting=seen.validation_weighting)
        with exact or nullcontext(), self.held_out or nullcontext(), stop_requests() as self.stop:
            if exact is not None and self.lbfgs:
                callback = self._lbfgs_record(state)
                return lbfgs(exact, state.params, l2=config.l2, max_iter=config.epochs, callback=callback)
            return self._descend(state, exact)

    def _descend(self, state: TrainState, exact: FullBatch | None) -> Params:
        """Gradient descent: mini-batch epochs, or one exact full-batch step per epoch."""
        config, every = self.config, self.config.eval_exact_every
        while state.epoch <= config.epochs and not stopped_early(state):
            self.seen.check_unchanged(self.stamps, since="training began")
            self._clock = (time.perf_counter(), state.sums.seconds)
            if exact is not None and config.batch_size == "full":
                record = self._full_step(exact, state)
            else:
                record = self._run_epoch(state)
                if (
                    exact is not None
                    and every is not None
                    and (state.epoch % every == 0 or state.epoch == config.epochs)
                ):
                    record = dataclasses.replace(record, **exact_fields(exact, state.params, config.l2))
            if self.held_out is not None:
                record = dataclasses.replace(record, **validation_fields(self.held_out, state.params))
                if config.early_stopping:
                    record = self._watch_validation(state, record)
            state.finish_epoch(record)
            self.emit(record)
            if self.checkpoints is not None:
                self._save(state)
            self._stop_if_asked(state)
        self.seen.check_unchanged(self.stamps, since="training began")
        return state.best if config.early_stopping and state.best is not None else state.params

    def _watch_validation(self, state: TrainState, record: EpochRecord) -> EpochRecord:
        """--early-stopping: keep the parameters of the epoch of lowest validation loss so far, and
        say in the record when --patience epochs have passed without a lower one (training stops)."""
        losses = [math.inf if r.validation_loss is None else r.validation_loss for r in (*state.history, record)]
        best = int(np.argmin(losses)) + 1  # the first epoch of the lowest loss
        if best == record.epoch:
            state.best = {k: v.copy() for k, v in state.params.items()}
        if record.epoch - best < self.config.patience:
            return record
        why = (
            f"early stopping: no lower validation loss in {self.config.patience} epochs; kept epoch {best}'s parameters"
        )
        return dataclasses.replace(record, stop=why)

    def _run_epoch(self, state: TrainState) -> EpochRecord:
        """The rest of the epoch's gradient steps, from its cursor; the epoch's record."""
        model, config, source, sums = self.model, self.config, self.source, state.sums
        stream = BatchStream(
            source,
            self.batch_size,
            state.cursor or Cursor(config.seed, state.epoch - 1),
            shuffle=config.shuffle,
            dtype=config.dtype,
            prefetch=config.prefetch,
            buffer_bytes=config.buffer_bytes,
            labels=model.labels,
            weighting=self.seen.weighting,
        )
        bar = Progress(f"epoch {state.epoch}/{config.epochs}", source.m, enabled=self.show)
        if self.small is not None:
            self._span_steps(stream, state, bar, self.small)
        else:
            self._batch_steps(stream, state, bar)
        bar.close()
        seconds = self._seconds()
        return EpochRecord(
            state.epoch,
            sums.loss / sums.samples,
            seconds,
            samples=sums.samples,
            steps=sums.steps,
            samples_per_s=sums.samples / seconds,
            io_wait_s=stream.io_wait_s,
            accuracy=sums.correct / sums.samples if model.has_accuracy else None,
        )

    def _batch_steps(self, stream: BatchStream, state: TrainState, bar: Progress) -> None:
        """One step per batch, in numpy (``models``, ``optim``): any model, any batch size."""
        model, config, sums, cursor = self.model, self.config, state.sums, stream.cursor
        for X, Y, after, weights in stream:
            # Overflows warn nothing: a non-finite loss is looked into below, a growing one by the monitor.
            with np.errstate(invalid="ignore", over="ignore"):
                loss, grads, n_correct = batch_objective(
                    model, state.params, X, Y, l2=config.l2, m=self.source.m, weights=weights
                )
                if not math.isfinite(loss):
                    raise self._non_finite(stream, cursor, after, loss, state)
                state.params, state.opt = self.opt.update(grads, state.opt, state.params)  # type: ignore[union-attr]
            sums.loss, sums.correct = sums.loss + loss * X.shape[1], sums.correct + n_correct
            sums.samples, sums.steps = sums.samples + X.shape[1], sums.steps + 1
            self._log_steps(state, [loss], X.shape[1])
            state.cursor = cursor = after
            bar.update(sums.samples, sums.loss / sums.samples, stream.io_wait_s)
            self._check_divergence(state, loss)
            self._after_steps(state)

    def _span_steps(self, stream: BatchStream, state: TrainState, bar: Progress, small: SmallBatches) -> None:
        """The same steps, a span of batches per compiled call (``small_batches``); a span ends early at a
        step where a checkpoint is due, so checkpoints land where the per-batch path writes them."""
        sums = state.sums
        state.params, state.opt = small.own(state.params, state.opt)  # then stepped in place
        for span in stream.spans(SPAN_SAMPLES):
            first = 0
            while first < span.steps:
                count = span.steps - first
                if self.checkpoints is not None and self.every_steps is not None:
                    count = min(count, self.every_steps - state.opt.step % self.every_steps)
                result = small.take(state.params, state.opt, span, first, count, sums.loss)
                diverged = state.monitor.update_many(result.losses[: result.done], small.fold)
                if diverged is not None:
                    raise self._diverged(state.epoch, state.opt.step + diverged[0] + 1, diverged[1])
                state.opt = state.opt._replace(step=state.opt.step + result.done)
                sums.loss, sums.correct = result.total, sums.correct + result.correct
                sums.samples, sums.steps = sums.samples + result.done * span.width, sums.steps + result.done
                self._log_steps(state, result.losses[: result.done], span.width)
                first += result.done
                state.cursor = span.cursor(first)
                if result.done < count:
                    loss = float(result.losses[result.done])
                    raise self._non_finite(stream, state.cursor, span.cursor(first + 1), loss, state)
                bar.update(sums.samples, sums.loss / sums.samples, stream.io_wait_s)
                self._after_steps(state)

    def _full_step(self, exact: FullBatch, state: TrainState) -> EpochRecord:
        """One batch gradient descent step on the exact J; the record holds J and ‖∇J‖ before it."""
        loss, grads, totals = exact.objective_with_totals(state.params, l2=self.config.l2)
        if not math.isfinite(loss):  # NaN/inf in the data is a DataError of the exact pass
            raise DivergedError(f"exact loss is {loss} at epoch {state.epoch}: {self._too_large}")
        # The optimizer casts float64 grads to the params' dtype.
        state.params, state.opt = self.opt.update(grads, state.opt, state.params)  # type: ignore[union-attr]
        self._check_divergence(state, loss)
        seconds, m = self._seconds(), exact.source.m
        return EpochRecord(
            state.epoch,
            loss,
            seconds,
            samples=m,
            steps=1,
            samples_per_s=m / seconds,
            accuracy=totals.correct / m if exact.model.has_accuracy else None,
            grad_norm=norm(grads),
        )

    def _log_steps(self, state: TrainState, losses: Sequence[float] | np.ndarray, width: int) -> None:
        """Step records (``log_every``) of the steps just taken: ``losses``, the last one ``state.opt.step``."""
        if self.step_log is None or not len(losses):
            return
        history = state.history
        self.step_log.add(
            int(state.opt.step) - len(losses) + 1,
            losses,
            width,
            epoch=state.epoch,
            samples_before=sum(r.samples or 0 for r in history) + state.sums.samples - len(losses) * width,
            lr=self.rate,
            seconds=sum(r.seconds for r in history) + self._seconds(),
        )

    def _after_steps(self, state: TrainState) -> None:
        """A checkpoint when one is due, and a stop when a signal asked for one."""
        if self.checkpoints is not None:
            due = self.every_steps is not None and state.opt.step % self.every_steps == 0
            if due or self.stop.signum is not None or time.monotonic() - self._saved_at >= self.every_seconds:
                self._save(state)
        self._stop_if_asked(state)

    def _check_divergence(self, state: TrainState, loss: float) -> None:
        reason = state.monitor.update(loss)
        if reason is not None:
            raise self._diverged(state.epoch, state.opt.step, reason)

    def _diverged(self, epoch: int, step: int, reason: str) -> DivergedError:
        return DivergedError(f"diverged at epoch {epoch}, step {step}: {reason}; {self._too_large}")

    @property
    def _too_large(self) -> str:
        return f"the learning rate {self.config.lr:g} is too large for this data and model"

    def _non_finite(
        self, stream: BatchStream, before: Cursor, after: Cursor, loss: float, state: TrainState
    ) -> Exception:
        """NaN/inf in the batch's chunks is a DataError naming the sample; else the step size diverged."""
        error = self.source.find_nonfinite(stream.chunks_between(before, after), self.config.dtype)
        if error is not None:
            return error
        return DivergedError(
            f"loss is {loss} at epoch {state.epoch}, step {state.opt.step + 1} (the batch's data is finite): "
            f"{self._too_large}"
        )

    def _seconds(self) -> float:
        start, before = self._clock
        return before + time.perf_counter() - start

    def _save(self, state: TrainState) -> None:
        assert self.checkpoints is not None
        self.last_checkpoint = self.checkpoints.save(state, self._seconds() if state.sums.steps else 0.0)
        self._saved_at = time.monotonic()

    def _stop_if_asked(self, state: TrainState) -> None:
        if self.stop.signum is None:
            return
        kept = (
            f"checkpoint {self.last_checkpoint}; continue with --resume"
            if self.checkpoints is not None
            else "no checkpoint (set --checkpoint-dir to keep the finished steps)"
        )
        raise Interrupted(self.stop.signum, f"{self.stop.name} at epoch {state.epoch}, step {state.opt.step}: {kept}")

    def _lbfgs_record(self, state: TrainState) -> Emit:
        def record(r: EpochRecord) -> None:
            state.history.append(r)
            self.emit(r)
            if self.stop.signum is not None:
                raise Interrupted(self.stop.signum, f"{self.stop.name} at L-BFGS iteration {r.epoch}")

        return record
