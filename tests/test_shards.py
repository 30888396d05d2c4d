"""--shards K: local SGD over logical shards (streamtrain.shards, streamtrain._sharded_run)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import streamtrain
import streamtrain.shards
from streamtrain import ConfigError, Cursor, FitConfig, get_model
from streamtrain.batches import BatchStream
from streamtrain.holdout import ChunkSubset
from streamtrain.models import batch_objective
from streamtrain.optim import get_optimizer
from streamtrain.shards import RoundTask, shard_chunks, shard_round, shard_seed

LOGISTIC = get_model("logistic")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("shards") / "d.zarr"
    streamtrain.make_data(path, m=4000, n_x=6, chunk=250, seed=5)
    return path


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def run_script(path, text, *argv):
    """``text`` (dedented) run as the script ``path`` in a new process, as a cluster's client must
    be (its workers import __main__); its stdout. The script must exit 0."""
    path.write_text(textwrap.dedent(text))
    proc = subprocess.run([sys.executable, str(path), *map(str, argv)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_one_shard_is_the_trainers_epoch(store):
    """A round over every chunk, from the run's seed, takes the steps of fit's epoch, bit for bit."""
    config = FitConfig(batch_size=32, lr=0.3, optimizer="momentum", seed=4)
    trained = streamtrain.fit(store, config, epochs=1, progress=False)
    with streamtrain.open_source(store) as source:
        (chunks,) = shard_chunks(source.n_chunks, 1, config.shuffle, config.seed, 0)
        task = RoundTask(source, LOGISTIC, config, tuple(chunks), 10**9, source.m, -(-source.m // 32))
        params = LOGISTIC.init(source.n_x, 1, np.dtype("float32"), 4)
        opt = get_optimizer("momentum", 0.3, beta1=0.9, beta2=0.999, eps=1e-8).init(params)
        result = shard_round(task, params, opt, Cursor(shard_seed(4, 1, 0), 0))
    assert result.samples == 4000 and same(result.params, trained.params)


@pytest.mark.parametrize("options", [{}, {"model": "mlp", "hidden": [5], "optimizer": "adam", "lr": 0.01}])
def test_shards_give_the_same_params_on_sync_and_threads(store, options):
    runs = {
        scheduler: streamtrain.fit(
            store, shards=3, sync_every=7, batch_size=50, epochs=2, scheduler=scheduler, progress=False, **options
        )
        for scheduler in ("sync", "threads")
    }
    assert same(runs["sync"].params, runs["threads"].params)
    record = runs["threads"].history[-1]
    assert record.samples == 4000 and record.rounds >= 2000 // 50 // 7 and record.barrier_s >= 0


@pytest.mark.parametrize("shuffle", ["none", "chunks", "buffer"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "rmsprop", "adam"])
def test_one_shard_in_rounds_is_the_one_process_trainer(store, optimizer, shuffle):
    """--shards 1 --sync-every H: the same steps as one process, bit for bit, a round at a time."""
    options = dict(batch_size=50, epochs=2, progress=False, optimizer=optimizer, lr=0.01, shuffle=shuffle)
    expected = streamtrain.fit(store, **options)
    rounds = streamtrain.fit(store, shards=1, sync_every=7, scheduler="sync", **options)
    assert same(rounds.params, expected.params)
    assert [r.loss for r in rounds.history] == [r.loss for r in expected.history]
    assert rounds.history[-1].rounds == -(-4000 // 50 // 7)


@pytest.mark.parametrize(
    ("task", "options"),
    [("softmax", {"model": "softmax"}), ("linear", {"model": "linear"}), ("logistic", {"model": "mlp", "hidden": [5]})],
)
@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_every_model_in_rounds_is_the_one_process_trainer(tmp_path, task, options, scheduler):
    path = tmp_path / "d.zarr"
    streamtrain.make_data(path, task=task, m=3000, n_x=5, chunk=500, seed=2)
    expected = streamtrain.fit(path, batch_size=64, epochs=2, progress=False, **options)
    rounds = streamtrain.fit(path, shards=1, sync_every=9, batch_size=64, epochs=2, scheduler=scheduler,
                             progress=False, **options)  # fmt: skip
    assert same(rounds.params, expected.params)


def test_shards_give_the_same_params_on_local_clusters_of_one_and_two_workers(store, tmp_path):
    """K = 3 shards equal the sync rounds, and one shard equals one process, on clusters of 1 and 2 workers."""
    pytest.importorskip("distributed")
    text = f"""
        import sys
        import numpy as np
        import streamtrain
        from distributed import LocalCluster

        if __name__ == "__main__":
            options = dict(sync_every=7, batch_size=50, epochs=2, progress=False, optimizer="adam", lr=0.01)
            with LocalCluster(n_workers=int(sys.argv[1]), threads_per_worker=1, dashboard_address=None) as cluster:
                for shards in (1, 3):
                    address = cluster.scheduler_address
                    result = streamtrain.fit({str(store)!r}, shards=shards, scheduler=address, **options)
                    np.savez(sys.argv[2] + f"-{{shards}}.npz", **result.params)
    """
    options = dict(batch_size=50, epochs=2, progress=False, optimizer="adam", lr=0.01)
    expected = {
        1: streamtrain.fit(store, **options),
        3: streamtrain.fit(store, shards=3, sync_every=7, scheduler="sync", **options),
    }
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        run_script(tmp_path / "cluster.py", text, workers, out)
        for shards, run in expected.items():
            with np.load(f"{out}-{shards}.npz") as got:
                assert same(dict(got), run.params), (workers, shards)


@pytest.mark.parametrize("K", [2, 3])
def test_sync_every_step_is_one_step_on_the_global_batch(store, tmp_path, K):
    """H = 1 with SGD: each round is one step on the K shards' batches side by side; its step
    record (--log-every 1) has that global batch's loss. K = 3 deals 6, 5 and 5 chunks of 250:
    shards of unequal size, whose last batches (50 samples) count for less in the average."""
    B, lr = 100, 0.2
    config = FitConfig(shards=K, sync_every=1, batch_size=B, lr=lr, shuffle="none", dtype="float64", epochs=1)
    result = streamtrain.fit(store, config, progress=False, metrics=tmp_path / "m.jsonl", log_every=1)
    params, losses, seen = LOGISTIC.init(6, 1, np.dtype("float64"), 0), [], [0]
    with streamtrain.open_source(store) as source:
        streams = [
            BatchStream(ChunkSubset(source, chunks), B, Cursor(shard_seed(0, K, k), 0), dtype=np.float64)
            for k, chunks in enumerate(shard_chunks(source.n_chunks, K, "none", 0, 0))
        ]
        for batches in itertools.zip_longest(*streams):  # the shards still stepping
            X = np.concatenate([b.X for b in batches if b is not None], axis=1)
            Y = np.concatenate([b.Y for b in batches if b is not None], axis=1)
            loss, grads, _ = batch_objective(LOGISTIC, params, X, Y, m=source.m)
            params, losses, seen = (
                {k: params[k] - lr * grads[k] for k in params},
                [*losses, loss],
                [*seen, seen[-1] + X.shape[1]],
            )
    for k in params:
        np.testing.assert_allclose(result.params[k], params[k], rtol=1e-12, atol=1e-14)
    steps = step_records(tmp_path / "m.jsonl")
    assert [s["step"] for s in steps] == list(range(1, len(losses) + 1)) and len(losses) == {2: 20, 3: 15}[K]
    assert [s["samples_seen"] for s in steps] == seen[1:]
    np.testing.assert_allclose([s["loss"] for s in steps], losses, rtol=1e-12)


@pytest.mark.parametrize("lr_options", [{}, {"lr_schedule": "step", "lr_decay": 0.5, "lr_step": 2}])
def test_one_shard_in_rounds_logs_the_steps_of_one_process(store, tmp_path, lr_options):
    options = dict(batch_size=64, epochs=3, progress=False, log_every=5, **lr_options)
    streamtrain.fit(store, metrics=tmp_path / "one.jsonl", **options)
    streamtrain.fit(store, metrics=tmp_path / "rounds.jsonl", shards=1, sync_every=7, **options)
    one, rounds = (step_records(tmp_path / f) for f in ("one.jsonl", "rounds.jsonl"))
    assert len(one) == 3 * 63 // 5 and rounds == one
    assert {r["lr"] for r in one} == ({0.1} if not lr_options else {0.1, 0.05})


def step_records(path):
    """A metrics file's step records, without their times."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records if "step" in r]


def test_a_run_stopped_mid_epoch_resumes_at_its_last_round_identical(store, tmp_path, monkeypatch):
    options = dict(shards=3, sync_every=5, batch_size=40, epochs=2, optimizer="momentum", progress=False)
    whole = streamtrain.fit(store, **options)
    rounds = streamtrain.shards.Shards.round
    seen = []

    def killed_at_round_12(self, *args):
        seen.append(1)
        if len(seen) == 12:
            raise KeyboardInterrupt  # the client dies: its last checkpoint is of round 11, epoch 2's third
        return rounds(self, *args)

    monkeypatch.setattr(streamtrain.shards.Shards, "round", killed_at_round_12)
    with pytest.raises(KeyboardInterrupt):
        streamtrain.fit(store, checkpoint_dir=tmp_path / "ckpt", **options)
    monkeypatch.setattr(streamtrain.shards.Shards, "round", rounds)
    resumed = streamtrain.fit(store, checkpoint_dir=tmp_path / "ckpt", resume=True, **options)
    assert same(resumed.params, whole.params)
    assert [r.loss for r in resumed.history] == [r.loss for r in whole.history]
    # 6, 5 and 5 chunks of 250: 38 steps of 40 the most, 8 rounds of 5
    assert [r.rounds for r in resumed.history] == [r.rounds for r in whole.history] == [8, 8]


def test_more_shards_reach_the_optimum_about_as_soon(tmp_path):
    """Logistic data: K = 2, 4, 8 get within 1e-3 of J* (L-BFGS) within one more epoch than K = 1."""
    path = tmp_path / "cv.zarr"
    streamtrain.make_data(path, m=32000, n_x=10, chunk=1000, seed=3)
    optimum = streamtrain.fit(path, optimizer="lbfgs", progress=False).history[-1].loss
    first = {}
    for K in (1, 2, 4, 8):
        shards = {} if K == 1 else {"shards": K, "sync_every": 8}
        run = streamtrain.fit(
            path, batch_size=64, lr=0.5, epochs=6, eval_exact_every=1, scheduler="sync", progress=False, **shards
        )
        gaps = [r.exact_loss - optimum for r in run.history]
        first[K] = next((e for e, gap in enumerate(gaps, 1) if gap < 1e-3), 99)
    assert all(first[K] <= first[1] + 1 for K in (2, 4, 8)), first


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"shards": 2, "batch_size": "full"}, "does not take --batch-size full"),
        ({"shards": 2, "holdout": 0.25}, "does not take --holdout"),
        ({"sync_every": 5, "holdout": 0.25}, "does not take --holdout"),
        ({"shards": 17}, "needs at least 17 chunks"),
    ],
)
def test_what_shards_cannot_do_is_said(store, options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        streamtrain.fit(store, progress=False, **options)


def test_weights_weigh_the_shards_steps_too(store, tmp_path):
    """With every weight 1, a weighted sharded run takes the unweighted one's steps (to rounding)."""
    import zarr

    path = tmp_path / "w.zarr"
    streamtrain.make_data(path, m=2000, n_x=4, chunk=250, seed=1)
    zarr.open_group(path, mode="a").create_array("w", data=np.ones((1, 2000)), chunks=(1, 250))
    zarr.open_group(path, mode="a").create_array("w2", data=np.linspace(0.1, 3, 2000)[None, :], chunks=(1, 250))
    options = dict(shards=2, sync_every=4, batch_size=50, epochs=1, scheduler="sync", progress=False, dtype="float64")
    plain = streamtrain.fit(path, **options)
    ones = streamtrain.fit(path, weights="w", **options)
    skewed = streamtrain.fit(path, weights="w2", **options)
    for k in plain.params:
        np.testing.assert_allclose(ones.params[k], plain.params[k], rtol=1e-12)
    assert not np.allclose(skewed.params["W1"], plain.params["W1"], rtol=1e-3)


def test_exact_passes_of_a_sharded_run_use_its_scheduler(store):
    run = streamtrain.fit(
        store, shards=2, sync_every=10, batch_size=100, epochs=1, scheduler="sync", eval_exact_every=1, progress=False
    )
    assert run.history[-1].exact_loss == pytest.approx(streamtrain.evaluate(store, run, scheduler="sync")["loss"])


@pytest.mark.parametrize(
    ("model", "options", "tolerance"),
    [("softmax", {"lr": 0.5}, 1e-3), ("mlp", {"hidden": [16], "optimizer": "adam", "lr": 0.01}, 2e-3)],
)
def test_softmax_and_mlp_shards_end_as_low_as_one_process(tmp_path, model, options, tolerance):
    """Measured on this data after 6 epochs (exact loss): softmax K = 1, 2, 4, 8: 0.8821, 0.8774, 0.8744,
    0.8739 (J* 0.8727); mlp: 0.8770, 0.8753, 0.8760, 0.8778. The tolerances are about twice the worst."""
    path = tmp_path / "classes.zarr"
    streamtrain.make_data(path, task="softmax", classes=4, m=32000, n_x=10, chunk=1000, seed=3)
    final = {}
    for K in (1, 2, 4, 8):
        shards = {} if K == 1 else {"shards": K, "sync_every": 8}
        run = streamtrain.fit(
            path, model=model, batch_size=64, epochs=6, eval_exact_every=1, scheduler="sync", progress=False,
            **options, **shards,
        )  # fmt: skip
        final[K] = run.history[-1].exact_loss
    assert all(final[K] <= final[1] + tolerance for K in (2, 4, 8)), final


def test_rounds_from_unchanged_params_run_on_a_cluster(store, tmp_path):
    """Rounds from the same params (a step too small to change a float32 does that) ran into the
    last round's scatter: equal data got the same key as the future being released, and the round
    hung on two workers (lost its inputs on one). Each round's scatter now has a key of its own."""
    pytest.importorskip("distributed")
    text = f"""
        import numpy as np
        import streamtrain
        from distributed import LocalCluster
        from streamtrain import Cursor, FitConfig, get_model
        from streamtrain.optim import get_optimizer
        from streamtrain.shards import RoundTask, Shards, shard_chunks, shard_seed

        if __name__ == "__main__":
            model, source = get_model("logistic"), streamtrain.open_source({str(store)!r})
            task = RoundTask(source, model, FitConfig(shards=2, batch_size=100), (), 1, source.m, 20)
            params = model.init(source.n_x, 1, np.dtype("float32"), 0)
            opt = get_optimizer("sgd", 0.1, beta1=0.9, beta2=0.999, eps=1e-8).init(params)
            chunks = shard_chunks(source.n_chunks, 2, "buffer", 0, 0)
            with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
                with Shards(task, 2, cluster.scheduler_address) as shards:
                    for _ in range(10):
                        shards.round(params, opt, [Cursor(shard_seed(0, 2, k), 0) for k in range(2)], chunks)
    """
    run_script(tmp_path / "same_params.py", text)


def test_rounds_find_the_workers_whatever_the_clients_cached_view(store, tmp_path):
    """The client refreshes its scheduler_info() in the background without the workers; a round
    that read the workers there while it did found none and failed (once in a few thousand rounds at Dask's
    2 s refresh). Refreshed every millisecond, a run of 40 rounds met it at once."""
    pytest.importorskip("distributed")
    text = f"""
        import dask
        import streamtrain
        from distributed import LocalCluster

        if __name__ == "__main__":
            with dask.config.set({{"distributed.client.scheduler-info-interval": "1ms"}}):
                with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
                    run = streamtrain.fit(
                        {str(store)!r}, shards=2, sync_every=1, batch_size=50, epochs=1, progress=False,
                        scheduler=cluster.scheduler_address,
                    )
            assert run.history[-1].rounds == 40
    """
    run_script(tmp_path / "refresh.py", text)


@pytest.mark.parametrize(("sync_every", "said"), [(40, "(1 round, waiting at the barrier "), (7, "(6 rounds, ")])
def test_the_epoch_line_says_the_rounds_and_the_barrier(store, tmp_path, capsys, sync_every, said):
    """4,000 samples in 2 shards of batches of 50: 40 steps a shard, in rounds of sync_every steps."""
    from streamtrain.cli import main

    argv = ["fit", store, "--shards", "2", "--sync-every", sync_every, "--batch-size", "50", "--epochs", "1"]
    code = main([str(a) for a in [*argv, "--scheduler", "sync", "--out", tmp_path / "m.npz"]])
    out = capsys.readouterr().out
    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith("epoch 1:")]
    assert said in line and line.endswith("%)"), line


@pytest.fixture(scope="module")
def nan_store(tmp_path_factory):
    """The store's twin with a NaN at sample 3,001 (chunk 12 of 16)."""
    import zarr

    path = tmp_path_factory.mktemp("nan") / "d.zarr"
    streamtrain.make_data(path, m=4000, n_x=6, chunk=250, seed=5)
    zarr.open_array(path / "X", mode="r+")[2, 3001] = np.nan
    return path


NAN_AT = r"d.zarr/X: sample 3001 \(chunk 12\) holds NaN in row 2"


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
@pytest.mark.parametrize("sync_every", [1, 1000])
def test_nan_in_a_shards_data_is_named_not_blamed_on_the_rate(nan_store, scheduler, sync_every):
    with pytest.raises(streamtrain.DataError, match=NAN_AT):
        streamtrain.fit(nan_store, shards=2, sync_every=sync_every, scheduler=scheduler, progress=False)


def test_nan_on_a_cluster_is_named_at_once_not_read_again_by_retries(nan_store, tmp_path):
    """A DataError on a worker comes back as it is; raised there, Dask would run the task 3 more times."""
    pytest.importorskip("distributed")
    text = f"""
        import collections
        import streamtrain
        from distributed import LocalCluster

        if __name__ == "__main__":
            with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
                try:
                    streamtrain.fit({str(nan_store)!r}, shards=2, scheduler=cluster.scheduler_address, progress=False)
                except streamtrain.DataError as e:
                    print(e)
                log = cluster.scheduler.transition_log  # (key, start, finish, ...)
                runs = collections.Counter(t[0] for t in log if t[0].startswith("_remote_") and t[2] == "processing")
                print(sorted(runs.values()))
    """
    out = run_script(tmp_path / "nan.py", text)
    error, runs = out.strip().splitlines()
    assert re.search(NAN_AT, error) and runs == "[1, 1]", out


@pytest.mark.parametrize("sync_every", [1, 8, None])
def test_a_rate_too_large_diverges_in_rounds_as_in_one_process(store, sync_every):
    """One loss a round reaches the monitor: the default H (one round an epoch here) must not hide it."""
    with pytest.raises(streamtrain.DivergedError, match=r"more than 10 times its starting 0\.69"):
        streamtrain.fit(store, shards=2, sync_every=sync_every, lr=1e30, scheduler="sync", progress=False)
