"""Damaged data, named (issue 10), end to end: every broken chunk is one DataError naming the
file, array, chunk and samples, on every backend, through ``ChunkSource.read``, every exact-path
scheduler and the command line; missing chunks follow ``--missing-chunks``; NaN/inf are named by
sample and chunk. (Stamps and ``find_nonfinite`` on their own: test_sources.py; the exact path's
own cases: test_full_batch.py.)

Conventions: stores from ``make_data`` (X (5, 4000) float32 in chunks of 1000 samples, Y (1, m)),
damaged on disk by the helpers below; params {"W1": (1, 5), "b1": (1, 1)}.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import zarr

import streamtrain
from streamtrain import ArraySource, DataError, get_model
from streamtrain.cli import main
from streamtrain.evaluation import loss_and_grad
from streamtrain.sources import open_source

M, N_X, CHUNK = 4000, 5, 1000
LOGISTIC, LINEAR = get_model("logistic"), get_model("linear")
SCHEDULERS = ["sync", "threads"]  # and "local": the last test (running clusters: test_full_batch.py)


def params(n_x: int = N_X) -> dict:
    rng = np.random.default_rng(3)
    return {"W1": rng.standard_normal((1, n_x)), "b1": np.zeros((1, 1))}


def make(path, **options):
    streamtrain.make_data(path, **{"m": M, "n_x": N_X, "chunk": CHUNK, "seed": 0, **options})
    return path


def model_file(tmp_path):
    """A logistic model file for N_X features, trained briefly on clean data in memory."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((N_X, 200))
    Y = (X[:1] > 0).astype(np.float64)
    path = tmp_path / "p.npz"
    streamtrain.fit(ArraySource(X, Y), epochs=1, batch_size=50).save(path)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *fragments) -> str:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamtrain: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# -- damage: each makes a store with one bad chunk and says what the error must name -------------


def _zarr_chunk_file(path, array: str, j: int) -> str:
    return os.path.join(path, array, "c", "0", str(j))


def truncated_raw_zarr_chunk(tmp_path):
    path = make(tmp_path / "raw.zarr")
    with open(_zarr_chunk_file(path, "X", 2), "r+b") as f:
        f.truncate(100)
    return path, "raw.zarr/X", 2


def random_zstd_zarr_chunk(tmp_path):
    path = make(tmp_path / "zstd.zarr", codec="zstd")
    with open(_zarr_chunk_file(path, "X", 1), "wb") as f:
        f.write(np.random.default_rng(0).bytes(3000))
    return path, "zstd.zarr/X", 1


def random_gzip_zarr_label_chunk(tmp_path):
    path = make(tmp_path / "gzip.zarr", codec="gzip")
    with open(_zarr_chunk_file(path, "Y", 3), "wb") as f:
        f.write(np.random.default_rng(0).bytes(500))
    return path, "gzip.zarr/Y", 3


def corrupt_gzip_hdf5_chunk(tmp_path):
    path = make(tmp_path / "gzip.h5", codec="gzip")
    with h5py.File(path, "r") as f:
        info = f["X"].id.get_chunk_info(2)  # chunks are stored in sample order: (0, 2000) is the third
        assert info.chunk_offset == (0, 2000)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + 10)
        f.write(b"\xff" * 50)
    return path, "gzip.h5/X", 2


DAMAGE = [truncated_raw_zarr_chunk, random_zstd_zarr_chunk, random_gzip_zarr_label_chunk, corrupt_gzip_hdf5_chunk]


@pytest.fixture(params=DAMAGE, ids=lambda f: f.__name__)
def damaged(request, tmp_path):
    """(path, "file/array", bad chunk) of a store with one chunk that cannot be decoded."""
    return request.param(tmp_path)


def named(path, where: str, chunk: int) -> list[str]:
    a = chunk * CHUNK
    return [f"{where}: chunk {chunk} (samples {a}..{a + CHUNK}) cannot be read", "truncated or corrupt"]


def assert_names(error: DataError, fragments: list[str]) -> None:
    message = str(error)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_damaged_chunk_is_named_when_read_and_the_others_read(damaged):
    path, where, bad = damaged
    with open_source(path) as source:
        for c, (a, b) in enumerate(source.chunk_bounds):
            if c == bad:
                with pytest.raises(DataError) as e:
                    source.read(a, b)
                assert_names(e.value, named(path, where, bad))
            else:
                source.read(a, b)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_a_damaged_chunk_is_named_by_the_exact_path(damaged, scheduler):
    path, where, bad = damaged
    with pytest.raises(DataError) as e:
        loss_and_grad(path, params(), model=LOGISTIC, scheduler=scheduler)
    assert_names(e.value, named(path, where, bad))


def test_a_damaged_chunk_is_one_line_from_fit_and_evaluate(capsys, tmp_path, damaged):
    path, where, bad = damaged
    code, _, err = run(capsys, "fit", path, "--epochs", 1, "--out", tmp_path / "m.npz")
    one_line_error(code, err, *named(path, where, bad))
    assert not (tmp_path / "m.npz").exists()
    one_line_error(*run(capsys, "evaluate", model_file(tmp_path), path)[::2], *named(path, where, bad))


# -- damaged metadata: at open, naming the file ---------------------------------------------------


@pytest.mark.parametrize(
    "text, says",
    [
        ("", "JSONDecodeError"),
        ('{"zarr_format": 3, "node_type": "array"', "JSONDecodeError"),
        ('{"zarr_format": 3, "node_type": "array"}', "invalid array metadata"),
    ],
    ids=["empty", "cut", "incomplete"],
)
def test_damaged_array_metadata_names_the_file(tmp_path, text, says):
    path = make(tmp_path / "d.zarr")
    (path / "X" / "zarr.json").write_text(text)
    with pytest.raises(DataError) as e:
        open_source(path)
    assert str(e.value).startswith(f"{path}/X/zarr.json: invalid array metadata (") and says in str(e.value)


@pytest.mark.parametrize("array", ["X", "Y"])
def test_a_chunk_shape_of_zero_in_array_metadata_names_the_file(tmp_path, array):
    # zarr reads it; streamtrain divided by it (ZeroDivisionError) or called it an option (ConfigError).
    path = make(tmp_path / "d.zarr")
    metadata = json.loads((path / array / "zarr.json").read_text())
    metadata["chunk_grid"]["configuration"]["chunk_shape"][1] = 0
    (path / array / "zarr.json").write_text(json.dumps(metadata))
    with pytest.raises(DataError) as e:
        open_source(path)
    assert (
        str(e.value)
        == f"{path}/{array}/zarr.json: invalid array metadata (chunk shape [{N_X if array == 'X' else 1}, 0])"
    )


def test_damaged_group_metadata_names_the_file(capsys, tmp_path):
    path = make(tmp_path / "d.zarr")
    (path / "zarr.json").write_text("{")
    code, _, err = run(capsys, "fit", path)
    one_line_error(code, err, f"{path}/zarr.json: not a Zarr group (JSONDecodeError")


# -- missing chunks on the command line -------------------------------------------------------------


@pytest.fixture
def sparse_labels(tmp_path, zarr_store, make_logistic_xy):
    """A zarr store whose Y chunk 1 (samples 500..1000) was never written."""
    X, Y = make_logistic_xy(m=2000, n_x=3, dtype=np.float32)
    Y[:, 500:1000] = 0  # a label-sorted stretch: zarr skips a chunk equal to the fill value
    return zarr_store(X, Y, 500, write_empty_chunks=False)


def test_a_missing_label_chunk_is_one_warning_line_unless_refused(capsys, tmp_path, sparse_labels):
    code, _, err = run(capsys, "fit", sparse_labels, "--epochs", 1, "--out", tmp_path / "m.npz")
    assert code == 0, err
    assert err.strip().splitlines() == [
        f"streamtrain: warning: {sparse_labels}/Y: 1 chunk was never written (samples 500..1000); "
        f"read as the fill value 0.0"
    ]
    code, _, err = run(capsys, "evaluate", tmp_path / "m.npz", sparse_labels, "--json")
    assert code == 0 and len(err.strip().splitlines()) == 1, err
    for command in ("evaluate", "compare"):
        code, _, err = run(capsys, command, tmp_path / "m.npz", sparse_labels, "--missing-chunks", "error")
        one_line_error(code, err, f"{sparse_labels}/Y: chunk for samples 500..1000 is missing", "--missing-chunks fill")


def test_a_missing_feature_chunk_is_an_error_naming_the_flag_unless_filled(
    capsys, tmp_path, zarr_store, make_logistic_xy
):
    X, Y = make_logistic_xy(m=2000, n_x=3, dtype=np.float32)
    path = zarr_store(X, Y, 500, skip={"X": {2}})
    code, _, err = run(capsys, "fit", path, "--out", tmp_path / "m.npz")
    one_line_error(code, err, f"{path}/X: chunk for samples 1000..1500 is missing", "--missing-chunks fill")
    code, _, err = run(capsys, "fit", path, "--missing-chunks", "fill", "--epochs", 1, "--out", tmp_path / "m.npz")
    assert code == 0 and err.strip().splitlines() == [
        f"streamtrain: warning: {path}/X: 1 chunk was never written (samples 1000..1500); read as the fill value 0.0"
    ]


# -- NaN and inf: named by sample and chunk ----------------------------------------------------------


def test_find_nonfinite_returns_a_chunk_read_error(tmp_path):
    path, where, bad = truncated_raw_zarr_chunk(tmp_path)
    with open_source(path) as source:
        assert source.find_nonfinite([0, 1]) is None
        assert_names(source.find_nonfinite([1, bad]), named(path, where, bad))


def _with_nan_in_x(path, sample: int):
    g = zarr.open_group(path, mode="r+")
    column = g["X"][:, sample : sample + 1]
    column[3] = np.nan
    g["X"][:, sample : sample + 1] = column


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "{model}", "{data}"],
        ["compare", "{model}", "{data}", "--batch-size", "100"],
        ["fit", "{data}", "--batch-size", "full", "--epochs", "2", "--out", "{out}"],
        ["fit", "{data}", "--optimizer", "lbfgs", "--epochs", "2", "--out", "{out}"],
    ],
    ids=["evaluate", "compare", "batch-gd", "lbfgs"],
)
def test_nan_in_x_is_one_line_and_exit_1_from_the_exact_commands(capsys, tmp_path, argv):
    data = make(tmp_path / "d.zarr")
    model_file(tmp_path)
    _with_nan_in_x(data, 1500)
    names = {"model": tmp_path / "p.npz", "data": data, "out": tmp_path / "m.npz"}
    code, _, err = run(capsys, *(a.format(**names) for a in argv))
    one_line_error(code, err, f"{data}/X: sample 1500 (chunk 1) holds NaN in row 3")
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--holdout", "0.25"],  # trains on chunks 0, 1, 3: chunk 3 is its third
        ["--shards", "2", "--scheduler", "sync"],
        ["--shards", "2", "--sync-every", "1", "--scheduler", "threads"],
        ["--shards", "1", "--sync-every", "3", "--scheduler", "sync"],
    ],
    ids=["fit", "holdout", "shards", "shards-every-step", "one-shard-in-rounds"],
)
def test_nan_in_x_is_named_by_the_stores_chunk_from_mini_batch_training(capsys, tmp_path, argv):
    data = make(tmp_path / "d.zarr")
    _with_nan_in_x(data, 3500)
    code, _, err = run(capsys, "fit", data, *argv, "--out", tmp_path / "m.npz")
    one_line_error(code, err, f"{data}/X: sample 3500 (chunk 3) holds NaN in row 3")
    assert not (tmp_path / "m.npz").exists()


def test_random_bytes_decoding_to_nan_are_named_without_a_warning(capsys, tmp_path):
    data = make(tmp_path / "d.zarr")
    model_file(tmp_path)
    with open(_zarr_chunk_file(data, "X", 1), "wb") as f:  # the right size, and bytes that decode to
        f.write(np.full(N_X * CHUNK, 0x7FA00000, np.uint32).tobytes())  # signalling NaNs: casting them warns
    code, _, err = run(capsys, "evaluate", tmp_path / "p.npz", data)
    one_line_error(code, err, f"{data}/X: sample 1000 (chunk 1) holds NaN in row 0")


def test_a_damaged_chunk_under_scheduler_local_is_one_line_without_worker_noise(capfd, tmp_path):
    pytest.importorskip("distributed")
    path, where, bad = random_zstd_zarr_chunk(tmp_path)
    code, _, err = run(capfd, "evaluate", model_file(tmp_path), path, "--scheduler", "local")  # workers' stderr too
    one_line_error(code, err, *named(path, where, bad))
