"""``--standardize``: training on scaled features, models in the data's units (streamtrain.standardize)."""

from __future__ import annotations

import numpy as np
import pytest

import streamtrain
from streamtrain import ArraySource, ConfigError, DivergedError
from streamtrain.cli import main
from streamtrain.models import get_model
from streamtrain.standardize import feature_scaling, to_raw, to_scaled

M = 2000


def badly_scaled(seed: int = 0):
    """Features on wildly different scales and offsets; labels from a logistic model of them."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((4, M))
    X = (Z * np.array([[1e3], [1e-3], [1.0], [50.0]]) + np.array([[1e4], [0.0], [-3.0], [7.0]])).astype("float32")
    Y = (rng.random((1, M)) < 1 / (1 + np.exp(-(Z[0] - Z[1] + 0.5 * Z[3])))).astype("float32")
    return X, Y


def test_the_scaling_equals_numpys_float64_mean_and_std_at_a_large_offset():
    rng = np.random.default_rng(1)
    X = 1e6 + rng.standard_normal((3, 10_007))
    X[2] = 5.0  # a constant feature: centred, scale 1
    s = feature_scaling(ArraySource(X, np.zeros((1, X.shape[1])), chunk_size=999))
    np.testing.assert_allclose(s.mean, X.mean(axis=1), rtol=1e-15)
    np.testing.assert_allclose(s.scale[:2], X[:2].std(axis=1), rtol=1e-9)
    assert s.scale[2] == 1.0


@pytest.mark.parametrize("model, hidden", [("logistic", None), ("mlp", [3])])
def test_the_folded_model_predicts_on_stored_data_what_it_did_on_scaled_data(model, hidden):
    X, _ = badly_scaled()
    s = feature_scaling(ArraySource(X, np.zeros((1, M)), chunk_size=500))
    m = get_model(model, hidden=hidden, output="sigmoid")
    params = {k: v.astype(np.float64) + 0.1 for k, v in m.init(4, 1, np.dtype(np.float64), 3).items()}
    scaled = (X - s.mean[:, None]) / s.scale[:, None]
    raw = to_raw(params, s)
    np.testing.assert_allclose(m.predict_proba(raw, X.astype(np.float64)), m.predict_proba(params, scaled), rtol=1e-9)
    back = to_scaled(raw, s)
    for k in params:
        np.testing.assert_allclose(back[k], params[k], rtol=1e-12, atol=1e-12)


def test_badly_scaled_features_train_with_it_and_diverge_without():
    X, Y = badly_scaled()
    options = dict(epochs=5, batch_size=32, lr=0.1, progress=False)
    with pytest.raises(DivergedError):
        streamtrain.fit(ArraySource(X, Y, chunk_size=500), **options)
    result = streamtrain.fit(ArraySource(X, Y, chunk_size=500), standardize=True, eval_exact_every=5, **options)
    assert result.config.standardize and result.history[-1].accuracy > 0.7
    # The model file is in the data's units: evaluate on the stored data gives training's exact loss.
    evaluated = streamtrain.evaluate(ArraySource(X, Y, chunk_size=500), result)
    assert evaluated["loss"] == pytest.approx(result.history[-1].exact_loss, rel=1e-5)


def test_a_resumed_standardized_run_ends_identical(tmp_path):
    X, Y = badly_scaled(seed=2)
    options = dict(batch_size=32, lr=0.1, standardize=True, checkpoint_every=20, progress=False)
    whole = streamtrain.fit(ArraySource(X, Y, chunk_size=500), epochs=3, checkpoint_dir=str(tmp_path), **options)
    for name in sorted(tmp_path.iterdir())[-1:]:
        name.unlink()  # the end of the run: resume from the checkpoint before it
    again = streamtrain.fit(
        ArraySource(X, Y, chunk_size=500), epochs=3, checkpoint_dir=str(tmp_path), resume=True, **options
    )
    for k in whole.params:
        np.testing.assert_array_equal(again.params[k], whole.params[k])


def test_the_command_line_switch_and_a_bad_value(tmp_path, zarr_store, capsys):
    X, Y = badly_scaled()
    store = str(zarr_store(X, Y, 500))
    out = str(tmp_path / "m.npz")
    assert main(["fit", store, "--standardize", "--batch-size", "32", "--epochs", "2", "--out", out]) == 0
    assert streamtrain.load(out).config.standardize is True
    with pytest.raises(ConfigError, match="standardize must be True or False"):
        streamtrain.fit(ArraySource(X, Y), standardize="yes", progress=False)
