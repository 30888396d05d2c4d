"""Exact full-batch passes (full_batch.py), checked three ways.

Dask == plain chunked numpy == the size-weighted mean of one epoch of mini-batch gradients ==
the in-memory objective; the analytic gradient against finite differences of the same loss;
and batch gradient descent against L-BFGS, which must meet at the same optimum.

Conventions: X (n_x, m) float64 (unless a test says otherwise), Y (1, m) of 0/1, params
{"W1": (1, n_x), "b1": (1, 1)} drawn at random so that no term of the gradient vanishes.
"""

import contextlib
import math
import re
import socket
import time

import h5py
import numpy as np
import pytest

import streamtrain
from streamtrain import ArraySource, BatchStream, ConfigError, Cursor, DataError, FullBatch, full_batch, get_model
from streamtrain.batches import READERS
from streamtrain.binding import bind
from streamtrain.evaluation import evaluate, exact_fields, loss_and_grad
from streamtrain.full_batch import check_scheduler
from streamtrain.lbfgs import lbfgs
from streamtrain.models import batch_objective, norm, objective

LOGISTIC = get_model("logistic")


def _rel(a, b):
    """Relative difference of two scalars or two gradient dicts (as one vector each)."""
    if isinstance(a, dict):
        return norm({k: np.subtract(a[k], b[k]) for k in b}) / norm(b)
    return float(abs(a - b) / abs(b))


def _in_memory(params, X, Y, l2):
    """J and ∇J over the whole arrays in one call: no chunks, no streaming."""
    p64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    return objective(p64, LOGISTIC.totals(p64, np.asarray(X, np.float64), np.asarray(Y, np.float64)), l2=l2)


def _in_memory_accuracy(params, X, Y):
    Z = params["W1"] @ X + params["b1"]
    return float(np.mean((Z >= 0) == (Y == 1)))


# -- 1. Dask == numpy == weighted mean of mini-batches == in memory ------------------------------


@pytest.mark.parametrize("shuffle", ["none", "buffer"])
@pytest.mark.parametrize("B", [100, 73])  # divides m = 1500; does not (20 batches of 73 and one of 40)
@pytest.mark.parametrize("l2", [0.0, 0.7])
def test_dask_numpy_and_weighted_minibatch_mean_agree(
    zarr_store, shuffle, B, l2, make_logistic_params, make_logistic_xy
):
    X, Y = make_logistic_xy(m=1500, n_x=5)
    m = X.shape[1]
    params = make_logistic_params(5)
    path = zarr_store(X, Y, chunk=128)  # 11 chunks of 128 and one of 92
    with streamtrain.open_source(path) as source:
        exact = {}
        for scheduler in ("sync", "threads"):
            with FullBatch(source, LOGISTIC, scheduler=scheduler) as fb:
                exact[scheduler] = fb.loss_and_grad(params, l2=l2)
        # Units of 3 chunks in buffer mode, so batches straddle units and chunks.
        stream = BatchStream(
            source,
            B,
            Cursor(seed=4, epoch=0),
            shuffle=shuffle,
            dtype=np.float64,
            buffer_bytes=(2 + 2 + READERS) * 3 * (5 + 1) * 128 * 8,  # units of 3 chunks (prefetch 2)
        )
        loss, grad, seen, n_batches = 0.0, {k: np.zeros_like(v) for k, v in params.items()}, 0, 0
        for Xb, Yb, *_ in stream:
            b_loss, b_grad, _ = batch_objective(LOGISTIC, params, Xb, Yb, l2=l2, m=m)
            w = Xb.shape[1] / m
            loss += w * b_loss
            grad = {k: grad[k] + w * b_grad[k] for k in grad}
            seen, n_batches = seen + Xb.shape[1], n_batches + 1
    assert seen == m and n_batches == math.ceil(m / B)
    if shuffle == "buffer":
        assert stream.chunks_per_unit == 3
    memory = _in_memory(params, X, Y, l2)
    for name, (e_loss, e_grad) in {"threads": exact["threads"], "minibatch": (loss, grad), "in memory": memory}.items():
        assert _rel(e_loss, exact["sync"][0]) <= 1e-10, name
        assert _rel(e_grad, exact["sync"][1]) <= 1e-10, name


@pytest.mark.parametrize(
    "name, options",
    [
        ("softmax", {}),
        ("linear", {}),
        ("mlp", {"hidden": (6, 4), "activation": "tanh", "output": "softmax"}),
        ("mlp", {"hidden": (5,), "activation": "relu", "output": "sigmoid"}),
    ],
)
def test_every_model_minibatch_mean_with_l2_equals_the_full_batch_gradient(zarr_store, name, options):
    """Mini-batch gradients of one epoch, weighted by size, add up to the exact ∇J with L2 on."""
    rng = np.random.default_rng(5)
    m, l2 = 700, 1.3
    X = rng.standard_normal((4, m))
    output = get_model(name, **options).output
    if output == "softmax":
        Y = rng.integers(0, 3, size=(1, m)).astype(np.float64)  # class ids
    elif output == "identity":
        Y = rng.standard_normal((2, m))
    else:
        Y = (rng.random((1, m)) < 0.5).astype(np.float64)
    path = zarr_store(X, Y, chunk=64)
    with bind(get_model(name, **options), path) as (model, source):
        params = {k: rng.standard_normal(v.shape) for k, v in model.init(4, source.k, np.dtype(np.float64), 0).items()}
        expected = {s: loss_and_grad(path, params, model=model, l2=l2, scheduler=s) for s in ("sync", "threads")}
        loss, grad = 0.0, {k: np.zeros_like(v) for k, v in params.items()}
        for Xb, Yb, *_ in BatchStream(source, 45, Cursor(seed=1, epoch=0), shuffle="buffer", dtype=np.float64):
            b_loss, b_grad, _ = batch_objective(model, params, Xb, Yb, l2=l2, m=m)
            loss += Xb.shape[1] / m * b_loss
            grad = {k: grad[k] + Xb.shape[1] / m * b_grad[k] for k in grad}
    for e_loss, e_grad in expected.values():
        assert _rel(loss, e_loss) <= 1e-10 and _rel(grad, e_grad) <= 1e-10


def test_l2_term_is_lambda_over_2m_and_leaves_b_alone(make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=4)
    params = make_logistic_params(4)
    source = ArraySource(X, Y, chunk_size=100)
    l2, m = 2.5, 600
    loss0, grad0 = loss_and_grad(source, params, model=LOGISTIC, l2=0.0, scheduler="sync")
    loss1, grad1 = loss_and_grad(source, params, model=LOGISTIC, l2=l2, scheduler="sync")
    assert loss1 - loss0 == pytest.approx(l2 / (2 * m) * np.sum(params["W1"] ** 2), rel=1e-9)
    np.testing.assert_allclose(grad1["W1"] - grad0["W1"], l2 / m * params["W1"], rtol=1e-9)
    np.testing.assert_array_equal(grad1["b1"], grad0["b1"])


# -- 2, 3. The store's layout does not change the answer -------------------------------------------


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_chunk_size_does_not_change_the_result(zarr_store, scheduler, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=2000, n_x=4)
    params = make_logistic_params(4)
    results = [
        loss_and_grad(zarr_store(X, Y, chunk), params, model=LOGISTIC, l2=0.3, scheduler=scheduler)
        for chunk in (64, 100, 1000, 2000)
    ]
    reference = _in_memory(params, X, Y, 0.3)
    for loss, grad in results:
        assert _rel(loss, reference[0]) <= 1e-9
        assert _rel(grad, reference[1]) <= 1e-9


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_zarr_hdf5_chunked_hdf5_contiguous_and_memory_agree(
    zarr_store, hdf5_store, scheduler, make_logistic_params, make_logistic_xy
):
    X, Y = make_logistic_xy(m=1200, n_x=6)
    params = make_logistic_params(6)
    stores = {
        "zarr": zarr_store(X, Y, 100),
        "hdf5 chunked": hdf5_store(X, Y, 100),
        "hdf5 contiguous": hdf5_store(X, Y, None),
        "memory, 7 chunks": ArraySource(X, Y, chunk_size=173),
    }
    reference = loss_and_grad(ArraySource(X, Y), params, model=LOGISTIC, l2=1.1, scheduler="sync")
    assert _rel(reference[0], _in_memory(params, X, Y, 1.1)[0]) <= 1e-12
    for name, store in stores.items():
        loss, grad = loss_and_grad(store, params, model=LOGISTIC, l2=1.1, scheduler=scheduler)
        assert _rel(loss, reference[0]) <= 1e-10, name
        assert _rel(grad, reference[1]) <= 1e-10, name


# -- 4. Analytic gradient vs finite differences ----------------------------------------------------


def test_gradient_matches_central_finite_differences_of_the_exact_loss(
    numeric_grad, make_logistic_params, make_logistic_xy
):
    X, Y = make_logistic_xy(m=500, n_x=3)
    source = ArraySource(X, Y, chunk_size=64)
    params, l2 = make_logistic_params(3), 4.0
    _, grad = loss_and_grad(source, params, model=LOGISTIC, l2=l2, scheduler="sync")
    numeric = numeric_grad(lambda p: loss_and_grad(source, p, model=LOGISTIC, l2=l2, scheduler="sync")[0], params)
    for name in params:
        np.testing.assert_allclose(grad[name], numeric[name], rtol=1e-6, atol=1e-9)


# -- 5. Float32 stores are summed in float64 -------------------------------------------------------


@pytest.mark.parametrize("params_dtype, l2", [(np.float64, 0.5), (np.float64, 0.0), (np.float32, 0.5)])
@pytest.mark.parametrize("scheduler", ["sync", "threads"])
@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_float32_store_is_summed_in_float64(
    zarr_store, hdf5_store, fmt, scheduler, params_dtype, l2, make_logistic_params, make_logistic_xy
):
    X, Y = make_logistic_xy(m=3000, n_x=5, dtype=np.float32)
    params = make_logistic_params(5, dtype=params_dtype)
    path = (zarr_store if fmt == "zarr" else hdf5_store)(X, Y, 256)
    loss, grad = loss_and_grad(path, params, model=LOGISTIC, l2=l2, scheduler=scheduler)
    assert all(g.dtype == np.float64 for g in grad.values())
    ref_loss, ref_grad = _in_memory(params, X, Y, l2)  # the float32 values, cast to float64
    assert _rel(loss, ref_loss) <= 1e-12
    assert _rel(grad, ref_grad) <= 1e-12
    # The tolerance can tell the two apart: the same sums in float32 are off by far more.
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    in_float32 = objective(p32, LOGISTIC.totals(p32, X, Y), l2=l2)
    assert _rel(in_float32[1], ref_grad) > 1e-10


def test_l2_term_of_float32_params_is_computed_in_float64(flatten, make_logistic_params, make_logistic_xy):
    # A large λ makes the L2 gradient (λ/m) W dominate, so a float32 product would show.
    X, Y = make_logistic_xy(m=1000, n_x=5)
    params = make_logistic_params(5, dtype=np.float32)
    source = ArraySource(X, Y, chunk_size=128)
    ref_loss, ref_grad = _in_memory(params, X, Y, 50.0)  # the same float32 params, cast to float64 first
    _, grad = loss_and_grad(source, params, model=LOGISTIC, l2=50.0, scheduler="sync")
    assert _rel(grad, ref_grad) <= 1e-12
    with FullBatch(source, LOGISTIC, scheduler="sync") as fb:
        record = exact_fields(fb, params, 50.0)
    assert _rel(record["exact_loss"], ref_loss) <= 1e-12
    assert _rel(record["exact_grad_norm"], np.linalg.norm(flatten(ref_grad))) <= 1e-12


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_casting_a_chunk_in_column_blocks_changes_nothing(
    monkeypatch, scheduler, make_logistic_params, make_logistic_xy
):
    X, Y = make_logistic_xy(m=1000, n_x=5, dtype=np.float32)
    source = ArraySource(X, Y, chunk_size=128)  # 7 chunks of 128, one of 104
    params = make_logistic_params(5)

    def totals():
        with FullBatch(source, LOGISTIC, scheduler=scheduler) as fb:
            return fb.totals(params, sample_norms=True)

    whole = totals()  # each chunk cast at once: 128 columns are far below CAST_BYTES
    monkeypatch.setattr(full_batch, "CAST_BYTES", 8 * 5 * 7)  # blocks of 7 columns, a short last one
    blocks = totals()
    assert (blocks.samples, blocks.correct) == (whole.samples, whole.correct)
    assert blocks.samples == 1000 and 0 < whole.correct < 1000
    assert _rel(blocks.loss, whole.loss) <= 1e-12
    assert _rel(blocks.grad_sq, whole.grad_sq) <= 1e-12
    assert _rel(blocks.grads, whole.grads) <= 1e-12


# -- 6. Labels outside {0, 1} ----------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
@pytest.mark.parametrize("call", ["loss_and_grad", "evaluate"])
def test_bad_label_names_the_sample_and_chunk(zarr_store, scheduler, call, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=1000, n_x=3)
    Y[0, 137] = 2.0  # chunk 2 of 64-sample chunks
    path = zarr_store(X, Y, 64)
    fn = loss_and_grad if call == "loss_and_grad" else evaluate
    with pytest.raises(DataError, match=r"\.zarr/Y: label 2\.0 at sample 137 \(chunk 2\)"):
        fn(path, make_logistic_params(3), model=LOGISTIC, scheduler=scheduler)


def test_the_first_bad_chunk_is_reported_whichever_worker_meets_an_error_first(
    zarr_store, make_logistic_params, make_logistic_xy
):
    X, Y = make_logistic_xy(m=2000, n_x=3)
    Y[0, 137], Y[0, 1900] = 2.0, 3.0  # chunks 2 and 29
    path = zarr_store(X, Y, 64)
    for _ in range(10):
        with pytest.raises(DataError, match=r"sample 137 \(chunk 2\)"):
            loss_and_grad(path, make_logistic_params(3), model=LOGISTIC, scheduler="threads")


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_the_model_checks_labels_even_when_the_source_does_not(scheduler, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=300, n_x=3)
    Y[0, 10] = 2.0
    with pytest.raises(DataError, match=r"label 2\.0 at sample 10"):
        loss_and_grad(ArraySource(X, Y, chunk_size=64), make_logistic_params(3), model=LOGISTIC, scheduler=scheduler)


# -- 6b. Damaged data: a chunk that cannot be read, NaN/inf --------------------------------------


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_nan_in_x_and_inf_in_linear_labels_are_named(zarr_store, scheduler, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=500, n_x=3)
    X[2, 345] = np.nan  # chunk 3 of 100-sample chunks
    with pytest.raises(DataError, match=r"\.zarr/X: sample 345 \(chunk 3\) holds NaN in row 2; clean or drop it"):
        evaluate(zarr_store(X, Y, 100), make_logistic_params(3), model=LOGISTIC, scheduler=scheduler)
    X[2, 345], Y[0, 499] = 0.0, np.inf
    with pytest.raises(DataError, match=r"\.zarr/Y: sample 499 \(chunk 4\) holds \+inf in row 0"):
        loss_and_grad(zarr_store(X, Y, 100), make_logistic_params(3), model=get_model("linear"), scheduler=scheduler)


def test_nan_params_on_clean_data_are_not_blamed_on_the_data(make_logistic_params, make_logistic_xy):
    params = make_logistic_params(3)
    params["b1"][0, 0] = np.nan
    source = ArraySource(*make_logistic_xy(m=300, n_x=3), chunk_size=64)
    with FullBatch(source, LOGISTIC, scheduler="threads") as exact:  # evaluate refuses such params before
        assert math.isnan(exact.totals(params, grad=False).loss)  # the caller's to judge


def test_nan_bytes_in_a_contiguous_hdf5_dataset_are_named(hdf5_store, make_logistic_params, make_logistic_xy):
    path = hdf5_store(*make_logistic_xy(m=300, n_x=3, dtype=np.float32), None)
    with h5py.File(path, "r") as f:
        offset = f["X"].id.get_offset()
    with open(path, "r+b") as f:  # X is stored row by row: bytes 4 * 250.. are sample 250 of row 0
        f.seek(offset + 4 * 250)
        f.write(b"\xff" * 4)  # a NaN
    with pytest.raises(DataError, match=r"\.h5/X: sample 250 \(chunk 0\) holds NaN in row 0"):
        evaluate(path, make_logistic_params(3), model=LOGISTIC, scheduler="threads")


class _Short(np.ndarray):
    """An array whose reads of samples 4.. come back one sample short: a chunk of the wrong size."""

    def __getitem__(self, index):
        out = np.asarray(self).__getitem__(index)
        return out[:, :-1] if index[1].start == 4 else out


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_a_chunk_that_decodes_to_the_wrong_shape_is_named(scheduler, make_logistic_params):
    X, Y = np.ones((3, 10)), np.zeros((1, 10))
    source = ArraySource(X, Y, chunk_size=4)
    source._X = X.view(_Short)
    source.read(0, 4)
    says = r"<arrays>/X: chunk 1 \(samples 4\.\.8\) decodes to shape \(3, 3\), not \(3, 4\)$"
    with pytest.raises(DataError, match=says):
        source.read(4, 8)
    with pytest.raises(DataError, match=says):
        FullBatch(source, LOGISTIC, scheduler=scheduler).totals(make_logistic_params(3))


# -- 7. Schedulers and the exact fields of a record ----------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["processes", "", "Threads", 3])
def test_unknown_scheduler_is_a_config_error(scheduler, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=100, n_x=3)
    with pytest.raises(ConfigError, match="unknown scheduler"):
        check_scheduler(scheduler)
    with pytest.raises(ConfigError, match="unknown scheduler"):
        loss_and_grad(ArraySource(X, Y), make_logistic_params(3), model=LOGISTIC, scheduler=scheduler)
    with pytest.raises(ConfigError, match="unknown scheduler"):
        streamtrain.fit(ArraySource(X, Y), batch_size="full", epochs=1, scheduler=scheduler)


@pytest.mark.parametrize(
    "address, message",
    [
        ("foo://bar", "unknown address scheme 'foo'"),
        ("TCP://host:8786", "unknown address scheme 'TCP'"),
        ("tcp://", "is not an address like tcp://HOST:PORT"),
        ("tcp://host", "is not an address like tcp://HOST:PORT"),
        ("tcp://host:notaport", "is not an address like tcp://HOST:PORT"),
        ("tcp://host:0", "is not an address like tcp://HOST:PORT"),
        ("tcp://host:70000", "is not an address like tcp://HOST:PORT"),
        ("tcp://host:8786/path", "is not an address like tcp://HOST:PORT"),
        ("tcp://user@host:8786", "is not an address like tcp://HOST:PORT"),
        ("tcp://[::1:8786", "is not an address like tcp://HOST:PORT"),
        ("inproc://x", "exists only inside the process that started the scheduler"),
        ("inproc://10.0.0.1/1/1", "exists only inside the process that started the scheduler"),
        ("ucx://10.0.0.1:8786", "UCX addresses are not supported"),
        ("ws://10.0.0.1:8786", "websocket addresses are not supported"),
    ],
)
def test_malformed_scheduler_addresses_are_config_errors_at_once(address, message, make_logistic_xy):
    X, Y = make_logistic_xy(m=100, n_x=3)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        loss_and_grad(
            ArraySource(X, Y), {"W1": np.zeros((1, 3)), "b1": np.zeros((1, 1))}, model=LOGISTIC, scheduler=address
        )
    assert time.perf_counter() - t0 < 2 and "\n" not in str(e.value) and repr(address) in str(e.value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_scheduler(address)


def test_a_tls_address_without_certificates_is_a_config_error_at_once(make_logistic_xy):
    pytest.importorskip("distributed")
    X, Y = make_logistic_xy(m=100, n_x=3)
    assert check_scheduler("tls://10.0.0.1:8786") == "tls://10.0.0.1:8786"  # well formed
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="needs TLS certificates"):
        loss_and_grad(
            ArraySource(X, Y),
            {"W1": np.zeros((1, 3)), "b1": np.zeros((1, 1))},
            model=LOGISTIC,
            scheduler="tls://127.0.0.1:9",
        )
    assert time.perf_counter() - t0 < 2


def test_known_schedulers_pass_through():
    assert check_scheduler(None) == "threads"
    for name in ("threads", "sync", "local", "tcp://10.0.0.1:8786", "tcp://[::1]:8786", "tcp://node-1.cluster:1"):
        assert check_scheduler(name) == name


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_exact_record_agrees_with_loss_and_grad_and_evaluate(scheduler, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=900, n_x=4)
    source = ArraySource(X, Y, chunk_size=128)
    params, l2 = make_logistic_params(4), 3.0
    with FullBatch(source, LOGISTIC, scheduler=scheduler) as fb:
        record = exact_fields(fb, params, l2)
        record_no_l2 = exact_fields(fb, params, 0.0)
        assert fb.passes == 2  # one pass over the store per record
    loss, grad = loss_and_grad(source, params, model=LOGISTIC, l2=l2, scheduler=scheduler)
    ev = evaluate(source, params, model=LOGISTIC, scheduler=scheduler)
    assert set(record) == {"exact_loss", "exact_grad_norm", "exact_accuracy"}
    assert record["exact_loss"] == pytest.approx(loss, rel=1e-12)
    assert record["exact_grad_norm"] == pytest.approx(
        math.sqrt(sum(float(np.sum(g**2)) for g in grad.values())), rel=1e-12
    )
    assert record["exact_accuracy"] == ev["accuracy"] == _in_memory_accuracy(params, X, Y)
    assert record_no_l2["exact_loss"] == pytest.approx(ev["loss"], rel=1e-12)
    assert record["exact_loss"] > record_no_l2["exact_loss"]  # the L2 term is in J, not in evaluate


# -- 8. evaluate -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["sync", "threads", None])
def test_evaluate_equals_the_in_memory_loss_and_accuracy(hdf5_store, scheduler, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=1777, n_x=5)
    params = make_logistic_params(5)
    path = hdf5_store(X, Y, 200)
    result = evaluate(path, params, model=LOGISTIC, scheduler=scheduler)
    loss, _ = objective(params, LOGISTIC.totals(params, X, Y))
    assert result["loss"] == pytest.approx(loss, rel=1e-12)
    assert result["accuracy"] == pytest.approx(_in_memory_accuracy(params, X, Y), rel=1e-15)
    assert result["m"] == 1777
    assert 0.05 < result["accuracy"] < 0.95  # random params: the check above is not trivially 0 or 1


# -- 9. dask.distributed -----------------------------------------------------------------------------


@pytest.fixture
def cluster():
    distributed = pytest.importorskip("distributed")
    c = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    try:
        yield c
    finally:
        c.close()


def test_local_cluster_scheduler_equals_sync(zarr_store, monkeypatch, recwarn, make_logistic_params, make_logistic_xy):
    """... and stays off Dask's port 8787, held here as a dashboard running elsewhere would hold it."""
    distributed = pytest.importorskip("distributed")
    made = []
    dashboard = socket.socket()
    with contextlib.suppress(OSError):  # a dashboard running already holds it just as well
        dashboard.bind(("127.0.0.1", 8787))
        dashboard.listen()

    class Recorded(distributed.LocalCluster):  # the real thing, remembered so the test can look at it
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            made.append(self)

    monkeypatch.setattr(distributed, "LocalCluster", Recorded)
    X, Y = make_logistic_xy(m=500, n_x=3)
    params = make_logistic_params(3)
    path = zarr_store(X, Y, 64)
    expected = loss_and_grad(path, params, model=LOGISTIC, l2=0.4, scheduler="sync")
    loss, grad = loss_and_grad(path, params, model=LOGISTIC, l2=0.4, scheduler="local")
    assert _rel(loss, expected[0]) <= 1e-12
    assert _rel(grad, expected[1]) <= 1e-12
    assert len(made) == 1 and "chunk_task" in made[0].scheduler.task_prefixes  # the cluster did the work
    assert made[0].status.name == "closed"  # and was shut down afterwards
    assert made[0].scheduler.http_server.port != 8787
    assert not [w for w in recwarn if "8787" in str(w.message)]  # Dask's "Port 8787 is already in use"
    dashboard.close()


def test_running_scheduler_address_on_hdf5_and_zarr(
    zarr_store, hdf5_store, cluster, make_logistic_params, make_logistic_xy
):
    X, Y = make_logistic_xy(m=700, n_x=4)
    params = make_logistic_params(4)
    clients_before = set(cluster.scheduler.clients)
    for path in (hdf5_store(X, Y, 64), zarr_store(X, Y, 64)):
        expected = loss_and_grad(path, params, model=LOGISTIC, l2=0.4, scheduler="sync")
        loss, grad = loss_and_grad(path, params, model=LOGISTIC, l2=0.4, scheduler=cluster.scheduler_address)
        assert _rel(loss, expected[0]) <= 1e-12, path
        assert _rel(grad, expected[1]) <= 1e-12, path
        ev = evaluate(path, params, model=LOGISTIC, scheduler=cluster.scheduler_address)
        assert ev == pytest.approx(evaluate(path, params, model=LOGISTIC, scheduler="sync"), rel=1e-12)
    assert "chunk_task" in cluster.scheduler.task_prefixes  # the cluster did the work
    assert set(cluster.scheduler.clients) == clients_before  # every connection was closed


def test_bad_label_under_a_running_scheduler(hdf5_store, cluster, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=300, n_x=3)
    Y[0, 250] = -1.0
    path = hdf5_store(X, Y, 64)
    with pytest.raises(DataError, match=r"label -1\.0 at sample 250 \(chunk 3\)"):
        loss_and_grad(path, make_logistic_params(3), model=LOGISTIC, scheduler=cluster.scheduler_address)


def test_damaged_chunk_and_nan_under_a_running_scheduler(zarr_store, cluster, make_logistic_params, make_logistic_xy):
    X, Y = make_logistic_xy(m=300, n_x=3, dtype=np.float32)
    path = zarr_store(X, Y, 64)
    with open(path / "X" / "c" / "0" / "2", "r+b") as f:
        f.truncate(100)
    with pytest.raises(
        DataError, match=r"\.zarr/X: chunk 2 \(samples 128\.\.192\) cannot be read: truncated or corrupt"
    ):
        loss_and_grad(path, make_logistic_params(3), model=LOGISTIC, scheduler=cluster.scheduler_address)
    X[1, 200] = np.nan
    with pytest.raises(DataError, match=r"\.zarr/X: sample 200 \(chunk 3\) holds NaN in row 1"):
        loss_and_grad(
            zarr_store(X, Y, 64), make_logistic_params(3), model=LOGISTIC, scheduler=cluster.scheduler_address
        )


def test_unreachable_scheduler_is_a_config_error(monkeypatch, make_logistic_params, make_logistic_xy):
    distributed = pytest.importorskip("distributed")
    real_client = distributed.Client

    def quick_client(address, *, timeout, **kw):  # the 10 s connect timeout, cut to 0.5 s
        assert timeout == "10s"
        return real_client(address, timeout="0.5s", **kw)

    monkeypatch.setattr(distributed, "Client", quick_client)
    X, Y = make_logistic_xy(m=100, n_x=3)
    with pytest.raises(ConfigError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"):
        loss_and_grad(ArraySource(X, Y), make_logistic_params(3), model=LOGISTIC, scheduler="tcp://127.0.0.1:9")


# -- 10. L-BFGS and batch gradient descent meet at the same optimum ------------------------------


def test_lbfgs_and_batch_gradient_descent_reach_the_same_optimum(flatten, make_logistic_params, make_logistic_xy):
    pytest.importorskip("scipy")
    X, Y = make_logistic_xy(m=1000, n_x=4, seed=3)
    source = ArraySource(X, Y, chunk_size=250)
    l2 = 5.0
    records = []
    with FullBatch(source, LOGISTIC, scheduler="sync") as fb:
        solution = lbfgs(fb, make_logistic_params(4, seed=5), l2=l2, max_iter=200, callback=records.append)
    J_lbfgs, g_lbfgs = loss_and_grad(source, solution, model=LOGISTIC, l2=l2, scheduler="sync")

    gd = streamtrain.fit(source, batch_size="full", epochs=2000, lr=3.0, l2=l2, dtype="float64", scheduler="sync")
    J_gd, g_gd = loss_and_grad(source, gd, l2=l2, scheduler="sync")
    via_fit = streamtrain.fit(source, optimizer="lbfgs", epochs=200, l2=l2, dtype="float64", scheduler="sync")
    J_fit, _ = loss_and_grad(source, via_fit, l2=l2, scheduler="sync")

    assert _rel(J_lbfgs, J_gd) <= 1e-9 and _rel(J_fit, J_gd) <= 1e-9
    for k in solution:
        np.testing.assert_allclose(solution[k], gd.params[k], rtol=0, atol=1e-5)
        np.testing.assert_allclose(via_fit.params[k], gd.params[k], rtol=0, atol=1e-5)
    # Both really are at the optimum, not merely close to each other.
    assert np.linalg.norm(flatten(g_lbfgs)) < 1e-7 and np.linalg.norm(flatten(g_gd)) < 1e-7
    assert gd.history[-1].grad_norm < 1e-7 < gd.history[0].grad_norm
    # The optimum is not the start: L2 pulls W towards 0 but the data holds it away.
    assert np.linalg.norm(solution["W1"]) > 0.1

    passes = [r.passes for r in records]
    assert passes == sorted(set(passes)) and passes[0] >= 1
    assert [r.epoch for r in records] == list(range(1, len(records) + 1))
    assert records[-1].converged is True and records[-1].stop
    assert all(r.converged is None and r.stop is None for r in records[:-1])
    assert records[-1].loss == pytest.approx(J_lbfgs, rel=1e-12)
    assert records[-1].grad_norm == pytest.approx(np.linalg.norm(flatten(g_lbfgs)), rel=1e-6, abs=1e-12)
    assert [r.loss for r in records] == sorted((r.loss for r in records), reverse=True)
    assert via_fit.history[-1].converged is True
    assert via_fit.params["W1"].dtype == np.float64


def test_lbfgs_records_report_the_evaluation_at_the_accepted_point(flatten, make_logistic_params, make_logistic_xy):
    """Record i holds J and ‖∇J‖ of the last evaluation before it: the point L-BFGS accepted."""
    pytest.importorskip("scipy")
    X, Y = make_logistic_xy(m=800, n_x=3, seed=7)
    evaluations = []  # (J, ‖∇J‖) of every pass, in order

    class Logged(FullBatch):
        def loss_and_grad(self, params, *, l2=0.0):
            loss, grad = super().loss_and_grad(params, l2=l2)
            evaluations.append((loss, float(np.linalg.norm(flatten(grad)))))
            return loss, grad

    records = []
    lbfgs(
        Logged(ArraySource(X, Y, chunk_size=100), LOGISTIC, scheduler="sync"),
        make_logistic_params(3, seed=8),
        l2=1.0,
        max_iter=50,
        callback=records.append,
    )
    assert len(records) >= 3
    assert records[-1].passes == len(evaluations)
    # Samples read, as a mini-batch epoch counts them: m per pass (plots put runs on one axis by it).
    before = [0] + [r.passes for r in records[:-1]]
    assert [r.samples for r in records] == [800 * (r.passes - p) for r, p in zip(records, before)]
    for r in records:
        loss, grad_norm = evaluations[r.passes - 1]
        assert r.loss == loss
        assert r.grad_norm == pytest.approx(grad_norm, rel=1e-12)
