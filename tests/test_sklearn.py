"""The scikit-learn estimators: sklearn's own checks, Pipelines, dask-ml's Incremental, and the same
training as ``streamtrain.fit`` in memory and out of core."""

import inspect
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest

pytest.importorskip("sklearn")

from conftest import write_hdf5, write_zarr
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import streamtrain
from streamtrain import ArraySource, ConfigError, DataError, FitConfig
from streamtrain.sklearn import HYPERPARAMETERS, StreamClassifier, StreamRegressor

# The checks' data is small and not scaled: adam's steps (about lr per weight, whatever the features'
# scale) train on all of it at the defaults' sgd with lr 0.1 diverges on some (streamtrain says so).
QUICK = dict(optimizer="adam", lr=0.01, batch_size=16, epochs=10)
CHECKED = [
    StreamClassifier(**QUICK),
    StreamClassifier(model="softmax", dtype="float64", **QUICK),
    StreamClassifier(model="mlp", hidden=(8,), **QUICK),
    StreamRegressor(**QUICK),
    StreamRegressor(model="mlp", hidden=(8,), dtype="float64", **QUICK),
]
FLOAT32_ROUNDING = (
    "float32, streamtrain's default precision: BLAS may sum a sample's features in another order when the "
    "sample sits elsewhere in the batch, so its prediction can differ in the last bit (1e-7 relative, the "
    "check's tolerance) between orders and subsets; the float64 estimators here pass this check"
)


def _expected_failures(estimator):
    """The checks that cannot pass, and why (sklearn's ``expected_failed_checks``)."""
    if estimator.dtype == "float32":
        return dict.fromkeys(
            ("check_methods_sample_order_invariance", "check_methods_subset_invariance"), FLOAT32_ROUNDING
        )
    return {}


@parametrize_with_checks(CHECKED, expected_failed_checks=_expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_hyperparameters_are_fit_configs_options_with_its_defaults():
    declared = {f.name: f.default for f in fields(FitConfig)}
    own = {"model": None, "random_state": declared["seed"], "chunk_size": None}
    for estimator in (StreamClassifier(), StreamRegressor()):
        params = estimator.get_params()
        assert params == {**{name: declared[name] for name in HYPERPARAMETERS}, **own}
        assert all(p.kind is p.KEYWORD_ONLY for p in list(inspect.signature(type(estimator)).parameters.values()))


def _blobs(m=240, classes=3, seed=0, scale=3.0, offset=10.0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, 4)) * scale
    ids = rng.integers(0, classes, m)
    return centres[ids] + rng.standard_normal((m, 4)) * 2 + offset, ids  # features far from 0: the scaler's job


def test_a_pipeline_with_a_scaler_fits_sklearns_own_logistic_regression():
    """At the exact optimum (L-BFGS), J = mean loss + λ/(2m)‖W‖² is LogisticRegression's with C = 1/λ."""
    X, ids = _blobs()
    y = np.array(["cat", "dog", "emu"])[ids]
    ours = make_pipeline(StandardScaler(), StreamClassifier(optimizer="lbfgs", l2=2.0, dtype="float64"))
    theirs = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000))
    ours.fit(X, y), theirs.fit(X, y)
    np.testing.assert_allclose(ours[-1].coef_, theirs[-1].coef_, atol=1e-4)  # both sum to 0 over the classes
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-5)
    assert list(ours.predict(X)) == list(theirs.predict(X)) and ours.score(X, y) == theirs.score(X, y)


def test_a_pipeline_with_a_scaler_fits_sklearns_own_ridge():
    """L-BFGS's optimum of mean ½(ŷ - y)² + λ/(2m)‖W‖² is Ridge's with alpha = λ; two outputs at once."""
    X, _ = _blobs(seed=3)
    rng = np.random.default_rng(4)
    y = X @ rng.standard_normal((4, 2)) + rng.standard_normal((len(X), 2))
    ours = make_pipeline(StandardScaler(), StreamRegressor(optimizer="lbfgs", l2=5.0, dtype="float64")).fit(X, y)
    theirs = make_pipeline(StandardScaler(), Ridge(alpha=5.0)).fit(X, y)
    np.testing.assert_allclose(ours[-1].coef_, theirs[-1].coef_, rtol=1e-6)
    np.testing.assert_allclose(ours[-1].intercept_, theirs[-1].intercept_, rtol=1e-6)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-6)
    one = StreamRegressor(optimizer="lbfgs", dtype="float64").fit(X, y[:, 0])
    assert one.predict(X).shape == (len(X),) and one.coef_.shape == (4,) and isinstance(one.intercept_, float)


@pytest.mark.parametrize(
    ("make", "labels"),
    [
        (lambda: StreamClassifier(optimizer="momentum", batch_size=8), np.array(["no", "yes"])),
        (lambda: StreamClassifier(model="mlp", hidden=(5,), optimizer="adam", lr=0.01, batch_size=20), [3, 7, 9]),
        (lambda: StreamRegressor(optimizer="adam", lr=0.01, batch_size=20), None),
    ],
)
def test_one_partial_fit_is_one_fit_epoch_and_more_go_on_as_more_epochs(make, labels):
    """Bit for bit: the same steps, in the same order, from the same optimizer state."""
    X, ids = _blobs(m=200, classes=2 if labels is not None and len(labels) == 2 else 3)
    y = X[:, 0] + ids if labels is None else np.asarray(labels)[ids]
    classes = {} if labels is None else {"classes": labels}
    partial = make()
    for epochs in (1, 2, 3):
        partial.partial_fit(X, y, **classes)
        whole = make().set_params(epochs=epochs).fit(X, y)
        for name, value in whole.params_.items():
            np.testing.assert_array_equal(partial.params_[name], value)
    assert [r.epoch for r in partial.history_] == [1, 2, 3]
    np.testing.assert_array_equal(partial.predict(X), whole.predict(X))


def test_fit_is_streamtrain_fit_on_the_same_columns():
    X, ids = _blobs(m=150, classes=2)
    clf = StreamClassifier(optimizer="adam", lr=0.05, batch_size=10, chunk_size=40, random_state=7).fit(X, ids)
    reference = streamtrain.fit(
        ArraySource(X.T, ids[None, :], chunk_size=40), optimizer="adam", lr=0.05, batch_size=10, seed=7, progress=False
    )
    for name, value in reference.params.items():
        np.testing.assert_array_equal(clf.params_[name], value)


def test_float32_and_float64_arrays_of_the_same_values_train_alike():
    """In-memory chunks follow the training precision: 512 float32 features make chunks of 4,096 samples."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5000, 512)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    make = lambda: StreamClassifier(epochs=1, lr=0.01)  # noqa: E731
    np.testing.assert_array_equal(make().fit(X, y).params_["W1"], make().fit(X.astype(np.float64), y).params_["W1"])


@pytest.mark.parametrize("write", [write_zarr, write_hdf5], ids=["zarr", "hdf5"])
@pytest.mark.parametrize(
    ("make", "classes"),
    [
        (lambda: StreamClassifier(model="mlp", hidden=(4,), optimizer="adam", lr=0.01, batch_size=16), 3),
        (lambda: StreamClassifier(optimizer="momentum", batch_size=8, chunk_size=32), 2),  # compiled steps
        (lambda: StreamRegressor(batch_size=16, lr=0.01), None),
    ],
    ids=["mlp-3-classes", "logistic", "linear"],
)
def test_fit_store_trains_as_fit_on_the_same_samples_in_memory(tmp_path, write, make, classes):
    """The store holds class ids 0..K-1 (or values); in memory the classifier one-hots 3 classes itself."""
    X, ids = _blobs(m=200, classes=classes or 2, offset=0.0)
    y = ids if classes else X[:, 1] / 10
    path = tmp_path / ("s.zarr" if write is write_zarr else "s.h5")
    write(path, X.T.astype(np.float32), y[None, :].astype(np.float32), 32)
    stored = make().fit_store(path, progress=False)
    in_memory = make().set_params(chunk_size=32).fit(X.astype(np.float32), y)
    for name, value in in_memory.params_.items():
        np.testing.assert_array_equal(stored.params_[name], value)
    assert stored.n_features_in_ == 4
    np.testing.assert_array_equal(stored.predict(X), in_memory.predict(X))


def test_fit_store_takes_a_source_with_its_own_array_names_and_run_options(tmp_path):
    X, ids = _blobs(m=120, classes=2, offset=0.0)
    write_zarr(tmp_path / "s.zarr", X.T, ids[None, :].astype(np.float64), 40)
    import zarr

    group = zarr.open_group(tmp_path / "s.zarr")
    group.create_array("labels", data=group["Y"][:], chunks=(1, 40))
    records = []
    clf = StreamClassifier(batch_size=20).fit_store(
        streamtrain.open_source(tmp_path / "s.zarr", y="labels"), prefetch=0, on_epoch=records.append
    )
    assert [r.epoch for r in records] == [1, 2, 3, 4, 5] and list(clf.classes_) == [0, 1]
    with pytest.raises(ConfigError, match="'lr' is not an option of fit_store: set it with set_params"):
        clf.fit_store(tmp_path / "s.zarr", lr=0.5)
    with pytest.raises(ConfigError, match="'standardize' is not an option of fit_store"):
        clf.fit_store(tmp_path / "s.zarr", standardize=True)


def test_fit_store_trains_in_shards_as_fit_does(tmp_path):
    X, ids = _blobs(m=400, classes=2, offset=0.0)
    write_zarr(tmp_path / "s.zarr", X.T.astype(np.float32), ids[None, :].astype(np.float32), 40)
    shards = dict(shards=3, sync_every=2, scheduler="threads", progress=False)
    clf = StreamClassifier(batch_size=16, optimizer="adam", lr=0.01).fit_store(tmp_path / "s.zarr", **shards)
    expected = streamtrain.fit(tmp_path / "s.zarr", batch_size=16, optimizer="adam", lr=0.01, seed=0, **shards)
    assert clf.result_.history[-1].rounds == 5  # 10 chunks of 40 dealt 4, 3, 3: 10 batches of 16, in rounds of 2
    for name, value in expected.params.items():
        np.testing.assert_array_equal(clf.params_[name], value)


def test_predict_proba_is_the_models_own_and_sklearns_for_the_same_weights():
    X, ids = _blobs(m=200, classes=3)
    clf = StreamClassifier(model="softmax", optimizer="adam", lr=0.01, batch_size=16).fit(X, ids)
    np.testing.assert_array_equal(clf.predict_proba(X), clf.result_.predict_proba(X.T).T.astype(np.float64))
    same = LogisticRegression(max_iter=1000).fit(X, ids)  # its prediction functions, given our weights
    same.coef_, same.intercept_ = clf.coef_.astype(np.float64), clf.intercept_.astype(np.float64)
    np.testing.assert_allclose(clf.predict_proba(X), same.predict_proba(X), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(clf.decision_function(X), same.decision_function(X), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(clf.predict(X), same.predict(X))


@pytest.mark.parametrize(("model", "output"), [("logistic", "sigmoid"), ("softmax", "softmax"), ("mlp", "sigmoid")])
def test_two_classes_of_any_type_take_the_sigmoid_output_unless_softmax_is_asked_for(model, output):
    X, ids = _blobs(m=200, classes=2, offset=0.0)
    y = np.array(["a", "b"], dtype=object)[ids]
    clf = StreamClassifier(model=model, optimizer="adam", lr=0.05, batch_size=16, epochs=20).fit(X, y)
    assert clf.result_.model.output == output and list(clf.classes_) == ["a", "b"]
    assert clf.decision_function(X).shape == (200,) and clf.predict_proba(X).shape == (200, 2)
    same = LogisticRegression().fit(X, y)
    assert set(clf.predict(X)) <= {"a", "b"} and clf.score(X, y) > same.score(X, y) - 0.05
    if model != "mlp":  # a 1-layer model's decision function is the log-odds of classes_[1]
        W, b = clf.coef_.astype(np.float64), clf.intercept_.astype(np.float64)
        same.coef_, same.intercept_ = (W, b) if output == "sigmoid" else (W[1:] - W[:1], b[1:] - b[:1])
        np.testing.assert_allclose(clf.decision_function(X), same.decision_function(X), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(clf.predict_proba(X), same.predict_proba(X), rtol=1e-4, atol=1e-6)


def test_partial_fit_labels_are_checked_against_the_first_calls_classes():
    X, ids = _blobs(m=60, classes=3)
    clf = StreamClassifier()
    with pytest.raises(ConfigError, match="first call to partial_fit needs classes"):
        clf.partial_fit(X, ids)
    clf.partial_fit(X[ids < 2], ids[ids < 2], classes=[0, 1, 2])  # a block may lack some classes
    assert clf.predict_proba(X).shape == (60, 3)
    with pytest.raises(DataError, match="label 5 is not one of the classes"):
        clf.partial_fit(X, np.full(60, 5))
    with pytest.raises(ConfigError, match="not those of the first call"):
        clf.partial_fit(X, ids, classes=[0, 1])
    with pytest.raises(ConfigError, match="partial_fit takes gradient steps"):
        StreamClassifier(optimizer="lbfgs").partial_fit(X, ids, classes=[0, 1, 2])


def test_the_estimators_are_reproducible_from_random_state():
    X, ids = _blobs(m=100, classes=2)
    make = lambda seed: StreamClassifier(model="mlp", hidden=(4,), batch_size=8, random_state=seed)  # noqa: E731
    np.testing.assert_array_equal(make(3).fit(X, ids).params_["W1"], make(3).fit(X, ids).params_["W1"])
    assert not np.array_equal(make(3).fit(X, ids).params_["W1"], make(4).fit(X, ids).params_["W1"])
    drawn = make(np.random.RandomState(0)).fit(X, ids).params_["W1"]
    np.testing.assert_array_equal(drawn, make(np.random.RandomState(0)).fit(X, ids).params_["W1"])


def test_incremental_trains_through_partial_fit_block_by_block():
    dask_ml = pytest.importorskip("dask_ml.wrappers")
    da = pytest.importorskip("dask.array")
    X, ids = _blobs(m=400, classes=2)
    y = np.array(["no", "yes"])[ids]
    make = lambda: StreamClassifier(optimizer="momentum", batch_size=10)  # noqa: E731
    inc = dask_ml.Incremental(make(), shuffle_blocks=False)
    inc.fit(da.from_array(X, chunks=(100, 4)), da.from_array(y, chunks=100), classes=["no", "yes"])
    by_hand = make()
    for start in range(0, 400, 100):
        by_hand.partial_fit(X[start : start + 100], y[start : start + 100], classes=["no", "yes"])
    for name, value in by_hand.params_.items():
        np.testing.assert_array_equal(inc.estimator_.params_[name], value)
    assert len(inc.estimator_.history_) == 4 and inc.score(X, y) > 0.8


def test_importing_streamtrain_leaves_sklearn_alone_and_its_absence_is_one_line():
    code = "import sys, streamtrain; assert 'sklearn' not in sys.modules, 'sklearn imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    code = "import sys; sys.modules['sklearn'] = None; import streamtrain.sklearn"
    error = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr.strip().splitlines()
    assert error[-1] == (
        "streamtrain._errors.ConfigError: streamtrain.sklearn needs scikit-learn: pip install 'streamtrain[sklearn]'"
    )
