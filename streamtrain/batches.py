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

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from ._buffers import Prefetcher, Recycled, cast_into, join_columns, permute_runs, run_length
from ._errors import ConfigError, check_choice, check_int
from .labels import LabelRule
from .sources import ChunkSource
from .weights import Weighting

__all__ = [
    "SHUFFLES", "Batch", "BatchStream", "Cursor", "Prefetcher", "Recycled", "Shuffle", "Span", "check_batching",
    "permute_runs", "run_length",
]  # fmt: skip


class Shuffle(NamedTuple):
    """What a shuffle mode permutes: the chunk order, and the columns inside units of chunks."""

    chunks: bool  # a new chunk order every epoch
    columns: bool  # units of several chunks (as many as the buffer budget holds), columns permuted


SHUFFLES = {"none": Shuffle(False, False), "chunks": Shuffle(True, False), "buffer": Shuffle(True, True)}
# Memory for all units in flight in ``buffer`` mode: the ones read ahead, the one being consumed,
# and one more for each reader thread shuffling (twice its size at the peak for compressed chunks:
# the decoded chunks and the permuted copy; raw chunks are permuted as they are read).
DEFAULT_BUFFER_BYTES = 192 * 2**20
# Threads reading units ahead of the step: the direct read path releases the interpreter lock
# while it reads and decodes, so up to one per core decode compressed chunks in parallel (and
# keep more requests in flight for a cold disk); never more than the prefetch depth.
READERS = max(1, os.cpu_count() or 1)


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
    weights: np.ndarray | None = None  # (1, B): each sample's weight, from a stream given a weighting


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
    unit_bytes = buffer_bytes // (max(prefetch, 0) + 2 + READERS)
    return max(1, unit_bytes // ((source.n_x + source.k) * chunk * itemsize))


class BatchStream:
    """One epoch (or the rest of one, from ``cursor``) of mini-batches.

    Reads run ``prefetch`` units ahead in up to READERS threads (0: read in the caller's
    thread); ``io_wait_s`` is the time the consumer spent waiting for them. ``labels``: the
    rule every chunk's labels are checked by as it is read (see ``streamtrain.labels``).
    ``weighting``: each batch's ``weights`` (see ``streamtrain.weights``); units then carry them
    as one more row of Y, so that they are shuffled and cut into batches with their samples.
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
        weighting: Weighting | None = None,
    ) -> None:
        check_batching(batch_size, shuffle)
        self.source, self.batch_size, self.cursor, self.labels = source, int(batch_size), cursor, labels
        self.weighting = weighting
        self.shuffle, self.dtype, self.prefetch = shuffle, np.dtype(dtype), prefetch
        self.chunks_per_unit = cursor.chunks_per_unit or chunks_per_unit(
            source, shuffle, buffer_bytes, prefetch, self.dtype.itemsize
        )
        self.order = chunk_order(source.n_chunks, shuffle, cursor.seed, cursor.epoch)
        at_end = cursor.position == source.n_chunks
        if not 0 <= cursor.position <= source.n_chunks or (cursor.position % self.chunks_per_unit and not at_end):
            raise ConfigError(f"cursor position {cursor.position} is not the start of a unit")
        self._waited = 0.0  # seconds waited on reads by the finished passes over this stream
        self._units: Prefetcher | None = None
        # Units in flight (see chunks_per_unit), and the chunks each reader thread decodes.
        self._arrays = Recycled(limit=max(prefetch, 0) + 2 + READERS)
        self.run = run_length(self.batch_size)

    @property
    def io_wait_s(self) -> float:
        """Seconds the consumer has waited for reads so far (also while it iterates)."""
        return self._waited + (self._units.wait_s if self._units is not None else 0.0)

    def chunks_between(self, before: Cursor, after: Cursor) -> np.ndarray:
        """The chunks that a batch starting at ``before`` and ending where ``after`` starts was read from."""
        stop = after.position + (self.chunks_per_unit if after.offset else 0)
        return self.order[before.position : min(stop, self.source.n_chunks)]

    def units(self) -> Iterator[Callable[[], tuple[int, np.ndarray, np.ndarray]]]:
        """A task per unit from the cursor on, in the epoch's order, each returning (position, X, Y);
        also asks the source to start reading the units ``prefetch`` places further ahead."""
        n, ahead = self.chunks_per_unit, self.chunks_per_unit * max(self.prefetch, 1)
        for pos in range(self.cursor.position, self.source.n_chunks, n):
            for c in self.order[pos + ahead : pos + ahead + n]:
                self.source.will_read(int(c))
            yield functools.partial(self._read_unit, pos)

    def _read_unit(self, pos: int) -> tuple[int, np.ndarray, np.ndarray]:
        """The unit at ``pos`` of the epoch's chunk order: its chunks side by side, columns
        permuted when the shuffle asks for it, in the training dtype."""
        source, arrays = self.source, self._arrays
        chunks = self.order[pos : pos + self.chunks_per_unit]
        bounds = [source.chunk_bounds[c] for c in chunks]
        width = sum(b - a for a, b in bounds)
        permute = self._permutation(pos, width)
        if source.raw_x:  # read into the unit's array, permuted as they are read (one pass)
            X = source.read_x_rows(chunks, arrays.empty((source.n_x, width), source.dtype), permute)
            Y = join_columns(tuple(source.read_labels(a, b, labels=self.labels) for a, b in bounds), arrays)
        else:
            X, Y = self._read_side_by_side(bounds)
            X = X if permute is None else permute(X, arrays.empty(X.shape, X.dtype))
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf: named by the trainer, once
            if self.weighting is not None:
                Y = np.concatenate([np.asarray(Y, self.dtype), self._weights(Y, bounds).astype(self.dtype)])
            if permute is not None:
                Y = permute(Y, np.empty_like(Y))
            if X.dtype != self.dtype:
                X = cast_into(X, arrays.empty(X.shape, self.dtype))
            Y = np.asarray(Y, dtype=self.dtype)
        return pos, X, Y

    def _weights(self, Y: np.ndarray, bounds: list[tuple[int, int]]) -> np.ndarray:
        """The weights (1, width) of a unit's chunks, whose labels Y are side by side."""
        assert self.weighting is not None
        offsets = np.cumsum([0] + [b - a for a, b in bounds])
        return np.concatenate(
            [self.weighting(Y[:, i:j], a, b) for (a, b), i, j in zip(bounds, offsets, offsets[1:])], axis=1
        )

    def _batch(self, batch: Batch) -> Batch:
        """A batch as yielded: with a weighting, its Y's last row is the samples' weights."""
        if self.weighting is None:
            return batch
        return Batch(batch.X, batch.Y[:-1], batch.cursor, batch.Y[-1:])

    def _read_side_by_side(self, bounds: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        source, items = self.source, self.source.chunk_items
        parts = [
            source.read(
                a, b, labels=self.labels, into=None if items is None else self._arrays.empty((items,), source.dtype)
            )
            for a, b in bounds
        ]
        X, Y = (join_columns(p, self._arrays) for p in zip(*parts))
        return X, Y

    def _permutation(self, pos: int, width: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
        """``buffer``'s permutation of the unit at ``pos`` (of ``width`` samples) as ``arrange(A, out)``;
        None when columns are not shuffled."""
        if not SHUFFLES[self.shuffle].columns:
            return None
        rng = np.random.default_rng([self.cursor.seed, self.cursor.epoch, 1, pos])
        return functools.partial(permute_runs, perm=rng.permutation(width // self.run), run=self.run)

    def __iter__(self) -> Generator[Batch, None, None]:
        B, c = self.batch_size, self.cursor
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        have = 0
        with contextlib.closing(self._units_from_cursor()) as units:
            for pos, X, Y, i in units:
                n = X.shape[1]
                while i < n:
                    take = min(B - have, n - i)
                    pending.append((X[:, i : i + take], Y[:, i : i + take]))
                    have, i = have + take, i + take
                    if have == B:
                        next_unit = min(pos + self.chunks_per_unit, self.source.n_chunks)
                        position, offset = (next_unit, 0) if i == n else (pos, i)
                        after = Cursor(c.seed, c.epoch, position, offset, self.chunks_per_unit)
                        yield self._batch(_join(pending, after))
                        pending, have = [], 0
            if pending:  # the last, short batch of the epoch
                last = _join(pending, Cursor(c.seed, c.epoch, self.source.n_chunks, 0, self.chunks_per_unit))
                yield self._batch(last)

    def _units_from_cursor(self) -> Generator[tuple[int, np.ndarray, np.ndarray, int], None, None]:
        """(position, X, Y, first sample) of each unit from the cursor on, read ahead by the reader
        threads; the first sample is the cursor's offset in its own unit, else 0."""
        c = self.cursor
        units = self._units = Prefetcher(self.units(), self.prefetch, workers=READERS)
        try:
            for pos, X, Y in units:
                n = X.shape[1]
                i = c.offset if pos == c.position else 0
                if i >= n and n:
                    raise ConfigError(f"cursor offset {c.offset} is past the unit's {n} samples")
                yield pos, X, Y, i
        finally:
            units.close()
            self._waited, self._units = self.io_wait_s, None

    def spans(self, max_samples: int) -> Generator[Span, None, None]:
        """The stream's batches (the same as iterating it, with the same cursors) in spans: runs of whole
        batches inside one unit, at most ``max_samples`` samples (at least one batch) each; a batch that
        straddles two units, or the epoch's short last batch, is a span of its own. Spans carry no weights."""
        if self.weighting is not None:
            raise ValueError("spans carry no weights: iterate a weighted stream batch by batch")
        B, c = self.batch_size, self.cursor
        most = max(1, max_samples // B)
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        have, begun = 0, c  # samples of the batch begun in an earlier unit, and where it began
        with contextlib.closing(self._units_from_cursor()) as units:
            for pos, X, Y, i in units:
                n = X.shape[1]
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
