"""``streamtrain inspect``: the report on a store, and the problems it flags (streamtrain.inspection)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from streamtrain import ArraySource, DataError, DataWarning
from streamtrain.cli import main
from streamtrain.inspection import inspect

M, N_X, C = 6000, 5, 500


def xy(seed: int = 0, labels: str = "bits") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_X, M)).astype("float32")
    Y = {
        "bits": lambda: (rng.random((1, M)) < 0.3).astype("uint8"),
        "ids": lambda: rng.integers(0, 4, (1, M)).astype("float32"),
        "reals": lambda: rng.standard_normal((2, M)),
        "one-hot": lambda: np.eye(3)[rng.integers(0, 3, M)].T,
    }[labels]()
    return X, Y


def clustered(report: dict) -> list[str]:
    return [w for w in report["warnings"] if w.startswith("labels are sorted or clustered")]


@pytest.mark.parametrize("labels", ["bits", "ids", "reals", "one-hot"])
@pytest.mark.parametrize("seed", range(3))
def test_labels_in_random_order_are_not_flagged(labels, seed):
    report = inspect(ArraySource(*xy(seed, labels), chunk_size=C))
    assert clustered(report) == [] and report["labels"]["furthest_chunk_sigmas"] < 5


@pytest.mark.parametrize("labels", ["bits", "ids", "reals", "one-hot"])
def test_labels_sorted_along_the_samples_are_flagged_with_the_fix(labels):
    X, Y = xy(labels=labels)
    order = np.argsort(Y[0] if Y.shape[0] == 1 else np.argmax(Y, axis=0) + Y[0] * 1e-9, kind="stable")
    (warning,) = clustered(inspect(ArraySource(X, Y[:, order], chunk_size=C)))
    assert "use --shuffle buffer (the default), or shuffle the store once" in warning


def test_a_few_chunks_of_one_class_in_a_random_store_are_flagged():
    """Clustered, not sorted: chunks 3 and 7 hold only class 1."""
    X, Y = xy()
    Y[:, 3 * C : 4 * C] = 1
    Y[:, 7 * C : 8 * C] = 1
    (warning,) = clustered(inspect(ArraySource(X, Y, chunk_size=C)))
    assert re.search(r"chunk [37] \(samples from [0-9,]+\) holds 100% label 1 against 42% overall", warning)


def test_the_report_on_a_zarr_store(zarr_store):
    X, Y = xy(labels="ids")
    report = inspect(zarr_store(X, Y, C))
    assert (report["format"], report["read_path"], report["n_x"], report["m"], report["k"]) == (
        "zarr",
        "direct",
        N_X,
        M,
        1,
    )
    assert (report["dtype"], report["y_dtype"], report["chunk"], report["chunks"]) == ("float32", "float32", C, 12)
    assert report["chunk_bytes"] == N_X * C * 4 and report["codec"] == "none"
    assert report["stored_bytes"]["X"] >= X.nbytes and report["stored_bytes"]["Y"] >= Y.nbytes
    assert report["labels"] == {**report["labels"], "kind": "class ids 0..3", "output": "softmax"}
    assert report["epoch_read_s"] > 0 and report["missing"] == []
    assert report["warnings"] == []  # small chunks, but a store too small for them to matter


def test_the_report_on_an_hdf5_store_counts_its_compressed_bytes(tmp_path):
    h5py = pytest.importorskip("h5py")
    X, Y = xy()
    X[:, : M // 2] = 0  # compresses well
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("X", data=X, chunks=(N_X, C), compression="gzip")
        f.create_dataset("Y", data=Y, chunks=(1, C))
    report = inspect(tmp_path / "d.h5")
    assert report["format"] == "hdf5" and report["codec"] == "gzip"
    assert 0 < report["stored_bytes"]["X"] < X.nbytes * 0.8 and report["stored_bytes"]["Y"] == Y.nbytes


def test_chunks_never_written_are_reported_not_refused(zarr_store):
    store = zarr_store(*xy(), C, skip={"X": {2, 5}})
    with pytest.warns(DataWarning, match="never written"):
        (note,) = inspect(store)["missing"]
    assert "X: 2 chunks were never written (the first samples 1000..1500)" in note


def test_tiny_chunks_in_a_large_store_are_flagged():
    X = np.zeros((100, 2**18), "float32")  # 100 MB of address space, never touched
    report = inspect(ArraySource(X, np.zeros((1, X.shape[1]), "uint8"), chunk_size=1024))
    (warning,) = report["warnings"]
    assert warning.startswith("tiny chunks (0.39 MB of X each): reading pays per chunk")


def test_huge_chunks_are_flagged():
    X = np.zeros((2**14, 2**13), "float32")  # one chunk of 512 MB of address space, never touched
    report = inspect(ArraySource(X, np.zeros((1, X.shape[1]), "uint8"), chunk_size=X.shape[1]))
    assert any(w.startswith("huge chunks (512 MB of X each)") for w in report["warnings"])


def test_a_samples_first_store_is_an_error_that_names_the_flag_and_reads_with_it(zarr_store, rows_store):
    X, Y = xy()
    with pytest.raises(DataError, match=re.escape("(X looks stored with samples as rows: pass --layout rows")):
        inspect(zarr_store(X.T.copy(), Y, C))
    report = inspect(rows_store(X, Y, C), layout="rows")  # X (m, n_x) in chunks of C rows, Y (m,)
    assert (report["layout"], report["n_x"], report["m"], report["chunks"]) == ("rows", N_X, M, M // C)
    assert report["read_path"] == "zarr library" and report["labels"]["kind"] == "0/1"


def test_scan_finds_constant_and_non_finite_features():
    X, Y = xy()
    X[1], X[4] = 7.0, -1.0
    X[3, 4321], X[0, 5000] = np.nan, np.inf
    report = inspect(ArraySource(X, Y, chunk_size=C), scan=True)
    f = report["features"]
    assert f["constant"] == [1, 4] and f["nonfinite"] == 2
    assert f["min"][1] == f["max"][1] == 7.0 and f["max"][3] == float(np.nanmax(X[3]))
    assert "2 constant features (rows 1, 4 of X)" in report["warnings"][-2]
    assert "2 NaN or infinite values in X" in report["warnings"][-1]
    assert "sample 4321 (chunk 8) holds NaN in row 3" in report["warnings"][-1]
    assert "features" not in inspect(ArraySource(X, Y, chunk_size=C))


def test_the_command_prints_the_report_and_its_warnings(zarr_store, capsys):
    X, Y = xy()
    store = zarr_store(X, np.sort(Y), C)
    assert main(["inspect", str(store), "--scan"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{store}: zarr, read directly"
    assert out[1].startswith(f"  X ({N_X}, {M:,}) float32 in 12 chunks of {C} samples")
    assert "labels: 0/1 (output sigmoid)" in out[3]
    assert out[-1].startswith("warning: labels are sorted or clustered along the samples")
    assert main(["inspect", str(store), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["m"] == M and len(report["warnings"]) == 1


def test_the_command_on_a_samples_first_store_exits_1_with_one_line(zarr_store, capsys):
    X, Y = xy()
    assert main(["inspect", str(zarr_store(X.T.copy(), Y, C))]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --layout rows" in err[0]
