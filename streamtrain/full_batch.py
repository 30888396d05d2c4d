"""Exact full-batch sums over a whole store: the truth that mini-batch estimates approximate.

One pass reads every chunk once and runs the model's own per-chunk ``totals`` function on
it in float64. The per-chunk sums are added in chunk order, in float64, so the result is
the same whichever scheduler (see ``SCHEDULERS``) computed the chunks. A ``tcp://host:port``
address names a running dask.distributed scheduler: the way past one machine; it and
``local`` need ``pip install 'streamtrain[distributed]'``.

This is the only module that imports dask, and only once a Dask scheduler is asked for.
The solver and the one-call functions built on it live in ``lbfgs.py`` and ``evaluation.py``.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import ConfigError, DataError
from .labels import LabelRule, check_labels
from .models import Model, Params, Totals, add_totals, as_float64, objective
from .sources import ChunkSource, nonfinite_error, read_columns
from .weights import Weighting

__all__ = ["DEFAULT_SCHEDULER", "SCHEDULERS", "FullBatch", "check_address", "check_scheduler"]

# Where exact passes run; anything with "://" is the address of a running Dask scheduler.
SCHEDULERS = {
    "threads": "Dask's threaded scheduler: chunks are read and reduced in parallel",
    "sync": "a plain numpy loop over the chunks in this thread, without Dask",
    "local": "a dask.distributed cluster on this machine",
}
DEFAULT_SCHEDULER = "threads"
CAST_BYTES = 2**20


def check_scheduler(scheduler: object) -> str:
    """The scheduler's name (None: the default), or ConfigError for anything that is neither a
    name nor the address of a Dask scheduler this process can reach (see ``check_address``)."""
    if scheduler is None:
        return DEFAULT_SCHEDULER
    if isinstance(scheduler, str) and scheduler in SCHEDULERS:
        return scheduler
    if isinstance(scheduler, str) and "://" in scheduler:
        return check_address(scheduler)
    raise ConfigError(
        f"unknown scheduler {scheduler!r}; use {', '.join(SCHEDULERS)} or the address of a Dask scheduler "
        f"(tcp://host:port)"
    )


# Address schemes of dask.distributed that cannot name a scheduler for this process, and why.
ADDRESS_SCHEMES = ("tcp", "tls")
UNUSABLE_SCHEMES = {
    "inproc": "an inproc:// address exists only inside the process that started the scheduler, and none "
    "listens at it in this one; use 'local' for a cluster on this machine",
    "ucx": "UCX addresses are not supported; give the scheduler's tcp://HOST:PORT address",
    "ws": "websocket addresses are not supported; give the scheduler's tcp://HOST:PORT address",
    "wss": "websocket addresses are not supported; give the scheduler's tls://HOST:PORT address",
}


def _listens_in_this_process(address: str) -> bool:
    """Whether a scheduler started in this process (LocalCluster(processes=False)) listens at an inproc:// address."""
    inproc = sys.modules.get("distributed.comm.inproc")  # imported once such a scheduler was started
    return inproc is not None and address.removeprefix("inproc://") in inproc.global_manager.listeners


def check_address(address: str) -> str:
    """``address`` if it has the form tcp://HOST:PORT or tls://HOST:PORT; else ConfigError, at
    once: dask.distributed would try to connect first and fail slowly, with tracebacks."""
    scheme = address.partition("://")[0]
    if scheme == "inproc" and _listens_in_this_process(address):
        return address
    if scheme in UNUSABLE_SCHEMES:
        raise ConfigError(f"scheduler {address!r}: {UNUSABLE_SCHEMES[scheme]}")
    if scheme not in ADDRESS_SCHEMES:
        raise ConfigError(
            f"scheduler {address!r}: unknown address scheme {scheme!r}; a Dask scheduler's address is "
            f"{' or '.join(s + '://HOST:PORT' for s in ADDRESS_SCHEMES)}"
        )
    try:
        parts = urllib.parse.urlsplit(address)
        whole = f"{scheme}://{parts.netloc}" == address and "@" not in parts.netloc  # no path, no user
        valid = whole and bool(parts.hostname) and bool(parts.port)
    except ValueError:  # a port that is not a number in 0-65535, a broken [IPv6] host
        valid = False
    if not valid:
        raise ConfigError(
            f"scheduler {address!r} is not an address like {scheme}://HOST:PORT (a host name or IP, and a port 1-65535)"
        )
    return address


class FullBatch:
    """Exact passes over one source with one scheduler: open once, pass many times, close.

    A LocalCluster or a connection to a remote scheduler is made here, once, so batch
    gradient descent and L-BFGS pay for it once, not per step. ``weighting``: each sample's
    weight in the sums (see ``streamtrain.weights``), read with its chunk.
    """

    def __init__(
        self,
        source: ChunkSource,
        model: Model,
        *,
        scheduler: str | None = DEFAULT_SCHEDULER,
        weighting: Weighting | None = None,
        client: Any = None,
    ) -> None:
        self.source, self.model, self.weighting = source, model, weighting
        self.scheduler = check_scheduler(scheduler)
        self.passes = 0  # full passes over the store so far
        self._client: Any = None
        self._cluster: Any = None
        self._own_client = client is None  # a client given (--shards' rounds) is its owner's to close
        if client is not None:
            self._client = client
        elif self.scheduler not in ("threads", "sync"):
            _check_workers_can_read(source, self.scheduler)
            self._client, self._cluster = _connect(self.scheduler)

    def totals(self, params: Params, *, grad: bool = True, sample_norms: bool = False) -> Totals:
        """Sums over every sample of the store at ``params`` (see ``models.Totals``).

        DataError names the first chunk (in store order) that cannot be read, breaks the
        model's label rule, or holds NaN/inf that made its loss non-finite.
        """
        source = self.source
        where = _Where(source.x_where, source.y_where, source.chunk_starts, self.model.labels, self.weighting)
        task = functools.partial(
            _chunk_totals, self.model.totals, as_float64(params), where, grad=grad, sample_norms=sample_norms
        )
        parts: Iterable[Totals | DataError]
        if self.scheduler == "sync":
            parts = (task(*source.read(a, b), a) for a, b in source.chunk_bounds)
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

    def _dask_map(self, task: Callable[..., Totals | DataError]) -> list[Totals | DataError]:
        import dask

        source = self.source
        # One task per chunk reads it and reduces it in the same thread (tested faster than
        # separate read tasks). The reader is plain data, picklable for dask.distributed: the
        # direct arrays when the source has them (see sources._direct), else the library's.
        read = functools.partial(
            _read_chunk,
            source.direct or source.arrays(),
            source.direct is not None,
            source.x_where,
            source.y_where,
            source.chunk_starts,
        )
        parts = [
            dask.delayed(_chunk_task, pure=False)(read, task, c, a, b) for c, (a, b) in enumerate(source.chunk_bounds)
        ]
        return list(dask.compute(*parts, scheduler=self._client or "threads"))

    def close(self) -> None:
        if self._client is not None and self._own_client:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None

    def __enter__(self) -> FullBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, eq=False)
class _Where:
    """What a chunk task needs to name a bad chunk: the arrays' ``file/array``, each chunk's first
    sample, and the labels' rule (None: any value); and how samples are weighed (None: once each).
    Small and picklable, for Dask workers."""

    x: str
    y: str
    chunk_starts: np.ndarray
    labels: LabelRule | None
    weighting: Weighting | None = None


def _read_chunk(
    arrays: tuple[Any, Any], direct: bool, x_where: str, y_where: str, chunk_starts: np.ndarray, c: int, a: int, b: int
) -> tuple[np.ndarray, np.ndarray]:
    """Chunk ``c`` (samples ``[a, b)``) of X and Y: from direct arrays (``sources._direct``) or
    through the storage library; a DataError names a chunk that cannot be read."""
    if direct:
        return arrays[0].read(c), arrays[1].read(c)
    return read_columns(arrays[0], a, b, x_where, chunk_starts), read_columns(arrays[1], a, b, y_where, chunk_starts)


def _chunk_task(
    read: Callable[..., tuple[np.ndarray, np.ndarray]], task: Callable[..., Totals | DataError], c: int, a: int, b: int
) -> Totals | DataError:
    """``task`` on chunk ``c``, or the DataError that reading it raised (returned: see _raise_errors)."""
    try:
        X, Y = read(c, a, b)
    except DataError as e:
        return e
    return task(X, Y, a)


def _raise_errors(part: Totals | DataError) -> Totals:
    # Tasks return a bad chunk's error instead of raising it, so that the error raised here
    # is the first bad chunk's (in chunk order), not the one a Dask worker happened to meet first.
    if isinstance(part, DataError):
        raise part
    return part


def _chunk_totals(
    totals: Callable[..., Totals],
    params: Params,
    where: _Where,
    X: np.ndarray,
    Y: np.ndarray,
    start: int,
    **kw: bool,
) -> Totals | DataError:
    """One chunk's sums in float64, or its DataError. Runs wherever the scheduler puts it.

    The chunk is cast to float64 in column blocks of about CAST_BYTES, which stay in the CPU
    cache: casting a whole chunk at once doubles its memory traffic and the pass gets slower.
    A non-finite loss sends us looking for NaN/inf in the chunk (only then: no cost otherwise).
    """
    try:
        if where.labels is not None:
            check_labels(Y, start, where.labels, where.y, where.chunk_starts)
        w = None if where.weighting is None else where.weighting(Y, start, start + X.shape[1])
    except DataError as e:
        return e
    width = max(1, CAST_BYTES // (8 * X.shape[0]))
    parts = (
        totals(
            params,
            _float64(X[:, s : s + width]),
            _float64(Y[:, s : s + width]),
            weights=None if w is None else w[:, s : s + width],
            **kw,
        )
        for s in range(0, X.shape[1], width)
    )
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite total is looked into below, once
        total = functools.reduce(add_totals, parts)
    if math.isfinite(total.loss):
        return total
    # NaN/inf in the chunk, named; else the params are at fault, which is the caller's to judge.
    return (
        nonfinite_error(X, start, where.x, where.chunk_starts)
        or nonfinite_error(Y, start, where.y, where.chunk_starts)
        or total
    )


def _float64(A: np.ndarray) -> np.ndarray:
    # A signalling NaN (random bytes decode to some) makes the cast warn; the NaN is named after.
    with np.errstate(invalid="ignore"):
        return np.asarray(A, dtype=np.float64)


def _check_workers_can_read(source: ChunkSource, scheduler: str) -> None:
    """ConfigError for a store held in this process's memory (memory://) and workers in other
    processes: there the store is empty, and zarr reads every chunk as missing, as fill values."""
    remote = source.remote
    if remote is not None and remote.protocol == "memory" and not scheduler.startswith("inproc://"):
        raise ConfigError(
            f"{source.name}: a memory:// store lives in this process, and the workers of scheduler {scheduler!r} "
            f"run in others: use threads or sync"
        )


def _connect(address: str) -> tuple[Any, Any]:
    try:
        from distributed import Client, LocalCluster, Security
    except ImportError:
        raise ConfigError(
            f"scheduler {address!r} needs dask.distributed: pip install 'streamtrain[distributed]'"
        ) from None
    if address == "local":
        # No dashboard; the scheduler's HTTP server (health, metrics) would still take Dask's 8787, and
        # warn on stderr when a dashboard elsewhere has it: any free port of this machine instead.
        cluster = LocalCluster(
            n_workers=os.cpu_count() or 1, threads_per_worker=1, dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        )  # fmt: skip
        return Client(cluster, set_as_default=False), cluster
    if address.startswith("tls://") and Security().get_connection_args("client")["ssl_context"] is None:
        # Checked here: a Client given no certificates fails with a traceback, then hangs on close.
        raise ConfigError(
            f"scheduler {address!r} needs TLS certificates: set distributed.comm.tls.ca-file and "
            f"distributed.comm.tls.client.cert/key in Dask's configuration"
        )
    try:
        return Client(address, timeout="10s", set_as_default=False), None
    except (OSError, TimeoutError, ValueError) as e:
        raise ConfigError(f"cannot reach the Dask scheduler at {address}: {e}") from None
