"""The training loop: stream mini-batches, take gradient steps, record what happened.

``batch_size = m`` is batch gradient descent (one step per epoch), ``batch_size = 1`` is
stochastic gradient descent, anything between is mini-batch gradient descent.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ._errors import ConfigError, DivergedError, check_int
from ._progress import Progress
from .batches import DEFAULT_BUFFER_BYTES, BatchStream, Cursor, check_batching
from .checkpoint import load_model, save_model
from .models import Model, Params, check_params, get_model
from .optim import Optimizer, sgd
from .sources import ChunkSource, open_source

__all__ = ["FitResult", "evaluate", "fit", "load"]

DTYPES = ("float32", "float64")


@dataclass
class FitResult:
    """What ``fit`` returns: the parameters, the per-epoch history and how they were made."""

    params: Params
    history: list[dict[str, Any]]
    model: str
    config: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(y = 1 | x) for each column of X (n_x, m): shape (1, m)."""
        return get_model(self.model).predict_proba(self.params, np.asarray(X, self._dtype))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """0/1 predictions for each column of X: shape (1, m), dtype int8."""
        return (self.predict_proba(X) >= 0.5).astype(np.int8)

    @property
    def _dtype(self) -> np.dtype:
        return next(iter(self.params.values())).dtype

    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` model file atomically (see ``streamtrain.load``)."""
        save_model(path, self.params, {"model": self.model, "config": self.config,
                                       "data": self.data, "history": self.history})


def load(path: str | os.PathLike) -> FitResult:
    """Read a model file written by ``FitResult.save``."""
    params, meta = load_model(path)
    return FitResult(params, meta.get("history", []), meta["model"], meta.get("config", {}),
                     meta.get("data", {}))


def fit(
    source_or_path: ChunkSource | str | os.PathLike,
    *,
    model: str = "logistic",
    batch_size: int = 256,
    epochs: int = 5,
    lr: float = 0.1,
    shuffle: str = "chunks",
    seed: int = 0,
    dtype: str = "float32",
    init: Params | str | os.PathLike | None = None,
    prefetch: int = 2,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    progress: bool | None = None,
    metrics: str | os.PathLike | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``model`` by streaming mini-batches from a store (path) or a ``ChunkSource``.

    ``init`` warm-starts from a params dict or a model file. ``progress`` draws a progress
    line on stderr (default: only when stderr is a terminal). ``metrics`` appends one JSON
    line per epoch to that file, and ``on_epoch`` is called with the same record.
    """
    spec = get_model(model)
    with _opened(source_or_path, spec) as source:
        config = _check_config(source, batch_size=batch_size, epochs=epochs, lr=lr, shuffle=shuffle,
                               seed=seed, dtype=dtype, prefetch=prefetch, buffer_bytes=buffer_bytes)
        params = _initial_params(spec, source, init, np.dtype(dtype), seed)
        opt = sgd(lr)
        state = opt.init(params)
        show = sys.stderr.isatty() if progress is None else progress
        history: list[dict[str, Any]] = []
        for epoch in range(epochs):
            stream = BatchStream(source, batch_size, Cursor(seed, epoch), shuffle=shuffle, dtype=dtype,
                                 prefetch=prefetch, buffer_bytes=buffer_bytes)
            bar = Progress(f"epoch {epoch + 1}/{epochs}", source.m, enabled=show)
            params, state, record = _run_epoch(spec, opt, params, state, stream, bar)
            record = {"epoch": epoch + 1, **record}
            history.append(record)
            if metrics is not None:
                _append_jsonl(metrics, record)
            if on_epoch is not None:
                on_epoch(record)
        return FitResult(params, history, spec.name, config, source.fingerprint())


def _run_epoch(spec: Model, opt: Optimizer, params: Params, state: NamedTuple, stream: BatchStream,
               bar: Progress) -> tuple[Params, NamedTuple, dict[str, Any]]:
    """One pass of gradient steps over ``stream``; returns the new params, state and a record."""
    t0, loss_sum, seen = time.perf_counter(), 0.0, 0
    for t, (X, Y, _) in enumerate(stream):
        with np.errstate(invalid="ignore"):  # NaN data is reported below, once, as an error
            loss, grads = spec.loss_and_grad(params, X, Y)
        if not math.isfinite(loss):
            raise DivergedError(
                f"loss is {loss} at epoch {stream.cursor.epoch + 1}, batch {t + 1}: the data holds "
                f"NaN/inf or the learning rate is too large"
            )
        params, state = opt.update(grads, state, params)
        loss_sum, seen = loss_sum + loss * X.shape[1], seen + X.shape[1]
        bar.update(seen, loss_sum / seen)
    bar.close()
    seconds = time.perf_counter() - t0
    return params, state, {"loss": loss_sum / seen, "samples": seen, "steps": t + 1, "seconds": seconds,
                           "samples_per_s": seen / seconds, "io_wait_s": stream.io_wait_s}


def evaluate(source_or_path: ChunkSource | str | os.PathLike, params: Params, *,
             model: str = "logistic") -> dict[str, float]:
    """Exact mean loss and accuracy of ``params`` over a whole store, one chunk at a time.

    Sums accumulate in float64, so the result does not depend on the chunking.
    """
    spec = get_model(model)
    with _opened(source_or_path, spec) as source:
        check_params(spec, params, source.n_x, source.k)
        dtype = next(iter(params.values())).dtype
        loss_sum, correct = 0.0, 0
        for a, b in source.chunk_bounds:
            X, Y = (np.asarray(v, dtype=dtype) for v in source.read(a, b))
            loss, _ = spec.loss_and_grad(params, X, Y)
            loss_sum += loss * (b - a)
            correct += int(((spec.predict_proba(params, X) >= 0.5) == (Y == 1)).sum())
        return {"loss": loss_sum / source.m, "accuracy": correct / source.m, "m": source.m}


@contextmanager
def _opened(source_or_path: ChunkSource | str | os.PathLike, spec: Model) -> Iterator[ChunkSource]:
    """The source to read, checked against the model; closed afterwards if opened here."""
    if isinstance(source_or_path, ChunkSource):
        source, owned = source_or_path, False
    else:
        source, owned = open_source(source_or_path, binary_labels=spec.binary_labels), True
    try:
        if spec.k is not None and source.k != spec.k:
            raise ConfigError(
                f"{source.name}/{source.y_name} has {source.k} rows; the {spec.name} model needs "
                f"Y shaped ({spec.k}, m)"
            )
        yield source
    finally:
        if owned:
            source.close()


def _check_config(source: ChunkSource, **cfg: Any) -> dict[str, Any]:
    if cfg["dtype"] not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {cfg['dtype']!r}")
    check_int("epochs", cfg["epochs"])
    check_batching(cfg["batch_size"], cfg["shuffle"])
    if cfg["batch_size"] > source.m:
        raise ConfigError(f"batch_size {cfg['batch_size']} is larger than m={source.m}; "
                          f"use {source.m} for batch gradient descent")
    check_int("seed", cfg["seed"], minimum=0)
    return dict(cfg)


def _initial_params(spec: Model, source: ChunkSource, init: Params | str | os.PathLike | None,
                    dtype: np.dtype, seed: int) -> Params:
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
