"""Hostile and damaged model files: one-line DataErrors naming the file, never a pickle, never
an allocation an untrusted header asked for; parameters are finite real numbers."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npformat

import streamtrain
from streamtrain import ArraySource, ConfigError, DataError
from streamtrain.checkpoint import VERSION, load_model
from streamtrain.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small store and a model file trained on it: (data, model file, its params, its metadata)."""
    folder = tmp_path_factory.mktemp("trained")
    data = folder / "d.zarr"
    streamtrain.make_data(data, m=300, n_x=3, chunk=100, seed=0)
    streamtrain.fit(data, epochs=1, batch_size=50).save(folder / "m.npz")
    params, meta = load_model(folder / "m.npz")
    return data, folder / "m.npz", params, meta


def _write(path, params, meta):
    """An npz of ``params`` (any dtypes, pickled objects too) and a metadata entry, as np.savez writes it."""
    np.savez(path, **params, __meta__=np.array(json.dumps(meta)))
    return path


def _load_error(path) -> str:
    with pytest.raises(DataError) as e:
        streamtrain.load(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert "allow_pickle" not in message, message  # never numpy's advice to load it unsafely
    return message


# -- 15. A pickled payload would run: the loader never unpickles --------------------------------------


class _MakeDirectory:
    """Unpickling this object creates a directory: the side effect that proves a pickle ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _pickle_bomb(path, target, trained):
    _, _, params, meta = trained
    evil = np.array([_MakeDirectory(target)], dtype=object)
    return _write(path, {**params, "W1": evil}, meta)


def test_a_pickle_payload_would_run_and_the_loader_does_not_run_it(tmp_path, trained, capsys):
    shown, spared = tmp_path / "pwned-by-numpy", tmp_path / "pwned-by-streamtrain"
    np.load(_pickle_bomb(tmp_path / "copy.npz", shown, trained), allow_pickle=True)["W1"]
    assert shown.is_dir()  # the payload runs when unpickled...

    bomb = _pickle_bomb(tmp_path / "evil.npz", spared, trained)
    with pytest.raises(DataError) as e:
        streamtrain.load(bomb)
    assert not spared.exists()  # ...and streamtrain never unpickles it
    assert "W1.npy: an array of object" in str(e.value)
    assert main(["evaluate", str(bomb), str(trained[0])]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(DataError):
        streamtrain.fit(trained[0], epochs=1, init=bomb)
    assert not spared.exists()


# -- 13. Headers are checked before anything is allocated ----------------------------------------------


def _raw_npz(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _replace_member(model, path, name: str, data: bytes):
    """A copy of the model file ``model`` with the member ``name`` holding ``data``."""
    with zipfile.ZipFile(model) as z:
        members = {n: z.read(n) for n in z.namelist()}
    return _raw_npz(path, {**members, name: data})


def _npy(header: dict, data: bytes = b"") -> bytes:
    f = io.BytesIO()
    npformat.write_array_header_1_0(f, header)
    return f.getvalue() + data


def test_a_header_claiming_a_huge_array_is_refused_without_allocating_it(tmp_path, trained):
    huge = _npy({"descr": "<f8", "fortran_order": False, "shape": (10**8, 10**8)}, b"\0" * 24)
    path = _replace_member(trained[1], tmp_path / "huge.npz", "W1.npy", huge)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        message = _load_error(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1 and peak < 2**20
    assert "W1.npy" in message and "(100000000, 100000000)" in message


@pytest.mark.parametrize("text", ["{'descr': '<f8', 'shape': (1, '", '{\'descr\': """x', "{'descr': <f8}"])
def test_a_header_that_is_not_python_literals_is_a_damaged_member(tmp_path, trained, text):
    """numpy reads a header with tokenize and ast: an unterminated string raised TokenError (found by hypothesis)."""
    header = text.encode("latin1") + b" " * (64 - (10 + len(text) + 1) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
    path = _replace_member(trained[1], tmp_path / "broken.npz", "W1.npy", npy)
    assert "W1.npy: not a valid .npy array header" in _load_error(path)


@pytest.mark.parametrize(
    "header, data, fragment",
    [
        ({"descr": "<f8", "fortran_order": False, "shape": (1, 3)}, b"\0" * 8, "holds 8"),  # too short
        ({"descr": "<f8", "fortran_order": False, "shape": (1, 1)}, b"\0" * 24, "holds 24"),  # too long
        ({"descr": "<f8", "fortran_order": False, "shape": (1, -3)}, b"", "negative"),
        ({"descr": "<f8", "fortran_order": False, "shape": (0, 10**30)}, b"", "dimension"),
        ({"descr": "<f8", "fortran_order": False, "shape": (1,) * 100}, b"\0" * 8, "dimension"),
        ({"descr": "<U3", "fortran_order": False, "shape": (1, 3)}, b"\0" * 36, "<U3"),
        ({"descr": "<c16", "fortran_order": False, "shape": (1, 3)}, b"\0" * 48, "complex128"),
        ({"descr": "<i8", "fortran_order": False, "shape": (1, 3)}, b"\0" * 24, "int64"),
        ({"descr": "|O", "fortran_order": False, "shape": (1, 3)}, b"\0" * 24, "object"),
        ({"descr": "<f16", "fortran_order": False, "shape": (1, 3)}, b"\0" * 48, "float128"),
    ],
)
def test_arrays_that_are_not_real_float_parameters_are_refused(tmp_path, trained, header, data, fragment):
    path = _replace_member(trained[1], tmp_path / "bad.npz", "W1.npy", _npy(header, data))
    message = _load_error(path)
    assert "W1.npy" in message and fragment in message


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 100, os.urandom(4096), b"PK\x03\x04" + os.urandom(200), "not an npy header"],
    ids=["empty", "zeros", "random", "zip magic, then noise", "bad npy"],
)
def test_files_that_are_not_model_files_are_one_line_errors(tmp_path, content):
    path = tmp_path / "x.npz"
    if isinstance(content, str):
        _raw_npz(path, {"W1.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': 'zzz'}    \n"})
    else:
        path.write_bytes(content)
    assert "not a streamtrain model file" in _load_error(path)


def test_a_truncated_model_file_is_a_one_line_error(tmp_path, trained):
    data = trained[1].read_bytes()
    for cut in (len(data) // 3, len(data) - 30):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        assert "not a streamtrain model file" in _load_error(tmp_path / "cut.npz")


def test_a_directory_is_not_a_model_file(tmp_path):
    assert "directory" in _load_error(tmp_path)


def test_files_numpy_writes_in_fortran_order_or_compressed_load_the_same(tmp_path, trained):
    data, model, params, meta = trained
    fortran = {k: np.asfortranarray(np.tile(v, (1, 1))) for k, v in params.items()}
    np.savez_compressed(tmp_path / "f.npz", **fortran, __meta__=np.array(json.dumps(meta)))
    again = streamtrain.load(tmp_path / "f.npz")
    for k, v in params.items():
        np.testing.assert_array_equal(again.params[k], v)
    assert streamtrain.evaluate(data, again) == streamtrain.evaluate(data, model)


# -- 13. Damaged metadata -----------------------------------------------------------------------------


DAMAGED_METADATA = {
    "no model": (lambda m: m.pop("model"), "no 'model' entry"),
    "model not a dict": (lambda m: m.update(model="logistic"), "'model' is a str, not a dict"),
    "config not a dict": (lambda m: m.update(config=[1, 2]), "'config' is a list, not a dict"),
    "unknown model option": (lambda m: m["model"].update(depth=3), "unknown model options ['depth']"),
    "unknown model": (lambda m: m["model"].update(name="svm"), "unknown model 'svm'"),
    "unknown config option": (lambda m: m["config"].update(momentum=0.9), "unknown option 'momentum'"),
    "bad config value": (lambda m: m["config"].update(lr=-1), "learning rate must be a positive number"),
    "config of another model": (lambda m: m["config"].update(model="linear"), "trains a linear model"),
    "history not a list": (lambda m: m.update(history={}), "'history' is a dict, not a list"),
    "history entry": (lambda m: m.update(history=[{"epoch": 1}]), "not an epoch record"),
    "data not a dict": (lambda m: m.update(data=3), "'data' is a int, not a dict"),
}


@pytest.mark.parametrize("case", list(DAMAGED_METADATA))
def test_damaged_metadata_is_a_one_line_error(tmp_path, trained, case):
    _, _, params, meta = trained
    damage, fragment = DAMAGED_METADATA[case]
    meta = json.loads(json.dumps(meta))
    damage(meta)
    message = _load_error(_write(tmp_path / "m.npz", params, meta))
    assert "damaged model metadata" in message and fragment in message


@pytest.mark.parametrize(
    "version, fragment",
    [(0, "not a file version"), ("2", "not a file version"), (2.0, "not a file version"), (None, "version"),
     (True, "version"), (VERSION + 1, f"written by a newer streamtrain (file version {VERSION + 1}")],
)  # fmt: skip
def test_versions_the_loader_does_not_know_are_refused(tmp_path, trained, version, fragment):
    _, _, params, meta = trained
    message = _load_error(_write(tmp_path / "m.npz", params, {**meta, "version": version}))
    assert fragment in message


@pytest.mark.parametrize(
    "meta, fragment",
    [
        (np.array([1.0, 2.0]), "metadata must be one JSON string"),
        (np.array(["{}", "{}"]), "metadata must be one JSON string"),
        (np.array("[" * 100_000 + "]" * 100_000), "no readable metadata"),
        (np.array("{not json"), "no readable metadata"),
        (np.array(json.dumps({"format": "other", "version": 2})), "wrong format tag"),
        (np.array(json.dumps(["format", "streamtrain-model"])), "wrong format tag"),
    ],
)
def test_metadata_that_is_not_ours_is_refused(tmp_path, trained, meta, fragment):
    _, _, params, _ = trained
    np.savez(tmp_path / "m.npz", **params, __meta__=meta)
    assert fragment in _load_error(tmp_path / "m.npz")


def test_parameters_that_do_not_fit_the_model_in_the_file_are_refused(tmp_path, trained):
    _, _, params, meta = trained
    message = _load_error(_write(tmp_path / "a.npz", {"W1": params["W1"]}, meta))
    assert "expected shapes" in message and "b1(1, 1)" in message
    message = _load_error(_write(tmp_path / "b.npz", {"b1": params["b1"]}, meta))
    assert "do not fit a logistic model" in message


@pytest.mark.parametrize("hidden", [[10**12], [10**30]])
def test_layer_sizes_in_metadata_are_compared_without_building_the_network(tmp_path, hidden):
    # The loader checked the parameters' shapes against a network it built: a file saying hidden
    # [10^12] made it allocate terabytes (MemoryError, or the process killed).
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((2, 40)), (np.arange(40) % 2).reshape(1, 40).astype(float)
    streamtrain.fit(ArraySource(X, Y), model="mlp", hidden=[3], batch_size=10).save(tmp_path / "m.npz")
    params, meta = load_model(tmp_path / "m.npz")
    meta["model"]["hidden"] = meta["config"]["hidden"] = hidden
    tracemalloc.start()
    try:
        message = _load_error(_write(tmp_path / "big.npz", params, meta))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"expected shapes W1({hidden[0]}, 2)" in message and peak < 2**22


# -- 9. Parameters are finite real numbers, in files and in dicts ---------------------------------------


@pytest.mark.parametrize("value, fragment", [(np.nan, "nan at (0, 1)"), (np.inf, "inf at (0, 1)"), (-np.inf, "-inf")])
def test_non_finite_parameters_are_refused_naming_the_parameter(tmp_path, trained, capsys, value, fragment):
    data, _, params, meta = trained
    bad = {**params, "W1": params["W1"].copy()}
    bad["W1"][0, 1] = value
    path = _write(tmp_path / "nan.npz", bad, meta)
    message = _load_error(path)
    assert "parameter W1" in message and fragment in message
    code = main(["evaluate", str(path), str(data), "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and "parameter W1" in err
    for run in (streamtrain.evaluate, streamtrain.compare, streamtrain.loss_and_grad):
        with pytest.raises(ConfigError, match=re.escape(f"parameter W1 holds {fragment}")):
            run(data, bad, model="logistic")
    with pytest.raises(ConfigError, match="parameter W1"):
        streamtrain.fit(data, epochs=1, init=bad)


def test_complex_parameters_are_refused_not_cast(tmp_path, trained):
    data, _, params, meta = trained
    bad = {**params, "b1": params["b1"] + 1j}
    with pytest.raises(ConfigError, match="parameter b1 holds complex64 values"):
        streamtrain.evaluate(data, bad, model="logistic")
    with pytest.raises(ConfigError, match="parameter b1 holds complex64"):
        streamtrain.fit(data, epochs=1, init=bad)
    assert "b1.npy" in _load_error(_write(tmp_path / "c.npz", bad, meta))


def test_the_installed_command_refuses_a_hostile_file_without_a_traceback(tmp_path, trained):
    target = tmp_path / "pwned"
    bomb = _pickle_bomb(tmp_path / "evil.npz", target, trained)
    proc = subprocess.run(
        [sys.executable, "-m", "streamtrain", "evaluate", str(bomb), str(trained[0])], capture_output=True, text=True
    )
    assert not target.exists()
    assert proc.returncode == 1 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"streamtrain: error: {bomb}: not a streamtrain model file")


def test_a_copy_of_a_good_file_loads(tmp_path, trained):
    shutil.copy(trained[1], tmp_path / "copy.npz")
    assert streamtrain.load(tmp_path / "copy.npz").model.name == "logistic"
