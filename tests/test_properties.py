"""Property tests: malformed shapes, dtypes, labels, model files and option values, fed at random.

Whatever the input, the outcome is the documented one: success, or ``DataError`` / ``ConfigError``
(a one-line error and exit 1 on the command line), or ``DivergedError`` (exit 3) where a run may
truly diverge. Never another exception type, never a traceback.

Every example writes its files into its own ``tempfile`` directory: pytest's ``tmp_path`` is made
once per test, not once per example.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import os
import re
import shutil
import struct
import tempfile
import warnings
import zipfile
from contextlib import contextmanager, redirect_stderr, redirect_stdout, suppress
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import streamtrain
from streamtrain import ArraySource, CheckpointConfig, ConfigError, DataError, DivergedError, FitConfig
from streamtrain.binding import labels_seen
from streamtrain.checkpoint import load_model
from streamtrain.cli import main
from streamtrain.labels import BINARY
from streamtrain.parameters import check_values


def examples(n: int) -> settings:
    """``n`` examples (times $STREAMTRAIN_EXAMPLES_SCALE, for a longer hunt than CI's), without
    deadlines: an example's time depends on the machine's load."""
    return settings(
        max_examples=n * int(os.environ.get("STREAMTRAIN_EXAMPLES_SCALE", "1")),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@contextmanager
def scratch():
    """A fresh directory for one example."""
    folder = tempfile.mkdtemp(prefix="st-prop-")
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def one_line_error(err: str) -> None:
    """stderr holds exactly one line, streamtrain's error line: no traceback, no warning noise."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamtrain: error: "), err
    assert "Traceback" not in err, err


def run_cli(*argv: str) -> tuple[int, str]:
    """The exit code of ``streamtrain ARGV`` (argparse's usage errors too) and what it wrote to stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # printed as Python warnings only under pytest's own capture
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse: usage errors (2)
            code = e.code if isinstance(e.code, int) else 1
    return code, err.getvalue()


def json_values(max_leaves: int = 8) -> st.SearchStrategy:
    """Any JSON value: null, bools, numbers (NaN and ±inf too, which Python's json reads), strings, lists, dicts."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.text(max_size=6),
        st.sampled_from(["logistic", "softmax", "linear", "mlp", "sigmoid", "relu", "sgd", "adam", "full"]),
    )
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=max_leaves,
    )


# -- 1. Sources: any shape and dtype, written to any backend ------------------------------------------------

NUMERIC = ("int8", "uint8", "int32", "int64", "uint64", "float16", "float32", "float64", "bool", "complex64")
BACKEND_DTYPES = {
    "memory": (*NUMERIC, "U3", "S3", "O"),
    "zarr": (*NUMERIC, "U3", "S3"),
    "hdf5": (*NUMERIC, "S3", "O"),
}


def shapes(m: int | None = None) -> st.SearchStrategy[tuple[int, ...]]:
    """Mostly 2-D (rows, samples) shapes, sometimes 0-, 1- or 3-D; ``m`` fixes the sample axis of 2-D ones."""
    dim = st.integers(0, 4)
    two_d = st.tuples(dim, st.just(m) if m is not None else dim)
    return st.one_of(two_d, two_d, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))


@st.composite
def arrays(draw: st.DrawFn, dtypes: tuple[str, ...], m: int | None = None) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = draw(shapes(m))
    if dtype.kind == "O":  # strings, numbers and None, as Python objects
        items = st.one_of(st.text(max_size=3).filter(lambda t: "\0" not in t), st.integers(-5, 5), st.none())
        values = draw(st.lists(items, min_size=math.prod(shape), max_size=math.prod(shape)))
        out = np.empty(math.prod(shape), dtype=object)
        out[:] = values
        return out.reshape(shape)
    return draw(hnp.arrays(dtype, shape))


@st.composite
def stores(draw: st.DrawFn) -> tuple[str, np.ndarray, np.ndarray, int, bool]:
    """(backend, X, Y, chunk size, compressed): Y often with X's sample count."""
    backend = draw(st.sampled_from(tuple(BACKEND_DTYPES)))
    X = draw(arrays(BACKEND_DTYPES[backend]))
    same_m = X.shape[-1] if X.ndim == 2 and draw(st.booleans()) else None
    Y = draw(arrays(BACKEND_DTYPES[backend], same_m))
    return backend, X, Y, draw(st.integers(1, 5)), draw(st.booleans())


def write_store(folder: Path, backend: str, X: np.ndarray, Y: np.ndarray, chunk: int, compressed: bool):
    """The arrays as a source: in memory, or a zarr v3 group or HDF5 file chunked by ``chunk`` samples."""
    if backend == "memory":
        return ArraySource(X, Y, chunk_size=chunk)
    path = folder / ("d.zarr" if backend == "zarr" else "d.h5")
    if backend == "zarr":
        g = zarr.open_group(path, mode="w")
        for name, data in (("X", X), ("Y", Y)):
            chunks = tuple(max(1, min(chunk, n)) for n in data.shape)
            codec = "auto" if compressed else None
            arr = g.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype, compressors=codec)
            if data.size:
                arr[...] = data
    else:
        with h5py.File(path, "w") as f:
            for name, data in (("X", X), ("Y", Y)):
                # HDF5 chunks no dataset with an empty axis, nor a scalar.
                chunked = data.ndim and data.size
                chunks = tuple(max(1, min(chunk, n)) for n in data.shape) if chunked else None
                gzip = "gzip" if compressed and chunked else None
                dtype = h5py.string_dtype() if data.dtype.kind == "O" else data.dtype
                ds = f.create_dataset(name, shape=data.shape, dtype=dtype, chunks=chunks, compression=gzip)
                if data.size:
                    ds[...] = data.astype(str) if data.dtype.kind == "O" else data
    return streamtrain.open_source(path)


def read_everything(source) -> None:
    """Every chunk, as stored and under the binary label rule; and the checks that read chunks."""
    for a, b in source.chunk_bounds:
        X, Y = source.read(a, b)
        assert X.shape == (source.n_x, b - a) and Y.shape == (source.k, b - a)
        with suppress(DataError):
            source.read(a, b, labels=BINARY)
    assert isinstance(source.find_nonfinite(range(source.n_chunks)), (DataError, type(None)))
    source.fingerprint()
    source.stamp()


@examples(60)
@given(stores())
def test_any_store_opens_and_reads_or_raises_data_error(store):
    backend, X, Y, chunk, compressed = store
    with scratch() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            source = write_store(folder, backend, X, Y, chunk, compressed)
        except DataError:
            return
        with source:
            read_everything(source)


# -- 1b. Zarr array metadata that says anything -----------------------------------------------------------------

ZARR_FIELD_VALUES = {
    "shape": st.sampled_from([[2, 6], [6, 2], [2, 10**12], [2], [], [2, -1], [2, 6.5], "26", None, [2, 6, 1]]),
    "data_type": st.sampled_from(["float32", "int8", "bool", "complex64", "float99", "", 3, None, "string"]),
    "chunk_grid": st.sampled_from(
        [{"name": "regular", "configuration": {"chunk_shape": c}} for c in ([2, 1], [1, 4], [2, 0], [2], [], [2, -4])]
        + [{"name": "irregular"}, {}, None, "regular"]
    ),
    "fill_value": st.sampled_from([0, 1.5, "NaN", "Infinity", None, "x", [1], True, 10**30]),
    "codecs": st.sampled_from(
        [[], [{"name": "bytes"}], [{"name": "gzip", "configuration": {"level": 1}}], [{"name": "nope"}], None, "bytes"]
    ),
    "chunk_key_encoding": st.sampled_from(
        [{"name": "v2"}, {"name": "default", "configuration": {"separator": "."}}, {}]
    ),
    "zarr_format": st.sampled_from([2, 4, "3", None]),
    "node_type": st.sampled_from(["group", "array ", None]),
}


@examples(40)
@given(
    st.sampled_from(["X", "Y"]),
    st.lists(st.sampled_from(sorted(ZARR_FIELD_VALUES)), min_size=1, max_size=2, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: ZARR_FIELD_VALUES[k] for k in keys})
    ),
    st.booleans(),
)
def test_any_zarr_array_metadata_opens_and_reads_or_raises_data_error(array, changes, drop):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 6)).astype(np.float32)
    with scratch() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_store(folder, "zarr", X, (X[:1] > 0).astype(np.float32), 4, True).close()
        metadata_file = folder / "d.zarr" / array / "zarr.json"
        metadata = json.loads(metadata_file.read_text())
        for key, value in changes.items():
            if drop:
                metadata.pop(key, None)
            else:
                metadata[key] = value
        metadata_file.write_text(json.dumps(metadata))
        with suppress(DataError), streamtrain.open_source(folder / "d.zarr") as source:
            read_everything(source)  # a chunk that no longer fits the metadata is a DataError too


# -- 1c. Store attributes: what make-data records, said by anyone ---------------------------------------------

ATTRIBUTE_VALUES = st.one_of(
    st.sampled_from(["softmax", "logistic", "linear", 2, 3, 255, 10**9, 10**30, 0, -1, 2.5, True, None, "3", [3]]),
    st.floats(),
    st.text(max_size=4),
)


@st.composite
def store_attributes(draw: st.DrawFn) -> object:
    """The ``streamtrain`` attribute of a store: make-data's keys with any values, or any JSON at all."""
    keys = st.sampled_from(["task", "classes", "bayes_loss", "m", "n_x", "outputs", "w_true"])
    attrs = draw(st.dictionaries(keys, ATTRIBUTE_VALUES, max_size=3))
    return draw(st.one_of(st.just(attrs), json_values(4)))


@examples(30)
@given(store_attributes(), st.sampled_from(["zarr", "hdf5"]), st.sampled_from(["logistic", "softmax", "mlp"]))
def test_any_store_attributes_train_or_exit_1_without_a_traceback(attrs, backend, model):
    X = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    Y = (np.arange(8) % 3 if model == "softmax" else np.arange(8) % 2).reshape(1, 8).astype(np.uint8)
    with scratch() as folder:
        path = folder / ("d.zarr" if backend == "zarr" else "d.h5")
        write_store(folder, backend, X, Y, 4, False).close()
        if backend == "zarr":
            zarr.open_group(path, mode="r+").attrs["streamtrain"] = attrs
        else:
            with h5py.File(path, "r+") as f:
                f.attrs["streamtrain"] = json.dumps(attrs)
        code, err = run_cli(
            "fit", str(path), f"--model={model}", "--epochs=1", "--batch-size=4", "--out", str(folder / "m.npz")
        )
    assert code in (0, 1, 3), (code, err)  # 3: diverged (an mlp told its task is linear, on 8 samples)
    if code:
        one_line_error(err)


# -- 1d. Labels a model cannot learn from -----------------------------------------------------------------

LABEL_VALUES = st.one_of(
    st.sampled_from([0.0, 1.0, 2.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 1e30, -0.0, 255.0]),
    st.floats(-1e6, 1e6),
    st.integers(-3, 5).map(float),
)
LABEL_DTYPES = ("float16", "float32", "float64", "int8", "uint8", "int64", "bool")
# (model options, rows of Y): softmax's one row holds class ids, several rows are one-hot.
MODELS = (
    ({"model": "logistic"}, 1),
    ({"model": "softmax"}, 1),
    ({"model": "softmax"}, 3),
    ({"model": "linear"}, 1),
    ({"model": "linear"}, 2),
    ({"model": "mlp", "hidden": (2,)}, 1),
    ({"model": "mlp", "hidden": (2,), "output": "softmax"}, 1),
    ({"model": "mlp", "hidden": (2,), "output": "identity"}, 1),
)


@st.composite
def labelled(draw: st.DrawFn) -> tuple[dict, np.ndarray]:
    """A model and labels Y (k, 6) of any values and dtype, mostly valid ones with a few bad."""
    options, k = draw(st.sampled_from(MODELS))
    m = 6
    good = np.zeros((k, m))
    good[draw(st.integers(0, k - 1)), :] = 1.0 if k > 1 else 0.0
    if k == 1:
        good[0] = np.arange(m) % 2
    values = draw(st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, m - 1), LABEL_VALUES), max_size=3))
    for i, j, v in values:
        good[i, j] = v
    dtype = np.dtype(draw(st.sampled_from(LABEL_DTYPES)))
    with np.errstate(invalid="ignore", over="ignore"):
        Y = good.astype(dtype)
    return options, Y


@examples(60)
@given(labelled(), st.integers(1, 6), st.integers(1, 6))
def test_fit_on_any_labels_succeeds_or_raises_data_or_config_error(case, chunk, batch_size):
    options, Y = case
    X = np.random.default_rng(0).standard_normal((2, Y.shape[1])).astype(np.float32)
    source = ArraySource(X, Y, chunk_size=chunk)
    # Large real-valued targets may truly diverge (exit 3): an mlp's steps grow with the targets' scale;
    # a linear model's do not (its curvature is X's), only squares beyond float32 overflow. An mlp
    # without an output takes the one its labels fit: identity for real values.
    output = options.get("output", options["model"])
    if output == "mlp":
        with suppress(DataError):
            output = labels_seen(source).output
    limit = {"linear": 1e15, "identity": 100}.get(output, math.inf)
    huge = np.abs(Y.astype(float)).max() > limit
    allowed = (DataError, ConfigError, DivergedError) if huge else (DataError, ConfigError)
    try:
        streamtrain.fit(source, epochs=1, batch_size=batch_size, lr=0.01, prefetch=0, **options)
    except allowed as e:
        assert "\n" not in str(e)


# -- 2. Model files: random bytes, cuts, zips, .npy headers and metadata --------------------------------------


class Short:
    """A fixture's value that a failing example's report shows by its class name, not its bytes."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    def _repr_pretty_(self, printer, cycle) -> None:  # what hypothesis prints
        printer.text(repr(self))


@dataclass(repr=False)
class Trained(Short):
    store: Path  # X (2, 12), 0/1 labels, in an HDF5 file
    model: bytes  # a logistic model file trained on it
    params: dict
    meta: dict
    mlp: tuple[dict, dict]  # the parameters and metadata of an mlp of hidden [3]: W1 (3, 2) ... b2 (1, 1)


@pytest.fixture(scope="module")
def trained():
    """A tiny store on disk, and models trained on it."""
    folder = Path(tempfile.mkdtemp(prefix="st-prop-model-"))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 12)).astype(np.float32)
    Y = (X[:1] > 0).astype(np.float32)
    store = folder / "d.h5"
    with h5py.File(store, "w") as f:
        f["X"], f["Y"] = X, Y
    streamtrain.fit(store, epochs=1, batch_size=4).save(folder / "m.npz")
    streamtrain.fit(store, epochs=1, batch_size=4, model="mlp", hidden=[3]).save(folder / "mlp.npz")
    params, meta = load_model(folder / "m.npz")
    yield Trained(store, (folder / "m.npz").read_bytes(), params, meta, load_model(folder / "mlp.npz"))
    shutil.rmtree(folder, ignore_errors=True)


class Blob(bytes):
    """File contents that a failing example reports by size, not byte by byte."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes>"

    def _repr_pretty_(self, printer, cycle) -> None:  # what hypothesis prints
        printer.text(repr(self))


def npz_bytes(params: dict, meta: object) -> bytes:
    """A model file as ``np.savez`` writes it: ``params`` and a JSON metadata entry."""
    f = io.BytesIO()
    np.savez(f, **params, __meta__=np.array(json.dumps(meta)))
    return f.getvalue()


def zip_bytes(members: list[tuple[str, bytes]], deflate: bool) -> bytes:
    f = io.BytesIO()
    with (
        zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as z,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # duplicate names: a damaged zip too
        for name, data in members:
            z.writestr(name, data)
    return f.getvalue()


def npy_bytes(descr: str, fortran: bool, shape: tuple, data: bytes, version: tuple[int, int]) -> bytes:
    """An .npy member whose header says anything: the format's magic, header length and dict, then ``data``."""
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape})
    header += " " * (-(len(header) + 13) % 64) + "\n"
    size = struct.pack("<H" if version[0] == 1 else "<I", len(header))
    return b"\x93NUMPY" + bytes(version) + size + header.encode("latin1") + data


DESCRS = ("<f4", "<f8", ">f4", "<f2", "<f16", "<c8", "<i8", "|b1", "|u1", "<U3", "|S3", "|O", "<M8[s]", "V8", "zzz", "")
SHAPES = st.lists(st.one_of(st.integers(0, 4), st.sampled_from([-1, 10**8, 2**62, 10**30])), max_size=4).map(tuple)


def model_files(valid: bytes, params: dict, meta: dict) -> st.SearchStrategy[Blob]:
    """The bytes of a file that may or may not be a model file: ``valid`` (a model file holding
    ``params`` and ``meta``) damaged in one of several ways, or something else entirely."""
    return st.one_of(
        st.binary(max_size=300),
        cuts(valid),
        flips(valid),
        zips(),
        npy_members(params, meta),
        damaged_metadata(meta).map(lambda damaged: npz_bytes(params, damaged)),
        parameter_sets().map(lambda other: npz_bytes(other, meta)),
    ).map(Blob)


@st.composite
def cuts(draw: st.DrawFn, valid: bytes) -> bytes:
    return valid[: draw(st.integers(0, len(valid) - 1))]


@st.composite
def flips(draw: st.DrawFn, valid: bytes) -> bytes:
    """One byte changed: the zip's checksums, a header's length or the metadata's text."""
    at = draw(st.integers(0, len(valid) - 1))
    return valid[:at] + bytes([valid[at] ^ draw(st.integers(1, 255))]) + valid[at + 1 :]


@st.composite
def zips(draw: st.DrawFn) -> bytes:
    """A zip of members with any names (zipfile cuts a name at a NUL: not one) and contents."""
    names = st.one_of(
        st.text(min_size=1, max_size=8).filter(lambda n: "\0" not in n),
        st.sampled_from(["W1.npy", "b1.npy", "__meta__.npy", "W1", "../x.npy"]),
    )
    return zip_bytes(draw(st.lists(st.tuples(names, st.binary(max_size=64)), max_size=3)), draw(st.booleans()))


@st.composite
def npy_members(draw: st.DrawFn, params: dict, meta: dict) -> bytes:
    """A model file with one member replaced by an .npy header of any version, dtype and shape,
    followed by as many bytes as it claims, or not."""
    shape = draw(SHAPES)
    n_bytes = draw(st.one_of(st.integers(0, 64), st.just(abs(math.prod(shape)) * 4 % 10**6)))
    descr, fortran = draw(st.sampled_from(DESCRS)), draw(st.booleans())
    version = draw(st.sampled_from([(1, 0), (2, 0), (3, 0), (9, 9)]))
    name = draw(st.sampled_from(["W1.npy", "b1.npy", "__meta__.npy", "W2.npy"]))
    members = {f"{k}.npy": npz_member(v) for k, v in params.items()}
    members["__meta__.npy"] = npz_member(np.array(json.dumps(meta)))
    members[name] = npy_bytes(descr, fortran, shape, b"\0" * n_bytes, version)
    return zip_bytes(list(members.items()), draw(st.booleans()))


def parameter_sets() -> st.SearchStrategy[dict]:
    """Parameters of any names, shapes and dtypes, NaN or inf."""
    shapes_ = st.tuples(st.integers(0, 3), st.integers(0, 3))
    dtypes = st.sampled_from(["float32", "float64", "float16", "int32", "complex64"])
    arrays_ = st.builds(lambda s, d: np.ones(s, d), shapes_, dtypes) | st.sampled_from([np.nan, np.inf]).map(
        lambda v: np.full((1, 2), v, np.float32)
    )
    return st.dictionaries(st.sampled_from(["W1", "b1", "W2", "b2", "w", "W0"]), arrays_, max_size=4)


def npz_member(array: np.ndarray) -> bytes:
    """An array as an .npy member of a zip."""
    f = io.BytesIO()
    np.lib.format.write_array(f, array, allow_pickle=False)
    return f.getvalue()


MODEL_OPTION_VALUES = st.one_of(
    st.sampled_from([[10**9], [10**30], 10**9, [3, 10**9]]),  # layer sizes or classes to allocate
    st.sampled_from([None, 0, 1, 2, 3, -1, 2.5, "2", True, [], [3], [0], [2.5], ["a"], "", {}]),
    st.sampled_from(["sigmoid", "softmax", "identity", "relu", "tanh", "mlp", "logistic", "linear", "svm"]),
)


@st.composite
def damaged_metadata(draw: st.DrawFn, meta: dict) -> object:
    """``meta`` with a few entries removed, replaced or added at any depth, or any JSON value at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values())
    meta = json.loads(json.dumps(meta))
    for _ in range(draw(st.integers(1, 3))):
        path = [meta]
        while isinstance(path[-1], dict) and path[-1] and draw(st.booleans()):
            path.append(path[-1][draw(st.sampled_from(sorted(path[-1])))])
        node = path[-1] if isinstance(path[-1], dict) else path[-2] if len(path) > 1 else meta
        key = draw(st.one_of(st.sampled_from(sorted(node) or ["x"]), st.text(max_size=6)))
        if draw(st.booleans()) and key in node:
            del node[key]
        else:
            node[key] = draw(st.one_of(json_values(), st.sampled_from([None, 0, 1, 2, 3, -1, 2.5, "2", 10**30])))
    return meta


def check_load(path: Path) -> None:
    """Loading ``path`` gives a model or a one-line DataError naming the file."""
    try:
        streamtrain.load(path)
    except DataError as e:
        message = str(e)
        assert "\n" not in message and message.startswith(str(path)), message
        assert "allow_pickle" not in message, message


@examples(100)
@given(st.data())
def test_any_file_loads_as_a_model_or_raises_data_error(trained, data):
    content = data.draw(model_files(trained.model, trained.params, trained.meta))
    with scratch() as folder:
        (folder / "m.npz").write_bytes(content)
        check_load(folder / "m.npz")


@examples(80)
@given(st.booleans(), st.sampled_from(["hidden", "classes", "output", "name", "activation"]), MODEL_OPTION_VALUES)
def test_a_model_option_of_any_value_loads_or_raises_data_error(trained, mlp, key, value):
    """One option of the model, in its description and its configuration alike: a model of
    hidden [10^9] with small parameters must not make the loader allocate the network it describes."""
    params, meta = trained.mlp if mlp else (trained.params, trained.meta)
    meta = json.loads(json.dumps(meta))
    meta["model"][key] = value
    meta["config"]["model" if key == "name" else key] = value
    with scratch() as folder:
        (folder / "m.npz").write_bytes(npz_bytes(params, meta))
        check_load(folder / "m.npz")


@examples(30)
@given(st.data())
def test_evaluate_of_any_file_exits_0_1_or_3_with_one_error_line(trained, data):
    content = data.draw(model_files(trained.model, trained.params, trained.meta))
    with scratch() as folder:
        (folder / "m.npz").write_bytes(content)
        code, err = run_cli("evaluate", str(folder / "m.npz"), str(trained.store))
    assert code in (0, 1, 3), (code, err)
    if code:
        one_line_error(err)


# -- 2b. Checkpoints: the newest one damaged in any way -------------------------------------------------------

CHECKPOINTED = dict(epochs=2, batch_size=4, optimizer="adam", shuffle="buffer", buffer_mb=0.0001, prefetch=0)


def checkpointed_source() -> ArraySource:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2, 12)).astype(np.float32)
    return ArraySource(X, (X[:1] > 0).astype(np.float32), chunk_size=4)


@dataclass(repr=False)
class Checkpointed(Short):
    folder: Path
    newest: str  # the newest checkpoint's name
    arrays: dict  # and what it holds
    meta: dict


@pytest.fixture(scope="module")
def checkpoints():
    """The checkpoints of a short run, one per step."""
    from streamtrain.resume import FORMAT

    folder = Path(tempfile.mkdtemp(prefix="st-prop-ckpt-")) / "c"
    streamtrain.fit(
        checkpointed_source(), checkpoint_dir=str(folder), checkpoint_every=1, keep_checkpoints=2, **CHECKPOINTED
    )
    newest = sorted(os.listdir(folder))[-1]
    yield Checkpointed(folder, newest, *load_model(folder / newest, format=FORMAT))
    shutil.rmtree(folder.parent, ignore_errors=True)


CHECKPOINT_VALUES = st.one_of(
    json_values(4),
    st.sampled_from([None, 0, -1, 1, 2, 3, 10**30, 2.5, math.inf, math.nan, "1", [], {}, {"seed": 0}]),
)


def damaged_checkpoints(arrays: dict, meta: dict) -> st.SearchStrategy[Blob]:
    """A checkpoint's bytes: damaged as model files are, or with an array or a metadata entry replaced."""
    return st.one_of(
        model_files(npz_bytes(arrays, meta), arrays, meta),
        replaced_arrays(arrays).map(lambda other: npz_bytes(other, meta)),
        damaged_entries(meta).map(lambda other: npz_bytes(arrays, other)),
    ).map(Blob)


@st.composite
def replaced_arrays(draw: st.DrawFn, arrays: dict) -> dict:
    """One of the parameters or the optimizer's moments of another shape, NaN or inf, or gone."""
    name = draw(st.sampled_from(sorted(arrays)))
    if draw(st.integers(0, 3)) == 0:
        return {k: v for k, v in arrays.items() if k != name}
    shape = draw(st.sampled_from([(1, 1), (2, 1), (1, 3), (0, 2), (2,), arrays[name].shape]))
    value = draw(st.sampled_from([0.5, math.nan, math.inf]))
    return {**arrays, name: np.full(shape, value, arrays[name].dtype)}


@st.composite
def damaged_entries(draw: st.DrawFn, meta: dict) -> dict:
    """The metadata with one entry (at depth 1 or 2) replaced or removed."""
    meta = json.loads(json.dumps(meta))
    key = draw(st.sampled_from(["epoch", "step", "cursor", "sums", "monitor", "history", "run"]))
    node = meta
    if isinstance(meta[key], dict) and meta[key] and draw(st.booleans()):
        node, key = meta[key], draw(st.sampled_from(sorted(meta[key])))
    if draw(st.integers(0, 4)) == 0:
        del node[key]
    else:
        node[key] = draw(CHECKPOINT_VALUES)
    return meta


@examples(60)
@given(st.data())
def test_resuming_from_any_damaged_checkpoint_resumes_or_raises_data_error(checkpoints, data):
    content = data.draw(damaged_checkpoints(checkpoints.arrays, checkpoints.meta))
    with scratch() as folder:
        copy = folder / "c"
        shutil.copytree(checkpoints.folder, copy)
        (copy / checkpoints.newest).write_bytes(content)
        try:
            # One epoch more than the run that wrote them: the state is trained on, not only returned.
            options = {**CHECKPOINTED, "epochs": CHECKPOINTED["epochs"] + 1}
            result = streamtrain.fit(checkpointed_source(), checkpoint_dir=str(copy), resume=True, **options)
            check_values(result.params)  # a result is never NaN
        except (DataError, ConfigError) as e:
            event(type(e).__name__)
            assert "\n" not in str(e)


# -- 3. Option values ---------------------------------------------------------------------------------------

FIT_OPTIONS = sorted(f.name for cls in (FitConfig, CheckpointConfig) for f in dataclasses.fields(cls))
CHOICE_NAMES = ("logistic", "softmax", "linear", "mlp", "sgd", "adam", "lbfgs", "full", "buffer", "step", "fill")
HUGE = (2**31, 2**63, 10**30, -(2**63))
OPTION_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 6),
    st.sampled_from(HUGE),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e-300, 0.5, -0.0, 1e300]),
    st.text(max_size=5).filter(lambda s: not s.startswith("/") and ".." not in s),  # paths stay in the scratch folder
    st.sampled_from(CHOICE_NAMES),
    st.lists(st.integers(-1, 3), max_size=3),
    st.sampled_from([[], {}, (), b"7", [2**63], [1.5], ["3"], [True]]),
    st.sampled_from([np.float64("nan"), np.int64(2), np.float32(0.5), np.array([2]), np.array(3)]),
    st.sampled_from(["threads", "sync", "tcp://", "tcp://h:0", "inproc://x", "ucx://h:1", "a://b"]),
)
ERRORS = (ConfigError, DataError, DivergedError)  # exit 1, 1 and 3


@contextmanager
def inside(folder: Path):
    """Relative paths (a checkpoint_dir of random text) land in ``folder``."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def too_costly(options: dict) -> bool:
    """Valid options that would make an example slow: many epochs, a cluster, a remote scheduler, a big network."""
    try:
        config = FitConfig.from_options({k: v for k, v in options.items() if k in FitConfig.__dataclass_fields__})
    except ConfigError:
        return False
    sizes = [2, *config.hidden, 1]
    parameters = sum(a * b for a, b in itertools.pairwise(sizes))
    # Sizes beyond any machine's memory stay in: fit must refuse them before allocating.
    big = 10**4 < parameters < 10**15
    return config.epochs > 3 or config.scheduler not in (None, "threads", "sync") or big


def plausible(name: str) -> st.SearchStrategy:
    """Values an option may well take: its declared choices, or small numbers; else anything."""
    cls = FitConfig if name in FitConfig.__dataclass_fields__ else CheckpointConfig
    choices = cls.__dataclass_fields__[name].metadata["option"].choices
    usual = st.sampled_from(sorted(choices)) if choices else st.one_of(st.integers(1, 3), st.floats(0.01, 0.9))
    return st.one_of(usual, usual, OPTION_VALUES)


@st.composite
def fit_options(draw: st.DrawFn) -> dict:
    names = draw(st.lists(st.sampled_from(FIT_OPTIONS), min_size=1, max_size=3))
    return {name: draw(plausible(name)) for name in names}


@examples(100)
@given(fit_options())
def test_fit_with_any_option_values_succeeds_or_raises_a_documented_error(options):
    options = {"epochs": 1, "batch_size": 4, "prefetch": 0, **options}
    assume(not too_costly(options))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 8)).astype(np.float32)
    source = ArraySource(X, (X[:1] > 0).astype(np.float32), chunk_size=4)
    with scratch() as folder, inside(folder):
        try:
            streamtrain.fit(source, **options)
            event("trained")
        except ERRORS as e:
            event(type(e).__name__)
            assert "\n" not in str(e)


# -- 3b. The command line: any text for any flag -------------------------------------------------------------


def declared_flags(*configs: type) -> dict[str, list[str] | None]:
    """The flags the command line derives from the declared options of ``configs``, with their choices."""
    flags = {}
    for config in configs:
        for f in dataclasses.fields(config):
            opt = f.metadata["option"]
            flags[opt.flag or "--" + f.name.replace("_", "-")] = sorted(opt.choices) if opt.choices else None
    return flags


ARRAY_FLAGS = dict.fromkeys(["--x", "--y"])
COMPARE_FLAGS = declared_flags(streamtrain.CompareConfig)
COMMAND_FLAGS = {
    "fit": {**declared_flags(FitConfig, CheckpointConfig), **dict.fromkeys(["--init", "--out", "--metrics"])}
    | ARRAY_FLAGS,
    "evaluate": {k: COMPARE_FLAGS[k] for k in ("--scheduler", "--missing-chunks")} | ARRAY_FLAGS,
    "compare": COMPARE_FLAGS | ARRAY_FLAGS,
    "make-data": declared_flags(streamtrain.DataConfig),
}
TRICKY = (
    "0 -1 -5 nan inf -inf 1e400 1e-400 3.5 2 4 full 1,2 , 2,-1 0x10 １ 1_0 None true sync tcp:// tcp://h:0 inproc://x"
)
FLAG_TEXT = st.one_of(
    st.text(max_size=6),
    st.sampled_from(
        ["", " ", *TRICKY.split(), "ucx://h:1", "logistic", "mlp", "adam", "lbfgs", "buffer", "zstd", "hdf5"]
    ),
).filter(lambda s: not s.startswith("/") and ".." not in s)  # paths stay in the scratch folder


def flag_values(choices: list[str] | None) -> st.SearchStrategy[str]:
    """Text a flag may well be given (one of its ``choices``, a small number), or any text."""
    usual = st.sampled_from(choices or ["1", "2", "3", "0.1", "0.5"])
    return st.one_of(usual, usual, FLAG_TEXT)


SIZE_FLAGS = ("--epochs", "--m", "--n-x", "--outputs", "--batches", "--batch-size", "--chunk", "--hidden")


def costly_flag(flag: str, value: str) -> bool:
    """A valid value that would make an example slow: many epochs or samples, a big network, a cluster."""
    if value.strip() == "local" or re.fullmatch(r"(tcp|tls)://[^:/]+:[1-9][0-9]*", value):
        return True
    if flag not in SIZE_FLAGS:
        return False
    try:
        numbers = [int(n) for n in value.split(",")]
    except ValueError:
        return False
    return any(100 < n < 10**15 for n in numbers)


@examples(60)
@given(st.sampled_from(sorted(COMMAND_FLAGS)), st.data())
def test_the_command_line_with_any_flag_values_exits_0_1_2_or_3_without_a_traceback(trained, command, data):
    store = trained.store
    declared = COMMAND_FLAGS[command]
    names = data.draw(st.lists(st.sampled_from(sorted(declared)), min_size=1, max_size=2))
    flags = [(flag, data.draw(flag_values(declared[flag]))) for flag in names]
    assume(not any(costly_flag(flag, value) for flag, value in flags))
    given_flags = [f"{flag}={value}" for flag, value in flags]
    with scratch() as folder, inside(folder):
        (folder / "m.npz").write_bytes(trained.model)
        argv = {
            "fit": ["fit", str(store), "--epochs=1", "--batch-size=4", "--out=out.npz"],
            "evaluate": ["evaluate", "m.npz", str(store)],
            "compare": ["compare", "m.npz", str(store), "--batches=2"],
            "make-data": ["make-data", "new.zarr", "--m=20", "--n-x=2"],
        }[command]
        code, err = run_cli(*argv, *given_flags)
    event(f"{command} exit {code}")
    assert "Traceback" not in err, err
    assert code in (0, 1, 2, 3), (code, err)
    if code == 2:
        assert "usage:" in err, err
    elif code:
        one_line_error(err)
