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
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np

from ._errors import ConfigError, DivergedError
from ._progress import Progress
from .batches import BatchStream, Cursor
from .binding import bind
from .config import FitConfig
from .full_batch import FullBatch
from .lbfgs import LBFGS, lbfgs
from .models import Model, Params, batch_objective, check_params, get_model, norm
from .optim import Optimizer, OptimizerState, get_optimizer, schedule
from .records import EpochRecord, append_jsonl
from .result import FitResult, load
from .sources import ChunkSource

__all__ = ["fit"]

Emit = Callable[[EpochRecord], None]


def fit(
    data: ChunkSource | str | os.PathLike,
    config: FitConfig | None = None,
    /,
    *,
    init: Params | str | os.PathLike | None = None,
    progress: bool | None = None,
    metrics: str | os.PathLike | None = None,
    on_epoch: Emit | None = None,
    **options: Any,
) -> FitResult:
    """Train a model on a store (path) or a ``ChunkSource`` by minimising J (see ``streamtrain.models``).

    ``options`` are the training options, each declared once in ``FitConfig`` with its default
    and allowed values (``streamtrain fit --help`` lists the same): the model (``model``,
    ``hidden``, ``activation``, ``output``), the steps (``batch_size``, ``epochs``, ``optimizer``
    and its ``lr``, ``beta1``, ``beta2``, ``eps``, ``lr_schedule``...), ``l2``, the order of the
    samples (``shuffle``, ``seed``) and where exact passes run (``scheduler``). A whole
    ``config`` can be passed instead; ``options`` then change some of its fields.

    ``init`` warm-starts from a params dict or a model file. ``progress`` draws a progress
    line on stderr (default: only when stderr is a terminal). ``metrics`` appends one JSON line
    per epoch to that file, and ``on_epoch`` is called with the same ``EpochRecord``.
    """
    config = FitConfig.from_options({**(config.to_dict() if config else {}), **options})
    model = get_model(config.model, hidden=config.hidden, activation=config.activation, output=config.output)
    with bind(model, data) as (model, source):
        config = dataclasses.replace(config, output=model.output)  # an mlp's output may come from the data
        if isinstance(config.batch_size, int) and config.batch_size > source.m:
            raise ConfigError(
                f"batch_size {config.batch_size} is larger than m={source.m}; use {source.m} or 'full' "
                f"for batch gradient descent"
            )
        params = _initial_params(model, source, init, config)
        history: list[EpochRecord] = []

        def emit(record: EpochRecord) -> None:
            history.append(record)
            if metrics is not None:
                append_jsonl(metrics, record)
            if on_epoch is not None:
                on_epoch(record)

        show = sys.stderr.isatty() if progress is None else progress
        exact = FullBatch(source, model, scheduler=config.scheduler) if config.uses_exact_path else None
        with exact or nullcontext():
            if exact is not None and config.optimizer == LBFGS:
                params = lbfgs(exact, params, l2=config.l2, max_iter=config.epochs, callback=emit)
            else:
                params = _descend(model, source, params, config, exact, emit, show)
        return FitResult(params, model, config, history, source.fingerprint())


def _optimizer(config: FitConfig, m: int) -> Optimizer:
    """The optimizer of ``config``, its learning rate following the schedule."""
    B = m if config.batch_size == "full" else int(config.batch_size)
    every = 1 if config.lr_per == "step" else -(-m // B)  # steps per epoch
    rate = schedule(config.lr_schedule, config.lr, decay=config.lr_decay, step_size=config.lr_step, every=every)
    return get_optimizer(config.optimizer, rate, beta1=config.beta1, beta2=config.beta2, eps=config.eps)


def _descend(
    model: Model,
    source: ChunkSource,
    params: Params,
    config: FitConfig,
    exact: FullBatch | None,
    emit: Emit,
    show: bool,
) -> Params:
    """Gradient descent: mini-batch epochs, or one exact full-batch step per epoch."""
    opt = _optimizer(config, source.m)
    state = opt.init(params)
    epochs, every = config.epochs, config.eval_exact_every
    for epoch in range(1, epochs + 1):
        if exact is not None and config.batch_size == "full":
            params, state, record = _full_step(exact, opt, params, state, epoch, config.l2)
        else:
            stream = BatchStream(
                source,
                int(config.batch_size),
                Cursor(config.seed, epoch - 1),
                shuffle=config.shuffle,
                dtype=config.dtype,
                prefetch=config.prefetch,
                buffer_bytes=config.buffer_bytes,
                labels=model.labels,
            )
            bar = Progress(f"epoch {epoch}/{epochs}", source.m, enabled=show)
            params, state, record = _run_epoch(model, opt, params, state, stream, bar, epoch, config.l2)
            if exact is not None and every is not None and (epoch % every == 0 or epoch == epochs):
                record = dataclasses.replace(record, **_exact_fields(exact, params, config.l2))
        emit(record)
    return params


def _run_epoch(
    model: Model,
    opt: Optimizer,
    params: Params,
    state: OptimizerState,
    stream: BatchStream,
    bar: Progress,
    epoch: int,
    l2: float,
) -> tuple[Params, OptimizerState, EpochRecord]:
    """One pass of gradient steps over ``stream``; returns the new params, state and a record."""
    t0, loss_sum, correct, seen, steps, m = time.perf_counter(), 0.0, 0, 0, 0, stream.source.m
    for X, Y, _ in stream:
        with np.errstate(invalid="ignore"):  # NaN data is reported below, once, as an error
            loss, grads, n_correct = batch_objective(model, params, X, Y, l2=l2, m=m)
        if not math.isfinite(loss):
            raise DivergedError(
                f"loss is {loss} at epoch {epoch}, batch {steps + 1}: the data holds NaN/inf or the learning rate "
                f"is too large"
            )
        params, state = opt.update(grads, state, params)
        loss_sum, correct, seen, steps = loss_sum + loss * X.shape[1], correct + n_correct, seen + X.shape[1], steps + 1
        bar.update(seen, loss_sum / seen)
    bar.close()
    seconds = time.perf_counter() - t0
    record = EpochRecord(
        epoch,
        loss_sum / seen,
        seconds,
        samples=seen,
        steps=steps,
        samples_per_s=seen / seconds,
        io_wait_s=stream.io_wait_s,
        accuracy=correct / seen if model.has_accuracy else None,
    )
    return params, state, record


def _full_step(
    exact: FullBatch, opt: Optimizer, params: Params, state: OptimizerState, epoch: int, l2: float
) -> tuple[Params, OptimizerState, EpochRecord]:
    """One batch gradient descent step on the exact J; the record holds J and ‖∇J‖ before it."""
    t0 = time.perf_counter()
    loss, grads, totals = exact.objective_with_totals(params, l2=l2)
    if not math.isfinite(loss):
        raise DivergedError(f"exact loss is {loss}: the data holds NaN/inf or the learning rate is too large")
    params, state = opt.update(grads, state, params)  # the optimizer casts float64 grads to the params dtype
    seconds, m = time.perf_counter() - t0, exact.source.m
    record = EpochRecord(
        epoch,
        loss,
        seconds,
        samples=m,
        steps=1,
        samples_per_s=m / seconds,
        accuracy=totals.correct / m if exact.model.has_accuracy else None,
        grad_norm=norm(grads),
    )
    return params, state, record


def _exact_fields(exact: FullBatch, params: Params, l2: float) -> dict[str, Any]:
    """Exact J, ‖∇J‖ and accuracy over the whole store (one pass), for a mini-batch epoch's record."""
    loss, grads, totals = exact.objective_with_totals(params, l2=l2)
    accuracy = totals.correct / totals.samples if exact.model.has_accuracy else None
    return {"exact_loss": loss, "exact_grad_norm": norm(grads), "exact_accuracy": accuracy}


def _initial_params(
    model: Model, source: ChunkSource, init: Params | str | os.PathLike | None, config: FitConfig
) -> Params:
    dtype = np.dtype(config.dtype)
    if init is None:
        return model.init(source.n_x, source.k, dtype, config.seed)
    if not isinstance(init, dict):
        warm = load(init)
        if warm.model.name != model.name:
            raise ConfigError(f"warm start from a {warm.model.name!r} model, but training {model.name!r}")
        init = warm.params
    check_params(model, init, source.n_x, source.k)
    return {k: np.array(v, dtype=dtype) for k, v in init.items()}  # a copy: never train in place
