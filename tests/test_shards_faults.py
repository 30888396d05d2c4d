"""--shards under faults: a Dask worker killed mid-round.

Each fault is made to land at a moment the test controls, never after a sleep: a round hangs on a
worker until the worker is killed, and every wait is a poll with a deadline. The run must end with
the params of the run never hurt.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import streamtrain

OPTIONS = dict(shards=3, sync_every=2, batch_size=50, epochs=2, optimizer="adam", lr=0.01)

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
