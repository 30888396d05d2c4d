"""The direct read path (sources/_direct.py) against its slow twin, the storage library.

A layout the backends read from the files must give exactly what zarr or h5py give (values,
dtype, shape) chunk by chunk and batch by batch; every other layout is left to the library;
chunk bytes that are damaged or gone are a DataError naming file/array, chunk and samples,
never wrong values.

Conventions: X (N_X, m), Y (1, m); chunks of C samples on the sample axis; m = M (a short last
chunk) unless a case says otherwise. ``direct=False`` opens the same store through the library.
"""

from __future__ import annotations

import os
import pickle
import re
import zlib

import h5py
import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, TransposeCodec, ZstdCodec

import streamtrain
from streamtrain import BatchStream, Cursor, DataError, FullBatch, get_model
from streamtrain.sources import _hdf5, open_source
from streamtrain.sources._direct import decoded_size
from streamtrain.sources._hdf5 import HDF5Source
from streamtrain.sources._zarr import ZarrSource

N_X, M, C, B = 4, 37, 8, 5  # 5 chunks, the last of 5 samples; B divides neither
DIRECT, ZARR, HDF5 = "direct", "zarr library", "hdf5 library"
DTYPES = ["float32", "float64", "uint8", "int16", "bool"]


def make_xy(dtype: str = "float32", m: int = M, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X (N_X, m) and Y (1, m) of ``dtype``, no two neighbours alike (a misplaced byte shows)."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 200, (N_X + 1, m)) + (rng.random((N_X + 1, m)) if dtype.startswith("float") else 0)
    values = values % 2 if dtype == "bool" else values
    return values[:N_X].astype(dtype), values[N_X:].astype(dtype)


# -- writers: one store per layout, X and Y written whole --------------------------------------


def write_zarr(path, X, Y, *, chunk=C, x_chunks=None, y_chunks=None, zarr_format=3, dtype=None, **array):
    """A Zarr group; ``array``: create_array's options for both arrays (codecs, shards, order...)."""
    g = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    for name, A, chunks in (("X", X, x_chunks or (N_X, chunk)), ("Y", Y, y_chunks or (1, chunk))):
        arr = g.create_array(
            name,
            shape=A.shape,
            dtype=dtype or A.dtype,
            chunks=chunks,
            fill_value=0,
            config={"write_empty_chunks": True},
            **array,
        )
        arr[...] = A
    return str(path)


def write_hdf5(path, X, Y, *, chunk=C, x_chunks=None, y_chunks=None, dtype=None, **dataset):
    """An HDF5 file; ``chunk=None``: contiguous datasets; ``dataset``: create_dataset's filters."""
    with h5py.File(path, "w") as f:
        for name, A, chunks in (("X", X, x_chunks or (N_X, chunk)), ("Y", Y, y_chunks or (1, chunk))):
            f.create_dataset(name, data=A.astype(dtype or A.dtype), chunks=chunks if chunk else None, **dataset)
    return str(path)


def write_compact_hdf5(path, X, Y, **_):
    """An HDF5 file whose datasets are compact: their bytes live in the object header, at no offset."""
    with h5py.File(path, "w") as f:
        for name, A in (("X", X), ("Y", Y)):
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_layout(h5py.h5d.COMPACT)
            space = h5py.h5s.create_simple(A.shape)
            h5py.Dataset(h5py.h5d.create(f.id, name.encode(), h5py.h5t.py_create(A.dtype), space, dcpl=dcpl))[...] = A
    return str(path)


# (writer options, the read path expected) by layout. Fallbacks must still read the same.
ZARR_LAYOUTS = {
    "v3 raw": ({"compressors": None}, DIRECT),
    "v3 zstd": ({"compressors": ZstdCodec(level=1)}, DIRECT),
    "v3 zstd checksum": ({"compressors": ZstdCodec(checksum=True)}, DIRECT),
    "v3 blosc": ({"compressors": BloscCodec(cname="lz4", shuffle="shuffle")}, DIRECT),
    "v3 gzip": ({"compressors": GzipCodec()}, DIRECT),
    "v3 v2 keys": ({"compressors": None, "chunk_key_encoding": {"name": "v2", "separator": "."}}, DIRECT),
    "v2 raw": ({"zarr_format": 2, "compressors": None}, DIRECT),
    "v2 zstd": ({"zarr_format": 2, "compressors": numcodecs.Zstd()}, DIRECT),
    "v2 blosc": ({"zarr_format": 2, "compressors": numcodecs.Blosc(shuffle=numcodecs.Blosc.BITSHUFFLE)}, DIRECT),
    "v2 zlib": ({"zarr_format": 2, "compressors": numcodecs.Zlib()}, DIRECT),
    "v2 gzip": ({"zarr_format": 2, "compressors": numcodecs.GZip()}, DIRECT),
    "v2 nested keys": ({"zarr_format": 2, "chunk_key_encoding": {"name": "v2", "separator": "/"}}, DIRECT),
    "v3 sharded": ({"compressors": None, "chunk": C // 2, "shards": (N_X, C)}, ZARR),  # 2 chunks a shard
    "v3 rows split": ({"compressors": None, "x_chunks": (N_X // 2, C)}, ZARR),
    "v3 Y chunks differ": ({"compressors": None, "y_chunks": (1, C // 2)}, ZARR),
    "v3 big-endian": ({"compressors": None, "serializer": BytesCodec(endian="big")}, ZARR),
    "v3 transpose": ({"compressors": None, "filters": [TransposeCodec(order=(1, 0))]}, ZARR),
    "v3 zstd crc32c": ({"compressors": [ZstdCodec(), Crc32cCodec()]}, ZARR),
    "v2 order F": ({"zarr_format": 2, "compressors": None, "order": "F"}, ZARR),
    "v2 big-endian": ({"zarr_format": 2, "compressors": None, "dtype": ">f4"}, ZARR),
    "v2 shuffle filter": ({"zarr_format": 2, "compressors": None, "filters": [numcodecs.Shuffle(elementsize=4)]}, ZARR),
    "v2 lz4": ({"zarr_format": 2, "compressors": numcodecs.LZ4()}, ZARR),
}
HDF5_LAYOUTS = {
    "chunked raw": ({}, DIRECT),
    "gzip": ({"compression": "gzip"}, DIRECT),
    "contiguous": ({"chunk": None}, DIRECT),  # read row by row, in slabs (see slabs_of)
    "shuffle": ({"compression": "gzip", "shuffle": True}, HDF5),
    "fletcher32": ({"fletcher32": True}, HDF5),
    "lzf": ({"compression": "lzf"}, HDF5),
    "big-endian": ({"dtype": ">f4"}, HDF5),
    "Y chunks differ": ({"y_chunks": (1, C // 2)}, HDF5),
    "rows split": ({"x_chunks": (N_X // 2, C)}, HDF5),
    "compact": ({"writer": write_compact_hdf5}, HDF5),  # the bytes have no offset to read at
}
# The layouts every numeric dtype is read in (raw bytes, Blosc's shuffle by item size, HDF5's
# chunks and rows), and the ones a one-sample chunk is read in.
DTYPE_LAYOUTS = {"zarr": ["v3 raw", "v2 blosc"], "hdf5": ["chunked raw", "contiguous"]}
ONE_SAMPLE_LAYOUTS = {"zarr": ["v3 raw", "v2 zlib"], "hdf5": ["gzip", "contiguous"]}


def layout_cases():
    """(format, layout, dtype, m, chunk): every layout in float32, then the dtype and one-sample cases."""
    for fmt, layouts in (("zarr", ZARR_LAYOUTS), ("hdf5", HDF5_LAYOUTS)):
        for name in layouts:
            yield pytest.param(fmt, name, "float32", M, C, id=f"{fmt} {name}")
        for name in DTYPE_LAYOUTS[fmt]:
            for dtype in DTYPES[1:]:
                yield pytest.param(fmt, name, dtype, M, C, id=f"{fmt} {name} {dtype}")
        for name in ONE_SAMPLE_LAYOUTS[fmt]:
            yield pytest.param(fmt, name, "float64", 7, 1, id=f"{fmt} {name} one-sample chunks")


def slabs_of(monkeypatch, chunk: int) -> None:
    """Contiguous HDF5 datasets read in slabs of ``chunk`` samples (not the default 8 MiB ones)."""
    monkeypatch.setattr(_hdf5, "default_chunk_size", lambda n_x, itemsize: chunk)


@pytest.fixture
def open_twins():
    """``open_twins(fmt, path, **kw) -> (direct source, library source)``, closed afterwards."""
    opened = []

    def open_(fmt, path, **kw):
        cls = {"zarr": ZarrSource, "hdf5": HDF5Source}[fmt]
        opened.extend((cls(path, direct=True, **kw), cls(path, direct=False, **kw)))
        return opened[-2], opened[-1]

    yield open_
    for source in opened:
        source.close()


def write(tmp_path, fmt, layout, X, Y, chunk=C):
    """The store of ``layout`` holding X, Y, and the read path it should be read by."""
    options, read_path = {"zarr": ZARR_LAYOUTS, "hdf5": HDF5_LAYOUTS}[fmt][layout]
    options = {"chunk": chunk, **options}
    writer = options.pop("writer", write_zarr if fmt == "zarr" else write_hdf5)
    suffix = {"zarr": ".zarr", "hdf5": ".h5"}[fmt]
    return writer(tmp_path / f"{layout.replace(' ', '-')}{suffix}", X, Y, **options), read_path


def assert_identical(got: np.ndarray, want: np.ndarray) -> None:
    assert (got.dtype, got.shape) == (want.dtype, want.shape)
    assert got.tobytes() == want.tobytes()  # bit for bit: -0.0 and NaN payloads too


def epoch(source, shuffle: str) -> list:
    """One epoch of batches of B in float64 (every stored value exactly), read in the caller's
    thread (the prefetch threads are tested in test_batches.py), in units of 2 chunks."""
    budget = 2 * (N_X + 1) * C * 8 * 3  # see batches.chunks_per_unit
    return list(BatchStream(source, B, Cursor(3, 1), shuffle=shuffle, dtype="float64", prefetch=0, buffer_bytes=budget))


# -- 1. every layout: the path chosen, and the same arrays as the library's -------------------


@pytest.mark.parametrize("fmt, layout, dtype, m, chunk", list(layout_cases()))
def test_each_layout_reads_what_the_library_reads(tmp_path, open_twins, monkeypatch, fmt, layout, dtype, m, chunk):
    slabs_of(monkeypatch, chunk)
    X, Y = make_xy(dtype, m)
    path, read_path = write(tmp_path, fmt, layout, X, Y, chunk)
    fast, slow = open_twins(fmt, path)
    assert (fast.read_path, slow.read_path) == (read_path, {"zarr": ZARR, "hdf5": HDF5}[fmt])
    for a, b in fast.chunk_bounds:
        (Xf, Yf), (Xs, Ys) = fast.read(a, b), slow.read(a, b)
        assert_identical(Xf, Xs)
        assert_identical(Yf, Ys)
        np.testing.assert_array_equal(Xs, X[:, a:b])  # and the library reads what was written
        if fast.chunk_items is not None:  # read into a given buffer: the same values
            assert_identical(fast.read(a, b, into=np.empty(fast.chunk_items, fast.dtype))[0], Xs)
    for shuffle in ("none", "buffer"):
        batches = zip(epoch(fast, shuffle), epoch(slow, shuffle), strict=True)
        for got, want in batches:
            assert got.cursor == want.cursor
            assert_identical(got.X, want.X)
            assert_identical(got.Y, want.Y)


def test_zarr_v2_without_a_fill_value_reads_unwritten_labels_as_zarr_does(tmp_path, open_twins):
    """A v2 array may have fill_value null; zarr reads its unwritten chunks as the dtype's zero.
    The direct path took the null for "no fill value" and refused them."""
    X, Y = make_xy()
    g = zarr.open_group(tmp_path / "v2.zarr", mode="w", zarr_format=2)
    g.create_array("X", data=X, chunks=(N_X, C), compressors=None, fill_value=None)
    g.create_array("Y", shape=Y.shape, dtype=Y.dtype, chunks=(1, C), compressors=None, fill_value=None)
    g["Y"][:, :C] = Y[:, :C]  # chunks 1.. never written
    with pytest.warns(streamtrain.DataWarning, match="never written"):
        fast, slow = open_twins("zarr", tmp_path / "v2.zarr")
    assert fast.read_path == DIRECT
    for a, b in fast.chunk_bounds:
        assert_identical(fast.read(a, b)[1], slow.read(a, b)[1])
    assert not fast.read(C, 2 * C)[1].any()


# -- 2. damaged or vanished chunk bytes: a DataError naming them, never wrong values ------------


def chunk_file(path, array: str, c: int, fmt: int = 3) -> str:
    """The file of chunk ``c`` of a Zarr array (one chunk across the rows)."""
    return os.path.join(path, array, "c", "0", str(c)) if fmt == 3 else os.path.join(path, array, f"0.{c}")


def cannot_be_read(source, c: int, *why: str) -> None:
    """Reading chunk ``c`` of ``source`` raises a DataError naming X, the chunk, its samples and ``why``;
    so does reading it into a given buffer, and reading its rows (the path of units of raw chunks,
    straight or staged), with the same message."""
    a, b = source.chunk_bounds[c]
    with pytest.raises(DataError) as e:
        source.read(a, b)
    for part in (f"{source.name}/X: chunk {c} (samples {a}..{b}) cannot be read", *why):
        assert part in str(e.value)
    if source.chunk_items is not None:
        with pytest.raises(DataError) as into:
            source.read(a, b, into=np.empty(source.chunk_items, source.dtype))
        assert str(into.value) == str(e.value)
    if source.raw_x:
        for arrange in (None, lambda block, out: np.copyto(out, block)):
            with pytest.raises(DataError) as by_rows:
                source.read_x_rows([c], np.empty((source.n_x, b - a), source.dtype), arrange)
            assert str(by_rows.value) == str(e.value)


def rewrite(path: str, data: bytes, *, append: bool = False, at: int | None = None) -> None:
    with open(path, "ab" if append else "r+b" if at is not None else "wb") as f:
        f.seek(at or 0)
        f.write(data)


@pytest.mark.parametrize("layout, used", [("v3 raw", True), ("v3 zstd", True), ("v2 blosc", True), ("v3 gzip", False)])
def test_a_chunk_is_read_into_a_given_buffer_when_its_size_is_known_up_front(tmp_path, open_twins, layout, used):
    """Reader threads decode into recycled buffers; gzip streams do not say their size first."""
    X, Y = make_xy()
    path, _ = write(tmp_path, "zarr", layout, X, Y)
    fast, _ = open_twins("zarr", path)
    for a, b in fast.chunk_bounds:
        into = np.empty(fast.chunk_items, fast.dtype)
        got = fast.read(a, b, into=into)[0]
        assert np.shares_memory(got, into) == used
        assert_identical(got, X[:, a:b])


@pytest.mark.parametrize(
    "codec", [numcodecs.Zstd(), numcodecs.Zstd(level=1, checksum=True), numcodecs.Blosc(), numcodecs.GZip()]
)
@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 65_791, 70_000, 10**6])
def test_decoded_size_is_what_the_bytes_decode_to(codec, n):
    """Sizes around the Zstd header's 1-, 2- and 4-byte fields (2 bytes store size - 256)."""
    data = bytes(codec.encode(np.random.default_rng(n).integers(0, 4, n).astype("u1")))
    assert decoded_size(codec, data) == (None if codec.codec_id == "gzip" else n)


def zstd_frame_claiming(size: int, A: np.ndarray) -> bytes:
    """A Zstd frame of A whose header says it decodes to ``size`` bytes (a chunk decoded into a
    buffer of its shape is taken on that word: the codec must still find the lie)."""
    frame = bytes(numcodecs.Zstd().encode(A))
    assert frame[4] == 0x20 and frame[5] == A.nbytes < 256  # single segment: a 1-byte content size
    return frame[:5] + bytes([size]) + frame[6:]


ZARR_DAMAGE = {  # layout -> (what is done to chunk 2 of X's file, what the message says)
    "truncated": ("v3 raw", lambda f: os.truncate(f, 48), "48 bytes, not the 128 of its shape"),
    "extra bytes": ("v3 raw", lambda f: rewrite(f, b"!", append=True), "more than the 128 bytes"),
    "random bytes": ("v3 zstd", lambda f: rewrite(f, np.random.default_rng(0).bytes(64)), "Zstd"),
    "zstd frame of a shorter array": (
        "v2 zstd",
        lambda f: rewrite(f, numcodecs.Zstd().encode(np.ones((N_X, C - 1), "f4"))),
        "112 bytes, not the 128",
    ),
    "zstd frame that claims the chunk's size": (
        "v2 zstd",
        lambda f: rewrite(f, zstd_frame_claiming(N_X * C * 4, np.ones((N_X, C - 1), "f4"))),
        "Data corruption detected",
    ),
    "gzip stream of a shorter array": (
        "v3 gzip",
        lambda f: rewrite(f, numcodecs.GZip().encode(np.ones((N_X, 2), "f4"))),
        "32 bytes, not the 128",
    ),
}


@pytest.mark.parametrize("damage", ZARR_DAMAGE)
def test_a_damaged_zarr_chunk_is_an_error_naming_it(tmp_path, open_twins, damage):
    """The library path raises too (zarr cannot reshape the bytes), with its own cause."""
    layout, spoil, says = ZARR_DAMAGE[damage]
    path, _ = write(tmp_path, "zarr", layout, *make_xy())
    fast, slow = open_twins("zarr", path)
    spoil(chunk_file(path, "X", 2, fmt=2 if layout.startswith("v2") else 3))
    cannot_be_read(fast, 2, "truncated or corrupt", says)
    cannot_be_read(slow, 2)
    for c in (0, 1, 3, 4):  # the others still read
        fast.read(*fast.chunk_bounds[c])


def chunk_offset(path: str, c: int) -> tuple[int, int]:
    """Where chunk ``c`` of an HDF5 file's X lies: (byte offset, size)."""
    with h5py.File(path, "r") as f:
        info = f["X"].id.get_chunk_info(c)
        return info.byte_offset, info.size


def test_an_hdf5_chunk_past_the_end_of_a_truncated_file_is_an_error(tmp_path, open_twins):
    """The file was cut after the source was opened (HDF5 refuses to open a truncated file).
    h5py reads the missing bytes as zeros, silently; the direct path refuses them."""
    X, Y = make_xy()
    path, _ = write(tmp_path, "hdf5", "chunked raw", X, Y)
    offset, _ = chunk_offset(path, 2)
    fast, slow = open_twins("hdf5", path)
    os.truncate(path, offset + 8)
    cannot_be_read(fast, 2, "truncated or corrupt (8 bytes, not the 128 of its shape)")
    assert not slow.read(*slow.chunk_bounds[2])[0][:, 2:].any()  # the library: zeros


def test_an_hdf5_chunk_that_inflates_short_is_an_error(tmp_path, open_twins):
    """h5py reads such a chunk without complaint (the values it returns are not the data)."""
    X, Y = make_xy()
    path, _ = write(tmp_path, "hdf5", "gzip", X, Y)
    offset, size = chunk_offset(path, 1)
    short = zlib.compress(np.ones((N_X, 2), "f4").tobytes())
    assert len(short) <= size
    fast, slow = open_twins("hdf5", path)
    rewrite(path, short, at=offset)
    cannot_be_read(fast, 1, "32 bytes, not the 128 of its shape")
    slow.read(*slow.chunk_bounds[1])  # no error


def test_a_contiguous_hdf5_dataset_in_a_truncated_file_is_an_error(tmp_path, open_twins, monkeypatch):
    """Rows are read one by one; the first that ends early names the slab. h5py reads zeros."""
    slabs_of(monkeypatch, C)
    X, Y = make_xy()
    path = str(tmp_path / "contiguous.h5")
    with h5py.File(path, "w") as f:  # Y first: X's bytes end the file
        f["Y"], f["X"] = Y, X
        x_end = f["X"].id.get_offset() + X.nbytes
    fast, slow = open_twins("hdf5", path)
    assert fast.read_path == DIRECT
    os.truncate(path, x_end - 4 * 10)  # the last 10 samples of X's last row
    for c in (0, 1, 2):
        assert_identical(fast.read(*fast.chunk_bounds[c])[0], X[:, c * C : (c + 1) * C])
    cannot_be_read(fast, 3, "row 3 ends early")
    cannot_be_read(fast, 4, "row 3 ends early")
    assert not slow.read(*slow.chunk_bounds[4])[0][3].any()


@pytest.mark.parametrize("fmt", [2, 3])
def test_a_chunk_file_deleted_after_opening(tmp_path, open_twins, fmt):
    """An X chunk is an error naming it; a Y chunk reads as the fill value (as an unwritten Y
    chunk does), unless missing_chunks="error". The library path reads both as the fill value
    whatever the policy (zarr cannot tell a deleted chunk from an unwritten one): the direct
    path is the stricter."""
    X, Y = make_xy()
    layout = "v3 raw" if fmt == 3 else "v2 raw"
    path, _ = write(tmp_path, "zarr", layout, X, Y)
    fast, slow = open_twins("zarr", path)
    strict, strict_slow = open_twins("zarr", path, missing_chunks="error")
    for array in ("X", "Y"):
        os.remove(chunk_file(path, array, 2, fmt))
    a, b = fast.chunk_bounds[2]
    missing = f"{path}/X: chunk 2 (samples {a}..{b}) is missing; it would read as fill values, not data"
    for source in (fast, strict):
        with pytest.raises(DataError, match=re.escape(missing)):
            source.read(a, b)
    for library in (slow, strict_slow):  # zeros for both arrays
        assert not any(A.any() for A in library.read(a, b))
    # Y's chunk alone (the source's read stops at X's).
    assert_identical(fast.direct[1].read(2), np.zeros((1, b - a), Y.dtype))
    with pytest.raises(DataError, match=re.escape(f"{path}/Y: chunk 2 (samples {a}..{b}) is missing")):
        strict.direct[1].read(2)


@pytest.mark.parametrize("policy", ["fill", "error"])
def test_the_rows_path_reads_a_unit_as_read_does_and_a_missing_chunk_by_the_policy(tmp_path, open_twins, policy):
    """Buffer shuffle reads a unit of raw chunks row by row: the same values as ``read`` side by side,
    the fill value for a chunk gone when the policy says so, and read's error when it does not."""
    X, Y = make_xy()
    path, _ = write(tmp_path, "zarr", "v3 raw", X, Y)
    fast, _ = open_twins("zarr", path, missing_chunks=policy)
    os.remove(chunk_file(path, "X", 1))
    unit = [3, 1, 4]  # the last chunk is short
    width = sum(b - a for a, b in (fast.chunk_bounds[c] for c in unit))
    out, rows_seen = np.empty((N_X, width), X.dtype), []

    def arrange(stage, row):
        rows_seen.append(stage.copy())
        np.copyto(row, stage[:, ::-1])  # any rearrangement the caller asks for

    if policy == "error":
        with pytest.raises(DataError, match=re.escape(f"{path}/X: chunk 1 (samples 8..16) is missing")):
            fast.read_x_rows(unit, out, arrange)
        return
    fast.read_x_rows(unit, out, arrange)
    side_by_side = np.hstack([X[:, 24:32], np.zeros((N_X, 8), X.dtype), X[:, 32:]])
    assert_identical(np.vstack(rows_seen), side_by_side)
    assert_identical(out, side_by_side[:, ::-1])
    assert_identical(fast.read_x_rows(unit, np.empty_like(out)), side_by_side)  # straight into out


@pytest.mark.parametrize("layout", ["chunked raw", "contiguous"])
def test_an_hdf5_file_gone_after_opening_is_an_error_not_missing_chunks(tmp_path, open_twins, monkeypatch, layout):
    """Its chunks were written: the file that held them is gone. Labels must not become the fill
    value (as a Zarr chunk file that is gone does), nor X be called a chunk never written. h5py
    still reads the file through the handle it holds open: the direct path is the stricter."""
    slabs_of(monkeypatch, C)
    X, Y = make_xy()
    path, _ = write(tmp_path, "hdf5", layout, X, Y)
    fast, slow = open_twins("hdf5", path, missing_chunks="fill")
    os.rename(path, tmp_path / "moved.h5")
    a, b = fast.chunk_bounds[1]
    for array in fast.direct:
        with pytest.raises(
            DataError, match=re.escape(f"{array.where}: chunk 1 (samples {a}..{b}) cannot be read: the file is gone")
        ):
            array.read(1)
    assert_identical(slow.read(a, b)[1], Y[:, a:b])


# -- 3. the exact path and fit() give the same results on either read path ---------------------

LOGISTIC = get_model("logistic")


@pytest.mark.parametrize("fmt, layout", [("zarr", "v3 zstd"), ("hdf5", "chunked raw")])
def test_exact_passes_and_fit_are_the_same_on_either_path(tmp_path, open_twins, fmt, layout):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((N_X, M)).astype("float32")
    Y = (rng.random((1, M)) < 0.5).astype("float32")
    fast, slow = open_twins(fmt, write(tmp_path, fmt, layout, X, Y)[0])
    assert (fast.read_path, slow.read_path) == (DIRECT, f"{fmt} library")
    params = {"W1": rng.standard_normal((1, N_X)), "b1": np.array([[0.3]])}
    for scheduler in ("sync", "threads"):
        with FullBatch(fast, LOGISTIC, scheduler=scheduler) as a, FullBatch(slow, LOGISTIC, scheduler=scheduler) as b:
            (loss_a, grad_a), (loss_b, grad_b) = a.loss_and_grad(params, l2=0.1), b.loss_and_grad(params, l2=0.1)
        assert loss_a == loss_b
        for k in grad_b:
            assert_identical(grad_a[k], grad_b[k])
    options = {"epochs": 2, "batch_size": B, "shuffle": "buffer", "seed": 4, "eval_exact_every": 1}
    fitted = [streamtrain.fit(source, **options) for source in (fast, slow)]
    for k in fitted[1].params:
        assert_identical(fitted[0].params[k], fitted[1].params[k])
    assert [(r.loss, r.exact_loss) for r in fitted[0].history] == [(r.loss, r.exact_loss) for r in fitted[1].history]


# -- 4. will_read is a hint: it never raises ----------------------------------------------------


def test_will_read_never_raises(tmp_path, open_twins, hdf5_store, monkeypatch):
    """Nor for a chunk file gone, a chunk never written, or a source read through its library."""
    X, Y = make_xy()
    zarr_path, _ = write(tmp_path, "zarr", "v3 zstd", X, Y)
    zarr_fast, zarr_slow = open_twins("zarr", zarr_path)
    os.remove(chunk_file(zarr_path, "X", 1))
    with pytest.warns(streamtrain.DataWarning, match="never written"):
        hdf5_fast, hdf5_slow = open_twins("hdf5", hdf5_store(X, Y, C, skip={"Y": {1, 2}}))
    sources = (zarr_fast, zarr_slow, hdf5_fast, hdf5_slow)
    assert [s.read_path for s in sources] == [DIRECT, ZARR, DIRECT, HDF5]
    for source in sources:
        for c in range(source.n_chunks):
            source.will_read(c)
    monkeypatch.delattr(os, "posix_fadvise", raising=False)  # a system without it
    zarr_fast.will_read(0)


# -- 5. direct arrays travel to Dask workers ---------------------------------------------------


@pytest.mark.parametrize(
    "fmt, layout", [("zarr", "v3 raw"), ("zarr", "v2 blosc"), ("hdf5", "gzip"), ("hdf5", "contiguous")]
)
def test_a_direct_array_pickles_and_reads_the_same_elsewhere(tmp_path, open_twins, monkeypatch, fmt, layout):
    """Unpickled in a process that runs in another directory (a Dask worker), from a store
    opened by a relative path."""
    slabs_of(monkeypatch, C)
    X, Y = make_xy()
    monkeypatch.chdir(tmp_path)
    path, _ = write(tmp_path, fmt, layout, X, Y)
    fast, _ = open_twins(fmt, os.path.relpath(path))
    assert fast.direct is not None
    copies = pickle.loads(pickle.dumps(fast.direct))
    monkeypatch.chdir(tmp_path.parent)
    for c, (a, b) in enumerate(fast.chunk_bounds):
        for copy, original, A in zip(copies, fast.direct, (X, Y), strict=True):
            assert_identical(copy.read(c), A[:, a:b])
            assert_identical(original.read(c), A[:, a:b])


def test_open_source_can_be_told_to_read_through_the_library(tmp_path):
    path = tmp_path / "d.zarr"
    streamtrain.make_data(path, m=100, n_x=3, chunk=32, seed=0)
    assert open_source(path).read_path == "direct"
    assert open_source(path, direct=False).read_path == "zarr library"
    assert streamtrain.ArraySource(np.ones((2, 5)), np.ones((1, 5))).read_path == "in memory"
