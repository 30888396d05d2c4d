"""Models fit the labels they are given: an mlp's output from its labels, and label errors that name
the model option that fits them (binding.labels_seen, binding.bind)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import streamtrain
from streamtrain import ArraySource, DataError
from streamtrain.binding import for_data, labels_seen
from streamtrain.cli import main
from streamtrain.models import get_model

M = 240


def xy(labels: np.ndarray, n_x: int = 4, seed: int = 0) -> ArraySource:
    """Samples whose labels are ``labels`` (k, M), in chunks of 50."""
    X = np.random.default_rng(seed).standard_normal((n_x, labels.shape[1])).astype("float32")
    return ArraySource(X, labels, chunk_size=50)


RNG = np.random.default_rng(1)
DIGITS = RNG.integers(0, 10, (1, M)).astype("float32")
BITS = RNG.integers(0, 2, (1, M)).astype("uint8")
REALS = RNG.standard_normal((1, M))
ONE_HOT = np.eye(3)[RNG.integers(0, 3, M)].T
TWO_REALS = RNG.standard_normal((2, M))


@pytest.mark.parametrize(
    "labels, output, described",
    [
        (BITS, "sigmoid", "0/1"),
        (DIGITS, "softmax", "class ids 0..9"),
        (REALS, "identity", "real values"),
        (DIGITS + 0.5, "identity", "real values"),
        (ONE_HOT, "softmax", "one-hot over 3 classes"),
        (TWO_REALS, "identity", "real values"),
        (np.full((1, M), float(M)), "identity", "real values"),  # ids of more classes than samples
    ],
)
def test_the_labels_seen_and_the_output_an_mlp_takes_from_them(labels, output, described):
    source = xy(labels)
    assert labels_seen(source) == (output, described)
    model = for_data(get_model("mlp", hidden=[3]), source)
    assert model.output == output
    assert model.classes == (10 if labels is DIGITS else None)


def test_a_non_finite_label_is_named_before_any_output_is_chosen():
    labels = BITS.astype("float32")
    labels[0, 123] = np.nan
    with pytest.raises(DataError, match=re.escape("sample 123 (chunk 2) holds NaN")):
        for_data(get_model("mlp"), xy(labels))


def test_a_store_task_still_decides_an_mlps_output():
    source = xy(DIGITS.clip(0, 1))
    source.attrs["task"] = "linear"
    assert for_data(get_model("mlp"), source).output == "identity"


def test_an_mlp_learns_digit_ids_as_classes():
    result = streamtrain.fit(xy(DIGITS), model="mlp", hidden=[8], epochs=2, batch_size=32, progress=False)
    assert result.model.output == "softmax" and result.params["W2"].shape == (10, 8)


@pytest.mark.parametrize(
    "labels, options, says",
    [
        (DIGITS, {"model": "logistic"}, "is outside {0, 1}; the labels are class ids 0..9: --model softmax fits them"),
        (DIGITS, {"model": "mlp", "output": "sigmoid"}, "the labels are class ids 0..9: --output softmax fits them"),
        (REALS, {"model": "softmax"}, "is not a class id 0..3; the labels are real values: --model linear fits them"),
        (REALS, {"model": "logistic"}, "; the labels are real values: --model linear fits them"),
    ],
)
def test_a_label_error_names_the_model_option_that_fits(labels, options, says):
    with pytest.raises(DataError, match=re.escape(says)):
        streamtrain.fit(xy(labels), epochs=1, batch_size=32, progress=False, **options)


def test_no_option_is_named_when_the_models_output_fits_and_a_label_is_bad():
    """One-hot columns with a column of two 1s: softmax is right, the data is wrong (and an mlp
    takes softmax for such labels, so the same error names the column)."""
    labels = ONE_HOT.copy()
    labels[:, 7] = [1, 1, 0]
    with pytest.raises(DataError) as e:
        streamtrain.fit(xy(labels), model="softmax", epochs=1, batch_size=32, progress=False)
    assert "at sample 7 (chunk 0) is not one-hot" in str(e.value) and "fits them" not in str(e.value)
    assert labels_seen(xy(labels)).output == "softmax"


def test_evaluate_names_the_option_too(tmp_path):
    model = streamtrain.fit(xy(BITS), epochs=1, batch_size=32, progress=False)
    with pytest.raises(DataError, match=re.escape("the labels are class ids 0..9: --model softmax fits them")):
        streamtrain.evaluate(xy(DIGITS), model)


def test_on_the_command_line_it_is_one_line_and_exit_1(tmp_path, zarr_store, capsys):
    store = zarr_store(np.random.default_rng(0).standard_normal((4, M)).astype("float32"), DIGITS, 50)
    code = main(["fit", str(store), "--epochs", "1", "--batch-size", "32", "--out", str(tmp_path / "m.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("streamtrain: error: ")
    assert "is outside {0, 1}; the labels are class ids 0..9: --model softmax fits them" in err[0]
    assert not (tmp_path / "m.npz").exists()
