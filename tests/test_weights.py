"""Per-sample weights (--weights NAME, --class-weight balanced), tested three ways as the unweighted
objective is: analytic vs finite differences, streamed vs in memory, mini-batch vs full batch."""

import json
import pickle
import subprocess
import sys

import h5py
import numpy as np
import pytest
import zarr
from conftest import flat, logistic_xy, write_hdf5, write_rows, write_zarr

import streamtrain
from streamtrain import ArraySource, ConfigError, DataError
from streamtrain.batches import BatchStream, Cursor
from streamtrain.cli import main
from streamtrain.full_batch import FullBatch
from streamtrain.models import get_model, objective
from streamtrain.weights import StoredWeights, weighting

LOGISTIC = get_model("logistic")
MODELS = {
    "logistic": (get_model("logistic"), 1),
    "softmax": (get_model("softmax", classes=3), 1),
    "linear": (get_model("linear"), 2),
    "mlp": (get_model("mlp", hidden=[5], activation="tanh", output="sigmoid"), 1),
}


def _labels(name, rng, m):
    if name == "softmax":
        return rng.integers(0, 3, size=(1, m)).astype(np.float64)
    if name == "linear":
        return rng.standard_normal((2, m))
    return rng.integers(0, 2, size=(1, m)).astype(np.float64)


def _problem(name, m=37, n_x=4, seed=0):
    model, k = MODELS[name]
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((n_x, m)), _labels(name, rng, m)
    params = {k: v.astype(np.float64) for k, v in model.init(n_x, k, np.float64, seed).items()}
    params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in params.items()}  # away from zero
    w = rng.random((1, m)) * 3
    return model, params, X, Y, w


def _weighted_mean_loss(model, params, X, Y, w):
    """Σ w_i loss_i / Σ w_i, one sample at a time: the definition, with no sums shared with the code."""
    losses = [model.totals(params, X[:, [i]], Y[:, [i]], grad=False).loss for i in range(X.shape[1])]
    return float(np.dot(losses, w[0]) / w.sum())


@pytest.mark.parametrize("name", MODELS)
def test_weighted_gradient_matches_finite_differences(name, numeric_grad):
    model, params, X, Y, w = _problem(name)
    w = w * X.shape[1] / w.sum()  # mean 1: J is the weighted mean loss
    _, grads = objective(params, model.totals(params, X, Y, weights=w), l2=0.3)
    numeric = numeric_grad(lambda p: objective(p, model.totals(p, X, Y, weights=w), l2=0.3)[0], params)
    for k in params:
        np.testing.assert_allclose(grads[k], numeric[k], rtol=1e-6, atol=1e-8)
    unpenalised = objective(params, model.totals(params, X, Y, weights=w))[0]
    assert unpenalised == pytest.approx(_weighted_mean_loss(model, params, X, Y, w), rel=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_whole_weights_count_as_repeated_samples(name):
    model, params, X, Y, _ = _problem(name)
    w = np.random.default_rng(1).integers(0, 4, size=(1, X.shape[1])).astype(np.float64)
    repeated = np.repeat(np.arange(X.shape[1]), w[0].astype(int))
    weighed = model.totals(params, X, Y, weights=w)
    copies = model.totals(params, X[:, repeated], Y[:, repeated])
    assert weighed.loss == pytest.approx(copies.loss, rel=1e-12)
    assert weighed.correct == pytest.approx(copies.correct)
    np.testing.assert_allclose(flat(weighed.grads), flat(copies.grads), rtol=1e-10, atol=1e-12)
    ones = model.totals(params, X, Y, weights=np.ones((1, X.shape[1])))
    plain = model.totals(params, X, Y)
    assert ones.loss == pytest.approx(plain.loss, rel=1e-12) and ones.correct == plain.correct


def _weighted_arrays(m=1000, chunk=128, seed=3):
    X, Y = logistic_xy(m=m, n_x=4, seed=seed)
    w = np.random.default_rng(seed).random((1, m)) * 2
    return ArraySource(X, Y, chunk_size=chunk, arrays={"w": w}), X, Y, w


@pytest.mark.parametrize("class_weight", [None, "balanced"])
@pytest.mark.parametrize("shuffle", ["none", "chunks", "buffer"])
def test_exact_gradient_is_the_mean_of_an_epochs_weighted_batch_gradients(shuffle, class_weight):
    source, *_ = _weighted_arrays()
    params = {"W1": np.array([[0.5, -1.0, 0.2, 0.1]]), "b1": np.array([[0.3]])}
    with weighting(LOGISTIC, source, "w", class_weight) as raw:
        weigh = raw.over(source, LOGISTIC)
        with FullBatch(source, LOGISTIC, scheduler="sync", weighting=weigh) as exact:
            loss, grad = exact.loss_and_grad(params, l2=0.2)
        stream = BatchStream(source, 100, Cursor(4, 0), shuffle=shuffle, dtype=np.float64, weighting=weigh)
        total, sizes, losses = None, 0, 0.0
        for batch in stream:
            assert batch.weights.shape == (1, batch.X.shape[1])
            b_loss, g, _ = streamtrain.models.batch_objective(
                LOGISTIC, params, batch.X, batch.Y, l2=0.2, m=source.m, weights=batch.weights
            )
            B = batch.X.shape[1]
            total = flat(g) * B if total is None else total + flat(g) * B
            sizes, losses = sizes + B, losses + b_loss * B
    assert sizes == source.m
    np.testing.assert_allclose(total / sizes, flat(grad), rtol=1e-10, atol=1e-13)
    assert losses / sizes == pytest.approx(loss, rel=1e-10)


def test_exact_pass_is_the_weighted_mean_in_memory_on_every_scheduler(tmp_path):
    _, X, Y, w = _weighted_arrays(m=900)
    path = write_zarr(tmp_path / "d.zarr", X.astype(np.float32), Y.astype(np.float32), 128)
    zarr.open_group(path, mode="a").create_array("w", data=w, chunks=(1, 100))  # its own chunks
    params = {"W1": np.array([[0.5, -1.0, 0.2, 0.1]]), "b1": np.array([[0.3]])}
    X32, Y32 = X.astype(np.float32).astype(np.float64), Y
    expected = _weighted_mean_loss(LOGISTIC, params, X32, Y32, w)
    losses = {}
    with streamtrain.open_source(path) as source, weighting(LOGISTIC, source, "w", None) as raw:
        weigh = raw.over(source, LOGISTIC)
        assert weigh.scale == pytest.approx(source.m / w.sum())
        for scheduler in ("sync", "threads"):
            with FullBatch(source, LOGISTIC, scheduler=scheduler, weighting=weigh) as exact:
                losses[scheduler] = exact.loss_and_grad(params)[0]
        again = pickle.loads(pickle.dumps(weigh))  # as Dask ships it to a worker: reopened by path
        np.testing.assert_array_equal(again(Y[:, 200:300], 200, 300), weigh(Y[:, 200:300], 200, 300))
        again.stored.close()
    assert losses["sync"] == losses["threads"] == pytest.approx(expected, rel=1e-12)


def test_balanced_weights_are_scikit_learns_and_give_balanced_accuracy():
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.utils.class_weight import compute_class_weight

    rng = np.random.default_rng(0)
    m = 2000
    Y = (rng.random((1, m)) < 0.1).astype(np.float64)
    X = rng.standard_normal((3, m)) + Y
    source = ArraySource(X, Y, chunk_size=256)
    with weighting(LOGISTIC, source, None, "balanced") as raw:
        expected = compute_class_weight("balanced", classes=np.array([0.0, 1.0]), y=Y[0])
        np.testing.assert_allclose(raw.classes, expected, rtol=1e-12)
        assert raw.over(source, LOGISTIC).scale == pytest.approx(1.0, rel=1e-12)
    params = {"W1": np.array([[0.3, 0.2, 0.1]]), "b1": np.array([[-0.2]])}
    result = streamtrain.evaluate(source, params, model="logistic", scheduler="sync", class_weight="balanced")
    predicted = LOGISTIC.predict(params, X)[0]
    assert result["accuracy"] == pytest.approx(balanced_accuracy_score(Y[0], predicted), rel=1e-12)
    assert result["weighted"] == "--class-weight balanced"


def _imbalanced(tmp_path, m=8000, seed=0):
    """A 95/5 store whose classes overlap: unweighted training predicts the minority rarely."""
    rng = np.random.default_rng(seed)
    Y = (rng.random((1, m)) < 0.05).astype(np.float32)
    X = (rng.standard_normal((4, m)) + 0.7 * Y).astype(np.float32)
    return write_zarr(tmp_path / "imbalanced.zarr", X, Y, 1000), X, Y


def _recall(params, X, Y):
    predicted = LOGISTIC.predict(params, X)[0]
    return float(np.mean(predicted[Y[0] == 1] == 1))


def test_balanced_class_weights_raise_minority_recall(tmp_path, capsys, monkeypatch):
    """The README's imbalanced-classes commands, on the same store."""
    monkeypatch.chdir(tmp_path)
    _, X, Y = _imbalanced(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "imbalanced.zarr").rename(tmp_path / "data" / "rare.zarr")
    steps = ("--epochs", "5", "--lr", "0.5", "--batch-size", "64", "--seed", "1")
    assert main(["fit", "data/rare.zarr", *steps]) == 0
    assert main(["fit", "data/rare.zarr", "--class-weight", "balanced", *steps, "--out", "data/rare-balanced.npz"]) == 0
    capsys.readouterr()
    plain = streamtrain.load("data/rare-model.npz").params
    balanced = streamtrain.load("data/rare-balanced.npz").params
    assert _recall(plain, X, Y) < 0.2 and _recall(balanced, X, Y) > 0.6
    assert main(["evaluate", "data/rare-model.npz", "data/rare.zarr", "--class-weight", "balanced"]) == 0
    assert "accuracy 0.5" in capsys.readouterr().out  # the balanced accuracy: a coin toss on the minority
    assert main(["evaluate", "data/rare-balanced.npz", "data/rare.zarr"]) == 0
    assert "accuracy 0.7" in capsys.readouterr().out


def test_cli_fit_evaluate_and_compare_with_weights(tmp_path, capsys):
    path, _, Y = _imbalanced(tmp_path)
    w = np.where(Y == 1, 5.0, 1.0).astype(np.float32)
    zarr.open_group(path, mode="a").create_array("W", data=w, chunks=(1, 1000))
    out = tmp_path / "m.npz"
    assert main(["fit", str(path), "--weights", "W", "--epochs", "2", "--batch-size", "8", "--out", str(out)]) == 0
    assert "weights" in streamtrain.load(out).config.to_dict() and streamtrain.load(out).config.weights == "W"
    capsys.readouterr()
    assert main(["evaluate", str(out), str(path)]) == 0
    text = capsys.readouterr().out
    assert "weighted by --weights W" in text
    own = streamtrain.evaluate(path, out)
    unweighted = streamtrain.evaluate(path, out, unweighted=True)
    assert own["loss"] != pytest.approx(unweighted["loss"], rel=1e-3) and "weighted" not in unweighted
    loss, _ = streamtrain.loss_and_grad(path, out, scheduler="sync")
    assert loss == pytest.approx(own["loss"], rel=1e-10)  # J with l2 = 0 is the mean loss evaluate reports
    assert main(["compare", str(out), str(path), "--batch-size", "64", "--batches", "4"]) == 0
    assert "weighted by --weights W" in capsys.readouterr().out


def test_weighted_small_batches_take_the_per_batch_path_and_resume_exactly(tmp_path):
    path, *_ = _imbalanced(tmp_path, m=3000)
    zarr.open_group(path, mode="a").create_array("W", data=np.linspace(0.5, 2, 3000)[None, :], chunks=(1, 1000))
    options = {"weights": "W", "epochs": 2, "batch_size": 4, "lr": 0.2, "seed": 3}
    whole = streamtrain.fit(path, **options)
    ckpt = tmp_path / "ckpt"
    stopped = streamtrain.fit(path, checkpoint_dir=ckpt, checkpoint_every=100, **{**options, "epochs": 1})
    assert stopped.history[0].accuracy is not None
    resumed = streamtrain.fit(path, checkpoint_dir=ckpt, resume=True, **options)
    for k in whole.params:
        np.testing.assert_array_equal(resumed.params[k], whole.params[k])
    assert [r.loss for r in resumed.history] == [r.loss for r in whole.history]


def test_holdout_validation_is_the_weighted_mean_over_the_held_out_chunks(tmp_path):
    path, X, Y = _imbalanced(tmp_path, m=4000)
    result = streamtrain.fit(path, class_weight="balanced", holdout=0.25, epochs=1, batch_size=32)
    held = streamtrain.holdout.split_holdout(streamtrain.open_source(path), 0.25, 0)[1]
    columns = np.concatenate([np.arange(a, b) for a, b in held.chunk_bounds])
    counts = np.bincount(Y[0, _trained_columns(held, Y.shape[1])].astype(int), minlength=2)
    class_weight = (len(Y[0]) - len(columns)) / (2 * counts)
    w = class_weight[Y[0, columns].astype(int)][None, :]
    X64, Y64 = X[:, columns].astype(np.float64), Y[:, columns].astype(np.float64)
    params = {k: v.astype(np.float64) for k, v in result.params.items()}
    expected = _weighted_mean_loss(LOGISTIC, params, X64, Y64, w)
    assert result.history[0].validation_loss == pytest.approx(expected, rel=1e-5)


def _trained_columns(held, m):
    mask = np.ones(m, bool)
    for a, b in held.chunk_bounds:
        mask[a:b] = False
    return np.flatnonzero(mask)


def test_weights_of_a_samples_first_store_and_of_hdf5(tmp_path):
    X, Y = logistic_xy(m=600, seed=4, dtype=np.float32)
    w = np.random.default_rng(2).random(600).astype(np.float32)
    rows = write_rows(tmp_path / "rows.h5", X, Y, 100)
    with h5py.File(rows, "a") as f:
        f.create_dataset("w", data=w, chunks=(100,))
    columns = write_hdf5(tmp_path / "columns.h5", X, Y, 100)
    with h5py.File(columns, "a") as f:
        f.create_dataset("w", data=w[None, :], chunks=(1, 100))
    options = {"weights": "w", "epochs": 1, "batch_size": 50, "shuffle": "none"}
    a = streamtrain.fit(streamtrain.open_source(rows, layout="rows"), **options)
    b = streamtrain.fit(columns, **options)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


@pytest.mark.parametrize(
    ("weights", "fragment"),
    [
        (np.array([1.0, -1.0, 1.0, 1.0] * 50)[None, :], "weight -1.0 of sample 1 is not a finite number >= 0"),
        (np.array([1.0, 1.0, np.nan, 1.0] * 50)[None, :], "weight nan of sample 2"),
        (np.zeros((1, 200)), "are 0"),
        (np.ones((2, 200)), "weights are one value per sample, shaped (1, 200); it has 2 rows"),
        (np.ones((1, 199)), "holds 199 weights for the 200 samples of X"),
    ],
)
def test_bad_weights_are_one_line_errors_naming_the_array(tmp_path, capsys, weights, fragment):
    X, Y = logistic_xy(m=200, seed=5, dtype=np.float32)
    path = write_zarr(tmp_path / "d.zarr", X, Y, 50)
    zarr.open_group(path, mode="a").create_array("W", data=weights, chunks=(weights.shape[0], 50))
    code = main(["fit", str(path), "--weights", "W", "--batch-size", "10", "--out", str(tmp_path / "m.npz")])
    *notes, err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err.startswith("streamtrain: error: ") and fragment in err
    assert fragment == "are 0" or "d.zarr/W" in err
    # Chunks of zeros were never written (zarr skips them): read as the fill value, said once.
    assert len(notes) == (fragment == "are 0")
    assert all(n.startswith("streamtrain: warning: ") and "never written" in n for n in notes)
    assert not (tmp_path / "m.npz").exists()


def test_a_missing_weights_array_and_class_weights_for_real_targets_are_errors(tmp_path, capsys):
    X, Y = logistic_xy(m=200, seed=5, dtype=np.float32)
    path = write_zarr(tmp_path / "d.zarr", X, Y, 50)
    assert main(["fit", str(path), "--weights", "nope", "--batch-size", "10"]) == 1
    assert "nope" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--class-weight needs class labels"):
        streamtrain.fit(path, model="linear", class_weight="balanced", batch_size=10)
    with pytest.raises(DataError, match="no such array"):
        streamtrain.fit(ArraySource(X, Y), weights="w", batch_size=10)
    with pytest.raises(ConfigError, match="--unweighted"):
        streamtrain.evaluate(path, {"W1": np.zeros((1, 4)), "b1": np.zeros((1, 1))}, model="logistic",
                             unweighted=True, weights="w")  # fmt: skip


def test_stored_weights_reopen_after_pickling(tmp_path):
    X, Y = logistic_xy(m=300, seed=6, dtype=np.float32)
    path = write_zarr(tmp_path / "d.zarr", X, Y, 100)
    zarr.open_group(path, mode="a").create_array("W", data=np.arange(300.0)[None, :], chunks=(1, 100))
    with streamtrain.open_source(path) as source:
        stored = StoredWeights(source, "W")
        copy = pickle.loads(pickle.dumps(stored))
        np.testing.assert_array_equal(copy.read(50, 250), np.arange(50.0, 250.0)[None, :])
        stored.close()
        copy.close()


def test_weights_changed_since_a_checkpoint_refuse_the_resume(tmp_path):
    path, *_ = _imbalanced(tmp_path, m=2000)
    group = zarr.open_group(path, mode="a")
    group.create_array("W", data=np.ones((1, 2000)), chunks=(1, 1000))
    options = {"weights": "W", "epochs": 2, "batch_size": 50, "checkpoint_dir": tmp_path / "ckpt"}
    streamtrain.fit(path, **{**options, "epochs": 1})
    group["W"][:, :1000] = 2.0  # the weights rewritten: the run would silently change
    with pytest.raises(DataError, match=r"the store changed since .*ckpt-.* was written \(W: files rewritten"):
        streamtrain.fit(path, resume=True, **options)


def test_a_dask_cluster_reads_the_stored_weights_on_its_workers(tmp_path):
    pytest.importorskip("distributed")
    path, *_ = _imbalanced(tmp_path, m=3000)
    zarr.open_group(path, mode="a").create_array("W", data=np.linspace(0.5, 2, 3000)[None, :], chunks=(1, 1000))
    params = tmp_path / "m.npz"
    streamtrain.fit(path, batch_size=30, epochs=1).save(params)
    results = {}
    for scheduler in ("sync", "local"):  # workers in other processes: the weights reopened there by path
        argv = ["evaluate", params, path, "--weights", "W", "--json", "--scheduler", scheduler]
        proc = subprocess.run([sys.executable, "-m", "streamtrain", *map(str, argv)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        results[scheduler] = json.loads(proc.stdout)
    assert results["local"]["loss"] == results["sync"]["loss"] and results["local"]["weighted"] == "--weights W"
