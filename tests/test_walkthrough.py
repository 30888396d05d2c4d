"""The README's "Your own data" commands, on the same two files (scikit-learn's digits, when installed)."""

from __future__ import annotations

import numpy as np
import pytest

from streamtrain.cli import main

datasets = pytest.importorskip("sklearn.datasets")


def test_from_a_sorted_csv_and_a_samples_first_hdf5_file_to_predictions(tmp_path, capsys, monkeypatch):
    h5py = pytest.importorskip("h5py")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    digits = datasets.load_digits()
    order = np.argsort(digits.target, kind="stable")
    with open("data/digits.csv", "w") as f:
        f.write(",".join([f"p{i}" for i in range(64)] + ["digit"]) + "\n")
        for row, digit in zip(digits.data[order], digits.target[order]):
            f.write(",".join(str(int(v)) for v in row) + f",{digit}\n")
    with h5py.File("data/digits.h5", "w") as f:
        f.create_dataset("X", data=digits.data.astype("float32"), chunks=(256, 64))
        f.create_dataset("y", data=digits.target.astype("uint8"), chunks=(256,))

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    assert run("convert", "data/digits.csv", "data/digits.zarr", "--label-column", "digit", "--chunk", "256")[0] == 0
    code, out, _ = run("inspect", "data/digits.zarr")
    assert code == 0 and "warning: labels are sorted or clustered along the samples" in out
    argv = ("convert", "data/digits.csv", "data/digits.zarr", "--label-column", "digit", "--chunk", "256")
    assert run(*argv, "--shuffle", "--overwrite")[0] == 0
    assert "sorted or clustered" not in run("inspect", "data/digits.zarr")[1]
    fit = ("fit", "data/digits.zarr", "--model", "softmax", "--batch-size", "32", "--lr", "0.01", "--epochs", "10")
    assert run(*fit)[0] == 0
    code, out, _ = run("evaluate", "data/digits-model.npz", "data/digits.zarr", "--json")
    assert code == 0 and '"accuracy": 0.9' in out
    assert run("predict", "data/digits-model.npz", "data/digits.zarr", "--out", "data/digits-pred.zarr")[0] == 0
    code, _, err = run("inspect", "data/digits.h5", "--y", "y")
    assert code == 1 and err.strip().endswith("pass --layout rows")
    h5 = ("convert", "data/digits.h5", "data/digits-h5.zarr", "--y", "y", "--layout", "rows", "--chunk", "256")
    assert run(*h5)[0] == 0
    assert run("fit", "data/digits.h5", "--y", "y", "--layout", "rows", *fit[2:])[0] == 0
