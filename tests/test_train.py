"""The training loop against hand-written gradient descent on in-memory arrays."""

import json
import sys

import numpy as np
import pytest
import zarr

import streamtrain
from streamtrain import ArraySource, BatchStream, ConfigError, Cursor, DataError
from streamtrain.models import get_model, objective

LOGISTIC = get_model("logistic")


def test_batch_size_m_is_one_hand_written_batch_gd_step(make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    init = make_logistic_params(X.shape[0])
    result = streamtrain.fit(
        ArraySource(X, Y, chunk_size=128),
        batch_size=X.shape[1],
        epochs=1,
        lr=0.3,
        shuffle="buffer",
        dtype="float64",
        init=init,
    )
    A = 1 / (1 + np.exp(-(init["W1"] @ X + init["b1"])))
    dW, db = (A - Y) @ X.T / X.shape[1], np.sum(A - Y, axis=1, keepdims=True) / X.shape[1]
    np.testing.assert_allclose(result.params["W1"], init["W1"] - 0.3 * dW, rtol=1e-12)
    np.testing.assert_allclose(result.params["b1"], init["b1"] - 0.3 * db, rtol=1e-12)
    assert result.history[0].steps == 1


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_batch_size_full_takes_exact_hand_written_steps_with_l2(scheduler, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    m, lam, lr = X.shape[1], 3.0, 0.4
    expected = make_logistic_params(X.shape[0])
    result = streamtrain.fit(
        ArraySource(X, Y, chunk_size=128),
        batch_size="full",
        epochs=3,
        lr=lr,
        l2=lam,
        dtype="float64",
        init=expected,
        scheduler=scheduler,
    )
    for epoch in range(3):
        W, b = expected["W1"], expected["b1"]
        A = 1 / (1 + np.exp(-(W @ X + b)))
        J = -np.mean(Y * np.log(A) + (1 - Y) * np.log(1 - A)) + lam / (2 * m) * np.sum(W**2)
        dW = (A - Y) @ X.T / m + lam / m * W
        db = np.sum(A - Y, axis=1, keepdims=True) / m
        record = result.history[epoch]
        assert record.loss == pytest.approx(J, rel=1e-12)
        assert record.grad_norm == pytest.approx(np.sqrt(np.sum(dW**2) + np.sum(db**2)), rel=1e-10)
        assert record.accuracy == np.mean((A >= 0.5) == (Y == 1))
        expected = {"W1": W - lr * dW, "b1": b - lr * db}
    for k in expected:
        np.testing.assert_allclose(result.params[k], expected[k], rtol=1e-12)
    assert result.config.batch_size == "full"


def test_minibatch_steps_with_l2_use_the_penalty_scaled_by_m(make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=90, n_x=5, intercept=0)
    B, lr, lam, m = 30, 0.2, 5.0, 90
    expected = make_logistic_params(X.shape[0])
    for t in range(0, m, B):
        Xb, Yb = X[:, t : t + B], Y[:, t : t + B]
        A = 1 / (1 + np.exp(-(expected["W1"] @ Xb + expected["b1"])))
        dW = (A - Yb) @ Xb.T / B + lam / m * expected["W1"]
        db = np.sum(A - Yb, axis=1, keepdims=True) / B
        expected = {"W1": expected["W1"] - lr * dW, "b1": expected["b1"] - lr * db}
    result = streamtrain.fit(
        ArraySource(X, Y, chunk_size=64),
        batch_size=B,
        epochs=1,
        lr=lr,
        l2=lam,
        shuffle="none",
        dtype="float64",
        init=make_logistic_params(X.shape[0]),
    )
    for k in expected:
        np.testing.assert_allclose(result.params[k], expected[k], rtol=1e-12)


def test_eval_exact_every_adds_the_exact_objective_every_n_epochs_and_at_the_end(make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    src = ArraySource(X, Y, chunk_size=100)
    result = streamtrain.fit(
        src, batch_size=50, epochs=5, lr=0.3, l2=1.0, dtype="float64", eval_exact_every=2, scheduler="sync"
    )
    assert [h.exact_loss is not None for h in result.history] == [False, True, False, True, True]
    last = result.history[-1]
    loss, grads = streamtrain.loss_and_grad(src, result, l2=1.0, scheduler="sync")
    assert last.exact_loss == pytest.approx(loss, rel=1e-12)
    assert last.exact_grad_norm == pytest.approx(np.sqrt(sum(np.sum(g**2) for g in grads.values())))
    assert last.exact_accuracy == streamtrain.evaluate(src, result, scheduler="sync")["accuracy"]


def test_sequential_minibatches_match_a_hand_written_loop_with_a_short_last_batch(
    make_logistic_params, make_logistic_xy
):
    X, Y = make_logistic_xy(m=103, n_x=5, intercept=0)
    B, lr = 10, 0.2  # 10 full batches and one of 3
    params = make_logistic_params(X.shape[0])
    expected, losses, correct = {k: v.copy() for k, v in params.items()}, [], 0
    for t in range(0, X.shape[1], B):
        totals = LOGISTIC.totals(expected, X[:, t : t + B], Y[:, t : t + B])
        loss, grads = objective(expected, totals)
        losses.append(loss * X[:, t : t + B].shape[1])
        correct += totals.correct  # each batch judged by the params before its step
        expected = {k: expected[k] - lr * grads[k] for k in expected}
    result = streamtrain.fit(
        ArraySource(X, Y, chunk_size=16), batch_size=B, epochs=1, lr=lr, shuffle="none", dtype="float64", init=params
    )
    for k in expected:
        np.testing.assert_allclose(result.params[k], expected[k], rtol=1e-12)
    assert result.history[0].loss == pytest.approx(sum(losses) / X.shape[1], rel=1e-12)
    assert result.history[0].accuracy == correct / X.shape[1]
    assert result.history[0].steps == 11 and result.history[0].samples == 103


@pytest.mark.parametrize("shuffle", ["none", "chunks", "buffer"])
@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_streaming_from_a_store_equals_training_in_memory(tmp_path, shuffle, fmt):
    path = tmp_path / ("d.zarr" if fmt == "zarr" else "d.h5")
    streamtrain.make_data(path, m=3000, n_x=6, format=fmt, chunk=256, seed=3)
    store = streamtrain.open_source(path)
    X, Y = store.read(0, store.m)
    options = dict(batch_size=50, epochs=2, lr=0.5, shuffle=shuffle, seed=7, buffer_mb=100_000 / 2**20)
    streamed = streamtrain.fit(path, **options)
    in_memory = streamtrain.fit(ArraySource(X, Y, chunk_size=256), **options)
    for k in streamed.params:
        np.testing.assert_array_equal(streamed.params[k], in_memory.params[k])
    assert [h.loss for h in streamed.history] == [h.loss for h in in_memory.history]


def test_epoch_e_of_fit_takes_the_batches_of_the_stream_of_epoch_e_minus_1(make_logistic_xy):
    # compare() draws "the batches of training's first epoch" as Cursor(seed, 0): fit must agree.
    X, Y = make_logistic_xy(m=200, n_x=5, intercept=0)
    source, B, lr = ArraySource(X, Y, chunk_size=16), 20, 0.2
    expected = LOGISTIC.init(5, 1, np.dtype(np.float64), 0)
    for epoch in (0, 1):
        for X_b, Y_b, *_ in BatchStream(source, B, Cursor(7, epoch), shuffle="chunks", dtype=np.float64):
            _, grads = objective(expected, LOGISTIC.totals(expected, X_b, Y_b))
            expected = {k: expected[k] - lr * grads[k] for k in expected}
    result = streamtrain.fit(source, batch_size=B, epochs=2, lr=lr, shuffle="chunks", seed=7, dtype="float64")
    for k in expected:
        np.testing.assert_allclose(result.params[k], expected[k], rtol=1e-12)


def test_two_one_epoch_fits_with_warm_start_equal_one_two_epoch_fit(make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    src = ArraySource(X, Y, chunk_size=100)
    opts = dict(batch_size=32, lr=0.1, shuffle="none", dtype="float64")
    once = streamtrain.fit(src, epochs=2, **opts)
    first = streamtrain.fit(src, epochs=1, **opts)
    second = streamtrain.fit(src, epochs=1, init=first.params, **opts)
    for k in once.params:
        np.testing.assert_allclose(second.params[k], once.params[k], rtol=1e-12)


def test_warm_start_from_a_model_file_and_init_is_not_modified(tmp_path, make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    first = streamtrain.fit(ArraySource(X, Y), epochs=1, lr=0.1)
    first.save(tmp_path / "m.npz")
    snapshot = {k: v.copy() for k, v in first.params.items()}
    a = streamtrain.fit(ArraySource(X, Y), epochs=1, lr=0.1, init=first.params)
    b = streamtrain.fit(ArraySource(X, Y), epochs=1, lr=0.1, init=tmp_path / "m.npz")
    for k in snapshot:
        np.testing.assert_array_equal(first.params[k], snapshot[k])
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_same_seed_same_model_other_seed_other_model(make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    fits = [
        streamtrain.fit(ArraySource(X, Y, chunk_size=50), epochs=1, shuffle="buffer", seed=s, buffer_mb=10_000 / 2**20)
        for s in (0, 0, 1)
    ]
    np.testing.assert_array_equal(fits[0].params["W1"], fits[1].params["W1"])
    assert not np.array_equal(fits[0].params["W1"], fits[2].params["W1"])


def test_an_mlp_starts_from_random_weights_drawn_from_the_seed(make_logistic_xy):
    X, Y = make_logistic_xy(m=200, n_x=5, intercept=0)
    fits = [
        streamtrain.fit(ArraySource(X, Y), model="mlp", hidden=[4], epochs=1, batch_size=50, shuffle="none", seed=s)
        for s in (0, 0, 1)
    ]
    np.testing.assert_array_equal(fits[0].params["W1"], fits[1].params["W1"])
    assert not np.array_equal(fits[0].params["W1"], fits[2].params["W1"])


def test_a_warm_start_from_another_model_of_the_same_shapes_is_refused(tmp_path, make_logistic_xy):
    X, Y = make_logistic_xy(m=200, n_x=5, intercept=0)
    streamtrain.fit(ArraySource(X, Y), model="linear", epochs=1, batch_size=50).save(tmp_path / "linear.npz")
    with pytest.raises(ConfigError, match="warm start from a 'linear' model, but training 'logistic'"):
        streamtrain.fit(ArraySource(X, Y), epochs=1, batch_size=50, init=tmp_path / "linear.npz")


def test_fit_gets_close_to_the_bayes_loss_of_generated_data(tmp_path):
    attrs = streamtrain.make_data(tmp_path / "d.zarr", m=40_000, n_x=5, chunk=4096, seed=5)
    result = streamtrain.fit(tmp_path / "d.zarr", batch_size=100, epochs=2, lr=0.5)
    full = streamtrain.evaluate(tmp_path / "d.zarr", result)
    assert abs(full["loss"] - attrs["bayes_loss"]) < 0.005
    w_fit = result.params["W1"].ravel()
    w_true = np.array(attrs["w_true"])
    assert np.dot(w_fit, w_true) / (np.linalg.norm(w_fit) * np.linalg.norm(w_true)) > 0.99


def test_evaluate_equals_the_in_memory_loss_and_accuracy(make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=777, n_x=5, intercept=0)
    params = make_logistic_params(X.shape[0])
    result = streamtrain.evaluate(ArraySource(X, Y, chunk_size=100), params, model="logistic")
    loss, _ = objective(params, LOGISTIC.totals(params, X, Y))
    A = 1 / (1 + np.exp(-(params["W1"] @ X + params["b1"])))
    assert result["loss"] == pytest.approx(loss, rel=1e-12)
    assert result["accuracy"] == pytest.approx(np.mean((A >= 0.5) == (Y == 1)))


def test_history_metrics_file_and_callback(tmp_path, make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    seen = []
    result = streamtrain.fit(ArraySource(X, Y), epochs=3, metrics=tmp_path / "m.jsonl", on_epoch=seen.append)
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert lines == [h.to_dict() for h in result.history] == [h.to_dict() for h in seen]
    assert [h["epoch"] for h in lines] == [1, 2, 3]
    assert all(h["samples"] == X.shape[1] and h["samples_per_s"] > 0 for h in lines)
    assert all(0 <= h["accuracy"] <= 1 for h in lines)


def test_dtypes(make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    assert streamtrain.fit(ArraySource(X, Y), epochs=1).params["W1"].dtype == np.float32
    assert streamtrain.fit(ArraySource(X, Y), epochs=1, dtype="float64").params["b1"].dtype == np.float64


def test_predict_and_save_load_round_trip(tmp_path, make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    result = streamtrain.fit(ArraySource(X, Y), epochs=3, lr=0.5)
    proba = result.predict_proba(X)
    assert proba.shape == (1, X.shape[1]) and ((proba > 0) & (proba < 1)).all()
    assert np.mean(result.predict(X) == Y) > 0.7
    result.save(tmp_path / "m.npz")
    loaded = streamtrain.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.params["W1"], result.params["W1"])
    assert loaded.model == result.model and loaded.model.name == "logistic"
    assert loaded.config == result.config and loaded.history == result.history
    np.testing.assert_array_equal(loaded.predict(X), result.predict(X))


def test_non_finite_data_stops_training_with_a_clear_error(make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    X[2, 250] = np.nan
    for shuffle in ("none", "buffer"):  # the sample is found whatever order the batch was drawn in
        with pytest.raises(DataError, match=r"X: sample 250 \(chunk 2\)"):
            streamtrain.fit(ArraySource(X, Y, chunk_size=100), batch_size=32, epochs=1, shuffle=shuffle)


@pytest.mark.parametrize("hidden", [[2**40], [2**63], [100_000, 100_000]])
def test_a_network_too_large_for_memory_is_a_config_error_before_allocating(hidden, make_logistic_xy):
    # These were a MemoryError, numpy's "Maximum allowed dimension exceeded", or the kernel killing the process.
    X, Y = make_logistic_xy(m=60, n_x=5, intercept=0)
    with pytest.raises(
        ConfigError, match=r"a mlp model of layer sizes \[5, .*, 1\] has .* parameters: training it needs"
    ):
        streamtrain.fit(ArraySource(X, Y), model="mlp", hidden=hidden, batch_size=20, epochs=1)


@pytest.mark.parametrize(
    "labels, says",
    [
        ([0, 1, np.nan, 1, 0, 1], "sample 2 (chunk 1) holds NaN in row 0"),  # int(nan): ValueError
        ([0, 1, np.inf, 1, 0, 1], "sample 2 (chunk 1) holds +inf in row 0"),  # int(inf): OverflowError
        ([0, 1, 1e30, 1, 0, 1], "the largest label is 1e+30, but class ids run"),  # a 10^30-row W: ValueError
        (
            [0, 1, 1e6, 1, 0, 1],
            "the largest label is 1e+06, but class ids run 0, 1, ..., classes - 1 with at "
            "most as many classes as samples (m=6)",
        ),
    ],
)
def test_softmax_class_ids_that_cannot_count_classes_are_data_errors(labels, says):
    X = np.random.default_rng(0).standard_normal((2, 6))
    with pytest.raises(DataError) as e:
        streamtrain.fit(ArraySource(X, np.array([labels]), chunk_size=2), model="softmax", batch_size=2, epochs=1)
    assert str(e.value).startswith("<arrays>/Y: ") and says in str(e.value)


@pytest.mark.parametrize("classes", ["3", 2.5, 1, True, [3]])
def test_a_store_attribute_classes_that_is_no_class_count_is_a_data_error(tmp_path, classes):
    # make-data records the class count; another value made a TypeError deep in the model.
    path = tmp_path / "d.zarr"
    streamtrain.make_data(path, task="softmax", m=60, n_x=2, chunk=20)
    group = zarr.open_group(path, mode="r+")
    group.attrs["streamtrain"] = {**group.attrs["streamtrain"], "classes": classes}
    with pytest.raises(DataError) as e:
        streamtrain.fit(path, model="softmax", batch_size=20, epochs=1)
    assert str(e.value) == f"{path}: its attribute classes={classes!r} is not a number of classes (>= 2)"


@pytest.mark.parametrize("value, row", [(1e300, "Y"), (-1e39, "X")])
def test_a_value_beyond_float32_is_named_as_data_not_blamed_on_the_learning_rate(value, row):
    # It trains as inf: this was "the batch's data is finite: the learning rate is too large" (exit 3).
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((2, 6)), (np.arange(6) % 2).reshape(1, 6).astype(float)
    (X if row == "X" else Y)[-1, 4] = value
    with pytest.raises(DataError) as e:
        streamtrain.fit(ArraySource(X, Y, chunk_size=2), model="linear", batch_size=2, epochs=1, shuffle="none")
    assert str(e.value) == (
        f"<arrays>/{row}: sample 4 (chunk 2) holds {value:g} in row {1 if row == 'X' else 0}, beyond float32's "
        f"range; rescale it or train in float64"
    )


def test_non_finite_data_in_a_batch_across_two_units_is_found(make_logistic_xy):
    # Units of one chunk (a tiny buffer): samples 192..224 come from chunks 1 and 2.
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    X[0, 195] = np.inf
    with pytest.raises(DataError, match=r"X: sample 195 \(chunk 1\) holds \+inf"):
        streamtrain.fit(ArraySource(X, Y, chunk_size=100), batch_size=32, epochs=1, shuffle="none", buffer_mb=0.01)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=601), "larger than m=600"),
        (dict(epochs=0), "epochs"),
        (dict(lr=-1.0), "learning rate"),
        (dict(shuffle="random"), "shuffle"),
        (dict(dtype="float16"), "dtype"),
        (dict(seed=-3), "seed"),
        (dict(model="svm"), "unknown model"),
        (dict(batch_size="half"), "batch_size"),
        (dict(optimizer="adamw"), "unknown optimizer"),
        (dict(optimizer="lbfgs", batch_size=32), "L-BFGS takes exact full-batch steps"),
        (dict(l2=-1.0), "l2 must be"),
        (dict(l2=float("nan")), "l2 must be"),
        (dict(eval_exact_every=0), "eval_exact_every"),
        (dict(scheduler="processes"), "unknown scheduler"),
        (dict(init={"W1": np.zeros((1, 4)), "b1": np.zeros((1, 1))}), "expected shapes"),
    ],
)
def test_bad_options_are_config_errors(options, message, make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    with pytest.raises(ConfigError, match=message):
        streamtrain.fit(ArraySource(X, Y), **options)


def test_logistic_needs_a_single_row_of_labels(make_logistic_xy):
    X, _ = make_logistic_xy(m=600, n_x=5, intercept=0)
    Y = np.zeros((3, X.shape[1]))
    with pytest.raises(ConfigError, match=r"needs Y shaped \(1, m\)"):
        streamtrain.fit(ArraySource(X, Y), epochs=1)


def test_progress_line_only_on_request(capsys, make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    streamtrain.fit(ArraySource(X, Y), epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "epoch 2/2:" in err and "samples/s" in err and "100%" in err  # the bar (tqdm), redrawn in place
    streamtrain.fit(ArraySource(X, Y), epochs=2, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "module, options, message",
    [
        ("scipy.optimize", dict(optimizer="lbfgs", scheduler="sync"), r"pip install 'streamtrain\[lbfgs\]'"),
        ("distributed", dict(batch_size="full", scheduler="local"), r"pip install 'streamtrain\[distributed\]'"),
    ],
)
def test_a_missing_optional_extra_is_a_config_error_naming_it(monkeypatch, module, options, message, make_logistic_xy):
    monkeypatch.setitem(sys.modules, module, None)  # makes "import module" raise ImportError
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    with pytest.raises(ConfigError, match=message):
        streamtrain.fit(ArraySource(X, Y), epochs=1, **options)


@pytest.mark.parametrize("B", [50, 30])  # 2 steps an epoch; 4 (30, 30, 30, 10): ceil(m / B), not m // B
@pytest.mark.parametrize("per", ["epoch", "step"])
def test_the_learning_rate_schedule_counts_epochs_or_steps(per, B, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=100, n_x=5, intercept=0)
    expected = make_logistic_params(X.shape[0])
    init = {k: v.copy() for k, v in expected.items()}
    steps = -(-100 // B)
    for t in range(2 * steps):  # 2 epochs; α halves every epoch or every step
        lr = 0.4 * 0.5 ** (t // steps if per == "epoch" else t)
        batch = slice(B * (t % steps), B * (t % steps + 1))
        _, grads = objective(expected, LOGISTIC.totals(expected, X[:, batch], Y[:, batch]))
        expected = {k: expected[k] - lr * grads[k] for k in expected}
    result = streamtrain.fit(
        ArraySource(X, Y),
        batch_size=B,
        epochs=2,
        lr=0.4,
        lr_schedule="step",
        lr_decay=0.5,
        lr_step=1,
        lr_per=per,
        shuffle="none",
        dtype="float64",
        init=init,
    )
    assert [r.steps for r in result.history] == [steps, steps]
    for k in expected:
        np.testing.assert_allclose(result.params[k], expected[k], rtol=1e-12)


def test_an_mlp_warm_starts_from_its_model_file_and_predicts_after_loading(tmp_path, make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=5, intercept=0)
    source = ArraySource(X, Y, chunk_size=100)
    first = streamtrain.fit(source, model="mlp", hidden=[7], activation="tanh", epochs=1, seed=3)
    first.save(tmp_path / "m.npz")
    loaded = streamtrain.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict_proba(X), first.predict_proba(X))
    again = streamtrain.fit(source, model="mlp", hidden=[7], activation="tanh", epochs=1, init=tmp_path / "m.npz")
    once = streamtrain.fit(source, model="mlp", hidden=[7], activation="tanh", epochs=1, init=first.params)
    np.testing.assert_array_equal(again.params["W2"], once.params["W2"])
    with pytest.raises(ConfigError, match="expected shapes"):
        streamtrain.fit(source, model="mlp", hidden=[5], epochs=1, init=tmp_path / "m.npz")
