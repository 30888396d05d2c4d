"""The buffers behind ``batches.BatchStream``: ``buffer`` mode's permutation of column runs, arrays
recycled from unit to unit, and the read-ahead that runs the reads in background threads."""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .sources import stage_rows

__all__ = [
    "MAX_RUN",
    "RUNS_PER_BATCH",
    "Prefetcher",
    "Recycled",
    "cast_into",
    "join_columns",
    "permute_runs",
    "run_length",
]

# ``buffer`` permutes runs of consecutive columns, not single columns: a column gather touches
# one cache line per value (12 ms for a (100, 65,536) float32 chunk, over 1 s of CPU per 5M
# epoch), runs of 16 one per 16 values. Each batch still holds ≥ RUNS_PER_BATCH runs drawn from the
# whole unit; small batches (B = 1 is SGD) get every column on its own.
MAX_RUN = 16
RUNS_PER_BATCH = 64


def run_length(batch_size: int) -> int:
    """Columns that ``buffer`` mode keeps together: a power of two up to MAX_RUN (chunk widths are
    multiples of it, so units split into whole runs without a copy), at least RUNS_PER_BATCH runs in
    a batch; 1 (every column on its own) for batches under 2·RUNS_PER_BATCH."""
    most = max(1, min(MAX_RUN, batch_size // RUNS_PER_BATCH))
    return 1 << (most.bit_length() - 1)


def permute_runs(A: np.ndarray, out: np.ndarray, perm: np.ndarray, run: int) -> np.ndarray:
    """``out`` = ``A``'s columns in runs of ``run``, the runs in the order ``perm`` gives; the columns past
    the last whole run (fewer than ``run``, only in a unit with a short last chunk) stay last.

    A few rows at a time are copied into a staging block first (``stage_rows``): gathering runs from
    memory is bound by the latency of each cache miss, copying rows is not, and the gather then finds
    them in cache. 3x faster for a (100, 65,536) float32 unit (8.5 ms against 2.9 ms)."""
    k = stage_rows(A.shape[0], A.shape[1] * A.itemsize)
    if k >= A.shape[0]:
        return _take_runs(A, out, perm, run)
    stage = np.empty((k, A.shape[1]), A.dtype)
    for r in range(0, A.shape[0], k):
        block = stage[: min(k, A.shape[0] - r)]
        np.copyto(block, A[r : r + k])
        _take_runs(block, out[r : r + k], perm, run)
    return out


def _take_runs(A: np.ndarray, out: np.ndarray, perm: np.ndarray, run: int) -> np.ndarray:
    rows, full = A.shape[0], len(perm) * run
    # take() gathers whole runs as items of run·itemsize bytes; mode="clip" (the indices are
    # valid by construction) skips a bounds check that costs a third of the time.
    np.take(A[:, :full].reshape(rows, -1, run), perm, axis=1, mode="clip", out=out[:, :full].reshape(rows, -1, run))
    out[:, full:] = A[:, full:]
    return out


def join_columns(parts: tuple[np.ndarray, ...], arrays: Recycled) -> np.ndarray:
    """The chunks' columns side by side, in an array of ``arrays`` (a single part as it is)."""
    if len(parts) == 1:
        return parts[0]
    rows, width = parts[0].shape[0], sum(p.shape[1] for p in parts)
    return np.concatenate(parts, axis=1, out=arrays.empty((rows, width), np.result_type(*parts)))


def cast_into(X: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``X`` in ``out``'s dtype (the training precision), written into ``out``."""
    np.copyto(out, X, casting="unsafe")
    return out


class Recycled:
    """Arrays handed out again once nothing else refers to them, for units.

    A fresh array of tens of MB costs its page faults at every first touch (on a VM, over
    100 ms for 50 MB: more than reading it), and arrays this size are never reused by malloc.
    An array is handed out again only when the list here holds its only reference: no unit or
    batch view of it is alive (CPython's reference count), so recycling never changes a
    batch anyone still holds. At most ``limit`` arrays are kept.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        with self._lock:
            for a in self._arrays:
                # 3: the list's reference, the loop variable's and getrefcount's argument.
                if a.shape == shape and a.dtype == dtype and sys.getrefcount(a) <= 3:
                    return a
            a = np.empty(shape, dtype)
            if len(self._arrays) < self.limit:
                self._arrays.append(a)
            return a


class Prefetcher:
    """Run ``tasks`` (callables) in up to ``workers`` background threads, at most ``depth`` ahead
    of the consumer, and yield their results in order (depth 0: each in the caller's thread).

    A task's error is re-raised in the consumer when its turn comes, so the error seen is the
    first in order, whichever thread met it first. ``close()`` (also called when the consumer
    stops early) cancels the tasks not started and waits for the running ones. ``wait_s``: the
    time the consumer spent waiting for results.
    """

    def __init__(self, tasks: Iterable[Callable[[], Any]], depth: int, workers: int = 1) -> None:
        self.wait_s = 0.0
        self._tasks, self._depth = iter(tasks), max(depth, 0)
        self._pending: deque[Future] = deque()
        self._pool = None
        if self._depth:
            n = max(1, min(workers, self._depth))
            self._pool = ThreadPoolExecutor(n, thread_name_prefix="streamtrain-prefetch")

    def __iter__(self) -> Iterator:
        if self._pool is None:
            for task in self._tasks:
                t0 = time.perf_counter()
                item = task()
                self.wait_s += time.perf_counter() - t0
                yield item
            return
        self._submit()
        while self._pending:
            future = self._pending.popleft()
            t0 = time.perf_counter()
            item = future.result()
            self.wait_s += time.perf_counter() - t0
            self._submit()
            yield item

    def _submit(self) -> None:
        assert self._pool is not None
        while len(self._pending) < self._depth:
            task = next(self._tasks, None)
            if task is None:
                return
            self._pending.append(self._pool.submit(task))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pending.clear()
