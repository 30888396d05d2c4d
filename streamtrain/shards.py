"""Data-parallel training: local SGD over K logical shards, averaged every H steps (``shards``, ``sync_every``).

Each epoch's chunk order (the one the single-process trainer would draw) is dealt to K shards,
shard k taking ``order[k::K]``; a shard streams its chunks as an epoch of its own, in any shuffle
mode (seeded by seed·K + k). A *round* is a pure function of (params, optimizer state, shard, its
cursor, H): the shard's next H steps on its own batches, returning its params, optimizer state,
cursor and sums (``shard_round``). The client averages the K results in shard order, in float64,
weighted by the samples each stepped over, optimizer moments like the params (a heuristic: Adam's
second moments are averaged, not recomputed), and starts the next round from the average. With
H = 1 and plain SGD or momentum, a round is one step on the union of the K batches.

Results depend on K, never on the workers: rounds are pure, and their results are added in shard
order, so ``sync`` (one round after another in this process), ``threads`` and a Dask cluster give
the same bits, and a round retried on another worker returns the same arrays. Each shard's BLAS
calls run on one thread (``threadpool_limits``) wherever it runs, so that no sum depends on how
many threads a machine lends it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ._errors import UserError
from .batches import BatchStream, Cursor, chunk_order
from .config import FitConfig
from .holdout import ChunkSubset
from .models import Model, Params, batch_objective
from .optim import OptimizerState, optimizer_of, rate_of
from .sources import ChunkSource
from .weights import Weighting

__all__ = ["RoundResult", "Shards", "average", "shard_chunks", "shard_round", "shard_seed"]

_RESUBMITS = 3  # a round's shards resubmitted after their scattered inputs were lost, at most


def shard_chunks(n_chunks: int, K: int, shuffle: str, seed: int, epoch: int) -> list[np.ndarray]:
    """Each shard's chunks in epoch ``epoch`` (0-based), in store order: every K-th of the epoch's order."""
    order = chunk_order(n_chunks, shuffle, seed, epoch)
    return [np.sort(order[k::K]) for k in range(K)]


def shard_seed(seed: int, K: int, k: int) -> int:
    """The seed of shard k's own shuffles: the run's seed for one shard, distinct ones for K."""
    return seed * K + k


class RoundResult(NamedTuple):
    params: Params
    v: Params
    s: Params
    cursor: Cursor  # where the shard's next batch starts
    samples: int  # samples stepped over in the round
    steps: int
    loss: float  # Σ batch loss × batch size
    correct: float
    seconds: float  # the round's compute time on its worker
    # --log-every's steps of the round: (step, its batch loss, its batch size, the round's samples so far)
    logged: tuple[tuple[int, float, int, int], ...] = ()


@dataclass(frozen=True)
class RoundTask:
    """What a worker needs for a shard's round besides the params: plain data, picklable."""

    source: ChunkSource | None  # the training store (None in a task sent to a worker, which has it already)
    model: Model
    config: FitConfig
    chunks: tuple[int, ...]  # the shard's chunks this epoch
    steps: int  # H
    m: int  # samples trained on, which scales the L2 term
    every: int  # steps per epoch of a shard, for the learning-rate schedule
    weighting: Weighting | None = None  # --weights, --class-weight: normalised over all the samples trained on
    log_every: int | None = None  # --log-every N: the steps whose batch loss a round returns


def shard_round(task: RoundTask, params: Params, opt: OptimizerState, cursor: Cursor) -> RoundResult:
    """Up to ``task.steps`` steps of one shard from ``cursor`` (fewer where its epoch ends, or where
    the loss is no longer finite: the client names the divergence). NaN or inf in the round's
    chunks is a DataError naming the sample."""
    t0 = time.perf_counter()
    config, model = task.config, task.model
    assert task.source is not None, "a round reads its shard of the training store"
    shard = ChunkSubset(task.source, np.asarray(task.chunks))
    stream = BatchStream(
        shard, int(config.batch_size), cursor, shuffle=config.shuffle, dtype=config.dtype,
        prefetch=config.prefetch, buffer_bytes=config.buffer_bytes, labels=model.labels, weighting=task.weighting,
    )  # fmt: skip
    optimizer = optimizer_of(config, rate_of(config, task.m, task.every))
    params = {k: v.copy() for k, v in params.items()}
    steps = samples = 0
    loss_sum = correct = 0.0
    after, logged = cursor, []
    with _one_blas_thread(), np.errstate(invalid="ignore", over="ignore"):
        it = iter(stream)
        try:
            for batch in it:
                X, Y, after = batch.X, batch.Y, batch.cursor
                loss, grads, hits = batch_objective(model, params, X, Y, l2=config.l2, m=task.m, weights=batch.weights)
                params, opt = optimizer.update(grads, opt, params)
                B = X.shape[1]
                steps, samples, loss_sum, correct = steps + 1, samples + B, loss_sum + loss * B, correct + hits
                if task.log_every is not None and opt.step % task.log_every == 0:
                    logged.append((int(opt.step), float(loss), B, samples))
                if not math.isfinite(loss):  # NaN/inf in the data is the user's to hear of; else the rate's
                    error = shard.find_nonfinite(stream.chunks_between(cursor, after), config.dtype)
                    if error is not None:
                        raise error
                    break
                if steps == task.steps:
                    break
        finally:
            it.close()
    seconds = time.perf_counter() - t0
    return RoundResult(params, opt.v, opt.s, after, samples, steps, loss_sum, correct, seconds, tuple(logged))


def _one_blas_thread() -> Any:
    """BLAS on one thread while a round computes (threadpoolctl, with the distributed extra): a sum's
    order then does not depend on the threads a worker or this process lends BLAS."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # without it, sync and threads still agree: the same process, the same BLAS threads
        return contextlib.nullcontext()
    return threadpool_limits(1)


class Shards:
    """The rounds of one run: where they run (``scheduler``), and the average of their results."""

    def __init__(self, task: RoundTask, K: int, scheduler: str) -> None:
        self.task, self.K, self.scheduler = task, K, scheduler
        self._client: Any = None
        self._cluster: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._source_future: Any = None
        if scheduler == "threads":
            self._pool = ThreadPoolExecutor(K, thread_name_prefix="streamtrain-shard")
        elif scheduler != "sync":
            from .full_batch import _check_workers_can_read, _connect

            assert task.source is not None
            _check_workers_can_read(task.source, scheduler)
            self._client, self._cluster = _connect(scheduler)
            # The store's description goes to every worker once; the params go once a round.
            self._source_future = self._scatter(task.source)

    def round(
        self, params: Params, opt: OptimizerState, cursors: Sequence[Cursor | None], chunks: Sequence[np.ndarray]
    ) -> list[RoundResult | None]:
        """Each shard's round from the same params and optimizer state (None for a shard whose epoch is done)."""
        active = [(k, c) for k, c in enumerate(cursors) if c is not None]
        tasks = {k: dataclasses.replace(self.task, chunks=tuple(int(x) for x in chunks[k])) for k, _ in active}
        if self._client is not None:
            done = self._dask_round(tasks, params, opt, active)
        elif self._pool is not None:
            futures = {k: self._pool.submit(shard_round, tasks[k], params, opt, c) for k, c in active}
            done = {k: f.result() for k, f in futures.items()}
        else:
            done = {k: shard_round(tasks[k], params, opt, c) for k, c in active}
        return [done.get(k) for k in range(len(cursors))]

    def _dask_round(
        self, tasks: dict[int, RoundTask], params: Params, opt: OptimizerState, active: list[tuple[int, Cursor]]
    ) -> dict[int, RoundResult]:
        """The round on a Dask cluster: the params broadcast once, a task per shard on a preferred worker
        (shard k on worker k mod workers, for its cache), free to run elsewhere, retried if a worker dies.

        A task whose worker dies is run again elsewhere by the scheduler. But a dead worker may have
        held the last copy of the scattered store description or params (a cluster of one worker, or
        every holder gone): distributed then cancels the tasks that needed them, and a run would end
        on a lost worker. A round is pure, so those shards' rounds are submitted again on the data
        scattered afresh, and return the bits they would have.
        """
        done: dict[int, RoundResult] = {}
        pending = dict(active)
        for attempt in range(_RESUBMITS + 1):
            futures = self._submit(tasks, params, opt, pending)
            for k, future in futures.items():
                try:
                    result = future.result()
                except CancelledError:
                    if attempt == _RESUBMITS:
                        raise
                    continue
                if isinstance(result, _Refused):
                    raise result.error
                done[k] = result
            pending = {k: c for k, c in pending.items() if k not in done}
            if not pending:
                break
            self._source_future = self._scatter(self.task.source)
        return done

    def _submit(
        self, tasks: dict[int, RoundTask], params: Params, opt: OptimizerState, cursors: dict[int, Cursor]
    ) -> dict[int, Any]:
        """The shards' tasks from these cursors, on the params and optimizer state scattered once."""
        client = self._client
        shared = self._scatter((params, opt))
        # Asked of the scheduler (nthreads), not scheduler_info(): the client refreshes that one in the
        # background without its workers, so it can come back empty. Empty (every worker restarting):
        # the tasks go wherever one comes up.
        workers = sorted(client.nthreads())
        return {
            k: client.submit(
                _remote_round, self._source_future, dataclasses.replace(tasks[k], source=None), shared, c,
                pure=False, workers=[workers[k % len(workers)]] if workers else None, allow_other_workers=True,
                retries=3,
            )
            for k, c in cursors.items()
        }  # fmt: skip

    def _scatter(self, data: object) -> Any:
        """``data`` on every worker, under a key of its own. A key named after the contents
        (``hash=True``) would be the lost one again when the store description is scattered anew, or
        the previous round's when a round changed nothing; scattering a key distributed is still
        forgetting is how futures get cancelled under their users (dask/distributed#4612)."""
        return self._client.scatter(data, broadcast=True, hash=False)

    @property
    def client(self) -> Any:
        """The Dask client the rounds run on (None for sync and threads)."""
        return self._client

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __enter__(self) -> Shards:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Refused(NamedTuple):
    """The user's error a round met on a worker (a NaN in the data, a chunk that cannot be read),
    returned rather than raised: a raised one would be retried (``retries``), its bad chunk read
    again on other workers, before the user heard of it."""

    error: UserError


def _remote_round(
    source: ChunkSource, task: RoundTask, shared: tuple[Params, OptimizerState], cursor: Cursor
) -> RoundResult | _Refused:
    params, opt = shared
    try:
        return shard_round(dataclasses.replace(task, source=source), params, opt, cursor)
    except UserError as e:
        return _Refused(e)


def average(results: Sequence[RoundResult | None], dtype: Any) -> tuple[Params, Params, Params]:
    """The params and optimizer moments of a round, each the samples-weighted mean of the shards' in
    shard order, in float64, cast to ``dtype``."""
    done = [r for r in results if r is not None and r.samples]
    total = sum(r.samples for r in done)

    def mean(field: str) -> Params:
        first = getattr(done[0], field)
        out = {k: np.zeros(v.shape, np.float64) for k, v in first.items()}
        for r in done:
            for k, v in getattr(r, field).items():
                out[k] += (r.samples / total) * np.asarray(v, np.float64)
        return {k: v.astype(dtype) for k, v in out.items()}

    return mean("params"), mean("v"), mean("s")
