"""The command line: what a user sees, and the exit codes 0 / 1 (user error) / 2 (usage)."""

import json
import math
import os
import re
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import zarr

import streamtrain
from streamtrain.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamtrain: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "d.zarr"
    streamtrain.make_data(path, m=3000, n_x=4, chunk=500, seed=0)
    return path


def test_make_data_then_fit_writes_a_model_and_reports_each_epoch(capsys, tmp_path):
    code, out, _ = run(capsys, "make-data", tmp_path / "d.zarr", "--m", 2000, "--n-x", 3, "--chunk", 300)
    assert code == 0 and "Bayes loss" in out
    code, out, err = run(
        capsys,
        "fit",
        tmp_path / "d.zarr",
        "--epochs",
        2,
        "--batch-size",
        64,
        "--metrics",
        tmp_path / "m.jsonl",
        "--no-progress",
    )
    assert code == 0, err
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("epoch")] == ["epoch 1", "epoch 2"]
    assert "samples/s" in out and f"model written to {tmp_path / 'd-model.npz'}" in out
    model = streamtrain.load(tmp_path / "d-model.npz")
    assert model.config.batch_size == 64 and model.data["m"] == 2000
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("bayes_loss", ["low", None, [0.5], True])
def test_a_store_attribute_that_is_not_a_number_is_not_printed_and_the_model_is_written(capsys, store, bayes_loss):
    # The Bayes loss line formatted the store's word with :.5f: a traceback after training, no model written.
    group = zarr.open_group(store, mode="r+")
    group.attrs["streamtrain"] = {**group.attrs["streamtrain"], "bayes_loss": bayes_loss}
    code, out, err = run(capsys, "fit", store, "--epochs", "1", "--out", f"{store}-model.npz")
    assert code == 0, err
    assert "Bayes loss" not in out and f"model written to {store}-model.npz" in out


def test_fit_options_reach_the_library(capsys, store, tmp_path):
    code, _, err = run(
        capsys,
        "fit",
        store,
        "--batch-size",
        3000,
        "--epochs",
        1,
        "--lr",
        0.25,
        "--shuffle",
        "none",
        "--seed",
        9,
        "--dtype",
        "float64",
        "--out",
        tmp_path / "m.npz",
    )
    assert code == 0, err
    cli = streamtrain.load(tmp_path / "m.npz")
    lib = streamtrain.fit(store, batch_size=3000, epochs=1, lr=0.25, shuffle="none", seed=9, dtype="float64")
    np.testing.assert_array_equal(cli.params["W1"], lib.params["W1"])
    assert cli.params["W1"].dtype == np.float64


def test_warm_start_with_init(capsys, store, tmp_path):
    run(capsys, "fit", store, "--epochs", 1, "--out", tmp_path / "a.npz")
    code, _, err = run(capsys, "fit", store, "--epochs", 1, "--init", tmp_path / "a.npz", "--out", tmp_path / "b.npz")
    assert code == 0, err
    first = streamtrain.load(tmp_path / "a.npz")
    expected = streamtrain.fit(store, epochs=1, init=first.params)
    np.testing.assert_array_equal(streamtrain.load(tmp_path / "b.npz").params["W1"], expected.params["W1"])


def test_custom_array_names(capsys, tmp_path):
    g = zarr.open_group(tmp_path / "n.zarr", mode="w")
    g.create_array("feat", data=np.ones((2, 10), np.float32), chunks=(2, 5))
    g.create_array(
        "lab", data=np.tile([[0, 1]], 5).astype(np.uint8), chunks=(1, 5), config={"write_empty_chunks": True}
    )
    code, _, err = run(
        capsys, "fit", tmp_path / "n.zarr", "--x", "feat", "--y", "lab", "--batch-size", 4, "--out", tmp_path / "m.npz"
    )
    assert code == 0, err


def _h5(path, **arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return path


def _zarr_missing_chunk(path):
    g = zarr.open_group(path, mode="w")
    X = g.create_array("X", shape=(2, 10), chunks=(2, 5), dtype="float32", fill_value=0)
    X[:, :5] = 1.0
    g.create_array("Y", data=np.zeros((1, 10), np.uint8), chunks=(1, 10), config={"write_empty_chunks": True})
    return path


BAD_DATA = {
    "missing file": (lambda d: d / "nope.zarr", ["nope.zarr", "no such file"]),
    "not a store": (lambda d: (d / "x.txt").write_text("hello") and d / "x.txt", ["x.txt"]),
    "X not 2-D": (lambda d: _h5(d / "a.h5", X=np.zeros(5), Y=np.zeros((1, 5))), ["a.h5/X", "2-D"]),
    "m mismatch": (lambda d: _h5(d / "a.h5", X=np.zeros((2, 5)), Y=np.zeros((1, 4))), ["m=5", "m=4"]),
    "no array": (lambda d: _h5(d / "a.h5", X=np.zeros((2, 5)), L=np.zeros((1, 5))), ["no dataset 'Y'", "L, X"]),
    "text dtype": (lambda d: _h5(d / "a.h5", X=np.array([[b"a", b"b"]]), Y=np.zeros((1, 2))), ["a.h5/X", "numeric"]),
    "no samples": (lambda d: _h5(d / "a.h5", X=np.zeros((2, 0)), Y=np.zeros((1, 0))), ["m = 0"]),
    "bad labels": (
        lambda d: _h5(d / "a.h5", X=np.zeros((2, 5)), Y=np.array([[0, 1, 2, 0, 1]])),
        ["a.h5/Y", "label 2", "sample 2"],
    ),
    "missing chunk": (lambda d: _zarr_missing_chunk(d / "m.zarr"), ["m.zarr/X", "samples 5..10", "missing"]),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_one_line_and_exit_1(capsys, tmp_path, case):
    make, fragments = BAD_DATA[case]
    code, _, err = run(capsys, "fit", make(tmp_path), "--batch-size", 2, "--out", tmp_path / "out.npz")
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--batch-size", "0"], ["batch_size"]),
        (["--batch-size", "5000"], ["larger than m=3000"]),
        (["--lr", "0"], ["learning rate"]),
        (["--epochs", "0"], ["epochs"]),
        (["--out", "/nonexistent-dir/m.npz"], ["/nonexistent-dir"]),
        (["--scheduler", "bogus", "--batch-size", "full"], ["unknown scheduler 'bogus'"]),
        (["--optimizer", "lbfgs", "--batch-size", "64"], ["L-BFGS takes exact full-batch steps"]),
        (["--l2", "-1"], ["l2 must be"]),
    ],
)
def test_bad_fit_options_are_one_line_and_exit_1(capsys, store, argv, fragments):
    code, _, err = run(capsys, "fit", store, *argv)
    assert_one_line_error(code, err, *fragments)


def test_bad_init_files(capsys, store, tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"junk")
    code, _, err = run(capsys, "fit", store, "--init", tmp_path / "junk.npz")
    assert_one_line_error(code, err, "junk.npz", "not a streamtrain model file")
    streamtrain.make_data(tmp_path / "wide.zarr", m=100, n_x=7, seed=0)
    run(capsys, "fit", tmp_path / "wide.zarr", "--batch-size", 10, "--out", tmp_path / "wide.npz")
    code, _, err = run(capsys, "fit", store, "--init", tmp_path / "wide.npz")
    assert_one_line_error(code, err, "expected shapes", "W1(1, 4)", "W1(1, 7)")


def test_make_data_errors(capsys, store):
    code, _, err = run(capsys, "make-data", store)
    assert_one_line_error(code, err, "already exists")
    code, _, err = run(capsys, "make-data", store.parent / "x.h5", "--codec", "zstd")
    assert_one_line_error(code, err, "zstd")


def test_make_data_overwrite_refuses_a_directory_that_is_not_a_store(capsys, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"jpeg")
    code, _, err = run(capsys, "make-data", tmp_path / "photos", "--overwrite", "--m", 100, "--n-x", 2)
    assert_one_line_error(code, err, "photos", "is neither a Zarr group nor an HDF5 file")
    assert os.listdir(tmp_path / "photos") == ["a.jpg"]
    code, _, err = run(capsys, "make-data", tmp_path / "missing" / "d.zarr", "--m", 100, "--n-x", 2)
    assert_one_line_error(code, err, "missing/d.zarr", "does not exist")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["fit"],
        ["fit", "d", "--shuffle", "random"],
        ["fit", "d", "--epochs", "x"],
        ["make-data"],
        ["frobnicate"],
        ["fit", "d", "--batch-size", "half"],
        ["evaluate", "m.npz"],
        ["compare", "d"],
        ["compare", "m.npz", "d", "--batch-size", "x"],
    ],
)
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_help_is_fast_and_does_not_import_dask_or_the_backends():
    code = (
        "import sys\nfrom streamtrain.cli import main\n"
        "for argv in (['--help'], ['fit', '--help'], ['make-data', '--help'], ['evaluate', '--help'],\n"
        "             ['compare', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0\n"
        "heavy = [m for m in ('dask', 'zarr', 'h5py') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--batch-size" in proc.stdout and "make-data" in proc.stdout


def test_the_installed_command_exits_1_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "streamtrain", "fit", str(tmp_path / "none.zarr")], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"streamtrain: error: {tmp_path / 'none.zarr'}: no such file or directory"


def test_fit_without_a_terminal_prints_no_progress_line(tmp_path, store):
    proc = subprocess.run(
        [sys.executable, "-m", "streamtrain", "fit", str(store), "--epochs", "1", "--out", str(tmp_path / "m.npz")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert streamtrain.load(tmp_path / "m.npz").history[0].epoch == 1


def test_fit_batch_size_full_and_lbfgs_reach_the_library(capsys, store, tmp_path):
    code, out, err = run(
        capsys,
        "fit",
        store,
        "--batch-size",
        "full",
        "--epochs",
        2,
        "--lr",
        1,
        "--l2",
        0.5,
        "--scheduler",
        "sync",
        "--dtype",
        "float64",
        "--out",
        tmp_path / "gd.npz",
    )
    assert code == 0, err
    lib = streamtrain.fit(store, batch_size="full", epochs=2, lr=1.0, l2=0.5, dtype="float64")
    np.testing.assert_allclose(streamtrain.load(tmp_path / "gd.npz").params["W1"], lib.params["W1"], rtol=1e-12)
    assert out.count("(exact) |grad|") == 2
    code, out, err = run(
        capsys,
        "fit",
        store,
        "--optimizer",
        "lbfgs",
        "--l2",
        0.5,
        "--scheduler",
        "sync",
        "--out",
        tmp_path / "lbfgs.npz",
    )
    assert code == 0, err
    assert "converged:" in out.splitlines()[-3]
    lbfgs = streamtrain.load(tmp_path / "lbfgs.npz")
    assert lbfgs.config.optimizer == "lbfgs" and lbfgs.config.batch_size == "full"
    assert lbfgs.history[-1].converged and lbfgs.history[-1].loss < lib.history[-1].loss


def test_fit_eval_exact_every_prints_the_exact_loss(capsys, store, tmp_path):
    code, out, err = run(
        capsys, "fit", store, "--epochs", 2, "--eval-exact-every", 1, "--scheduler", "sync", "--out", tmp_path / "m.npz"
    )
    assert code == 0, err
    assert len([line for line in out.splitlines() if "| exact loss" in line]) == 2


def test_evaluate_prints_the_exact_loss_and_accuracy(capsys, store, tmp_path):
    model = streamtrain.fit(store, epochs=1)
    model.save(tmp_path / "m.npz")
    expected = streamtrain.evaluate(store, model, scheduler="sync")
    code, out, err = run(capsys, "evaluate", tmp_path / "m.npz", store, "--json", "--scheduler", "sync")
    assert code == 0, err
    got = json.loads(out)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-12) and got["m"] == 3000
    assert got["accuracy"] == expected["accuracy"]
    code, out, err = run(capsys, "evaluate", tmp_path / "m.npz", store)
    assert code == 0, err
    assert f"loss {expected['loss']:.6f}" in out and "3,000 samples" in out


def test_evaluate_errors_are_one_line(capsys, store, tmp_path):
    code, _, err = run(capsys, "evaluate", tmp_path / "none.npz", store)
    assert_one_line_error(code, err, "none.npz")
    streamtrain.make_data(tmp_path / "wide.zarr", m=100, n_x=7, seed=0)
    streamtrain.fit(tmp_path / "wide.zarr", batch_size=10, epochs=1).save(tmp_path / "wide.npz")
    code, _, err = run(capsys, "evaluate", tmp_path / "wide.npz", store)
    assert_one_line_error(code, err, "expected shapes", "W1(1, 4)", "W1(1, 7)")


def test_compare_json_and_table(capsys, store, tmp_path):
    streamtrain.fit(store, epochs=1, batch_size=100, l2=2.0).save(tmp_path / "m.npz")
    code, out, err = run(
        capsys,
        "compare",
        tmp_path / "m.npz",
        store,
        "--batch-size",
        10,
        3000,
        "--batches",
        5,
        "--json",
        "--scheduler",
        "sync",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["l2"] == 2.0 and report["m"] == 3000  # the model's own l2 by default
    assert [row["batch_size"] for row in report["batch_sizes"]] == [10, 100, 3000]  # 100: the model's own
    assert any("trained with B = 100" in line for line in report["advice"])
    full = report["batch_sizes"][2]
    assert full["batches"] == 1 and full["cosine_mean"] == pytest.approx(1, abs=1e-12)
    assert full["rel_error_mean"] < 1e-12
    assert report["advice"] and report["noise_scale"] > 0
    code, out, err = run(capsys, "compare", tmp_path / "m.npz", store, "--l2", 0, "--batches", 2)
    assert code == 0, err
    assert "B_noise" in out and "cos mean" in out and "l2 0.0" in out
    assert out.count("\n") > 10


def test_compare_errors_are_one_line(capsys, store, tmp_path):
    streamtrain.fit(store, epochs=1).save(tmp_path / "m.npz")
    code, _, err = run(capsys, "compare", tmp_path / "m.npz", store, "--batch-size", 0)
    assert_one_line_error(code, err, "batch_size")
    code, _, err = run(capsys, "compare", tmp_path / "m.npz", store, "--scheduler", "tcp//x")
    assert_one_line_error(code, err, "unknown scheduler")


@pytest.mark.parametrize("command", ["evaluate", "compare"])
@pytest.mark.parametrize("scheduler", ["foo://bar", "tcp://", "tcp://host:notaport", "inproc://x", "ucx://10.0.0.1:1"])
def test_malformed_scheduler_addresses_fail_at_once_without_a_traceback(tmp_path, command, scheduler):
    # A subprocess: dask.distributed's noise came at exit, from a half-made Client, after a 20 s hang.
    argv = [sys.executable, "-m", "streamtrain", command, str(tmp_path / "m.npz"), str(tmp_path / "none.zarr")]
    t0 = time.perf_counter()
    proc = subprocess.run([*argv, "--scheduler", scheduler], capture_output=True, text=True, timeout=60)
    assert time.perf_counter() - t0 < 10
    assert proc.returncode == 1 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith(f"streamtrain: error: scheduler {scheduler!r}") and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.5), ("momentum", 0.5), ("rmsprop", 0.01), ("adam", 0.01)])
@pytest.mark.parametrize(
    "task, argv",
    [
        ("logistic", ["--model", "logistic"]),
        ("softmax", ["--model", "softmax"]),
        ("linear", ["--model", "linear"]),
        ("softmax", ["--model", "mlp", "--hidden", "8,4", "--activation", "tanh"]),
    ],
)
def test_every_model_trains_from_the_command_line_with_every_optimizer(capsys, tmp_path, task, argv, optimizer, lr):
    data = tmp_path / f"{task}.zarr"
    code, out, err = run(capsys, "make-data", data, "--task", task, "--m", 4000, "--n-x", 5, "--chunk", 1000)
    assert code == 0 and f"({task}," in out, err
    bayes = json.loads(json.dumps(streamtrain.open_source(data).attrs))["bayes_loss"]
    code, out, err = run(
        capsys,
        "fit",
        data,
        *argv,
        "--optimizer",
        optimizer,
        "--lr",
        lr,
        "--epochs",
        4,
        "--batch-size",
        32,
        "--out",
        tmp_path / "m.npz",
    )
    assert code == 0, err
    model = streamtrain.load(tmp_path / "m.npz")
    assert model.config.optimizer == optimizer and model.model.name == argv[1]
    exact = streamtrain.evaluate(data, model, scheduler="sync")
    assert exact["loss"] < bayes + 0.1  # learnt: the untrained loss is log 2, log 3 or about 5
    code, out, err = run(capsys, "evaluate", tmp_path / "m.npz", data, "--scheduler", "sync")
    assert code == 0 and ("accuracy" in out) == (task != "linear"), err


def test_mlp_options_and_lr_schedule_reach_the_library(capsys, store, tmp_path):
    code, _, err = run(
        capsys,
        "fit",
        store,
        "--model",
        "mlp",
        "--hidden",
        "6,3",
        "--activation",
        "sigmoid",
        "--optimizer",
        "momentum",
        "--beta1",
        0.8,
        "--lr-schedule",
        "step",
        "--lr-decay",
        0.5,
        "--lr-step",
        2,
        "--lr-per",
        "step",
        "--epochs",
        2,
        "--batch-size",
        100,
        "--dtype",
        "float64",
        "--out",
        tmp_path / "m.npz",
    )
    assert code == 0, err
    cli = streamtrain.load(tmp_path / "m.npz")
    lib = streamtrain.fit(
        store,
        model="mlp",
        hidden=[6, 3],
        activation="sigmoid",
        optimizer="momentum",
        beta1=0.8,
        lr_schedule="step",
        lr_decay=0.5,
        lr_step=2,
        lr_per="step",
        epochs=2,
        batch_size=100,
        dtype="float64",
    )
    assert list(cli.params) == ["W1", "b1", "W2", "b2", "W3", "b3"] and cli.params["W2"].shape == (3, 6)
    for k in lib.params:
        np.testing.assert_array_equal(cli.params[k], lib.params[k])
    assert cli.model == lib.model and cli.model.output == "sigmoid"


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--model", "mlp", "--hidden", "4,0"], ["hidden layer size"]),
        (["--model", "logistic", "--hidden", "4"], ["no hidden layers"]),
        (["--optimizer", "adam", "--beta2", "1"], ["beta2"]),
        (["--lr-schedule", "exponential", "--lr-decay", "2"], ["decay"]),
        (["--model", "softmax", "--init", "NONE"], ["NONE"]),
    ],
)
def test_bad_model_and_optimizer_options_are_one_line(capsys, store, argv, fragments):
    code, _, err = run(capsys, "fit", store, *argv)
    assert_one_line_error(code, err, *fragments)


def test_make_data_task_errors_are_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "make-data", tmp_path / "x.zarr", "--task", "softmax", "--classes", 1)
    assert_one_line_error(code, err, "classes")
    code, _, err = run(capsys, "make-data", tmp_path / "x.zarr", "--task", "linear", "--noise", 0)
    assert_one_line_error(code, err, "noise")


# -- Exit codes, and output a batch job can trust ---------------------------------------------------------


def test_exit_codes_are_in_the_help_and_the_readme(capsys):
    from pathlib import Path

    from streamtrain.cli import EXIT_CODES

    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Exit codes") :]
    for code, meaning in EXIT_CODES.items():
        assert f"  {code:<5}{meaning}" in help_text
        assert f"| {code} " in section or f" {code} |" in section or f"{code}, " in section, code
    assert (
        "pip install . && streamtrain make-data data/demo.zarr --overwrite && streamtrain fit data/demo.zarr" in readme
    )


@pytest.mark.parametrize(
    "raised, code",
    [
        (streamtrain.DivergedError("loss is inf"), 3),
        (streamtrain.DataError("d.zarr: bad"), 1),
        (streamtrain.ConfigError("bad option"), 1),
        (KeyboardInterrupt(), 130),
    ],
)
def test_each_kind_of_failure_has_its_exit_code(capsys, monkeypatch, store, raised, code):
    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(streamtrain.evaluation, "evaluate", fail)
    assert main(["evaluate", "m.npz", str(store)]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (str(raised) in err if code != 130 else "interrupted" in err)


DIVERGED_MODEL = "the model's loss is inf: its parameters are too large (a diverged model?)"


def _huge_linear_model(tmp_path):
    """A linear model file whose params are finite, but so large that the loss overflows to inf."""
    data = tmp_path / "lin.zarr"
    streamtrain.make_data(data, task="linear", m=200, n_x=3, seed=0)
    result = streamtrain.fit(data, model="linear", epochs=1, batch_size=50, dtype="float64")
    result.params = {k: np.full_like(v, 1e200) for k, v in result.params.items()}
    result.save(tmp_path / "huge.npz")
    return data, tmp_path / "huge.npz"


@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_evaluate_and_compare_of_a_diverged_model_exit_3_without_a_number(capsys, tmp_path, command):
    data, model = _huge_linear_model(tmp_path)
    for json_flag in ([], ["--json"]):
        code, out, err = run(capsys, command, model, data, "--scheduler", "sync", *json_flag)
        assert code == 3 and out == "", out
        assert err == f"streamtrain: error: {DIVERGED_MODEL}\n"
    # numpy's overflow warnings, from Dask's threads too, do not break the one-line message
    argv = [sys.executable, "-m", "streamtrain", command, str(model), str(data)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 3 and proc.stdout == "" and proc.stderr == f"streamtrain: error: {DIVERGED_MODEL}\n"


def test_compare_at_a_zero_gradient_says_unbounded_and_writes_strict_json(capsys, tmp_path):
    path = _h5(tmp_path / "flat.h5", X=np.ones((1, 8), np.float32), Y=np.tile([[1, 0]], 4).astype(np.uint8))
    config = streamtrain.FitConfig(batch_size=2)
    zero = {"W1": np.zeros((1, 1), np.float32), "b1": np.zeros((1, 1), np.float32)}
    streamtrain.FitResult(zero, streamtrain.get_model("logistic"), config).save(tmp_path / "zero.npz")
    argv = ["compare", tmp_path / "zero.npz", path, "--batch-size", 1, "--shuffle", "none", "--scheduler", "sync"]
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON output")

    report = json.loads(out, parse_constant=refuse)
    assert report["noise_scale"] is None and report["batch_sizes"][0]["rel_error_random"] is None
    assert report["batch_sizes"][0]["cosine_mean"] is None
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "B_noise = tr(S)/|grad J|^2 = unbounded" in out and "unbounded" in out.split("if random")[1]
    assert "inf" not in out.replace("information", "") and "nan" not in out.lower().replace("n/a", "")


def test_json_output_holds_no_nan_or_infinity(tmp_path):
    from streamtrain.records import EpochRecord, append_jsonl, to_json

    assert to_json({"a": [1.0, math.inf, -math.inf], "b": (2, None)}) == '{"a": [1.0, null, null], "b": [2, null]}'
    with pytest.raises(ValueError):
        to_json({"loss": math.nan})  # a NaN result is a bug, never invalid JSON
    append_jsonl(tmp_path / "m.jsonl", EpochRecord(1, 0.5, 0.0, samples_per_s=math.inf))
    assert json.loads((tmp_path / "m.jsonl").read_text(), parse_constant=float) == {
        "epoch": 1,
        "loss": 0.5,
        "seconds": 0.0,
        "samples_per_s": None,
    }


def test_the_epoch_line_says_what_share_of_the_time_went_to_waiting_on_reads(capsys, tmp_path):
    from streamtrain._progress import read_share

    assert read_share(0.3, 1.2) == "waiting on reads 25%"
    assert read_share(0.9, 1.2, verdict=True) == "waiting on reads 75%: reading is the limit"
    assert read_share(0.0, 0.0, verdict=True) == "waiting on reads 0%: computing is the limit"
    data = tmp_path / "d.zarr"
    assert main(["make-data", str(data), "--m", "3000", "--n-x", "4", "--no-progress"]) == 0
    assert main(["fit", str(data), "--epochs", "1", "--out", str(tmp_path / "m.npz"), "--no-progress"]) == 0
    epoch = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch 1:"))
    assert re.search(r"\(waiting on reads \d+%: (reading|computing) is the limit\)", epoch), epoch


@pytest.mark.parametrize("name", ["\x1e", "a\nb", "line\u2028break"])
def test_a_path_with_a_line_break_in_it_stays_on_the_error_line(capsys, store, name):
    """Found by the property tests: ``--init $'\\x1e'`` printed its error over two lines."""
    code, _, err = run(capsys, "fit", store, "--init", name)
    assert_one_line_error(code, err, f"{repr(name)[1:-1]}: no such model file")
