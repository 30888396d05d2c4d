"""How a model was made (streamtrain.provenance): recorded in its file, shown by ``info``, made again."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shlex

import numpy as np
import pytest
import zarr

import streamtrain
from streamtrain.cli import main


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "d.zarr"
    streamtrain.make_data(path, m=900, n_x=4, chunk=150, seed=3)
    zarr.open_group(path, mode="a").create_array("w", data=np.linspace(0.5, 2, 900)[None, :], chunks=(1, 150))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--model", "mlp", "--hidden", "5,3", "--activation", "tanh", "--optimizer", "adam", "--lr", "0.01"],
        ["--holdout", "0.2", "--early-stopping", "--patience", "1", "--standardize", "--epochs", "3"],
        ["--weights", "w", "--class-weight", "balanced", "--shuffle", "chunks", "--l2", "0.5", "--dtype", "float64"],
        ["--batch-size", "full", "--lr", "2", "--eval-exact-every", "1", "--scheduler", "sync"],
    ],
)
def test_info_gives_the_command_that_trains_the_same_model_again(tmp_path, store, capsys, options):
    first = tmp_path / "first.npz"
    run(capsys, "fit", store, "--seed", "5", "--out", first, *options)
    described = json.loads(run(capsys, "info", first, "--json"))
    argv = shlex.split(described["command"])
    assert argv[:3] == ["streamtrain", "fit", str(store)] and argv[-2:] == ["--out", str(first)]
    again = tmp_path / "again.npz"
    run(capsys, *argv[1:-1], again)
    a, b = streamtrain.load(first), streamtrain.load(again)
    assert a.config == b.config
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_a_model_file_records_versions_data_configuration_and_final_metrics(tmp_path, store, capsys):
    warm = tmp_path / "warm.npz"
    run(capsys, "fit", store, "--epochs", "1", "--out", warm)
    run(capsys, "fit", store, "--init", warm, "--eval-exact-every", "1", "--out", tmp_path / "m.npz")
    result = streamtrain.load(tmp_path / "m.npz")
    versions = result.provenance["versions"]
    assert versions["python"] == platform.python_version()
    for package in ("streamtrain", "numpy", "zarr", "h5py", "dask"):
        assert versions[package] == importlib.metadata.version(package)
    assert result.provenance["init"] == str(warm) and result.data["m"] == 900
    text = run(capsys, "info", tmp_path / "m.npz")
    final = result.history[-1]
    assert f"final, after 5 epochs: loss {final.loss:.6g}  accuracy {final.accuracy:.6g}" in text
    assert f"exact_loss {final.exact_loss:.6g}" in text and f"--init {warm}" in text
    assert f"streamtrain {streamtrain.__version__}" in text


def test_info_on_arrays_in_memory_an_older_file_and_a_file_that_is_no_model(tmp_path, capsys):
    X, Y = np.random.default_rng(0).standard_normal((3, 200)), np.zeros((1, 200))
    Y[0, ::2] = 1
    result = streamtrain.fit(streamtrain.ArraySource(X, Y), batch_size=20, epochs=1)
    result.provenance = {}  # as files written before versions were recorded
    result.save(tmp_path / "m.npz")
    text = run(capsys, "info", tmp_path / "m.npz")
    assert "versions: not recorded" in text and "made again by: no command (trained on arrays in memory)" in text
    (tmp_path / "x.npz").write_bytes(b"not a model")
    assert main(["info", str(tmp_path / "x.npz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("streamtrain: error: ") and len(err.strip().splitlines()) == 1
