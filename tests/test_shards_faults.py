"""--shards under faults: a Dask worker killed mid-round, the client killed with SIGKILL and resumed.

Each fault is made to land at a moment the test controls, never after a sleep: a round hangs on a
worker until the worker is killed, or the client is killed once its checkpoints are on disk, and
every wait is a poll with a deadline. The run must end with the params of the run never hurt.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import streamtrain

OPTIONS = dict(shards=3, sync_every=2, batch_size=50, epochs=2, optimizer="adam", lr=0.01)
CHECKPOINT = re.compile(r"ckpt-\d{5}-\d{10}\.npz")

# Runs a fit on a LocalCluster (processes under Nannies). Round 3's first task to start hangs on its
# worker and writes the worker's pid to GATE/victim; a thread of this client then kills that worker
# (SIGKILL, or a restart through its Nanny) and touches GATE/killed.
KILL_A_WORKER_MID_ROUND = '''
import json, os, signal, sys, threading, time
from pathlib import Path

import numpy as np
import streamtrain
import streamtrain.shards
from distributed import Client, LocalCluster

STORE, WORKERS, HOW, GATE, OUT, OPTIONS = sys.argv[1:]


def hang_once_armed(gate):
    """On each worker: once GATE/armed exists, the first round to start claims GATE/victim and hangs
    until its worker stops (its process then ends: a hung task would only delay the Nanny's kill)."""
    import streamtrain.shards as shards
    from distributed import get_worker
    from distributed.core import Status

    computed = shards.shard_round

    def gated(*args):
        if not os.path.exists(f"{gate}/armed"):
            return computed(*args)
        try:
            os.close(os.open(f"{gate}/claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return computed(*args)
        Path(gate, "victim.tmp").write_text(str(os.getpid()))
        os.replace(f"{gate}/victim.tmp", f"{gate}/victim")
        worker, deadline = get_worker(), time.monotonic() + 60
        while worker.status == Status.running and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(1)

    shards.shard_round = gated


def arm_at_round(n):
    rounds, seen = streamtrain.shards.Shards.round, []

    def round(self, *args):
        seen.append(1)
        if len(seen) == n:
            Path(GATE, "armed").touch()
        return rounds(self, *args)

    streamtrain.shards.Shards.round = round


def kill_the_victim(client):
    victim, deadline = Path(GATE, "victim"), time.monotonic() + 60
    while not victim.exists():
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)
    pid = int(victim.read_text())
    address = next(a for a, p in client.run(os.getpid).items() if p == pid)  # a worker's, or no kill
    if HOW == "sigkill":
        os.kill(pid, signal.SIGKILL)
    else:
        client.restart_workers([address])
    Path(GATE, "killed").touch()


if __name__ == "__main__":
    arm_at_round(3)
    with LocalCluster(n_workers=int(WORKERS), threads_per_worker=1, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            client.run(hang_once_armed, GATE)
            killer = threading.Thread(target=kill_the_victim, args=(client,))
            killer.start()
            result = streamtrain.fit(STORE, scheduler=cluster.scheduler_address, progress=False, **json.loads(OPTIONS))
            killer.join()
    np.savez(OUT, **result.params)
'''


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "d.zarr"
    streamtrain.make_data(path, m=1200, n_x=4, chunk=100, seed=5)  # 12 chunks: 4 a shard, 4 rounds an epoch
    return path


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("workers", "how"), [(2, "sigkill"), (1, "sigkill"), (2, "nanny"), (1, "nanny")])
def test_a_worker_killed_mid_round_costs_only_that_round(store, tmp_path, workers, how):
    """Its shard's round is computed again, elsewhere or on the worker the Nanny brings back; with one
    worker, the scattered store description and params die with it and are scattered again."""
    pytest.importorskip("distributed")
    script, gate, out = tmp_path / "kill.py", tmp_path / "gate", tmp_path / "out.npz"
    script.write_text(KILL_A_WORKER_MID_ROUND)
    gate.mkdir()
    args = [str(store), str(workers), how, str(gate), str(out), json.dumps(OPTIONS)]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (gate / "victim").exists() and (gate / "killed").exists(), proc.stderr[-3000:]
    expected = streamtrain.fit(store, scheduler="sync", progress=False, **OPTIONS)
    with np.load(out) as got:
        assert same(dict(got), expected.params)


# The client, killed inside its third checkpoint's write: half the file's bytes are in the temporary
# file when this wrapper of ``streamtrain fit`` touches HELD and waits to be killed.
HOLD_IN_THE_THIRD_CHECKPOINT = """
import io, os, sys, time
from pathlib import Path

import streamtrain.checkpoint as checkpoint
from streamtrain.cli import main

HELD = sys.argv.pop(1)
written, writes = checkpoint.atomic_write, []


def atomic_write(path, write):
    writes.append(path)
    if len(writes) < 3:
        return written(path, write)

    def half_then_hold(f):
        whole = io.BytesIO()
        write(whole)
        f.write(whole.getvalue()[: len(whole.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        Path(HELD).touch()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(3)  # never killed

    written(path, half_then_hold)


checkpoint.atomic_write = atomic_write
sys.exit(main(sys.argv[1:]))
"""

# 20 rounds an epoch of the store below, a checkpoint after each: the client is killed in epoch 1.
FIT = ["--shards", "3", "--sync-every", "1", "--batch-size", "20", "--epochs", "8", "--optimizer", "adam"]
FIT += ["--lr", "0.01", "--no-progress"]


def fit_command(store, scheduler: str, directory: Path) -> list[str]:
    """``streamtrain fit`` with a checkpoint after every round, resuming from the newest."""
    out = ["--checkpoint-dir", str(directory / "ckpt"), "--resume", "--out", str(directory / "model.npz")]
    return [sys.executable, "-m", "streamtrain", "fit", str(store), *FIT, "--scheduler", scheduler, *out]


def checkpoints(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if CHECKPOINT.fullmatch(n)) if directory.is_dir() else []


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    """Poll ``condition()`` while ``proc`` runs; fail if it ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the client ended ({proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.005)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def resumed(command: list[str], newest: str) -> streamtrain.FitResult:
    """The same command again: it continues from the newest checkpoint, and its model file."""
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"resuming from {newest} " in run.stdout, run.stdout
    return streamtrain.load(Path(command[command.index("--out") + 1]))


@pytest.fixture(scope="module")
def uninterrupted(store, tmp_path_factory):
    command = fit_command(store, "sync", tmp_path_factory.mktemp("uninterrupted"))
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return streamtrain.load(Path(command[command.index("--out") + 1]))


def assert_identical(result: streamtrain.FitResult, expected: streamtrain.FitResult) -> None:
    """The same params and epoch losses (an epoch's ``rounds`` counts those of the process that ended it)."""
    assert same(result.params, expected.params)
    assert [(r.loss, r.samples) for r in result.history] == [(r.loss, r.samples) for r in expected.history]


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_a_client_killed_by_sigkill_resumes_at_its_last_round_identical(store, tmp_path, uninterrupted, scheduler):
    command = fit_command(store, scheduler, tmp_path)
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(checkpoints(ckpt)) >= 2, proc, "two checkpoints")
    kill(proc)
    assert not (tmp_path / "model.npz").exists()
    newest = checkpoints(ckpt)[-1]
    assert_identical(resumed(command, str(ckpt / newest)), uninterrupted)


def test_a_client_killed_while_writing_a_checkpoint_resumes_from_the_one_before(store, tmp_path, uninterrupted):
    """The half-written checkpoint is a temporary file: never read, and removed by the next write."""
    command = fit_command(store, "sync", tmp_path)
    ckpt, held, wrapper = tmp_path / "ckpt", tmp_path / "held", tmp_path / "hold.py"
    wrapper.write_text(HOLD_IN_THE_THIRD_CHECKPOINT)
    holding = [sys.executable, str(wrapper), str(held), *command[command.index("fit") :]]
    proc = subprocess.Popen(holding, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(held.exists, proc, "the third checkpoint's write")
    kill(proc)
    assert checkpoints(ckpt) == ["ckpt-00001-0000000001.npz", "ckpt-00001-0000000002.npz"]  # one a round
    (half,) = [n for n in os.listdir(ckpt) if n.endswith(".tmp")]
    assert_identical(resumed(command, str(ckpt / checkpoints(ckpt)[-1])), uninterrupted)
    assert not (ckpt / half).exists() or streamtrain.checkpoint.pid_alive(proc.pid)  # unless its pid is reused
