"""The training loop: stream mini-batches, take gradient steps, record what happened.

``batch_size = 1`` is stochastic gradient descent, anything up to m is mini-batch gradient
descent, and ``batch_size = m`` is batch gradient descent from streamed batches. ``"full"``
takes the same steps from the exact full-batch path (``full_batch.py``), which can run on
Dask, and ``optimizer="lbfgs"`` minimises the same J with L-BFGS on exact gradients.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ._errors import ConfigError, DivergedError, check_int
from ._progress import Progress
from .batches import DEFAULT_BUFFER_BYTES, BatchStream, Cursor, check_batching
from .checkpoint import load_model, save_model
from .full_batch import FullBatch, check_scheduler, exact_record, lbfgs
from .models import Model, Params, batch_objective, bound, check_params, get_model, norm
from .optim import OPTIMIZERS, Optimizer, get_optimizer, schedule
from .sources import ChunkSource

__all__ = ["FitResult", "fit", "load"]

DTYPES = ("float32", "float64")
DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, LBFGS_MAX_ITER = 256, 5, 100


@dataclass
class FitResult:
    """What ``fit`` returns: the parameters, the per-epoch history and how they were made."""

    params: Params
    history: list[dict[str, Any]]
    model: str
    config: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> Model:
        """The model these params belong to, with its options (layers, output, classes)."""
        return get_model(self.model, **self.config.get("model_options", {}))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The output layer for each column of X (n_x, m): P(y = 1 | x) (1, m) for sigmoid,
        class probabilities (k, m) for softmax, predicted values (k, m) for identity."""
        return self.spec.predict_proba(self.params, np.asarray(X, self._dtype))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """0/1 (1, m) for sigmoid, class ids (1, m) for softmax, values (k, m) for identity."""
        return self.spec.predict(self.params, np.asarray(X, self._dtype))

    @property
    def _dtype(self) -> np.dtype:
        return next(iter(self.params.values())).dtype

    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` model file atomically (see ``streamtrain.load``)."""
        save_model(
            path, self.params, {"model": self.model, "config": self.config, "data": self.data, "history": self.history}
        )


def load(path: str | os.PathLike) -> FitResult:
    """Read a model file written by ``FitResult.save``."""
    params, meta = load_model(path)
    return FitResult(params, meta.get("history", []), meta["model"], meta.get("config", {}), meta.get("data", {}))


def fit(
    source_or_path: ChunkSource | str | os.PathLike,
    *,
    model: str | Model = "logistic",
    hidden: tuple[int, ...] | list[int] | None = None,
    activation: str = "relu",
    output: str | None = None,
    batch_size: int | str | None = None,
    epochs: int | None = None,
    lr: float = 0.1,
    optimizer: str = "sgd",
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    lr_schedule: str = "constant",
    lr_decay: float | None = None,
    lr_step: int = 1,
    lr_per: str = "epoch",
    l2: float = 0.0,
    shuffle: str = "chunks",
    seed: int = 0,
    dtype: str = "float32",
    init: Params | str | os.PathLike | None = None,
    eval_exact_every: int | None = None,
    scheduler: str | None = None,
    prefetch: int = 2,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    progress: bool | None = None,
    metrics: str | os.PathLike | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``model`` on a store (path) or a ``ChunkSource`` by minimising J (see ``streamtrain.models``).

    ``model``: logistic, softmax, linear or mlp; an mlp has ``hidden`` layer sizes (default
    [64]), a hidden ``activation`` (relu, tanh, sigmoid) and an ``output`` (sigmoid, softmax,
    identity; default: the data's task).

    ``batch_size`` is B samples per step (default 256), or ``"full"`` for true batch gradient
    descent: one exact full-batch step per epoch, computed by ``scheduler`` (see
    ``streamtrain.full_batch``). ``optimizer``: sgd, momentum (β = ``beta1``), rmsprop (β2 =
    ``beta2``), adam (``beta1``, ``beta2``, ``eps``), or lbfgs, which minimises J with L-BFGS
    on exact full-batch gradients (needs scipy; ``epochs`` caps its iterations, default 100).
    ``lr`` follows ``lr_schedule`` (constant, inverse-time, exponential, step; see
    ``streamtrain.optim``), counted in epochs or, with ``lr_per="step"``, in steps.
    ``l2`` is λ in J's penalty (λ/2m) Σ ‖W‖².

    ``eval_exact_every=N`` adds the exact J, ‖∇J‖ and accuracy over the whole store to the
    record of every N-th epoch and of the last one. ``init`` warm-starts from a params dict
    or a model file. ``progress`` draws a progress line on stderr (default: only when stderr
    is a terminal). ``metrics`` appends one JSON line per epoch to that file, and
    ``on_epoch`` is called with the same record.
    """
    spec = get_model(model, hidden=hidden, activation=activation, output=output)  # a Model passes through
    with bound(spec, source_or_path) as (spec, source):
        config = _check_config(
            source,
            batch_size=batch_size,
            epochs=epochs,
            lr=lr,
            optimizer=optimizer,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            lr_schedule=lr_schedule,
            lr_decay=lr_decay,
            lr_step=lr_step,
            lr_per=lr_per,
            l2=l2,
            shuffle=shuffle,
            seed=seed,
            dtype=dtype,
            eval_exact_every=eval_exact_every,
            scheduler=scheduler,
            prefetch=prefetch,
            buffer_bytes=buffer_bytes,
        )
        config["model_options"] = spec.options()
        params = _initial_params(spec, source, init, np.dtype(dtype), seed)
        history: list[dict[str, Any]] = []

        def emit(record: dict[str, Any]) -> None:
            history.append(record)
            if metrics is not None:
                _append_jsonl(metrics, record)
            if on_epoch is not None:
                on_epoch(record)

        show = sys.stderr.isatty() if progress is None else progress
        needs_exact = config["batch_size"] == "full" or eval_exact_every is not None
        with FullBatch(source, spec, scheduler=scheduler) if needs_exact else nullcontext() as exact:
            if optimizer == "lbfgs":
                params = lbfgs(exact, params, l2=l2, max_iter=config["epochs"], callback=emit)
            else:
                params = _descend(spec, source, params, config, exact, emit, show)
        return FitResult(params, history, spec.name, config, source.fingerprint())


def _optimizer(config: dict[str, Any], m: int) -> Optimizer:
    """The optimizer of ``config``, its learning rate following the schedule."""
    B = m if config["batch_size"] == "full" else config["batch_size"]
    every = 1 if config["lr_per"] == "step" else -(-m // B)  # steps per epoch
    rate = schedule(
        config["lr_schedule"], config["lr"], decay=config["lr_decay"], step_size=config["lr_step"], every=every
    )
    return get_optimizer(config["optimizer"], rate, beta1=config["beta1"], beta2=config["beta2"], eps=config["eps"])


def _descend(
    spec: Model,
    source: ChunkSource,
    params: Params,
    config: dict[str, Any],
    exact: FullBatch | None,
    emit: Callable[[dict[str, Any]], None],
    show: bool,
) -> Params:
    """Gradient descent: mini-batch epochs, or one exact full-batch step per epoch."""
    opt = _optimizer(config, source.m)
    state = opt.init(params)
    epochs, every, l2 = config["epochs"], config["eval_exact_every"], config["l2"]
    for epoch in range(epochs):
        if config["batch_size"] == "full":
            params, state, record = _full_step(exact, opt, params, state, l2)
        else:
            stream = BatchStream(
                source,
                config["batch_size"],
                Cursor(config["seed"], epoch),
                shuffle=config["shuffle"],
                dtype=config["dtype"],
                prefetch=config["prefetch"],
                buffer_bytes=config["buffer_bytes"],
            )
            bar = Progress(f"epoch {epoch + 1}/{epochs}", source.m, enabled=show)
            params, state, record = _run_epoch(spec, opt, params, state, stream, bar, l2=l2)
            if every is not None and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
                record.update(exact_record(exact, params, l2))
        emit({"epoch": epoch + 1, **record})
    return params


def _run_epoch(
    spec: Model, opt: Optimizer, params: Params, state: NamedTuple, stream: BatchStream, bar: Progress, *, l2: float
) -> tuple[Params, NamedTuple, dict[str, Any]]:
    """One pass of gradient steps over ``stream``; returns the new params, state and a record."""
    t0, loss_sum, correct, seen, m = time.perf_counter(), 0.0, 0, 0, stream.source.m
    for t, (X, Y, _) in enumerate(stream):
        with np.errstate(invalid="ignore"):  # NaN data is reported below, once, as an error
            loss, grads, n_correct = batch_objective(spec, params, X, Y, l2=l2, m=m)
        if not math.isfinite(loss):
            raise DivergedError(
                f"loss is {loss} at epoch {stream.cursor.epoch + 1}, batch {t + 1}: the data holds "
                f"NaN/inf or the learning rate is too large"
            )
        params, state = opt.update(grads, state, params)
        loss_sum, correct, seen = loss_sum + loss * X.shape[1], correct + n_correct, seen + X.shape[1]
        bar.update(seen, loss_sum / seen)
    bar.close()
    seconds = time.perf_counter() - t0
    record = {
        "loss": loss_sum / seen,
        "samples": seen,
        "steps": t + 1,
        "seconds": seconds,
        "samples_per_s": seen / seconds,
        "io_wait_s": stream.io_wait_s,
    }
    if spec.has_accuracy:
        record["accuracy"] = correct / seen
    return params, state, record


def _full_step(
    exact: FullBatch, opt: Optimizer, params: Params, state: NamedTuple, l2: float
) -> tuple[Params, NamedTuple, dict[str, Any]]:
    """One batch gradient descent step on the exact J; the record holds J and ‖∇J‖ before it."""
    t0 = time.perf_counter()
    loss, grads, totals = exact.objective_with_totals(params, l2=l2)
    if not math.isfinite(loss):
        raise DivergedError(f"exact loss is {loss}: the data holds NaN/inf or the learning rate is too large")
    params, state = opt.update(grads, state, params)  # the optimizer casts float64 grads to the params dtype
    seconds, m = time.perf_counter() - t0, exact.source.m
    record = {
        "loss": loss,
        "grad_norm": norm(grads),
        "samples": m,
        "steps": 1,
        "seconds": seconds,
        "samples_per_s": m / seconds,
    }
    if exact.model.has_accuracy:
        record["accuracy"] = totals.correct / m
    return params, state, record


def _check_config(source: ChunkSource, **cfg: Any) -> dict[str, Any]:
    if cfg["dtype"] not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {cfg['dtype']!r}")
    if cfg["optimizer"] not in (*OPTIMIZERS, "lbfgs"):
        raise ConfigError(f"unknown optimizer {cfg['optimizer']!r}; choose from {', '.join(OPTIMIZERS)}, lbfgs")
    if cfg["lr_per"] not in ("epoch", "step"):
        raise ConfigError(f"lr_per must be 'epoch' or 'step', got {cfg['lr_per']!r}")
    if cfg["epochs"] is None:
        cfg["epochs"] = LBFGS_MAX_ITER if cfg["optimizer"] == "lbfgs" else DEFAULT_EPOCHS
    check_int("epochs", cfg["epochs"])
    B = cfg["batch_size"]
    if B is None:
        B = cfg["batch_size"] = "full" if cfg["optimizer"] == "lbfgs" else DEFAULT_BATCH_SIZE
    if B != "full":
        if cfg["optimizer"] == "lbfgs":
            raise ConfigError("L-BFGS takes exact full-batch steps: leave batch_size unset or use 'full'")
        check_batching(B, cfg["shuffle"])
        if source.m < B:
            raise ConfigError(
                f"batch_size {B} is larger than m={source.m}; use {source.m} or 'full' for batch gradient descent"
            )
    if not (isinstance(cfg["l2"], (int, float)) and math.isfinite(cfg["l2"]) and cfg["l2"] >= 0):
        raise ConfigError(f"l2 must be a number >= 0, got {cfg['l2']!r}")
    if cfg["eval_exact_every"] is not None:
        check_int("eval_exact_every", cfg["eval_exact_every"])
    check_scheduler(cfg["scheduler"])
    check_int("seed", cfg["seed"], minimum=0)
    if cfg["optimizer"] != "lbfgs":
        _optimizer(cfg, source.m)  # checks the optimizer's and the schedule's options
    return dict(cfg)


def _initial_params(
    spec: Model, source: ChunkSource, init: Params | str | os.PathLike | None, dtype: np.dtype, seed: int
) -> Params:
    if init is None:
        return spec.init(source.n_x, source.k, dtype, seed)
    if not isinstance(init, dict):
        init, meta = load_model(init)
        if meta.get("model") != spec.name:
            raise ConfigError(f"warm start from a {meta.get('model')!r} model, but training {spec.name!r}")
    check_params(spec, init, source.n_x, source.k)
    return {k: np.array(v, dtype=dtype) for k, v in init.items()}  # a copy: never train in place


def _append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
