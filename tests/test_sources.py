"""ChunkSource: one contract every backend passes, then open-time validation of real files, then
NaN/inf in given chunks and stamps of stores that change."""

from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np
import pytest
import zarr

import streamtrain
from streamtrain import ConfigError, DataError, DataWarning
from streamtrain.labels import BINARY, ONE_HOT, ClassIds
from streamtrain.sources import ArraySource, default_chunk_size, open_source
from streamtrain.sources._hdf5 import HDF5Source
from streamtrain.sources._zarr import ZarrSource

FINGERPRINT_FIELDS = {"format", "path", "x", "y", "n_x", "k", "m", "dtype", "chunk", "codec"}
# (m, chunk): chunk not dividing m (short last chunk), dividing m, one sample per chunk.
SHAPES = [(103, 16), (96, 16), (10, 1)]


class SourceContract:
    """Subclasses override the ``make_source`` fixture: ``(X, Y, chunk, **kw) -> ChunkSource``."""

    format: str

    @pytest.fixture(params=SHAPES, ids=lambda s: f"m{s[0]}-C{s[1]}")
    def case(self, request, make_xy, make_source):
        m, chunk = request.param
        X, Y = make_xy(n_x=3, m=m, seed=m)
        return make_source(X, Y, chunk), X, Y, chunk

    def test_shape_and_dtype(self, case):
        source, X, Y, _ = case
        assert (source.n_x, source.m, source.k) == (X.shape[0], X.shape[1], Y.shape[0])
        assert source.dtype == X.dtype

    def test_chunk_bounds_cover_samples_contiguously(self, case):
        source, X, _, chunk = case
        starts, stops = np.array(source.chunk_bounds).T
        assert starts[0] == 0 and stops[-1] == X.shape[1]
        np.testing.assert_array_equal(starts[1:], stops[:-1])
        widths = stops - starts
        assert (widths[:-1] == chunk).all()
        assert 0 < widths[-1] <= chunk and widths[-1] == X.shape[1] - chunk * (len(widths) - 1)
        assert source.n_chunks == -(-X.shape[1] // chunk)

    def test_read_every_chunk_equals_memory(self, case):
        source, X, Y, _ = case
        for a, b in [*source.chunk_bounds, (0, source.m)]:
            Xc, Yc = source.read(a, b)
            assert Xc.dtype == X.dtype and Xc.shape == (3, b - a) and Yc.shape == (1, b - a)
            np.testing.assert_array_equal(Xc, X[:, a:b])
            np.testing.assert_array_equal(Yc, Y[:, a:b])

    def test_chunk_of(self, case):
        source, X, _, _ = case
        for sample in range(X.shape[1]):
            a, b = source.chunk_bounds[source.chunk_of(sample)]
            assert a <= sample < b

    def test_fingerprint(self, case):
        source, X, _, chunk = case
        fp = source.fingerprint()
        assert set(fp) == FINGERPRINT_FIELDS
        assert fp["format"] == self.format
        assert (fp["n_x"], fp["m"], fp["k"], fp["chunk"]) == (3, X.shape[1], 1, chunk)
        assert (fp["x"], fp["y"], fp["dtype"]) == ("X", "Y", X.dtype.name)

    @pytest.mark.parametrize("bad", [2.0, -1.0, 0.5, np.nan])
    def test_bad_label_raises_when_its_chunk_is_read(self, make_xy, make_source, bad):
        X, Y = make_xy(m=103)
        Y[0, 37] = bad  # chunk 2 of chunks of 16
        source = make_source(X, Y, 16)  # opening does not read labels
        for i, (a, b) in enumerate(source.chunk_bounds):
            if i != 2:
                source.read(a, b, labels=BINARY)
        with pytest.raises(DataError) as err:
            source.read(*source.chunk_bounds[2], labels=BINARY)
        msg = str(err.value)
        assert f"{source.name}/Y" in msg and "sample 37" in msg and "chunk 2" in msg

    def test_a_read_without_a_label_rule_lets_any_label_through(self, make_xy, make_source):
        X, Y = make_xy(m=40)
        Y[0, 5] = 2.5
        source = make_source(X, Y, 16)
        np.testing.assert_array_equal(source.read(0, 16)[1], Y[:, :16])


class TestArraySource(SourceContract):
    format = "memory"

    @pytest.fixture
    def make_source(self):
        return lambda X, Y, chunk, **kw: ArraySource(X, Y, chunk_size=chunk, **kw)


# Each store backend passes the contract on both read paths: the chunk files read directly (the
# fixtures' stores qualify) and its slow twin, the storage library (see tests/test_direct.py).
READ_PATHS = {"direct": True, "library": False}


class TestZarrSource(SourceContract):
    format = "zarr"

    @pytest.fixture(params=READ_PATHS)
    def make_source(self, request, zarr_store):
        def make(X, Y, chunk, **kw):
            source = ZarrSource(zarr_store(X, Y, chunk), direct=READ_PATHS[request.param], **kw)
            assert source.read_path == {"direct": "direct", "library": "zarr library"}[request.param]
            return source

        return make


class TestHDF5Source(SourceContract):
    format = "hdf5"

    @pytest.fixture(params=READ_PATHS)
    def make_source(self, request, hdf5_store):
        opened = []

        def make(X, Y, chunk, **kw):
            opened.append(HDF5Source(hdf5_store(X, Y, chunk), direct=READ_PATHS[request.param], **kw))
            assert opened[-1].read_path == {"direct": "direct", "library": "hdf5 library"}[request.param]
            return opened[-1]

        yield make
        for source in opened:
            source.close()


# -- across backends ----------------------------------------------------------------------


@pytest.fixture(params=["zarr", "hdf5"])
def backend(request):
    return request.param


@pytest.fixture
def store(backend, zarr_store, hdf5_store):
    """``store(X, Y, chunk, **kw) -> path`` for each on-disk backend."""
    return {"zarr": zarr_store, "hdf5": hdf5_store}[backend]


def test_zarr_and_hdf5_read_the_same(make_xy, zarr_store, hdf5_store):
    X, Y = make_xy(n_x=4, m=150, seed=7)
    z, h = open_source(zarr_store(X, Y, 32)), open_source(hdf5_store(X, Y, 32))
    with h:
        assert z.chunk_bounds == h.chunk_bounds
        drop = {"format", "path", "codec"}
        assert {k: v for k, v in z.fingerprint().items() if k not in drop} == {
            k: v for k, v in h.fingerprint().items() if k not in drop
        }
        for a, b in z.chunk_bounds:
            for got_z, got_h in zip(z.read(a, b), h.read(a, b)):
                assert got_z.dtype == got_h.dtype
                np.testing.assert_array_equal(got_z, got_h)


def test_custom_array_names(store, make_xy):
    X, Y = make_xy(m=50)
    with open_source(store(X, Y, 16, x="feat", y="lab"), x="feat", y="lab") as source:
        assert (source.x_name, source.y_name) == ("feat", "lab")
        np.testing.assert_array_equal(source.read(16, 32)[0], X[:, 16:32])
        np.testing.assert_array_equal(source.read(16, 32)[1], Y[:, 16:32])


# -- validation at open ---------------------------------------------------------------------


def open_fails(path, *match, **kw) -> str:
    """Open ``path`` expecting a DataError whose message names the path and each of ``match``."""
    with pytest.raises(DataError) as err:
        open_source(path, **kw)
    msg = str(err.value)
    for part in (str(path), *match):
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


@pytest.mark.parametrize("name", ["nope.zarr", "nope.h5"])
def test_missing_path(tmp_path, name):
    open_fails(tmp_path / name, "no such file")


def test_directory_that_is_not_a_zarr_group(tmp_path):
    (tmp_path / "plain").mkdir()
    open_fails(tmp_path / "plain", "not a Zarr group")


def test_file_that_is_neither_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    open_fails(tmp_path / "notes.txt", "neither")


def test_unknown_array_name_lists_what_was_found(store, make_xy):
    X, Y = make_xy(m=50)
    path = store(X, Y, 16, x="feat", y="lab")
    open_fails(path, "'X'", "feat, lab")
    open_fails(path, "'labels'", "feat, lab", x="feat", y="labels")


@pytest.mark.parametrize("x_shape", [(50,), (2, 3, 50)], ids=["1d", "3d"])
def test_x_not_2d(store, x_shape):
    X = np.ones(x_shape, np.float32)
    open_fails(store(X, np.ones((1, 50), np.float32), 16), "/X", "2-D")


def test_x_and_y_disagree_on_m(store, make_xy):
    X, _ = make_xy(m=50)
    msg = open_fails(store(X, np.ones((1, 40), np.float32), 16), "m=50", "m=40")
    assert "looks stored as" not in msg


def test_x_stored_transposed_gets_a_hint(store, make_xy):
    X, Y = make_xy(n_x=3, m=50)
    open_fails(store(X.T.copy(), Y, 16), "m=3", "m=50", "X looks stored with samples as rows: pass --layout rows")


def test_non_numeric_dtype(store, backend, make_xy):
    _, Y = make_xy(m=20)
    text = np.full((3, 20), "a", dtype={"zarr": np.dtypes.StringDType(), "hdf5": "S1"}[backend])
    open_fails(store(text, Y, 8), "/X", "not numeric")


def test_no_samples(store, backend):
    empty = np.zeros((3, 0), np.float32), np.zeros((1, 0), np.float32)
    chunk = {"zarr": 8, "hdf5": None}[backend]  # HDF5 cannot chunk a zero-length axis
    open_fails(store(*empty, chunk), "m = 0")


@pytest.mark.parametrize("array, policy", [("X", None), ("X", "error"), ("Y", "error")])
@pytest.mark.parametrize("skip", [{1}, {1, 2, 3, 4, 5, 6}, {6}, {3, 5}], ids=str)
def test_unwritten_chunks_are_reported(store, make_xy, array, policy, skip):
    X, Y = make_xy(m=103)  # chunks of 16: 0..16, ..., 96..103
    path = store(X, Y, 16, skip={array: skip})
    first = min(skip)
    msg = open_fails(
        path,
        f"/{array}",
        "missing",
        f"samples {16 * first}..{min(16 * first + 16, 103)}",
        "--missing-chunks fill",
        missing_chunks=policy,
    )
    assert (f"and {len(skip) - 1} more" in msg) == (len(skip) > 1)


@pytest.mark.parametrize("array, policy", [("Y", None), ("Y", "fill"), ("X", "fill")])
def test_unwritten_chunks_read_as_the_fill_value_and_are_reported_once(store, make_xy, array, policy):
    X, Y = make_xy(m=103)
    path = store(X, Y, 16, skip={array: {1, 3}})
    with pytest.warns(DataWarning) as caught, open_source(path, missing_chunks=policy) as source:
        got = dict(zip("XY", source.read(0, 103)))[array]
    expected = {"X": X, "Y": Y}[array].copy()
    expected[:, 16:32] = expected[:, 48:64] = 0  # the fixtures' fill value
    np.testing.assert_array_equal(got, expected)
    assert len(caught) == 1 and source.warnings == [str(caught[0].message)]
    assert source.warnings[0] == (
        f"{path}/{array}: 2 chunks were never written (the first samples 16..32); read as the fill value 0.0"
    )


def test_missing_chunks_policy_is_checked(store, make_xy):
    X, Y = make_xy(m=20)
    with pytest.raises(ConfigError, match="missing_chunks policy 'zero'; choose from error, fill"):
        open_source(store(X, Y, 8), missing_chunks="zero")


def test_zarr_chunk_skipped_as_fill_value_is_reported(zarr_store, make_xy):
    X, Y = make_xy(m=48)
    Y[:, 16:32] = 0  # equal to the fill value: zarr would not store it by default
    path = zarr_store(X, Y, 16, write_empty_chunks=False)
    open_fails(path, "/Y", "samples 16..32", "missing", "write_empty_chunks", missing_chunks="error")
    with pytest.warns(DataWarning, match="1 chunk was never written"), open_source(path) as source:
        np.testing.assert_array_equal(source.read(0, 48)[1], Y)


@pytest.mark.parametrize("rows", [(0, 1), (3, 0)], ids=["no features", "no labels"])
def test_arrays_without_rows_are_refused(rows):
    with pytest.raises(DataError, match=f"X has {rows[0]} rows and Y has {rows[1]} rows"):
        ArraySource(np.zeros((rows[0], 20), np.float32), np.zeros((rows[1], 20), np.float32))


@pytest.mark.parametrize("array", ["X", "Y"])
def test_complex_data_is_refused(array, make_xy):
    X, Y = make_xy(m=20)
    arrays = {"X": X, "Y": Y, array: (X if array == "X" else Y).astype(np.complex64)}
    with pytest.raises(DataError, match=f"<arrays>/{array}: dtype complex64"):
        ArraySource(arrays["X"], arrays["Y"])


def test_a_default_chunk_holds_at_least_1024_samples_however_wide_they_are():
    assert default_chunk_size(10**7, 4) == default_chunk_size(2**21, 8) == 1024
    assert default_chunk_size(1, 4) == 2**21  # 8 MiB of one float32 feature


def test_hdf5_contiguous_dataset_never_written(tmp_path):
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("X", shape=(3, 50), dtype="f4")
        f["Y"] = np.ones((1, 50), np.float32)
    open_fails(tmp_path / "d.h5", "/X", "never written")


def test_hdf5_contiguous_dataset_uses_default_chunk_size(hdf5_store, make_xy):
    # n_x * itemsize = 8 KiB per sample makes the default chunk 1024 samples: two slabs.
    X, Y = make_xy(n_x=2048, m=1100)
    assert default_chunk_size(2048, 4) == 1024
    with open_source(hdf5_store(X, Y, None)) as source:
        assert source.chunk_bounds == ((0, 1024), (1024, 1100))
        for a, b in source.chunk_bounds:
            np.testing.assert_array_equal(source.read(a, b)[0], X[:, a:b])
            np.testing.assert_array_equal(source.read(a, b)[1], Y[:, a:b])


@pytest.mark.parametrize(
    "rule, labels, bad_sample, says",
    [
        (ClassIds(3), [[0, 2, 1, 3, 0]], 3, "label 3.0 at sample 3 (chunk 1) is not a class id 0..2"),
        (ClassIds(3), [[0, 1.5, 1, 2, 0]], 1, "label 1.5 at sample 1 (chunk 0) is not a class id 0..2"),
        (ClassIds(3), [[0, 1, -1, 2, 0]], 2, "label -1.0 at sample 2 (chunk 0) is not a class id"),
        (ONE_HOT, [[1, 0, 0, 1, 1], [0, 1, 0, 0, 0]], 2, "at sample 2 (chunk 0) is not one-hot"),
        (ONE_HOT, [[1, 0, 1, 1, 0], [0, 1, 0, 1, 1]], 3, "at sample 3 (chunk 1) is not one-hot"),
        (BINARY, [[0, 1, 1, 0, 7]], 4, "label 7.0 at sample 4 (chunk 1) is outside {0, 1}"),
    ],
)
def test_each_label_rule_names_the_first_bad_sample_and_its_chunk(rule, labels, bad_sample, says):
    Y = np.array(labels, dtype=float)
    source = ArraySource(np.zeros((2, 5)), Y, chunk_size=3)
    with pytest.raises(DataError) as e:
        source.read(0, 5, labels=rule)
    assert says in str(e.value) and str(e.value).startswith("<arrays>/Y: ")
    source.read(0, bad_sample, labels=rule)  # the columns before it pass


def test_the_same_source_is_read_by_two_label_rules_at_once():
    # The rule is an argument of each read, never state of the source.
    source = ArraySource(np.zeros((2, 4)), np.array([[0.0, 2.0, 1.0, 0.0]]), chunk_size=2)
    source.read(0, 4, labels=ClassIds(3))
    with pytest.raises(DataError, match="outside"):
        source.read(0, 4, labels=BINARY)
    source.read(0, 4)
    assert source.label_max() == 2.0


@pytest.mark.parametrize("bad, says", [(np.nan, "NaN"), (np.inf, "+inf")])
def test_label_max_names_a_label_that_is_not_finite(bad, says):
    # It returned nan or inf, which softmax turned into a class count: ValueError, OverflowError.
    source = ArraySource(np.zeros((2, 5)), np.array([[0.0, 2.0, 1.0, bad, 0.0]]), chunk_size=2)
    with pytest.raises(DataError) as e:
        source.label_max()
    assert str(e.value) == f"<arrays>/Y: sample 3 (chunk 1) holds {says} in row 0; clean or drop it"


# -- NaN/inf in given chunks; a store that changes under a run ---------------------------------


def test_find_nonfinite_names_the_first_bad_sample_in_the_chunks_given():
    X, Y = np.ones((3, 3000)), np.zeros((1, 3000))
    X[1, 1234], X[0, 2500], Y[0, 700] = np.nan, -np.inf, np.inf
    source = ArraySource(X, Y, chunk_size=500)
    assert source.find_nonfinite([0, 3, 4]) is None
    assert (
        str(source.find_nonfinite([5, 2, 1]))
        == "<arrays>/Y: sample 700 (chunk 1) holds +inf in row 0; clean or drop it"
    )
    assert str(source.find_nonfinite([2])) == "<arrays>/X: sample 1234 (chunk 2) holds NaN in row 1; clean or drop it"
    assert (
        str(source.find_nonfinite(iter([5])))
        == "<arrays>/X: sample 2500 (chunk 5) holds -inf in row 0; clean or drop it"
    )


def test_an_unchanged_store_keeps_its_stamp(store, make_xy):
    path = store(*make_xy(m=100), 16)
    with open_source(path) as a, open_source(path) as b:
        stamp = a.stamp()
        assert json.loads(json.dumps(stamp)) == stamp == b.stamp()
        for s, e in a.chunk_bounds:
            a.read(s, e)  # reading changes nothing
        a.check_unchanged(stamp)


def test_a_store_replaced_by_make_data_is_noticed(store, make_xy):
    path = store(*make_xy(m=100), 16)
    with open_source(path) as source:
        stamp = source.stamp()
        streamtrain.make_data(path, m=100, n_x=3, chunk=16, overwrite=True)
        with pytest.raises(DataError) as e:
            source.check_unchanged(stamp, since="epoch 3 began")
    assert str(e.value) == (
        f"{path}: the store changed since epoch 3 began (the store was replaced); "
        "stop, and restart or resume once it is complete"
    )


def test_a_rewritten_removed_or_vanished_zarr_array_is_named(zarr_store, make_xy):
    X, Y = make_xy(m=100)  # 7 chunks of 16 and a zarr.json per array
    path = zarr_store(X, Y, 16)
    with open_source(path) as source:
        stamp = source.stamp()
        zarr.open_group(path, mode="r+")["X"][:, :16] = X[:, :16] + 1
        with pytest.raises(DataError, match=r"changed since the stamp was taken \(X: files rewritten\); stop"):
            source.check_unchanged(stamp)
        os.remove(path / "Y" / "c" / "0" / "2")
        with pytest.raises(DataError, match=r"\(X: files rewritten; Y: 8 files, now 7\)"):
            source.check_unchanged(stamp)
        shutil.rmtree(path / "Y")
        with pytest.raises(DataError, match=r"; Y is gone\)"):
            source.check_unchanged(stamp)


def test_a_rewritten_hdf5_file_is_noticed(hdf5_store, make_xy):
    path = hdf5_store(*make_xy(m=100), 16)
    with h5py.File(path, "r") as f:
        offset = f["X"].id.get_chunk_info(0).byte_offset
    with open_source(path) as source:
        stamp = source.stamp()
        with open(path, "r+b") as f:  # another process rewrites a chunk in place
            f.seek(offset)
            f.write(np.ones(4, np.float32).tobytes())
        with pytest.raises(
            DataError, match=r"h5: the store changed since the stamp was taken \(the store was modified\)"
        ):
            source.check_unchanged(stamp)
        with open(path, "ab") as f:
            f.write(b"more")
        with pytest.raises(DataError, match=r"\(the store: size \d+, now \d+\)"):
            source.check_unchanged(stamp)


def test_a_source_in_memory_has_a_constant_stamp():
    X, Y = np.ones((2, 10)), np.zeros((1, 10))
    a, b = ArraySource(X, Y), ArraySource(X + 1, Y)
    assert a.stamp() == b.stamp()
    a.check_unchanged(b.stamp())
    with pytest.raises(DataError, match="not a stamp of a store"):
        a.check_unchanged("nonsense")
