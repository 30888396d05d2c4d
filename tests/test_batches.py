"""BatchStream, Cursor and Prefetcher: every sample once per epoch, reproducible orders, exact resume.

Samples are identified by X's first row, which holds the sample index (float64, so exact).
"""

from __future__ import annotations

import functools
import itertools
import json
import threading
import time

import numpy as np
import pytest

from streamtrain import ConfigError, DataError
from streamtrain.batches import (
    READERS,
    SHUFFLES,
    BatchStream,
    Cursor,
    Prefetcher,
    Recycled,
    check_batching,
    chunks_per_unit,
    permute_runs,
    run_length,
)
from streamtrain.labels import BINARY
from streamtrain.sources import ArraySource, open_source

M, C, N_X = 103, 8, 3  # 13 chunks, the last holding 7 samples
N_CHUNKS = -(-M // C)
UNIT = 3  # chunks per unit in buffer mode (13 chunks: four units of 3, then one of 1)
SIZES = [1, 7, C, 10, M, 2 * M]


def indexed_xy(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X (N_X, M) float64 whose row 0 is the sample index; Y (1, M) random 0/1."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_X, M))
    X[0] = np.arange(M)
    return X, rng.integers(0, 2, size=(1, M)).astype(np.float64)


@pytest.fixture(scope="module")
def data():
    return indexed_xy()


@pytest.fixture(scope="module")
def source(data):
    return ArraySource(*data, chunk_size=C)


def unit_budget(prefetch: int, chunks_per_unit: int = UNIT, itemsize: int = 8) -> int:
    """buffer_bytes that make a unit hold exactly ``chunks_per_unit`` chunks (see chunks_per_unit)."""
    return chunks_per_unit * (N_X + 1) * C * itemsize * (prefetch + 2 + READERS)


def stream(source, B, mode="none", *, seed=0, epoch=0, cursor=None, prefetch=0, dtype="float64"):
    return BatchStream(
        source,
        B,
        cursor or Cursor(seed, epoch),
        shuffle=mode,
        dtype=dtype,
        prefetch=prefetch,
        buffer_bytes=unit_budget(prefetch),
    )


def order_of(batches) -> np.ndarray:
    """The epoch's sample order, read back from row 0 of X."""
    return np.concatenate([b.X[0] for b in batches]).astype(np.int64)


@pytest.mark.parametrize("prefetch", [0, 2])
@pytest.mark.parametrize("B", SIZES)
@pytest.mark.parametrize("mode", list(SHUFFLES))
def test_every_sample_once_per_epoch(source, data, mode, B, prefetch):
    X, Y = data
    batches = list(stream(source, B, mode, seed=3, prefetch=prefetch))
    assert len(batches) == -(-M // B)
    assert all(b.X.shape == (N_X, B) and b.Y.shape == (1, B) for b in batches[:-1])
    assert 0 < batches[-1].X.shape[1] <= B and batches[-1].Y.shape == (1, batches[-1].X.shape[1])
    seq = order_of(batches)
    np.testing.assert_array_equal(np.sort(seq), np.arange(M))
    np.testing.assert_array_equal(np.concatenate([b.X for b in batches], axis=1), X[:, seq])
    np.testing.assert_array_equal(np.concatenate([b.Y for b in batches], axis=1), Y[:, seq])


@pytest.mark.parametrize("B", SIZES)
def test_none_is_sequential(source, data, B):
    X, Y = data
    for t, batch in enumerate(stream(source, B, "none")):
        np.testing.assert_array_equal(batch.X, X[:, t * B : (t + 1) * B])
        np.testing.assert_array_equal(batch.Y, Y[:, t * B : (t + 1) * B])


def runs(chunk_ids: np.ndarray) -> list[int]:
    """Start index of each run of equal values."""
    return [0, *np.flatnonzero(np.diff(chunk_ids)) + 1]


@pytest.mark.parametrize("B", [7, M])
def test_chunks_mode_keeps_each_chunk_contiguous_and_in_order(source, B):
    seq = order_of(stream(source, B, "chunks", seed=5))
    starts = runs(seq // C)
    assert len(starts) == N_CHUNKS  # each chunk appears as one run
    for a, b in zip(starts, [*starts[1:], M]):
        np.testing.assert_array_equal(seq[a:b], np.arange(seq[a], seq[a] + b - a))
    assert not np.array_equal(seq, np.arange(M))  # and the chunks were shuffled


@pytest.mark.parametrize("prefetch", [0, 2])
def test_buffer_mode_shuffles_inside_units_of_chunks(source, prefetch):
    s = stream(source, 7, "buffer", seed=5, prefetch=prefetch)
    assert s.chunks_per_unit == UNIT
    np.testing.assert_array_equal(np.sort(s.order), np.arange(N_CHUNKS))
    seq, i = order_of(s), 0
    for pos in range(0, N_CHUNKS, UNIT):
        expected = np.concatenate([np.arange(c * C, min(c * C + C, M)) for c in s.order[pos : pos + UNIT]])
        unit = seq[i : i + len(expected)]
        np.testing.assert_array_equal(np.sort(unit), np.sort(expected))  # a unit is its chunks
        if pos + UNIT <= N_CHUNKS:
            assert not np.array_equal(unit, expected)  # shuffled, not chunk after chunk
            assert not np.array_equal(unit, np.sort(unit))
        i += len(expected)
    assert i == M


def test_buffer_mode_permutes_each_unit_by_its_own_permutation(source):
    # One permutation for every unit would put the same in-unit positions at the same
    # offsets of every unit, a pattern a shuffle must not repeat.
    s = stream(source, 7, "buffer", seed=5)
    seq, start, perms = order_of(s), 0, set()
    for pos in range(0, N_CHUNKS, UNIT):
        chunks = [np.arange(c * C, min(c * C + C, M)) for c in s.order[pos : pos + UNIT]]
        unit_order = np.concatenate(chunks)  # the unit before its columns are permuted
        place = np.empty(M, dtype=np.int64)
        place[unit_order] = np.arange(len(unit_order))
        if len(unit_order) == UNIT * C:  # the units of three whole chunks
            perms.add(tuple(place[seq[start : start + len(unit_order)]]))
        start += len(unit_order)
    assert len(perms) >= 3  # at least three such units (one may hold the short chunk), all different


@pytest.mark.parametrize("units, budget", [(7, unit_budget(0, 7)), (1, unit_budget(0, 1)), (1, 1)])
def test_a_unit_holds_as_many_of_the_largest_chunks_as_the_budget_allows_and_at_least_one(source, units, budget):
    # The last chunk holds 7 samples, not 8: sized by it, a unit of 7 chunks would hold 8.
    assert chunks_per_unit(source, "buffer", budget, 0, 8) == units
    batches = list(
        BatchStream(source, 10, Cursor(0, 0), shuffle="buffer", dtype="float64", prefetch=0, buffer_bytes=budget)
    )
    assert batches[0].cursor.chunks_per_unit == units
    assert sorted(order_of(batches)) == list(range(M))


@pytest.mark.parametrize("mode", ["chunks", "buffer"])
def test_order_depends_on_seed_and_epoch_only(source, mode):
    def seq(**kw):
        return order_of(stream(source, 10, mode, **kw))

    np.testing.assert_array_equal(seq(seed=1, epoch=0), seq(seed=1, epoch=0))
    assert not np.array_equal(seq(seed=1, epoch=0), seq(seed=2, epoch=0))
    assert not np.array_equal(seq(seed=1, epoch=0), seq(seed=1, epoch=1))


# -- cursor ------------------------------------------------------------------------------------


@pytest.mark.parametrize("B", [1, 7, 24])
@pytest.mark.parametrize("mode", list(SHUFFLES))
def test_resume_from_any_batch_cursor(source, mode, B):
    full = list(stream(source, B, mode, seed=9, epoch=2))
    for t, batch in enumerate(full):
        rest = list(stream(source, B, mode, cursor=batch.cursor))
        assert len(rest) == len(full) - t - 1, f"resuming after batch {t}"
        for got, want in zip(rest, full[t + 1 :]):
            assert np.array_equal(got.X, want.X) and np.array_equal(got.Y, want.Y)
            assert got.cursor == want.cursor


def test_resume_with_prefetch(source):
    full = list(stream(source, 10, "buffer", seed=4, prefetch=2))
    rest = list(stream(source, 10, "buffer", cursor=full[3].cursor, prefetch=2))
    assert all(np.array_equal(g.X, w.X) for g, w in zip(rest, full[4:], strict=True))


@pytest.mark.parametrize("prefetch, dtype", [(1, "float64"), (2, "float64"), (0, "float32")])
def test_resume_keeps_the_unit_size_whatever_the_prefetch_or_dtype(source, prefetch, dtype):
    # Those options change the unit size a fresh epoch would derive from the budget; the
    # cursor carries the size the epoch was cut with, so the rest of the epoch is unchanged.
    full = list(stream(source, 8, "buffer", seed=3, prefetch=0))
    assert full[5].cursor.chunks_per_unit == UNIT
    resumed = BatchStream(
        source, 8, full[5].cursor, shuffle="buffer", dtype=dtype, prefetch=prefetch, buffer_bytes=unit_budget(0)
    )
    assert order_of(resumed).tolist() == order_of(full[6:]).tolist()


@pytest.mark.parametrize("prefetch", [0, 2])
def test_labels_are_checked_by_the_rule_the_stream_is_given(data, prefetch):
    X, Y = data
    Y = Y.copy()
    Y[0, 50] = 2.0  # chunk 6
    source = ArraySource(X, Y, chunk_size=C)
    assert sum(b.X.shape[1] for b in BatchStream(source, 10, Cursor(0, 0), prefetch=prefetch)) == M  # no rule
    with pytest.raises(DataError, match=r"<arrays>/Y: label 2\.0 at sample 50 \(chunk 6\) is outside \{0, 1\}"):
        list(BatchStream(source, 10, Cursor(0, 0), prefetch=prefetch, labels=BINARY))


def test_cursor_round_trips_through_json():
    c = Cursor(seed=7, epoch=3, position=6, offset=11, chunks_per_unit=3)
    d = json.loads(json.dumps(c.to_dict()))
    assert d == {"seed": 7, "epoch": 3, "position": 6, "offset": 11, "chunks_per_unit": 3}
    assert Cursor.from_dict(d) == c
    restored = Cursor.from_dict({k: np.int64(v) for k, v in d.items()})  # as read back from arrays
    assert restored == c
    assert {type(v) for v in restored.to_dict().values()} == {int}  # so it dumps to JSON again
    assert json.loads(json.dumps(restored.to_dict())) == d


@pytest.mark.parametrize("mode", list(SHUFFLES))
def test_a_cursor_offset_at_or_past_the_end_of_its_unit_is_refused(source, mode):
    # A stream never makes such a cursor (it moves on to the next unit), so it comes from a
    # damaged checkpoint: refused, not read as "skip this unit".
    first = stream(source, 5, mode, seed=2)
    n = sum(b - a for a, b in (source.chunk_bounds[c] for c in first.order[: first.chunks_per_unit]))
    for offset in (n, n + 1):
        cursor = Cursor(2, 0, position=0, offset=offset, chunks_per_unit=first.chunks_per_unit)
        with pytest.raises(ConfigError, match=f"cursor offset {offset} is past the unit's {n} samples"):
            list(stream(source, 5, mode, cursor=cursor))
    last = Cursor(2, 0, position=0, offset=n - 1, chunks_per_unit=first.chunks_per_unit)
    assert order_of(stream(source, 5, mode, cursor=last)).tolist() == order_of(first)[n - 1 :].tolist()


@pytest.mark.parametrize("position", [1, 2, 4, -3, N_CHUNKS + 1])
def test_a_cursor_position_that_is_not_the_start_of_a_unit_is_refused(source, position):
    with pytest.raises(ConfigError, match=f"cursor position {position} is not the start of a unit"):
        stream(source, 5, "buffer", cursor=Cursor(0, 0, position=position, chunks_per_unit=UNIT))
    # Positions 3 and 13 (the end: 13 is no multiple of 3) are fine.
    stream(source, 5, "buffer", cursor=Cursor(0, 0, position=UNIT, chunks_per_unit=UNIT))


def batches_of(spans) -> list:
    """The batches a run of spans holds: (X, Y, cursor after each), as iterating the stream gives them."""
    out = []
    for span in spans:
        for j in range(span.steps):
            cols = slice(span.start + j * span.width, span.start + (j + 1) * span.width)
            out.append((span.X[:, cols], span.Y[:, cols], span.cursor(j + 1)))
            assert span.cursor(j) == (out[-2][2] if len(out) > 1 else span.before)
    return out


@pytest.mark.parametrize("B, most", [(1, 5), (1, 1000), (3, 7), (7, 100), (24, 24), (M, 1)])
@pytest.mark.parametrize("mode", list(SHUFFLES))
def test_spans_hold_the_streams_batches_and_cursors(source, mode, B, most):
    full = list(stream(source, B, mode, seed=5, epoch=1, prefetch=1))
    for t in (-1, *range(1, len(full) // 2, 3)):  # from the start, and resumed after batch t
        start, rest = (None, full) if t < 0 else (full[t].cursor, full[t + 1 :])
        spans = list(stream(source, B, mode, seed=5, epoch=1, cursor=start, prefetch=1).spans(most))
        assert all(s.steps * s.width <= max(most, s.width) for s in spans)
        got = batches_of(spans)
        assert len(got) == len(rest)
        for (X, Y, after), want in zip(got, rest):
            assert np.array_equal(X, want.X) and np.array_equal(Y, want.Y) and after == want.cursor


def test_a_span_is_its_unit_and_a_batch_across_two_units_is_a_span_of_its_own(source):
    spans = list(stream(source, 3, "none").spans(100))  # units of one chunk of 8: 3 + 3, then 2 + 1
    assert [(s.start, s.steps, s.X.shape[1]) for s in spans[:3]] == [(0, 2, 8), (0, 1, 3), (1, 2, 8)]
    assert spans[1].before == spans[0].after == Cursor(0, 0, 0, 6, 1) and spans[1].after == spans[2].before


@pytest.mark.parametrize("mode", list(SHUFFLES))
def test_cursor_at_end_yields_nothing(source, mode):
    assert list(stream(source, 10, mode, cursor=Cursor(0, 0, position=N_CHUNKS))) == []


@pytest.mark.parametrize("B", [10, M])
@pytest.mark.parametrize("mode", list(SHUFFLES))
def test_last_batch_cursor_marks_the_end(source, mode, B):
    last = list(stream(source, B, mode))[-1].cursor
    assert (last.position, last.offset) == (N_CHUNKS, 0)


# -- across backends -----------------------------------------------------------------------------


def test_zarr_hdf5_and_memory_give_the_same_batches(data, source, zarr_store, hdf5_store):
    with open_source(hdf5_store(*data, C)) as h5:
        z = open_source(zarr_store(*data, C))
        streams = [stream(s, 10, "buffer", seed=1, prefetch=2) for s in (source, z, h5)]
        for a, b, c in zip(*streams, strict=True):
            assert np.array_equal(a.X, b.X) and np.array_equal(a.X, c.X)
            assert np.array_equal(a.Y, b.Y) and np.array_equal(a.Y, c.Y)
            assert a.cursor == b.cursor == c.cursor


# -- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(SHUFFLES))
@pytest.mark.parametrize("dtype", [None, "float32", "float64"])
def test_dtype(source, data, mode, dtype):
    kw = {} if dtype is None else {"dtype": dtype}
    batches = list(BatchStream(source, 10, Cursor(0, 0), shuffle=mode, prefetch=0, **kw))
    want = np.dtype(dtype or "float32")
    assert all(b.X.dtype == want and b.Y.dtype == want for b in batches)
    seq = np.concatenate([b.X[0] for b in batches]).astype(np.int64)
    np.testing.assert_array_equal(np.concatenate([b.X for b in batches], axis=1), data[0][:, seq].astype(want))


@pytest.mark.parametrize("B", [0, -1, 2.5, True, "8"])
def test_bad_batch_size(source, B):
    with pytest.raises(ConfigError, match="batch_size"):
        BatchStream(source, B, Cursor(0, 0))
    with pytest.raises(ConfigError):
        check_batching(B, "none")


def test_unknown_shuffle_mode(source):
    with pytest.raises(ConfigError, match="none, chunks, buffer"):
        BatchStream(source, 10, Cursor(0, 0), shuffle="random")


# -- Prefetcher ------------------------------------------------------------------------------------


def tasks(items, seen=None):
    """A task per item, returning it (and noting it in ``seen`` when it runs)."""

    def task(i):
        if seen is not None:
            seen.append((i, threading.current_thread()))
        return i

    return (functools.partial(task, i) for i in items)


@pytest.mark.parametrize("depth, workers", [(0, 1), (1, 1), (3, 1), (3, 2), (4, 4)])
def test_prefetcher_yields_all_in_order(depth, workers):
    assert list(Prefetcher(tasks(range(50)), depth, workers)) == list(range(50))


def test_prefetcher_keeps_the_order_when_later_tasks_finish_first():
    def slow_first(i):
        if i == 0:
            time.sleep(0.2)
        return i

    assert list(Prefetcher((functools.partial(slow_first, i) for i in range(6)), 3, 3)) == list(range(6))


@pytest.mark.parametrize("depth, workers", [(0, 1), (2, 1), (3, 3)])
def test_prefetcher_reraises_the_first_error_in_order(depth, workers):
    def task(i):
        if i >= 3:
            time.sleep(0.05 * (5 - i))  # the later error is met first
            raise RuntimeError(f"disk on fire at {i}")
        return i

    got = []
    with pytest.raises(RuntimeError, match="disk on fire at 3"):
        for item in Prefetcher((functools.partial(task, i) for i in range(5)), depth, workers):
            got.append(item)
    assert got == [0, 1, 2]


def test_prefetcher_depth_zero_runs_in_the_caller():
    seen = []
    assert list(Prefetcher(tasks(range(3), seen), 0)) == [0, 1, 2]
    assert [t for _, t in seen] == [threading.current_thread()] * 3


def test_prefetcher_stops_promptly_when_closed_early():
    before = set(threading.enumerate())
    p = Prefetcher(tasks(itertools.count()), 2, 2)
    for item in p:
        if item == 3:
            break
    t0 = time.perf_counter()
    p.close()
    assert time.perf_counter() - t0 < 1.0
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]


def test_stream_stopped_early_ends_its_threads(source):
    before = set(threading.enumerate())
    batches = iter(stream(source, 1, "buffer", prefetch=2))
    next(batches)
    batches.close()
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("streamtrain-prefetch")]


@pytest.mark.parametrize("depth, workers", [(1, 1), (3, 1), (3, 2)])
def test_prefetcher_runs_at_most_depth_ahead(depth, workers):
    seen = []
    p = Prefetcher(tasks(range(100), seen), depth, workers)
    items = iter(p)
    assert next(items) == 0
    deadline = time.monotonic() + 5
    while len(seen) < 1 + depth and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # give an unbounded producer time to run further ahead
    assert len(seen) == 1 + depth  # the one consumed and the ones in flight
    p.close()


# -- buffer mode's pieces ----------------------------------------------------------------------------


@pytest.mark.parametrize("B, run", [(1, 1), (127, 1), (128, 2), (1000, 8), (1024, 16), (10**6, 16)])
def test_buffer_runs_are_powers_of_two_with_enough_runs_per_batch(B, run):
    assert run_length(B) == run


def test_permute_runs_moves_whole_runs_and_keeps_the_tail_last():
    A = np.arange(3 * 37).reshape(3, 37)
    perm = np.random.default_rng(0).permutation(37 // 4)
    out = permute_runs(A, np.empty_like(A), perm, 4)
    expected = np.concatenate([A[:, 4 * p : 4 * p + 4] for p in perm] + [A[:, 36:]], axis=1)
    np.testing.assert_array_equal(out, expected)


def test_recycled_arrays_are_never_handed_out_while_a_view_is_alive():
    arrays = Recycled(limit=2)
    a = arrays.empty((2, 3), np.float32)
    view = a[:, 1:]
    del a
    b = arrays.empty((2, 3), np.float32)
    assert not np.shares_memory(b, view)  # the first one is still seen through ``view``
    del b
    c = arrays.empty((2, 3), np.float32)
    assert not np.shares_memory(c, view)
    del view
    d = arrays.empty((2, 3), np.float32)  # both kept ones are free now: one is reused
    assert any(d is kept for kept in arrays._arrays)
    assert arrays.empty((2, 4), np.float32).shape == (2, 4)  # another shape: a new array
