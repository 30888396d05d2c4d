"""compare(): mini-batch gradients against the exact one, and the gradient-noise statistics.

The noise statistics are checked against a brute-force loop over single samples, the
batch rows against the mini-batch API over the same stream, and the "order is not random"
advice against a store sorted by label.

Conventions: X (n_x, m) float64, Y (1, m) of 0/1, params {"W1": (1, n_x), "b1": (1, 1)}.
"""

import json
import math
from itertools import combinations

import numpy as np
import pytest

import streamtrain
from streamtrain import ArraySource, BatchStream, ConfigError, Cursor, FullBatch, get_model
from streamtrain.binding import bind
from streamtrain.compare import _suggest, advice, compare
from streamtrain.evaluation import loss_and_grad
from streamtrain.lbfgs import lbfgs
from streamtrain.models import batch_objective

LOGISTIC = get_model("logistic")


# -- 1. B = m is the exact gradient ----------------------------------------------------------------


@pytest.mark.parametrize("shuffle", ["none", "chunks", "buffer"])
@pytest.mark.parametrize("l2", [0.0, 3.0])
def test_batch_of_all_m_samples_is_the_exact_gradient(shuffle, l2, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=1000)
    report = compare(
        ArraySource(X, Y, chunk_size=64),
        make_logistic_params(4),
        model=LOGISTIC,
        batch_sizes=[16, 1000],
        batches=8,
        l2=l2,
        shuffle=shuffle,
        scheduler="sync",
    )
    row = report["batch_sizes"][-1]
    assert row["batch_size"] == 1000 and row["batches"] == 1
    assert abs(row["cosine_mean"] - 1) <= 1e-12 and abs(row["cosine_min"] - 1) <= 1e-12
    assert row["rel_error_mean"] <= 1e-12 and row["rel_error_rms"] <= 1e-12
    assert row["rel_error_random"] == 0.0
    small = report["batch_sizes"][0]  # a batch of 16 is not the exact gradient: the check above can fail
    assert small["rel_error_mean"] > 0.05 and small["cosine_mean"] < 1 - 1e-6


# -- 2. Noise statistics against a per-sample loop -------------------------------------------------


@pytest.mark.parametrize("l2", [0.0, 2.0])
def test_trace_noise_scale_loss_and_grad_norm_against_brute_force(l2, flatten, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=300, n_x=3)
    params = make_logistic_params(3)
    source = ArraySource(X, Y, chunk_size=64)
    report = compare(source, params, model=LOGISTIC, batch_sizes=[32], batches=4, l2=l2, scheduler="sync")

    # Reference: one gradient per sample, one call each; the L2 term is the same for every
    # sample, so it shifts all g_i alike and leaves their spread unchanged.
    per_sample = np.array(
        [flatten(LOGISTIC.totals(params, X[:, i : i + 1], Y[:, i : i + 1]).grads) for i in range(X.shape[1])]
    )
    mean = per_sample.mean(axis=0)
    trace = float(np.sum((per_sample - mean) ** 2) / X.shape[1])
    loss, grad = loss_and_grad(source, params, model=LOGISTIC, l2=l2, scheduler="sync")
    grad_norm = float(np.linalg.norm(flatten(grad)))

    assert report["trace_cov"] == pytest.approx(trace, rel=1e-10)
    assert report["loss"] == pytest.approx(loss, rel=1e-12)
    assert report["grad_norm"] == pytest.approx(grad_norm, rel=1e-12)
    assert report["noise_scale"] == pytest.approx(trace / grad_norm**2, rel=1e-10)
    assert report["m"] == 300 and report["l2"] == l2


def test_l2_changes_the_noise_scale_only_through_the_gradient_norm(make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=500)
    source = ArraySource(X, Y, chunk_size=100)
    params = make_logistic_params(4)
    plain = compare(source, params, model=LOGISTIC, batch_sizes=[50], batches=2, scheduler="sync")
    penalised = compare(source, params, model=LOGISTIC, batch_sizes=[50], batches=2, l2=40.0, scheduler="sync")
    assert penalised["trace_cov"] == pytest.approx(plain["trace_cov"], rel=1e-12)
    assert penalised["grad_norm"] != pytest.approx(plain["grad_norm"], rel=1e-3)
    assert penalised["noise_scale"] * penalised["grad_norm"] ** 2 == pytest.approx(
        plain["noise_scale"] * plain["grad_norm"] ** 2, rel=1e-12
    )


@pytest.mark.parametrize("scheduler", ["threads", None])
def test_dask_gives_the_same_report_as_sync(scheduler, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=1000)
    source = ArraySource(X, Y, chunk_size=128)
    a = compare(
        source, make_logistic_params(4), model=LOGISTIC, batch_sizes=[10, 100], batches=5, l2=1.0, scheduler="sync"
    )
    b = compare(
        source, make_logistic_params(4), model=LOGISTIC, batch_sizes=[10, 100], batches=5, l2=1.0, scheduler=scheduler
    )
    assert b["scheduler"] == "threads"
    for key in ("loss", "grad_norm", "trace_cov", "noise_scale"):
        assert b[key] == pytest.approx(a[key], rel=1e-12)
    assert b["batch_sizes"] == a["batch_sizes"]  # the rows come from the same stream


# -- 3. Measured vs random-sampling error ----------------------------------------------------------


def test_shuffled_data_matches_the_random_sampling_error(make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=8000, n_x=4)
    report = compare(
        ArraySource(X, Y, chunk_size=100),
        make_logistic_params(4),
        model=LOGISTIC,
        batch_sizes=[20],
        batches=400,
        shuffle="buffer",
        scheduler="sync",
    )
    row = report["batch_sizes"][0]
    assert row["batches"] == 400
    assert row["rel_error_rms"] == pytest.approx(row["rel_error_random"], rel=0.15)
    assert not any("not random" in line for line in report["advice"])


@pytest.mark.parametrize("B", [1, 3, 7])
def test_the_random_sampling_error_is_the_mean_over_every_batch_of_b_samples(
    B, flatten, make_logistic_params, make_logistic_xy
):
    # Every batch of B of the m = 8 samples (drawn without replacement), enumerated: the root
    # mean square of their errors is the exact expectation the report states, finite-population
    # factor (m − B)/(m − 1) included; (m − B)/m would make it 6% smaller at m = 8.
    X, Y = make_logistic_xy(m=8, n_x=3)
    params = make_logistic_params(3)
    report = compare(ArraySource(X, Y, chunk_size=3), params, model=LOGISTIC, batch_sizes=[B], scheduler="sync")
    per_sample = np.array([flatten(LOGISTIC.totals(params, X[:, i : i + 1], Y[:, i : i + 1]).grads) for i in range(8)])
    mean = per_sample.mean(axis=0)
    squares = [np.sum((per_sample[list(batch)].mean(axis=0) - mean) ** 2) for batch in combinations(range(8), B)]
    expected = math.sqrt(np.mean(squares)) / np.linalg.norm(mean)
    assert report["batch_sizes"][0]["rel_error_random"] == pytest.approx(expected, rel=1e-10)


def test_store_sorted_by_label_is_reported_as_not_random(make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=8000, n_x=4)
    order = np.argsort(Y[0], kind="stable")
    sorted_source = ArraySource(X[:, order], Y[:, order], chunk_size=100)
    report = compare(
        sorted_source,
        make_logistic_params(4),
        model=LOGISTIC,
        batch_sizes=[100],
        batches=60,
        shuffle="chunks",
        scheduler="sync",
    )
    row = report["batch_sizes"][0]
    # Same data, same params, shuffled: what random batches of 100 would give.
    shuffled = compare(
        ArraySource(X, Y, chunk_size=100),
        make_logistic_params(4),
        model=LOGISTIC,
        batch_sizes=[100],
        batches=60,
        shuffle="buffer",
        scheduler="sync",
    )["batch_sizes"][0]
    assert row["rel_error_random"] == pytest.approx(shuffled["rel_error_random"], rel=1e-10)
    assert shuffled["rel_error_rms"] < 1.3 * shuffled["rel_error_random"]
    assert row["rel_error_rms"] > 3 * row["rel_error_random"]
    notes = [line for line in report["advice"] if "not random" in line]
    assert len(notes) == 1 and "B = 100" in notes[0] and "--shuffle buffer" in notes[0]


# -- 4. Suggested batch size and advice ------------------------------------------------------------


def test_suggested_batch_size_is_a_power_of_two_near_the_noise_scale(make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=4000)
    report = compare(
        ArraySource(X, Y, chunk_size=500),
        make_logistic_params(4),
        model=LOGISTIC,
        batch_sizes=[64],
        batches=2,
        scheduler="sync",
    )
    b_noise, suggested = report["noise_scale"], report["suggested_batch_size"]
    assert 1 < b_noise < 4000
    assert suggested & (suggested - 1) == 0  # a power of two
    assert abs(math.log2(suggested) - math.log2(b_noise)) <= 0.5
    assert f"Balance point at these params: B = {suggested:,}" in report["advice"][0]
    assert "lbfgs" not in report["advice"][0]


@pytest.mark.parametrize(
    "b_noise, m, expected",
    [
        (0.3, 1000, 1),  # below one sample
        (1.0, 1000, 1),
        (10.33, 1000, 8),  # log2 = 3.37
        (12.0, 1000, 16),  # log2 = 3.58
        (700.0, 1000, 512),  # log2 = 9.45
        (800.0, 1000, 1000),  # nearest power 1024 is past m
        (1000.0, 1000, 1000),
        (90.0, 90, 90),  # B_noise = m: m itself, not the power of two nearest to it (64)
        (1e9, 1000, 1000),
        (math.inf, 1000, 1000),
    ],
)
def test_suggest_rounds_in_log_scale_and_stays_within_m(b_noise, m, expected):
    assert _suggest(b_noise, m) == expected


def test_near_the_optimum_the_noise_scale_exceeds_m_and_the_advice_is_lbfgs(make_logistic_params, make_logistic_xy):
    pytest.importorskip("scipy")
    X, Y = make_logistic_xy(m=1000, n_x=3)
    source = ArraySource(X, Y, chunk_size=100)
    with FullBatch(source, LOGISTIC, scheduler="sync") as fb:
        optimum = lbfgs(fb, make_logistic_params(3), l2=1.0, max_iter=100)
    report = compare(source, optimum, model=LOGISTIC, batch_sizes=[50, 1000], batches=3, l2=1.0, scheduler="sync")
    assert report["grad_norm"] < 1e-6
    assert report["noise_scale"] >= report["m"]
    assert report["suggested_batch_size"] == 1000
    assert "lbfgs" in report["advice"][0] and "larger than the data" in report["advice"][0]


def test_advice_uses_only_the_report_fields():
    # The threshold: 1.5x the random-sampling error, and never for B = m.
    def report(rows, b_noise=10.0, m=100):
        return {
            "noise_scale": b_noise,
            "m": m,
            "suggested_batch_size": _suggest(b_noise, m),
            "batch_sizes": [{"batch_size": B, "rel_error_rms": e, "rel_error_random": r} for B, e, r in rows],
        }

    assert len(advice(report([(10, 1.4, 1.0)]))) == 1
    assert "1.6x noisier" in advice(report([(10, 1.6, 1.0)]))[1]
    assert len(advice(report([(100, 5.0, 1e-9)]))) == 1
    assert "--optimizer lbfgs" in advice(report([], b_noise=math.inf))[0]


@pytest.mark.parametrize(
    "trained, b_noise, says",
    [
        (10, 1000.0, "100x below B_noise"),
        (1000, 10.0, "100x above B_noise"),
        (100, 150.0, "near B_noise"),
        (100, 400.0, "near B_noise"),  # 4x: the edges count as near
        (400, 100.0, "near B_noise"),
    ],
)
def test_advice_judges_the_batch_size_the_params_were_trained_with(trained, b_noise, says):
    rows = [
        {"batch_size": B, "rel_error_rms": 1.0, "rel_error_random": 1.0, "cosine_mean": 0.5}
        for B in sorted({10, 100, 1000, trained})
    ]
    report = {
        "noise_scale": b_noise,
        "m": 10_000,
        "suggested_batch_size": _suggest(b_noise, 10_000),
        "train_batch_size": trained,
        "batch_sizes": rows,
    }
    lines = advice(report)
    assert len(lines) == 2 and f"trained with B = {trained:,}" in lines[1] and says in lines[1]


def test_no_batch_size_advice_for_params_trained_on_all_m_samples_at_once():
    row = {"batch_size": 100, "rel_error_rms": 0.0, "rel_error_random": 0.0, "cosine_mean": 1.0}
    report = {"noise_scale": 10.0, "m": 100, "suggested_batch_size": 8, "train_batch_size": 100, "batch_sizes": [row]}
    assert len(advice(report)) == 1


def test_a_store_of_one_sample(make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=1)
    report = compare(ArraySource(X, Y), make_logistic_params(4), model=LOGISTIC, scheduler="sync")
    assert report["m"] == 1 and report["trace_cov"] == pytest.approx(0.0, abs=1e-12)
    [row] = report["batch_sizes"]
    assert (row["batch_size"], row["batches"], row["rel_error_random"]) == (1, 1, 0.0)
    assert row["cosine_mean"] == pytest.approx(1.0, abs=1e-12)


def test_the_training_batch_size_is_added_to_the_rows(make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy()
    report = compare(
        ArraySource(X, Y, chunk_size=100),
        make_logistic_params(4),
        model=LOGISTIC,
        batch_sizes=[10],
        batches=3,
        scheduler="sync",
        train_batch_size=37,
    )
    assert [r["batch_size"] for r in report["batch_sizes"]] == [10, 37]
    assert any("trained with B = 37" in line for line in report["advice"])


def test_a_fitted_model_brings_its_l2_and_batch_size_as_the_command_line_does(tmp_path):
    data = tmp_path / "d.zarr"
    streamtrain.make_data(data, m=2000, n_x=3, chunk=500, seed=0)
    result = streamtrain.fit(data, epochs=1, batch_size=100, l2=2.0)
    result.save(tmp_path / "m.npz")
    options = dict(batch_sizes=[10], batches=3, scheduler="sync")
    by_object = compare(data, result, **options)
    by_file = compare(data, tmp_path / "m.npz", **options)
    by_params = compare(data, result.params, model=result.model, l2=2.0, train_batch_size=100, **options)
    for report in (by_object, by_file):
        assert report["l2"] == 2.0 and report["train_batch_size"] == 100
        assert [r["batch_size"] for r in report["batch_sizes"]] == [10, 100]
        assert report["loss"] == by_params["loss"] and report["batch_sizes"] == by_params["batch_sizes"]
    assert compare(data, result, l2=0.0, **options)["l2"] == 0.0  # an explicit l2 wins
    with pytest.raises(ConfigError, match="pass model="):
        compare(data, result.params, **options)


# -- 5. Row fields and batch counts ----------------------------------------------------------------


def test_report_and_row_fields_and_types(make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=1000)
    report = compare(
        ArraySource(X, Y, chunk_size=64),
        make_logistic_params(4),
        model=LOGISTIC,
        batch_sizes=[2000, 30, 1000],
        batches=100,
        l2=0.5,
        seed=3,
        shuffle="buffer",
        scheduler="sync",
    )
    json.dumps(report)  # JSON-ready
    for key, kind in {
        "data": str,
        "m": int,
        "model": str,
        "l2": float,
        "shuffle": str,
        "seed": int,
        "loss": float,
        "grad_norm": float,
        "trace_cov": float,
        "noise_scale": float,
        "suggested_batch_size": int,
        "exact_seconds": float,
        "scheduler": str,
        "batch_sizes": list,
        "advice": list,
    }.items():
        assert isinstance(report[key], kind), key
    assert report["exact_seconds"] >= 0 and all(isinstance(a, str) for a in report["advice"])
    # 2000 > m is clipped to m, and the duplicate dropped; rows are sorted by batch size.
    assert [r["batch_size"] for r in report["batch_sizes"]] == [30, 1000]
    for row in report["batch_sizes"]:
        assert set(row) == {
            "batch_size",
            "batches",
            "cosine_mean",
            "cosine_min",
            "rel_error_mean",
            "rel_error_rms",
            "rel_error_random",
        }
        assert isinstance(row["batch_size"], int) and isinstance(row["batches"], int)
        assert all(isinstance(row[k], float) for k in row if k not in ("batch_size", "batches"))
        assert -1 <= row["cosine_min"] <= row["cosine_mean"] <= 1 + 1e-12
        assert 0 <= row["rel_error_mean"] <= row["rel_error_rms"] + 1e-15  # mean <= root mean square
    # 1000 = 33 * 30 + 10: only the 33 whole batches count, though 100 were asked for.
    assert report["batch_sizes"][0]["batches"] == 33


@pytest.mark.parametrize("shuffle", ["none", "chunks", "buffer"])
@pytest.mark.parametrize("B, asked, expected", [(30, 100, 33), (30, 5, 5), (25, 40, 40), (25, 41, 40)])
def test_rows_are_the_first_whole_batches_training_would_draw(
    shuffle, B, asked, expected, flatten, make_logistic_params, make_logistic_xy
):
    X, Y = make_logistic_xy(m=1000)
    source, params, l2 = ArraySource(X, Y, chunk_size=64), make_logistic_params(4), 0.5
    row = compare(
        source, params, model=LOGISTIC, batch_sizes=[B], batches=asked, l2=l2, shuffle=shuffle, seed=9, scheduler="sync"
    )["batch_sizes"][0]
    assert row["batches"] == expected
    # The same batches through the mini-batch API, as epoch 0 of fit(shuffle=..., seed=9).
    _, exact = loss_and_grad(source, params, model=LOGISTIC, l2=l2, scheduler="sync")
    exact = flatten(exact)
    errors, cosines = [], []
    for X_b, Y_b, *_ in BatchStream(source, B, Cursor(9, 0), shuffle=shuffle, dtype=np.float64):
        if X_b.shape[1] == B and len(errors) < asked:
            g = flatten(batch_objective(LOGISTIC, params, X_b, Y_b, l2=l2, m=1000)[1])
            errors.append(np.linalg.norm(g - exact) / np.linalg.norm(exact))
            cosines.append(g @ exact / (np.linalg.norm(g) * np.linalg.norm(exact)))
    assert len(errors) == expected
    assert row["rel_error_mean"] == pytest.approx(np.mean(errors), rel=1e-10)
    assert row["rel_error_rms"] == pytest.approx(np.sqrt(np.mean(np.square(errors))), rel=1e-10)
    assert row["cosine_mean"] == pytest.approx(np.mean(cosines), rel=1e-10)
    assert row["cosine_min"] == pytest.approx(np.min(cosines), rel=1e-10)


# -- 6. Bad options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(batch_sizes=[0]), "batch_size"),
        (dict(batch_sizes=[64, -5]), "batch_size"),
        (dict(batch_sizes=[2.5]), "batch_size"),
        (dict(shuffle="random"), "shuffle"),
        (dict(scheduler="processes"), "unknown scheduler"),
        (dict(model="svm"), "unknown model"),
    ],
)
def test_bad_options_are_config_errors(options, message, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=200)
    with pytest.raises(ConfigError, match=message):
        compare(ArraySource(X, Y), make_logistic_params(4), **{"model": LOGISTIC, **options})


def test_params_of_the_wrong_shape_are_a_config_error(make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=200)
    with pytest.raises(ConfigError, match="expected shapes"):
        compare(ArraySource(X, Y), make_logistic_params(3), model=LOGISTIC)


@pytest.mark.parametrize(
    "name, options", [("softmax", {}), ("mlp", {"hidden": (5,), "activation": "tanh", "output": "identity"})]
)
def test_other_models_batch_of_all_m_is_exact_and_noise_matches_a_per_sample_loop(name, options, flatten):
    rng = np.random.default_rng(9)
    X = rng.standard_normal((3, 200))
    model = get_model(name, **options)
    Y = rng.integers(0, 3, size=(1, 200)).astype(float) if name == "softmax" else rng.standard_normal((2, 200))
    source = ArraySource(X, Y, chunk_size=64)
    with bind(model, source) as (model, _):
        params = {k: rng.standard_normal(v.shape) for k, v in model.init(3, Y.shape[0], np.dtype(float), 0).items()}
    report = compare(source, params, model=model, batch_sizes=[200], scheduler="sync")
    assert report["batch_sizes"][0]["cosine_mean"] == pytest.approx(1, abs=1e-12)
    per_sample = np.array([flatten(model.totals(params, X[:, i : i + 1], Y[:, i : i + 1]).grads) for i in range(200)])
    trace = np.mean(np.sum((per_sample - per_sample.mean(axis=0)) ** 2, axis=1))
    assert report["trace_cov"] == pytest.approx(trace, rel=1e-9)


# -- 6. Never a number computed from inf or NaN ---------------------------------------------------------


def _stationary_point():
    """Zero logistic params where ∇J is exactly 0 but per-sample gradients are not: x = 1, labels 1, 0, 1, 0, ..."""
    X, Y = np.ones((1, 8)), np.tile([[1.0, 0.0]], 4)
    return ArraySource(X, Y, chunk_size=4), {"W1": np.zeros((1, 1)), "b1": np.zeros((1, 1))}


def test_at_a_zero_gradient_b_noise_is_unbounded_and_nothing_is_nan():
    source, params = _stationary_point()
    report = compare(source, params, model=LOGISTIC, batch_sizes=[1, 2], batches=3, shuffle="none", scheduler="sync")
    assert report["grad_norm"] == 0 and report["trace_cov"] == 0.5 and report["noise_scale"] == math.inf
    one, two = report["batch_sizes"]
    assert one["rel_error_rms"] == math.inf and one["rel_error_random"] == math.inf  # g_1 != 0 = ∇J
    assert two["rel_error_rms"] == 0.0  # a batch (1, 0) has the exact, zero, gradient
    assert one["cosine_mean"] is None and two["cosine_min"] is None  # no direction to compare with
    assert report["advice"] == advice(report) and len(report["advice"]) == 1
    assert "unbounded" in report["advice"][0] and "inf" not in " ".join(report["advice"])
    assert not any(isinstance(v, float) and math.isnan(v) for row in report["batch_sizes"] for v in row.values())


def test_a_diverged_model_is_a_diverged_error_not_a_nan_report():
    X = np.random.default_rng(0).standard_normal((3, 50))
    source = ArraySource(X, np.zeros((2, 50)), chunk_size=20)
    huge = {"W1": np.full((2, 3), 1e200), "b1": np.zeros((2, 1))}  # finite, but ½‖ŷ‖² overflows
    for run in (compare, streamtrain.evaluate, loss_and_grad):
        with pytest.raises(streamtrain.DivergedError, match=r"the model's loss is inf: its parameters are too large"):
            run(source, huge, model="linear", scheduler="sync")
