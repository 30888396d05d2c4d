"""``fit --config job.toml``: a job file and the same flags train the same model (streamtrain.jobs)."""

from __future__ import annotations

import numpy as np
import pytest

import streamtrain
from streamtrain import ConfigError
from streamtrain.cli import main
from streamtrain.jobs import JOB_KEYS, read_job

FLAGS = ["--model", "mlp", "--hidden", "6,3", "--batch-size", "32", "--lr", "0.2", "--epochs", "2", "--seed", "4"]
JOB = """
model = "mlp"
hidden = [6, 3]
batch-size = 32
lr = 0.2
epochs = 2
seed = 4
"""


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "d.zarr"
    streamtrain.make_data(path, m=1200, n_x=5, chunk=300, seed=2)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_job_file_and_the_same_flags_give_identical_models(tmp_path, store, capsys):
    (tmp_path / "job.toml").write_text(f'data = "{store}"\nout = "{tmp_path / "a.npz"}"\n' + JOB)
    assert run(capsys, "fit", "--config", tmp_path / "job.toml")[0] == 0
    assert run(capsys, "fit", store, *FLAGS, "--out", tmp_path / "b.npz")[0] == 0
    a, b = streamtrain.load(tmp_path / "a.npz"), streamtrain.load(tmp_path / "b.npz")
    assert a.config == b.config and a.config.hidden == (6, 3)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_flags_win_over_the_file_and_text_values_read_as_flags_read_them(tmp_path, store, capsys):
    (tmp_path / "job.toml").write_text(JOB.replace("batch-size = 32", 'batch-size = "64"'))
    code, _, err = run(
        capsys, "fit", store, "--config", tmp_path / "job.toml", "--epochs", "1", "--out", tmp_path / "m.npz"
    )
    assert code == 0, err
    config = streamtrain.load(tmp_path / "m.npz").config
    assert (config.epochs, config.batch_size, config.lr) == (1, 64, 0.2)  # the flag's epochs, the file's rest


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("bach_size = 3", "unknown key 'bach_size' (did you mean 'batch_size'?)"),
        ("[fit]\nlr = 1", "unknown key 'fit'"),
        ('lr = "fast"', "lr = 'fast': could not convert string to float"),
        ("lr = ", "not a TOML job file"),
        ("resume = 1", "resume = 1 should be a bool"),
        ('model = "tree"', "model"),
    ],
)
def test_a_bad_job_file_is_a_one_line_error(tmp_path, store, capsys, text, fragment):
    (tmp_path / "job.toml").write_text(text + "\n")
    code, out, err = run(capsys, "fit", store, "--config", tmp_path / "job.toml", "--out", tmp_path / "m.npz")
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("streamtrain: error: ") and fragment in err
    assert not (tmp_path / "m.npz").exists()


def test_every_option_of_fit_has_a_key_and_data_may_come_from_either_place(tmp_path, capsys):
    declared = {
        f.name for c in (streamtrain.FitConfig, streamtrain.CheckpointConfig) for f in c.__dataclass_fields__.values()
    }
    assert declared <= set(JOB_KEYS)
    (tmp_path / "job.toml").write_text("checkpoint-every = 10\nprogress = false\n")
    assert read_job(tmp_path / "job.toml") == {"checkpoint_every": 10, "progress": False}
    with pytest.raises(SystemExit) as usage:  # no DATA in either place: a usage error, exit 2
        main(["fit", "--config", str(tmp_path / "job.toml")])
    assert usage.value.code == 2 and "DATA (or data = ... in --config)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="cannot read the job file"):
        read_job(tmp_path / "none.toml")
