"""Where a run starts: from scratch, from its newest checkpoint (``resume``), or from where an earlier
run left off (``fit(state=...)``). A part of ``train.Run``, kept apart to keep each file readable."""

from __future__ import annotations

import dataclasses

import numpy as np

from ._errors import ConfigError, DataError
from .batches import chunk_order
from .config import FitConfig
from .divergence import WINDOW_SAMPLES, Monitor
from .models import Model, Params, batch_objective
from .optim import Optimizer, OptimizerState
from .parameters import check_params
from .resume import Checkpoints, TrainState, check_state
from .sources import ChunkSource
from .training_data import Seen, initial_params

__all__ = ["Starts", "stopped_early"]


class Starts:
    """The states a ``Run`` starts from; the attributes below are the run's (see ``train.Run``)."""

    model: Model
    source: ChunkSource
    config: FitConfig
    seen: Seen
    opt: Optimizer | None
    lbfgs: bool
    batch_size: int
    checkpoints: Checkpoints | None
    last_checkpoint: str | None

    def start(self, params: Params) -> TrainState:
        """The state before the first step."""
        opt = self.opt.init(params) if self.opt is not None else OptimizerState(0, {}, {})  # L-BFGS keeps its own
        start = None if self.batch_size == self.source.m else self._starting_loss(params)
        return TrainState(params, opt, self._monitor(start))

    def _monitor(self, start: float | None = None) -> Monitor:
        """The divergence monitor of this run's steps (``start``: the loss at the initial params)."""
        return Monitor.for_steps(self.batch_size, self.source.m, start)

    def continued(self, state: TrainState) -> TrainState:
        """A copy of ``state`` that this run goes on from (``fit``'s ``state``) at the start of its epoch, with a
        divergence monitor for this run's data; ConfigError when the run cannot go on from it."""
        if self.lbfgs or self.config.standardize:
            why = "L-BFGS keeps its curvature pairs to itself" if self.lbfgs else "standardize scales each run's data"
            raise ConfigError(f"a run cannot go on from a state: {why}")
        if stopped_early(state):
            raise ConfigError("the run of this state stopped early; to train on from its parameters, use init")
        if state.epoch > self.config.epochs:
            raise ConfigError(f"epochs counts from the first: more than the state's {state.epoch - 1} to go on from it")
        params = initial_params(self.model, self.source, state.params, self.config)  # checked, copied
        fresh = self.start(params)
        try:
            check_state(dataclasses.replace(state, monitor=fresh.monitor), fresh.opt, fresh.monitor.window)
        except ConfigError as e:
            raise ConfigError(f"this run cannot go on from the state: {e}") from None
        dtype = np.dtype(self.config.dtype)
        opt = OptimizerState(
            int(state.opt.step), *({k: np.array(a, dtype) for k, a in d.items()} for d in (state.opt.v, state.opt.s))
        )
        return TrainState(params, opt, fresh.monitor, state.epoch, history=list(state.history))

    def _starting_loss(self, params: Params) -> float:
        """The loss at ``params`` over the first chunks the first epoch reads, at least
        WINDOW_SAMPLES samples (one small chunk may be far from typical): divergence's reference."""
        config, source = self.config, self.source
        total, samples = 0.0, 0
        for chunk in chunk_order(source.n_chunks, config.shuffle, config.seed, 0):
            start, stop = source.chunk_bounds[chunk]
            X, Y = source.read(start, stop, labels=self.model.labels)
            w = None if self.seen.weighting is None else self.seen.weighting(Y, start, stop)
            with np.errstate(invalid="ignore", over="ignore"):  # NaN data is found by the first step
                X, Y = np.asarray(X, config.dtype), np.asarray(Y, config.dtype)
                loss = batch_objective(self.model, params, X, Y, l2=config.l2, m=source.m, weights=w)[0]
                total += loss * (stop - start)
            samples += stop - start
            if samples >= WINDOW_SAMPLES:
                break
        return total / samples

    def resumed(self) -> TrainState | None:
        """The state of the newest checkpoint, or None when there is none yet."""
        found = self.checkpoints.newest() if self.checkpoints is not None else None
        if found is None:
            return None
        self.last_checkpoint, state = found
        assert self.checkpoints is not None
        self.seen.check_unchanged(
            self.checkpoints.stamps_of(self.last_checkpoint), since=f"{self.last_checkpoint} was written"
        )
        try:
            check_params(self.model, state.params, self.source.n_x, self.source.k)
            fresh = self.opt.init(state.params) if self.opt is not None else OptimizerState(0, {}, {})
            check_state(state, fresh, self._monitor().window)
        except ConfigError as e:
            raise DataError(f"{self.last_checkpoint}: damaged checkpoint: {e}") from None
        return state


def stopped_early(state: TrainState) -> bool:
    """Whether the last epoch ended the run (--early-stopping): a resumed run then trains no further."""
    return bool(state.history) and (state.history[-1].stop or "").startswith("early stopping")
