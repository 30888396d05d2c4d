"""Checkpoints and resume: a run resumed from any checkpoint ends bit-identical to one never stopped."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

import streamtrain
from streamtrain import ArraySource, ConfigError, DataError
from streamtrain._signals import Interrupted, StopRequest
from streamtrain.batches import Cursor
from streamtrain.checkpoint import load_model, save_model
from streamtrain.divergence import Monitor
from streamtrain.optim import OptimizerState
from streamtrain.records import EpochRecord
from streamtrain.resume import FORMAT, Checkpoints, EpochSums, TrainState


@pytest.fixture(scope="module")
def stores(task_stores):
    """One small zarr store per model, chunks of 100 samples (6 chunks)."""
    return task_stores(m=600, n_x=4, chunk=100, seed=3)


def digest(params: dict) -> str:
    return hashlib.sha256(b"".join(params[k].tobytes() for k in sorted(params))).hexdigest()


def run(data, ckdir, **options):
    options = {"batch_size": 32, "epochs": 3, "lr": 0.05, "checkpoint_dir": str(ckdir), **options}
    return streamtrain.fit(data, progress=False, **options)


def resume_from(path, tmp_path, data, **options):
    """Resume from one checkpoint file alone, as if the run had been killed just after writing it."""
    alone = tmp_path / f"alone-{os.path.basename(path)}"
    alone.mkdir()
    shutil.copy(path, alone)
    return run(data, alone, resume=True, **options)


def test_a_checkpoint_holds_the_whole_state(tmp_path):
    W = np.arange(6, dtype=np.float32).reshape(2, 3)
    state = TrainState(
        params={"W1": W, "b1": np.ones((2, 1), np.float32)},
        opt=OptimizerState(7, {"W1": W + 1}, {"W1": W + 2}),
        monitor=Monitor(window=5, steps=7, average=0.5, start=0.75),
        epoch=2,
        cursor=Cursor(seed=1, epoch=1, position=2, offset=3, chunks_per_unit=2),
        sums=EpochSums(loss=1.5, correct=3, samples=40, steps=7),
        history=[EpochRecord(1, 0.25, 1.0, samples=80, steps=14)],
    )
    checkpoints = Checkpoints(tmp_path, {"config": {"lr": 0.1, "seed": 1}})
    path = checkpoints.save(state, seconds=2.0)
    found, loaded = checkpoints.newest()
    assert found == path and os.path.basename(path) == "ckpt-00002-0000000007.npz"
    assert digest(loaded.params) == digest(state.params) and loaded.opt.step == 7
    assert digest(loaded.opt.v) == digest(state.opt.v) and digest(loaded.opt.s) == digest(state.opt.s)
    assert loaded.monitor == state.monitor and loaded.cursor == state.cursor and loaded.epoch == 2
    assert loaded.sums == EpochSums(loss=1.5, correct=3, samples=40, steps=7, seconds=2.0)
    assert loaded.history == state.history


CASES = [
    *[("logistic", opt, shuffle) for opt in ("sgd", "momentum", "rmsprop", "adam") for shuffle in ("none", "buffer")],
    ("logistic", "adam", "chunks"),
    ("softmax", "momentum", "buffer"),
    ("linear", "rmsprop", "chunks"),
    ("mlp", "adam", "buffer"),
]


@pytest.mark.parametrize("model, optimizer, shuffle", CASES)
def test_resume_from_any_step_is_bit_identical(stores, tmp_path, model, optimizer, shuffle):
    data = stores[model]
    # 600 / 32: 19 steps per epoch, the last one short; checkpoints every 7 steps fall mid-epoch,
    # at an epoch's last step, and after a unit boundary (buffer units of 1 chunk with 0.1 MB).
    options = dict(model=model, optimizer=optimizer, shuffle=shuffle, buffer_mb=0.01, lr_schedule="step", lr_per="step")
    whole = run(data, tmp_path / "whole", checkpoint_every=7, keep_checkpoints=100, **options)
    paths = Checkpoints(tmp_path / "whole", {}).paths()
    assert len(paths) == 57 // 7 + 3  # every 7th step, and every epoch's end
    for path in sorted({*paths[1::3], paths[-1]}):
        resumed = resume_from(path, tmp_path, data, **options)
        assert digest(resumed.params) == digest(whole.params), path
        assert [r.loss for r in resumed.history] == [r.loss for r in whole.history]


def test_resume_of_full_batch_steps_and_exact_evaluations(stores, tmp_path):
    data = stores["logistic"]
    options = dict(batch_size="full", optimizer="momentum", scheduler="sync", epochs=4)
    whole = run(data, tmp_path / "whole", **options)
    paths = Checkpoints(tmp_path / "whole", {}).paths()
    resumed = resume_from(paths[0], tmp_path, data, **options)
    assert digest(resumed.params) == digest(whole.params)
    evaluated = dict(eval_exact_every=2, scheduler="sync")
    whole = run(data, tmp_path / "w2", checkpoint_every=5, **evaluated)
    resumed = resume_from(Checkpoints(tmp_path / "w2", {}).paths()[0], tmp_path, data, **evaluated)
    assert [r.exact_loss for r in resumed.history] == [r.exact_loss for r in whole.history]


def test_resume_without_a_checkpoint_starts_from_the_beginning(stores, tmp_path):
    data = stores["logistic"]
    fresh = run(data, tmp_path / "a")
    again = run(data, tmp_path / "b", resume=True)
    assert digest(fresh.params) == digest(again.params)


@pytest.mark.parametrize(
    "change, message",
    [(dict(lr=0.5), "option lr was 0.05 there, 0.5 now"), (dict(model="mlp"), "model name was 'logistic'")],
)
def test_resume_of_another_configuration_names_the_difference(stores, tmp_path, change, message):
    run(stores["logistic"], tmp_path, epochs=1)
    with pytest.raises(DataError, match=message):
        run(stores["logistic"], tmp_path, resume=True, **change)


def test_resume_on_other_data_names_the_difference(stores, tmp_path):
    run(stores["logistic"], tmp_path, epochs=1)
    X, Y = np.zeros((4, 500), np.float32), np.zeros((1, 500), np.float32)
    with pytest.raises(DataError, match="data m was 600 there, 500 now"):
        run(ArraySource(X, Y, chunk_size=100), tmp_path, resume=True)


def test_resume_may_change_what_does_not_change_the_result(stores, tmp_path):
    data = stores["logistic"]
    whole = run(data, tmp_path / "whole", epochs=3, prefetch=2)
    run(data, tmp_path / "part", epochs=2, prefetch=0)
    longer = run(data, tmp_path / "part", epochs=3, prefetch=1, resume=True)
    assert digest(longer.params) == digest(whole.params)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(resume=True, checkpoint_dir=None), "resume needs checkpoint_dir"),
        (dict(checkpoint_every=5, checkpoint_dir=None), "checkpoint_every needs checkpoint_dir"),
        (dict(optimizer="lbfgs", batch_size=None), "L-BFGS runs cannot be checkpointed"),
        (dict(keep_checkpoints=0), "keep_checkpoints"),
    ],
)
def test_checkpoint_options_are_checked(stores, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        run(stores["logistic"], tmp_path, **options)


def test_only_the_newest_checkpoints_are_kept_and_the_newest_is_resumed(stores, tmp_path):
    run(stores["logistic"], tmp_path, checkpoint_every=4, keep_checkpoints=2)
    paths = Checkpoints(tmp_path, {}).paths()
    assert [os.path.basename(p) for p in paths] == ["ckpt-00003-0000000056.npz", "ckpt-00004-0000000057.npz"]
    resumed_from = []
    run(stores["logistic"], tmp_path, resume=True, on_resume=lambda *where: resumed_from.append(where))
    assert resumed_from == [(paths[-1], 4, 57)]


def test_checkpoints_every_few_seconds(stores, tmp_path, monkeypatch):
    """A clock that ticks once per reading: the checkpoints are spaced by ``checkpoint_seconds``."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(
        streamtrain.train, "time", SimpleNamespace(monotonic=lambda: next(ticks), perf_counter=time.perf_counter)
    )
    run(stores["logistic"], tmp_path, epochs=1, checkpoint_seconds=5, keep_checkpoints=100)
    steps = [int(p[-14:-4]) for p in Checkpoints(tmp_path, {}).paths()]
    assert len(steps) > 2 and steps[-1] == 19  # some mid-epoch, and the epoch's end
    assert min(np.diff(steps)) > 1  # a checkpoint restarts the clock


def test_a_torn_write_leaves_the_previous_checkpoint_usable(stores, tmp_path, monkeypatch):
    data = stores["logistic"]
    whole = run(data, tmp_path / "whole")
    real_replace = os.replace
    calls = []

    def fail_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the second checkpoint: written and fsynced, never renamed
            raise OSError("injected failure between write and rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_second)
    with pytest.raises(OSError, match="injected"):
        run(data, tmp_path / "torn")
    monkeypatch.undo()
    assert [n for n in os.listdir(tmp_path / "torn") if not n.startswith("ckpt-")] == []  # no temp file left
    (tmp_path / "torn" / ".ckpt-00003-0000000040.npz.999.x.tmp").write_bytes(b"PK\x03\x04 truncated")
    resumed = run(data, tmp_path / "torn", resume=True)
    assert digest(resumed.params) == digest(whole.params)


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(100)


def drop_cursor(path):
    arrays, meta = load_model(path, format=FORMAT)
    del meta["cursor"]
    save_model(path, arrays, meta, format=FORMAT)


@pytest.mark.parametrize("damage", [truncate, drop_cursor])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(stores, tmp_path, damage):
    data = stores["logistic"]
    whole = run(data, tmp_path, checkpoint_every=10)
    *_, before, newest = Checkpoints(tmp_path, {}).paths()
    damage(newest)
    resumed_from = []
    resumed = run(data, tmp_path, resume=True, on_resume=lambda path, *_: resumed_from.append(path))
    assert digest(resumed.params) == digest(whole.params) and resumed_from == [before]
    for path in Checkpoints(tmp_path, {}).paths():
        with open(path, "r+b") as f:
            f.truncate(100)
    with pytest.raises(DataError, match="no checkpoint can be read"):
        run(data, tmp_path, resume=True)


def _rewrite(path, damage):
    """The checkpoint at ``path`` written again with ``damage(arrays, meta)`` applied."""
    arrays, meta = load_model(path, format=FORMAT)
    damage(arrays, meta)
    np.savez(path, **arrays, __meta__=np.array(json.dumps(meta)))


DAMAGED_CHECKPOINTS = {
    # Each was a traceback: OverflowError, AttributeError, TypeError, ValueError, ZeroDivisionError.
    "step inf": (lambda a, m: m.update(step=float("inf")), "'step' is inf"),
    "run not a dict": (lambda a, m: m.update(run=None), "'run' is None"),
    "config not a dict": (lambda a, m: m["run"].update(config=[]), "'run' is"),
    "sums of text": (lambda a, m: m["sums"].update(loss="0"), "'sums' is"),
    "cursor of another seed": (lambda a, m: m["cursor"].update(seed=-1), "'cursor' is"),
    "cursor of another epoch": (lambda a, m: m["cursor"].update(epoch=7), "is not of epoch 2 with seed 0"),
    "monitor window": (lambda a, m: m["monitor"].update(window=10**30), "'monitor' is"),  # no run's count
    # ...or trained on: moments of another shape broadcast into the step, NaN ones made a NaN model.
    "params shape": (lambda a, m: a.update({"params.W1": np.zeros((1, 3), np.float32)}), "expected shapes W1(1, 4)"),
    "moment gone": (lambda a, m: a.pop("v.W1"), "moments v should have shapes"),
    "moment shape": (lambda a, m: a.update({"s.b1": np.zeros((1, 4), np.float32)}), "moments s should have shapes"),
    "moment NaN": (lambda a, m: a["v.W1"].fill(np.nan), "the optimizer's moments v: parameter W1 holds nan"),
}


@pytest.mark.parametrize("case", list(DAMAGED_CHECKPOINTS))
def test_a_checkpoint_that_says_anything_is_a_data_error(stores, tmp_path, case):
    data = stores["logistic"]
    run(data, tmp_path / "c", optimizer="adam", epochs=2, checkpoint_every=10)
    mid_epoch = tmp_path / "c" / "ckpt-00002-0000000030.npz"  # with a cursor
    damage, says = DAMAGED_CHECKPOINTS[case]
    _rewrite(mid_epoch, damage)
    resume_from = tmp_path / "alone"
    resume_from.mkdir()
    shutil.copy(mid_epoch, resume_from)
    with pytest.raises(DataError) as e:
        run(data, resume_from, optimizer="adam", epochs=2, resume=True)
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("step", [float("inf"), 2**63, 2**53 + 1])  # inf: an OverflowError
def test_a_newest_checkpoint_with_damaged_metadata_falls_back_to_the_one_before(stores, tmp_path, step):
    data = stores["logistic"]
    whole = run(data, tmp_path, optimizer="adam", checkpoint_every=10)
    _rewrite(Checkpoints(tmp_path, {}).paths()[-1], lambda a, m: m.update(step=step))
    assert digest(run(data, tmp_path, optimizer="adam", resume=True).params) == digest(whole.params)


def test_a_step_past_int64_is_damage_not_a_schedule_overflow(stores, tmp_path):
    """Found by the property tests: trained on from such a checkpoint, the compiled path's schedule
    took steps 2**63.. and raised OverflowError. Such a step is no run's: the one before is used."""
    options = dict(optimizer="adam", batch_size=8, lr_schedule="exponential", lr_per="step", checkpoint_every=10)
    run(stores["logistic"], tmp_path, **options)
    _rewrite(Checkpoints(tmp_path, {}).paths()[-1], lambda a, m: m.update(step=2**63))
    more = run(stores["logistic"], tmp_path, resume=True, **{**options, "epochs": 4})  # one epoch more
    assert all(np.isfinite(p).all() for p in more.params.values()) and len(more.history) == 4


class SignalAfter(ArraySource):
    """An in-memory source that sends itself ``signum`` at its ``after``-th chunk read."""

    def __init__(self, X, Y, signum, after, times=1):
        super().__init__(X, Y, chunk_size=100)
        self.signum, self.after, self.times, self.reads = signum, after, times, 0

    def _read(self, start, stop, into=None):
        self.reads += 1
        if self.after <= self.reads < self.after + self.times:
            os.kill(os.getpid(), self.signum)
        return super()._read(start, stop, into)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_after_the_step_with_a_checkpoint(make_logistic_xy, tmp_path, signum):
    X, Y = make_logistic_xy(m=600, n_x=4)
    options = dict(optimizer="adam", shuffle="buffer", buffer_mb=0.01, prefetch=0)
    whole = run(ArraySource(X, Y, chunk_size=100), tmp_path / "whole", **options)
    with pytest.raises(Interrupted, match=signal.Signals(signum).name) as stopped:
        # 6 reads for divergence's starting loss, 6 for epoch 1, then 2 into epoch 2
        run(SignalAfter(X, Y, signum, after=14), tmp_path / "cut", **options)
    assert stopped.value.signum == signum
    assert len(Checkpoints(tmp_path / "cut", {}).paths()) == 2  # epoch 1's end, and where it stopped
    resumed = run(ArraySource(X, Y, chunk_size=100), tmp_path / "cut", resume=True, **options)
    assert digest(resumed.params) == digest(whole.params)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back


def test_a_second_sigint_aborts_at_once():
    request = StopRequest()
    request._handle(signal.SIGINT, None)
    assert request.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        request._handle(signal.SIGINT, None)


def test_a_signal_without_a_checkpoint_dir_still_stops_after_the_step(make_logistic_xy):
    X, Y = make_logistic_xy(m=600, n_x=4)
    with pytest.raises(Interrupted, match="no checkpoint"):
        # after the 6 reads for divergence's starting loss: during the steps
        streamtrain.fit(SignalAfter(X, Y, signal.SIGTERM, after=9), batch_size=32, prefetch=0)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temp_files_are_never_checkpoints_and_those_of_dead_writers_go(stores, tmp_path):
    # The pid is the number after the checkpoint's name (not its epoch: 1 is always alive, 9 is not).
    stale = tmp_path / f".ckpt-00001-0000000999.npz.{dead_pid()}.ab12.tmp"  # a run killed mid-write
    live = tmp_path / f".ckpt-00009-0000000998.npz.{os.getpid()}.cd34.tmp"  # one still writing
    for temp in (stale, live):
        temp.write_bytes(b"PK\x03\x04 partial")
    assert Checkpoints(tmp_path, {}).paths() == []
    run(stores["logistic"], tmp_path, epochs=1)
    assert not stale.exists() and live.exists()


def test_fit_runs_in_a_thread_where_signals_are_left_alone(make_logistic_xy):
    X, Y = make_logistic_xy(m=200, n_x=4)
    results, handler = [], signal.getsignal(signal.SIGINT)
    worker = threading.Thread(target=lambda: results.append(streamtrain.fit(ArraySource(X, Y), batch_size=50)))
    worker.start()
    worker.join()
    assert len(results) == 1 and signal.getsignal(signal.SIGINT) is handler


# -- the command line, killed for real ------------------------------------------------------------


def file_digest(path) -> str:
    with np.load(path) as z:
        return digest({k: z[k] for k in z.files if k != "__meta__"})


@pytest.fixture
def cli_run(tmp_path):
    data = str(tmp_path / "d.zarr")
    streamtrain.make_data(data, m=40_000, n_x=10, chunk=1000, seed=1)
    # Checkpoints every 20 steps of 16 samples: writing them takes much of the time, so the
    # random kills below land in the middle of checkpoint writes as well as between them.
    options = "--optimizer adam --shuffle buffer --buffer-mb 0.2 --batch-size 16 --epochs 2 --lr 0.01"
    options += " --checkpoint-every 20 --no-progress"

    def start(ckdir, out, *extra):
        args = [sys.executable, "-m", "streamtrain", "fit", data, *options.split(), "--checkpoint-dir", str(ckdir)]
        return subprocess.Popen([*args, "--out", str(out), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    return start


def wait_for_step(p, ckdir, step):
    """Wait until the run ``p`` has written a checkpoint at or past optimizer step ``step``."""
    while p.poll() is None:
        steps = [int(path[-14:-4]) for path in Checkpoints(ckdir, {}).paths()]
        if steps and max(steps) >= step:
            return
        time.sleep(0.002)
    raise AssertionError(f"the run ended (exit {p.returncode}) before step {step}: {p.stderr.read().decode()}")


def test_kill_9_at_random_moments_then_resume_ends_identical(cli_run, tmp_path):
    assert cli_run(tmp_path / "whole", tmp_path / "whole.npz").wait() == 0
    rng, ckdir = np.random.default_rng(0), tmp_path / "ck"
    for step in sorted(rng.integers(100, 4900, size=4)):  # of 5,000 steps in 2 epochs
        p = cli_run(ckdir, tmp_path / "resumed.npz", "--resume")
        wait_for_step(p, ckdir, step)
        time.sleep(rng.uniform(0, 0.02))  # then anywhere: mid-step, mid-epoch, mid-checkpoint-write
        p.kill()  # SIGKILL: nothing runs after it
        p.wait()
    assert cli_run(ckdir, tmp_path / "resumed.npz", "--resume").wait() == 0
    assert file_digest(tmp_path / "resumed.npz") == file_digest(tmp_path / "whole.npz")
    assert [n for n in os.listdir(ckdir) if n.endswith(".tmp")] == []  # stale temps were cleaned


def test_sigterm_exits_143_with_a_checkpoint_and_resume_ends_identical(cli_run, tmp_path):
    assert cli_run(tmp_path / "whole", tmp_path / "whole.npz").wait() == 0
    p = cli_run(tmp_path / "ck", tmp_path / "resumed.npz")
    wait_for_step(p, tmp_path / "ck", 1000)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 143
    assert "interrupted by SIGTERM" in p.stderr.read().decode()
    assert not (tmp_path / "resumed.npz").exists()
    assert cli_run(tmp_path / "ck", tmp_path / "resumed.npz", "--resume").wait() == 0
    assert file_digest(tmp_path / "resumed.npz") == file_digest(tmp_path / "whole.npz")


# -- the store under a run -------------------------------------------------------------------------


@pytest.mark.parametrize("epoch", [1, 3])
def test_a_store_replaced_during_a_run_stops_it_at_the_next_epoch_or_the_end(tmp_path, epoch):
    data = str(tmp_path / "d.zarr")
    streamtrain.make_data(data, m=600, n_x=4, chunk=100, seed=1)
    seen = []

    def replace_store(record):  # another shell's make-data --overwrite, after an epoch
        seen.append(record.epoch)
        if record.epoch == epoch:
            streamtrain.make_data(data, m=600, n_x=4, chunk=100, seed=2, overwrite=True)

    with pytest.raises(DataError, match=r"d\.zarr: the store changed since training began"):
        streamtrain.fit(data, batch_size=32, epochs=3, on_epoch=replace_store)
    assert seen == list(range(1, epoch + 1))


def test_a_moved_store_is_the_same_data(tmp_path):
    data = tmp_path / "d.zarr"
    streamtrain.make_data(data, m=600, n_x=4, chunk=100, seed=1)
    whole = run(data, tmp_path / "whole", epochs=2)
    run(data, tmp_path / "ck", epochs=1)
    os.rename(data, tmp_path / "moved.zarr")  # same files: same inodes and times
    resumed = run(tmp_path / "moved.zarr", tmp_path / "ck", epochs=2, resume=True)
    assert digest(resumed.params) == digest(whole.params)


def test_resume_on_a_store_rewritten_since_the_checkpoint_is_refused(tmp_path):
    data = str(tmp_path / "d.zarr")
    streamtrain.make_data(data, m=600, n_x=4, chunk=100, seed=1)
    run(data, tmp_path / "ck", epochs=1)
    streamtrain.make_data(data, m=600, n_x=4, chunk=100, seed=2, overwrite=True)  # same shape, other samples
    with pytest.raises(DataError, match=r"the store changed since .*ckpt-00002-0000000019.npz was written"):
        run(data, tmp_path / "ck", resume=True)


def test_a_seed_of_any_size_resumes(stores, tmp_path):
    """Checkpoint counts are bounded (a larger one is damage); the user's seed is not."""
    run(stores["logistic"], tmp_path, seed=2**70, epochs=2)
    assert len(run(stores["logistic"], tmp_path, seed=2**70, epochs=3, resume=True).history) == 3
