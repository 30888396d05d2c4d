"""Mini-batches X{t}, Y{t} streamed from a ChunkSource, with a resumable cursor.

Conventions
-----------
X{t} has shape (n_x, B) and Y{t} shape (k, B); batch t of an epoch holds samples
``[t*B, (t+1)*B)`` of that epoch's sample order, the last batch holding the remainder.

The epoch's sample order is built from *units*: consecutive runs of the epoch's chunk
order. ``none`` reads chunks in store order; ``chunks`` draws a new chunk order every epoch;
``buffer`` also groups several chunks into one unit and permutes the columns inside it,
which approximates a full shuffle with sequential, chunk-sized reads only. Every random
choice is a function of (seed, epoch, position), so a ``Cursor`` is enough to rebuild the
rest of an epoch exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import queue
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from ._errors import ConfigError, check_choice, check_int
from .labels import LabelRule
from .sources import ChunkSource

__all__ = ["SHUFFLES", "Batch", "BatchStream", "Cursor", "Prefetcher", "Shuffle", "Span", "check_batching"]


class Shuffle(NamedTuple):
    """What a shuffle mode permutes: the chunk order, and the columns inside units of chunks."""

    chunks: bool  # a new chunk order every epoch
    columns: bool  # units of several chunks (as many as the buffer budget holds), columns permuted


SHUFFLES = {"none": Shuffle(False, False), "chunks": Shuffle(True, False), "buffer": Shuffle(True, True)}
# Memory for all units in flight in ``buffer`` mode: the queue, the one being consumed, and
# the one being read and shuffled (twice its size at the peak: the chunks and the permuted copy).
DEFAULT_BUFFER_BYTES = 192 * 2**20


@dataclass(frozen=True)
class Cursor:
    """Where the next batch of an epoch starts.

    ``position`` indexes the epoch's chunk order (always the first chunk of a unit) and
    ``offset`` counts samples already taken from that unit, in its (shuffled) column order.
    ``position == n_chunks`` means the epoch is finished. ``chunks_per_unit`` is the size of
    the units the epoch was cut into (0 before the first batch: derived from the buffer
    budget); a resumed stream reuses it, so a different budget, prefetch depth or dtype
    cannot silently change the rest of the epoch.
    """

    seed: int
    epoch: int
    position: int = 0
    offset: int = 0
    chunks_per_unit: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cursor:
        return cls(**{f.name: int(d.get(f.name, 0)) for f in fields(cls)})


class Batch(NamedTuple):
    X: np.ndarray  # (n_x, B)
    Y: np.ndarray  # (k, B)
    cursor: Cursor  # where the batch after this one starts


class Span(NamedTuple):
    """``steps`` batches of ``width`` samples in a row: columns [start, start + steps·width) of X and Y,
    which are the unit the batches lie in (or one batch joined from two units)."""

    X: np.ndarray  # (n_x, ·)
    Y: np.ndarray  # (k, ·)
    start: int
    steps: int
    width: int
    before: Cursor  # where its first batch starts
    after: Cursor  # where the batch after its last starts

    def cursor(self, j: int) -> Cursor:
        """Where batch j of the span starts (``j = steps``: where the span ends)."""
        if j == 0 or j == self.steps:
            return self.before if j == 0 else self.after
        return dataclasses.replace(self.before, offset=self.before.offset + j * self.width)  # inside one unit


def check_batching(batch_size: int, shuffle: str) -> None:
    """Raise ConfigError for a batch size or shuffle mode that cannot be streamed."""
    check_choice(shuffle, SHUFFLES, "shuffle")
    check_int("batch_size", batch_size)


def chunk_order(n_chunks: int, shuffle: str, seed: int, epoch: int) -> np.ndarray:
    """The epoch's permutation of chunk indices."""
    if not SHUFFLES[shuffle].chunks:
        return np.arange(n_chunks)
    return np.random.default_rng([seed, epoch, 0]).permutation(n_chunks)


def chunks_per_unit(source: ChunkSource, shuffle: str, buffer_bytes: int, prefetch: int, itemsize: int) -> int:
    """1, or when columns are shuffled (``buffer``) as many chunks as the memory budget allows."""
    if not SHUFFLES[shuffle].columns:
        return 1
    chunk = max(b - a for a, b in source.chunk_bounds)
    unit_bytes = buffer_bytes // (max(prefetch, 0) + 3)
    return max(1, unit_bytes // ((source.n_x + source.k) * chunk * itemsize))


class BatchStream:
    """One epoch (or the rest of one, from ``cursor``) of mini-batches.

    Reads run ``prefetch`` units ahead in a background thread (0: read in the caller's
    thread); ``io_wait_s`` is the time the consumer spent waiting for them. ``labels``: the
    rule every chunk's labels are checked by as it is read (see ``streamtrain.labels``).
    """

    def __init__(
        self,
        source: ChunkSource,
        batch_size: int,
        cursor: Cursor,
        *,
        shuffle: str = "none",
        dtype: Any = np.float32,
        prefetch: int = 2,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        labels: LabelRule | None = None,
    ) -> None:
        check_batching(batch_size, shuffle)
        self.source, self.batch_size, self.cursor, self.labels = source, int(batch_size), cursor, labels
        self.shuffle, self.dtype, self.prefetch = shuffle, np.dtype(dtype), prefetch
        self.chunks_per_unit = cursor.chunks_per_unit or chunks_per_unit(
            source, shuffle, buffer_bytes, prefetch, self.dtype.itemsize
        )
        self.order = chunk_order(source.n_chunks, shuffle, cursor.seed, cursor.epoch)
        at_end = cursor.position == source.n_chunks
        if not 0 <= cursor.position <= source.n_chunks or (cursor.position % self.chunks_per_unit and not at_end):
            raise ConfigError(f"cursor position {cursor.position} is not the start of a unit")
        self.io_wait_s = 0.0

    def chunks_between(self, before: Cursor, after: Cursor) -> np.ndarray:
        """The chunks that a batch starting at ``before`` and ending where ``after`` starts was read from."""
        stop = after.position + (self.chunks_per_unit if after.offset else 0)
        return self.order[before.position : min(stop, self.source.n_chunks)]

    def units(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(position, X, Y) of each unit from the cursor on, in the epoch's order."""
        source, n = self.source, self.chunks_per_unit
        for pos in range(self.cursor.position, source.n_chunks, n):
            bounds = (source.chunk_bounds[c] for c in self.order[pos : pos + n])
            parts = [source.read(a, b, labels=self.labels) for a, b in bounds]
            X, Y = (np.concatenate(p, axis=1) if len(p) > 1 else p[0] for p in zip(*parts))
            del parts  # the chunks' memory goes before the permuted copy is made
            if SHUFFLES[self.shuffle].columns:
                cols = np.random.default_rng([self.cursor.seed, self.cursor.epoch, 1, pos])
                perm = cols.permutation(X.shape[1])
                # take() is ~3x faster than X[:, perm] for a gather along the second axis.
                X, Y = np.take(X, perm, axis=1), np.take(Y, perm, axis=1)
            with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf: named by the trainer, once
                X, Y = np.asarray(X, dtype=self.dtype), np.asarray(Y, dtype=self.dtype)
            yield pos, X, Y

    def __iter__(self) -> Generator[Batch, None, None]:
        B, c = self.batch_size, self.cursor
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        have = 0
        units = Prefetcher(self.units(), self.prefetch)
        try:
            for pos, X, Y in units:
                n = X.shape[1]
                i = c.offset if pos == c.position else 0
                if i >= n and n:
                    raise ConfigError(f"cursor offset {c.offset} is past the unit's {n} samples")
                while i < n:
                    take = min(B - have, n - i)
                    pending.append((X[:, i : i + take], Y[:, i : i + take]))
                    have, i = have + take, i + take
                    if have == B:
                        next_unit = min(pos + self.chunks_per_unit, self.source.n_chunks)
                        position, offset = (next_unit, 0) if i == n else (pos, i)
                        after = Cursor(c.seed, c.epoch, position, offset, self.chunks_per_unit)
                        yield _join(pending, after)
                        pending, have = [], 0
            if pending:  # the last, short batch of the epoch
                yield _join(pending, Cursor(c.seed, c.epoch, self.source.n_chunks, 0, self.chunks_per_unit))
        finally:
            units.close()
            self.io_wait_s += units.wait_s

    def spans(self, max_samples: int) -> Generator[Span, None, None]:
        """The stream's batches (the same as iterating it, with the same cursors) in spans: runs of whole
        batches inside one unit, at most ``max_samples`` samples (at least one batch) each; a batch that
        straddles two units, or the epoch's short last batch, is a span of its own."""
        B, c = self.batch_size, self.cursor
        most = max(1, max_samples // B)
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        have, begun = 0, c  # samples of the batch begun in an earlier unit, and where it began
        units = Prefetcher(self.units(), self.prefetch)
        try:
            for pos, X, Y in units:
                n = X.shape[1]
                i = c.offset if pos == c.position else 0
                if i >= n and n:
                    raise ConfigError(f"cursor offset {c.offset} is past the unit's {n} samples")
                at = functools.partial(self._cursor_in, pos, n)
                if have:
                    take = min(B - have, n - i)
                    pending.append((X[:, i : i + take], Y[:, i : i + take]))
                    have, i = have + take, i + take
                    if have < B:
                        continue
                    joined = _join(pending, at(i))
                    yield Span(joined.X, joined.Y, 0, 1, B, begun, joined.cursor)
                    pending, have = [], 0
                while n - i >= B:
                    steps = min(most, (n - i) // B)
                    yield Span(X, Y, i, steps, B, at(i), at(i + steps * B))
                    i += steps * B
                if i < n:
                    pending, have, begun = [(X[:, i:], Y[:, i:])], n - i, at(i)
            if pending:  # the last, short batch of the epoch
                last = _join(pending, Cursor(c.seed, c.epoch, self.source.n_chunks, 0, self.chunks_per_unit))
                yield Span(last.X, last.Y, 0, 1, have, begun, last.cursor)
        finally:
            units.close()
            self.io_wait_s += units.wait_s

    def _cursor_in(self, position: int, n: int, offset: int) -> Cursor:
        """The cursor ``offset`` samples into the unit at ``position`` of n samples (its end: the next unit)."""
        c, per_unit = self.cursor, self.chunks_per_unit
        if offset < n:
            return Cursor(c.seed, c.epoch, position, offset, per_unit)
        return Cursor(c.seed, c.epoch, min(position + per_unit, self.source.n_chunks), 0, per_unit)


def _join(pieces: list[tuple[np.ndarray, np.ndarray]], cursor: Cursor) -> Batch:
    if len(pieces) == 1:  # the common case: a view into the unit, no copy
        return Batch(pieces[0][0], pieces[0][1], cursor)
    return Batch(np.concatenate([p[0] for p in pieces], axis=1), np.concatenate([p[1] for p in pieces], axis=1), cursor)


_END = object()


class Prefetcher:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead.

    Errors raised while producing an item are re-raised in the consumer. ``close()`` (also
    called when the consumer stops early) stops the thread and waits for it.
    """

    def __init__(self, items: Iterable, depth: int) -> None:
        self.wait_s = 0.0
        self._items, self._depth = iter(items), depth
        if depth > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=depth)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._work, name="streamtrain-prefetch", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        try:
            for item in self._items:
                if not self._put(("item", item)):
                    return
            self._put(("done", None))
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._put(("error", e))

    def _put(self, msg: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(msg, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self) -> Iterator:
        if self._depth <= 0:
            yield from self._read_inline()
            return
        while True:
            t0 = time.perf_counter()
            kind, item = self._queue.get()
            self.wait_s += time.perf_counter() - t0
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item

    def _read_inline(self) -> Iterator:
        while True:
            t0 = time.perf_counter()
            item = next(self._items, _END)
            self.wait_s += time.perf_counter() - t0
            if item is _END:
                return
            yield item

    def close(self) -> None:
        if self._depth > 0:
            self._stop.set()
            self._thread.join()
