"""Exact full-batch sums over a whole store: the truth that mini-batch estimates approximate.

One pass reads every chunk once and runs the model's own per-chunk ``totals`` function on
it in float64. The per-chunk sums are added in chunk order, in float64, so the result is
the same whichever scheduler computed the chunks.

Schedulers
----------
``"threads"`` (default)  Dask's threaded scheduler: chunks are read and reduced in parallel
``"sync"``               a plain numpy loop over the chunks in this thread; Dask is not used
``"local"``              a dask.distributed LocalCluster sized to this machine
``"tcp://host:port"``    a running dask.distributed scheduler: the way past one machine

The last two need ``pip install 'streamtrain[distributed]'``. This is the only module that
imports dask, and only once a Dask scheduler is asked for.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ._errors import ConfigError, DataError, DivergedError
from .models import Model, Params, Totals, add_totals, as_float64, bound, check_params, norm, objective
from .sources import ChunkSource
from .sources._base import check_labels

__all__ = ["FullBatch", "check_scheduler", "evaluate", "exact_record", "lbfgs", "loss_and_grad"]

SCHEDULERS = ("threads", "sync", "local")
CAST_BYTES = 2**20


def check_scheduler(scheduler: str | None) -> str:
    """The scheduler's name (None means ``"threads"``); ConfigError for anything unknown."""
    if scheduler is None:
        return "threads"
    if isinstance(scheduler, str) and (scheduler in SCHEDULERS or "://" in scheduler):
        return scheduler
    raise ConfigError(
        f"unknown scheduler {scheduler!r}; use threads, sync, local or the address "
        f"of a Dask scheduler (tcp://host:port)"
    )


class FullBatch:
    """Exact passes over one source with one scheduler: open once, pass many times, close.

    A LocalCluster or a connection to a remote scheduler is made here, once, so batch
    gradient descent and L-BFGS pay for it once, not per step.
    """

    def __init__(self, source: ChunkSource, model: Model, *, scheduler: str | None = None) -> None:
        self.source, self.model = source, model
        self.scheduler = check_scheduler(scheduler)
        self.passes = 0  # full passes over the store so far
        self._client = self._cluster = None
        self._arrays: tuple[Any, Any] | None = None
        if self.scheduler not in ("threads", "sync"):
            self._client, self._cluster = _connect(self.scheduler)

    def totals(self, params: Params, *, grad: bool = True, sample_norms: bool = False) -> Totals:
        """Sums over every sample of the store at ``params`` (see ``models.Totals``)."""
        params64 = as_float64(params)
        source, check = self.source, None
        if source.labels:
            check = (f"{source.name}/{source.y_name}", source.chunk_starts, source.labels)
        task = functools.partial(
            _chunk_totals, self.model.totals, params64, check, grad=grad, sample_norms=sample_norms
        )
        if self.scheduler == "sync":
            parts = (task(*self.source.read(a, b), a) for a, b in self.source.chunk_bounds)
        else:
            parts = self._dask_map(task)
        total = functools.reduce(add_totals, map(_raise_errors, parts))
        self.passes += 1
        return total

    def loss_and_grad(self, params: Params, *, l2: float = 0.0) -> tuple[float, Params]:
        """Exact J and ∇J (float64) over the whole store, in one pass."""
        loss, grads, _ = self.objective_with_totals(params, l2=l2)
        return loss, grads

    def objective_with_totals(
        self, params: Params, *, l2: float = 0.0, sample_norms: bool = False
    ) -> tuple[float, Params, Totals]:
        """Exact J, ∇J and the sums they come from (accuracy, per-sample norms), in one pass."""
        params = as_float64(params)  # the L2 term too is computed in float64
        totals = self.totals(params, sample_norms=sample_norms)
        loss, grads = objective(params, totals, l2=l2)
        return loss, grads, totals

    def _dask_map(self, task: Callable[..., Totals]) -> Iterable[Totals]:
        import dask.array as da

        X, Y = self._dask_arrays()
        # One task per chunk: Dask fuses the read of X's and Y's block into it, so a chunk is
        # read and reduced by the same thread (tested faster than separate read tasks).
        sums = da.map_blocks(
            _chunk_totals_block,
            X,
            Y,
            task=task,
            dtype=object,
            chunks=((1,), (1,) * self.source.n_chunks),
            meta=np.empty((0, 0), dtype=object),
        )
        return sums.compute(scheduler=self._client or "threads").ravel().tolist()

    def _dask_arrays(self) -> tuple[Any, Any]:
        """X and Y as Dask arrays whose blocks are the store's chunks, built on first use."""
        if self._arrays is None:
            import dask.array as da

            sizes = tuple(b - a for a, b in self.source.chunk_bounds)
            X, Y = self.source.arrays()
            # name=False: a random name, so dask does not hash the whole store to name it.
            self._arrays = (
                da.from_array(X, chunks=((X.shape[0],), sizes), name=False),
                da.from_array(Y, chunks=((Y.shape[0],), sizes), name=False),
            )
        return self._arrays

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None

    def __enter__(self) -> FullBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exact_record(exact: FullBatch, params: Params, l2: float) -> dict[str, float]:
    """Exact J, ‖∇J‖ and accuracy over the whole store (one pass), for a training record."""
    loss, grads, totals = exact.objective_with_totals(params, l2=l2)
    record = {"exact_loss": loss, "exact_grad_norm": norm(grads)}
    if exact.model.has_accuracy:
        record["exact_accuracy"] = totals.correct / totals.count
    return record


def lbfgs(
    exact: FullBatch,
    params: Params,
    *,
    l2: float,
    max_iter: int,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Params:
    """Minimise J with scipy's L-BFGS-B on exact losses and gradients (one pass per evaluation).

    Stops after ``max_iter`` iterations or when J stops improving at float64 precision, which
    makes the result the reference optimum J* stochastic runs are measured against. Each
    iteration's record (J, ‖∇J‖, passes so far) goes to ``callback``; the last one also says
    whether and why L-BFGS stopped.
    """
    try:
        from scipy.optimize import minimize
    except ImportError:
        raise ConfigError("optimizer 'lbfgs' needs scipy: pip install 'streamtrain[lbfgs]'") from None
    keys, dtype = list(params), next(iter(params.values())).dtype
    sizes = np.cumsum([params[k].size for k in keys])[:-1]

    def unravel(theta: np.ndarray) -> Params:
        return {k: v.reshape(params[k].shape) for k, v in zip(keys, np.split(theta, sizes))}

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grads = exact.loss_and_grad(unravel(theta), l2=l2)
        if not math.isfinite(loss):
            raise DivergedError(f"exact loss is {loss} during L-BFGS: the data holds NaN/inf")
        last.update(loss=loss, grad_norm=norm(grads))
        return loss, np.concatenate([grads[k].ravel() for k in keys])

    last: dict[str, Any] = {"t": time.perf_counter()}
    records: list[dict[str, Any]] = []

    def on_iteration(intermediate_result: Any) -> None:
        # Held back one iteration, so the last record can also say why L-BFGS stopped.
        if records and callback is not None:
            callback(records[-1])
        now = time.perf_counter()
        # L-BFGS-B reports the point it accepted, which is the one it evaluated last.
        records.append(
            {
                "epoch": len(records) + 1,
                "loss": float(intermediate_result.fun),
                "grad_norm": last["grad_norm"],
                "passes": exact.passes,
                "seconds": now - last["t"],
            }
        )
        last["t"] = now

    theta0 = np.concatenate([np.asarray(params[k], np.float64).ravel() for k in keys])
    result = minimize(
        fun,
        theta0,
        jac=True,
        method="L-BFGS-B",
        callback=on_iteration,
        options={"maxiter": max_iter, "gtol": 1e-10, "ftol": 1e-15},
    )
    if records:
        records[-1].update(converged=bool(result.success), stop=str(result.message))
        if callback is not None:
            callback(records[-1])
    return {k: v.astype(dtype) for k, v in unravel(result.x).items()}


def _chunk_totals_block(
    X: np.ndarray, Y: np.ndarray, *, task: Callable[..., Totals], block_info: dict | None = None
) -> np.ndarray:
    """``task`` on one block of the Dask arrays, as the (1, 1) object array map_blocks needs."""
    out = np.empty((1, 1), dtype=object)
    out[0, 0] = task(X, Y, block_info[0]["array-location"][1][0])  # the block's first sample
    return out


def _raise_errors(part: Totals | DataError) -> Totals:
    # Tasks return a bad chunk's error instead of raising it, so that the error raised here
    # is the first bad chunk's (in chunk order), not the one a Dask worker happened to meet first.
    if isinstance(part, DataError):
        raise part
    return part


def _chunk_totals(
    totals: Callable[..., Totals],
    params: Params,
    check: tuple[str, np.ndarray, tuple] | None,
    X: np.ndarray,
    Y: np.ndarray,
    start: int,
    **kw: bool,
) -> Totals | DataError:
    """One chunk's sums in float64, or its DataError. Runs wherever the scheduler puts it.

    The chunk is cast to float64 in column blocks of about CAST_BYTES, which stay in the CPU
    cache: casting a whole chunk at once doubles its memory traffic and the pass gets slower.
    """
    if check is not None:
        try:
            check_labels(Y, start, *check)
        except DataError as e:
            return e
    width = max(1, CAST_BYTES // (8 * X.shape[0]))
    parts = (
        totals(
            params,
            np.asarray(X[:, s : s + width], dtype=np.float64),
            np.asarray(Y[:, s : s + width], dtype=np.float64),
            **kw,
        )
        for s in range(0, X.shape[1], width)
    )
    return functools.reduce(add_totals, parts)


def _connect(address: str) -> tuple[Any, Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(
            f"scheduler {address!r} needs dask.distributed: pip install 'streamtrain[distributed]'"
        ) from None
    if address == "local":
        cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, dashboard_address=None)
        return Client(cluster, set_as_default=False), cluster
    try:
        return Client(address, timeout="10s", set_as_default=False), None
    except (OSError, TimeoutError, ValueError) as e:
        raise ConfigError(f"cannot reach the Dask scheduler at {address}: {e}") from None


def loss_and_grad(
    source_or_path: ChunkSource | str | os.PathLike,
    params: Params,
    *,
    model: str | Model = "logistic",
    l2: float = 0.0,
    scheduler: str | None = None,
) -> tuple[float, Params]:
    """Exact J = (1/m) Σ loss + (λ/2m) Σ ‖W‖² and ∇J over a whole store, in one pass (float64)."""
    with bound(model, source_or_path) as (spec, source):
        check_params(spec, params, source.n_x, source.k)
        with FullBatch(source, spec, scheduler=scheduler) as exact:
            return exact.loss_and_grad(params, l2=l2)


def evaluate(
    source_or_path: ChunkSource | str | os.PathLike,
    params: Params,
    *,
    model: str | Model = "logistic",
    scheduler: str | None = None,
) -> dict[str, float]:
    """Exact mean loss (no L2 term) and, for classifiers, accuracy of ``params`` over a whole store.

    One chunk at a time; ``scheduler="sync"`` streams the chunks without Dask.
    """
    with bound(model, source_or_path) as (spec, source):
        check_params(spec, params, source.n_x, source.k)
        with FullBatch(source, spec, scheduler=scheduler) as exact:
            t = exact.totals(params, grad=False)
    result = {"loss": t.loss / t.count, "m": t.count}
    if spec.has_accuracy:
        result["accuracy"] = t.correct / t.count
    return result
