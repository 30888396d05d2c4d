"""Step records (log_every) in the metrics file, the progress bar and --quiet (streamtrain.steplog, _progress)."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

import streamtrain
import streamtrain.steplog
from streamtrain import ConfigError
from streamtrain.cli import main
from streamtrain.optim import schedule


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "d.zarr"
    streamtrain.make_data(path, m=600, n_x=4, chunk=100, seed=2)
    return path


def records(path):
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in lines if "step" in r], [r for r in lines if "step" not in r]


@pytest.mark.parametrize("batch_size", [4, 25])  # the compiled steps, the per-batch ones
def test_step_records_every_n_steps_with_their_loss_rate_and_samples(tmp_path, store, batch_size):
    metrics = tmp_path / "m.jsonl"
    options = {"batch_size": batch_size, "epochs": 2, "lr": 0.3, "lr_schedule": "exponential", "lr_per": "step"}
    result = streamtrain.fit(store, metrics=metrics, log_every=3, **options)
    steps, epochs = records(metrics)
    per_epoch = 600 // batch_size
    assert [r["step"] for r in steps] == list(range(3, 2 * per_epoch + 1, 3))
    assert [r["epoch"] for r in steps] == [1 + (r["step"] - 1) // per_epoch for r in steps]
    assert all(r["samples_seen"] == r["step"] * batch_size for r in steps)
    rate = schedule("exponential", 0.3, decay=None, every=1)
    assert all(r["lr"] == rate(r["step"] - 1) for r in steps)
    assert set(steps[0]) == {"step", "epoch", "samples_seen", "loss", "lr", "seconds"}
    assert all(a["seconds"] <= b["seconds"] for a, b in itertools.pairwise(steps))
    assert [r["loss"] for r in epochs] == [h.loss for h in result.history]
    # The epoch's mean loss is the mean of its steps' losses: the logged ones are among them.
    assert min(r["loss"] for r in steps) > 0


def test_a_resumed_run_logs_each_step_once_as_an_unstopped_run_does(tmp_path, store, monkeypatch):
    options = {"batch_size": 10, "epochs": 2, "checkpoint_every": 7, "log_every": 2}
    whole = tmp_path / "whole.jsonl"
    streamtrain.fit(store, metrics=whole, checkpoint_dir=tmp_path / "a", **options)
    add = streamtrain.steplog.StepLog.add

    def stop_after_step_20(log, first, losses, *args, **kwargs):
        add(log, first, losses, *args, **kwargs)
        if first <= 20 < first + len(losses):  # logged past the checkpoint at step 14, then killed
            raise KeyboardInterrupt

    monkeypatch.setattr(streamtrain.steplog.StepLog, "add", stop_after_step_20)
    resumed = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        streamtrain.fit(store, metrics=resumed, checkpoint_dir=tmp_path / "b", **options)
    monkeypatch.setattr(streamtrain.steplog.StepLog, "add", add)
    streamtrain.fit(store, metrics=resumed, checkpoint_dir=tmp_path / "b", resume=True, **options)
    a, b = records(whole)[0], records(resumed)[0]
    assert [r["step"] for r in b] == [r["step"] for r in a]  # strictly increasing, none twice
    assert [(r["loss"], r["samples_seen"], r["lr"]) for r in b] == [(r["loss"], r["samples_seen"], r["lr"]) for r in a]


def test_log_every_needs_a_metrics_file(tmp_path, store, capsys):
    with pytest.raises(ConfigError, match="metrics"):
        streamtrain.fit(store, log_every=5)
    assert main(["fit", str(store), "--log-every", "5", "--out", str(tmp_path / "m.npz")]) == 1
    err = capsys.readouterr().err
    assert "--log-every N appends step records to the metrics file" in err and len(err.splitlines()) == 1


def _fit_subprocess(store, tmp_path, *flags):
    argv = [sys.executable, "-m", "streamtrain", "fit", str(store), "--batch-size", "10", "--epochs", "3"]
    argv += ["--out", str(tmp_path / f"m{len(flags)}.npz"), *flags]
    return subprocess.run(argv, capture_output=True, text=True, check=True)


def test_the_bar_is_drawn_only_when_asked_or_on_a_terminal_and_quiet_says_one_line(tmp_path, store):
    piped = _fit_subprocess(store, tmp_path)  # stderr is a pipe, not a terminal: no bar
    assert piped.stderr == "" and "epoch 3:" in piped.stdout
    forced = _fit_subprocess(store, tmp_path, "--progress")
    assert "epoch 1/3" in forced.stderr and "samples/s" in forced.stderr
    quiet = _fit_subprocess(store, tmp_path, "--quiet", "--progress")
    assert quiet.stderr == "" and quiet.stdout.splitlines() == [f"model written to {tmp_path / 'm2.npz'}"]
    assert np.isfinite(streamtrain.load(tmp_path / "m2.npz").params["W1"]).all()


def test_the_bar_shows_samples_per_second_the_running_loss_time_left_and_the_reads_share(monkeypatch):
    from streamtrain._progress import Progress

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = Progress("epoch 2/5", 1000, enabled=True, every_s=0)
    bar.update(250, loss=0.5, waited_s=0.0)
    drawn = sys.stderr.getvalue()
    assert "epoch 2/5" in drawn and "250/1.00k" in drawn and "samples/s" in drawn
    assert "loss 0.50000" in drawn and "waiting on reads 0%" in drawn and "<" in drawn  # [elapsed<left]
    bar.close()
    assert not Progress("off", 10, enabled=False)._bar
