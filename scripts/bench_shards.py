"""Data-parallel training (``--shards K``) on a Dask LocalCluster, next to one process (issue 14).

    python scripts/bench_shards.py --data-dir DIR                  # m = 5,000,000 × 100, 3 rounds
    python scripts/bench_shards.py --m 300000 --converge-m 300000 --rounds 1   # a quick look
    python scripts/bench_shards.py --list                          # the rows, without running them
    python scripts/bench_shards.py --report DIR/bench-shards.json  # an earlier run's tables again

Starts two LocalClusters in this process (1 and 2 worker processes, one thread each) and runs
every row once per round, table by table, each table's order rotated each round (as
scripts/bench.py does), so rows compared with each other ran close together in time. Stores,
made once with make-data in --data-dir: raw.zarr (--m samples, chunks of 65,536: bench.py's
store) for the epoch rows, and converge-m<M>/raw.zarr (--converge-m samples, same chunks) for
the rows that train to within 1e-3 of the L-BFGS optimum J*, and the sync-every sweep. Prints
the tables that docs/benchmarks.md shows, and a projection to 8-64 workers from the measured
per-round costs; every number goes to --json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pickle
import resource
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from typing import Any

import _bench_shards_report as tables_
import numpy as np
from _bench_data import chunk_bytes, describe, ensure_store, machine, read_chunks
from _bench_report import Measured, Results, Row, as_json

import streamtrain
from streamtrain import Cursor, FitConfig, get_model
from streamtrain.config import ROUND_SAMPLES
from streamtrain.optim import OptimizerState, get_optimizer
from streamtrain.shards import RoundTask, Shards, average, shard_chunks, shard_seed

B, LR = 1000, 0.1  # batch size of every row; lr: the default (epochs to J* depend on it: see sensitivity)
H_DEFAULT = ROUND_SAMPLES // B  # --sync-every's default at this B
TOL, MAX_EPOCHS = 1e-3, 6  # "at J*": an exact loss within TOL of it, in at most MAX_EPOCHS
SWEEP = (1, 10, 100, 1000)  # sync_every at K = 2 on 2 workers (the default is row opt.K2.w2)
LRS = (0.1, 0.2, 0.5)  # the epochs-to-J* sensitivity, in this process
COST_ROUNDS = 30  # rounds of one step per measurement of the per-round costs
LOGISTIC = get_model("logistic")


class Scaling:
    """What the rows share: the two stores, J*, the clusters and a client on each."""

    def __init__(self, store: str, converge: str) -> None:
        from distributed import Client, LocalCluster

        self.store, self.converge = store, converge
        self.optimum = streamtrain.fit(converge, optimizer="lbfgs", progress=False).history[-1].loss
        self.clusters, self.clients = {}, {}
        for w in (1, 2):
            cluster = LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None)
            self.clusters[w], self.clients[w] = cluster, Client(cluster, set_as_default=False)
            self.clients[w].get_task_stream()  # the scheduler records tasks from now on
        self.sent = _bytes_sent()

    def address(self, w: int) -> str:
        return self.clusters[w].scheduler_address

    def tasks(self, w: int, since: float) -> tuple[int, int]:
        """Round tasks the scheduler ran since ``since`` (time.time()), and their results' bytes."""
        records = [r for r in self.clients[w].get_task_stream(start=since) if r["key"].startswith("_remote_round")]
        return len(records), sum(r.get("nbytes", 0) for r in records)

    def close(self) -> None:
        for w in self.clusters:
            self.clients[w].close()
            self.clusters[w].close()


def _bytes_sent() -> dict[str, int]:
    """What a round sends besides the task's result: the (params, optimizer state) every worker
    gets, and each task's own arguments (its RoundTask without the store, and a cursor), pickled."""
    params = LOGISTIC.init(100, 1, np.dtype(np.float32), 0)
    opt = get_optimizer("sgd", LR, beta1=0.9, beta2=0.999, eps=1e-8).init(params)
    task = RoundTask(None, LOGISTIC, FitConfig(batch_size=B, lr=LR), tuple(range(40)), H_DEFAULT, 10**9, 10**6)
    return {"shared": len(pickle.dumps((params, opt))), "task": len(pickle.dumps((task, Cursor(0, 0))))}


# -- the rows' measurements ---------------------------------------------------------------------


def _counted(s: Scaling, w: int | None, since: float, rounds: int, extra: dict[str, float]) -> dict[str, float]:
    """The epoch's tasks (from the scheduler) and bytes (counted: see _bytes_sent) beside ``extra``."""
    if w is None:
        return extra
    tasks, back = s.tasks(w, since)
    sent = rounds * w * s.sent["shared"] + tasks * s.sent["task"]
    return {**extra, "rounds": rounds, "tasks": tasks, "bytes": sent + back}


def epoch(K: int, w: int | None, s: Scaling) -> Measured:
    """One epoch of fit on the large store: one process (``w`` None) or K shards on ``w`` workers
    (K = 1 too: one shard in rounds of the default sync_every, as K > 1 has)."""
    cluster = {} if w is None else {"shards": K, "sync_every": H_DEFAULT, "scheduler": s.address(w)}
    records: list = []
    since, cpu, t0 = time.time(), _cpu_seconds(), time.perf_counter()
    streamtrain.fit(s.store, batch_size=B, lr=LR, epochs=1, progress=False, on_epoch=records.append, **cluster)
    cores = (_cpu_seconds() - cpu) / (time.perf_counter() - t0)  # of this process: fit's own when w is None
    r = records[-1]
    extra = {"samples_per_s": r.samples_per_s, "barrier_s": r.barrier_s or 0.0, "cores": cores}
    return Measured(r.seconds, _counted(s, w, since, r.rounds or 0, extra))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Reached(Exception):
    """Raised from on_epoch to end a run at its first epoch within TOL of J* (fit has no such option)."""


def to_optimum(K: int, w: int | None, H: int | None, s: Scaling) -> Measured:
    """Time to J* on the convergence store: the epochs' seconds (exact evaluations, connecting and
    scattering the store not in them) up to the first epoch within TOL of J*; inf if none was."""
    cluster = {} if w is None else {"shards": K, "scheduler": s.address(w), "sync_every": H}
    records: list = []

    def watch(record: Any) -> None:
        records.append(record)
        if record.exact_loss - s.optimum < TOL:
            raise Reached

    since = time.time()
    with contextlib.suppress(Reached):
        streamtrain.fit(
            s.converge, batch_size=B, lr=LR, epochs=MAX_EPOCHS, eval_exact_every=1, progress=False,
            on_epoch=watch, **cluster,
        )  # fmt: skip
    reached = records[-1].exact_loss - s.optimum < TOL
    seconds = [r.seconds for r in records]
    rounds = sum(r.rounds or 0 for r in records)
    extra = {
        "epochs": len(records) if reached else math.inf,
        "epoch_s": statistics.median(seconds),
        "gap": records[-1].exact_loss - s.optimum,
    }
    per_epoch = {k: v / len(records) for k, v in _counted(s, w, since, rounds, {}).items()}
    return Measured(sum(seconds) if reached else math.inf, {**extra, **per_epoch})


def round_costs(w: int, s: Scaling) -> Measured:
    """Rounds of one step each (K = w shards on w workers, from successive cursors), and the Dask
    calls a round makes, on their own: the median round's wall time; in ``extra``, its slowest
    task's time on its worker (a round's start-up: re-reading its chunk, and one step), the rest
    of the round (the overhead), a broadcast scatter of the params, a no-op task's round trip."""
    walls, slowest = [], []
    with streamtrain.open_source(s.store) as source:
        task = RoundTask(source, LOGISTIC, FitConfig(batch_size=B, lr=LR), (), 1, source.m, -(-source.m // B))
        params = LOGISTIC.init(source.n_x, 1, np.dtype(np.float32), 0)
        opt = get_optimizer("sgd", LR, beta1=0.9, beta2=0.999, eps=1e-8).init(params)
        chunks = shard_chunks(source.n_chunks, w, "buffer", 0, 0)
        cursors: list[Cursor | None] = [Cursor(shard_seed(0, w, k), 0) for k in range(w)]
        with Shards(task, w, s.address(w)) as shards:
            for _ in range(COST_ROUNDS):
                t = time.perf_counter()
                results = [r for r in shards.round(params, opt, cursors, chunks) if r is not None]
                walls.append(time.perf_counter() - t)
                slowest.append(max(r.seconds for r in results))
                params, v, s_ = average(results, np.float32)
                opt, cursors = OptimizerState(opt.step + 1, v, s_), [r.cursor for r in results]
    client = s.clients[w]
    scatter, noop = [], []
    for _ in range(COST_ROUNDS):
        t = time.perf_counter()
        shared = client.scatter((params, opt), broadcast=True, hash=False)
        scatter.append(time.perf_counter() - t)
        t = time.perf_counter()
        client.submit(int, 0, pure=False).result()
        noop.append(time.perf_counter() - t)
        del shared
    extra = {
        "task_s": statistics.median(slowest),
        "overhead_s": statistics.median(a - b for a, b in zip(walls, slowest)),
        "scatter_s": statistics.median(scatter),
        "noop_task_s": statistics.median(noop),
    }
    return Measured(statistics.median(walls), extra)


# -- the rows: name, what, measurement --------------------------------------------------------------

EPOCHS = [
    Row("fit", "one process: streamtrain.fit", partial(epoch, 1, None)),
    *(Row(f"K{K}.w{w}", f"fit --shards {K} on {w} worker{'s' * (w > 1)}", partial(epoch, K, w), floor="fit")
      for K in (1, 2, 4) for w in (1, 2)),
]  # fmt: skip
OPTIMUM = [
    Row("opt.fit", "one process: fit until J*", partial(to_optimum, 1, None, None)),
    *(Row(f"opt.K{K}.w{w}", f"--shards {K} on {w} worker{'s' * (w > 1)} until J*", partial(to_optimum, K, w, None),
          floor="opt.fit") for K in (2, 4) for w in (1, 2)),
    *(Row(f"opt.K2.w2.H{H}", f"--shards 2 --sync-every {H} on 2 workers until J*", partial(to_optimum, 2, 2, H),
          floor="opt.K2.w2") for H in SWEEP),
]  # fmt: skip
COSTS = [Row(f"round.w{w}", f"rounds of one step, K = {w} on {w} worker(s)", partial(round_costs, w)) for w in (1, 2)]
ROWS = EPOCHS + OPTIMUM + COSTS


def sensitivity(path: str, optimum: float) -> dict[str, dict[str, float]]:
    """Epochs to J* of one process and of K = 2 and 4 shards at each rate in LRS (default sync_every).
    Not timed: a run's results depend on K, never on where its rounds run, so sync shows them."""
    out: dict[str, dict[str, float]] = {}
    for lr in LRS:
        out[str(lr)] = {}
        for K in (1, 2, 4):
            shards = {} if K == 1 else {"shards": K, "scheduler": "sync"}
            run = streamtrain.fit(
                path, batch_size=B, lr=lr, epochs=MAX_EPOCHS, eval_exact_every=1, progress=False, **shards
            )
            gaps = [r.exact_loss - optimum for r in run.history]
            out[str(lr)][f"K{K}"] = next((e for e, gap in enumerate(gaps, 1) if gap < TOL), math.inf)
    return out


def run_groups(s: Scaling, groups: list[list[Row]], rounds: int) -> Results:
    """Every row once per round, group after group, each group's order rotated by one each round: the
    rows of a table ran close together in time (the J* rows' sync_every = 1 alone takes a minute)."""
    results = Results([row for group in groups for row in group], rounds)
    for r in range(rounds):
        for group in groups:
            for row in group[r % len(group) :] + group[: r % len(group)]:
                results.add(row.name, r, row.measure(s))
                print(f"bench_shards: round {r + 1}/{rounds} {row.name:<16} {results.values[row.name][r]:.4g} s",
                      file=sys.stderr)  # fmt: skip
    return results


def warm_up(s: Scaling) -> None:
    """Before the first round: both stores in the page cache, the workers' imports and first calls."""
    for path in (s.store, s.converge):
        chunks = chunk_bytes(path)
        read_chunks(chunks, bytearray(max(size for _, _, size in chunks)))
    for row in ROWS:
        if row.name in ("fit", "K1.w1", "K2.w2"):
            row.measure(s)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, default=5_000_000, help="samples of the epoch rows' store (default 5,000,000)")
    p.add_argument("--converge-m", type=int, default=1_000_000, help="samples of the J* rows' store (1,000,000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every row (default 3)")
    p.add_argument("--data-dir", help="where the stores are made once and reused (default data/bench/m<M>)")
    p.add_argument("--json", help="where all the numbers go (default bench-shards.json in the data dir)")
    p.add_argument("--list", action="store_true", help="list the rows and exit")
    p.add_argument("--report", metavar="JSON", help="print the tables of an earlier run's --json file, measure nothing")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(f"{row.name:<16} {row.what}" for row in ROWS))
        return
    if args.report:
        with open(args.report) as f:
            record = json.load(f)
        print(tables(tables_.from_json(ROWS, record), record))
        return
    if min(args.m, args.converge_m) < 4 * 65_536 or args.rounds < 1:
        raise SystemExit("bench_shards: --m and --converge-m must be at least 262,144 (4 chunks), --rounds 1")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data_dir = args.data_dir or os.path.join(repo, "data", "bench", f"m{args.m}")
    scratch = tempfile.mkdtemp(prefix="streamtrain-bench-shards-")
    try:
        store = ensure_store(data_dir, "raw", args.m, scratch)
        converge = ensure_store(os.path.join(data_dir, f"converge-m{args.converge_m}"), "raw", args.converge_m, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    s = Scaling(store, converge)
    try:
        warm_up(s)
        results = run_groups(s, [EPOCHS, OPTIMUM, COSTS], args.rounds)
        epochs = sensitivity(converge, s.optimum)
    finally:
        s.close()
    report(results, epochs, args, s, data_dir)


def report(results: Results, epochs: dict[str, dict[str, float]], args: argparse.Namespace, s: Scaling,
           data_dir: str) -> None:  # fmt: skip
    """The tables on stdout, every number in the JSON file."""
    record = {"machine": machine(), "m": args.m, "converge_m": args.converge_m, "rounds": args.rounds,
              "batch_size": B, "lr": LR, "optimum": s.optimum, "sensitivity": epochs,
              "rows": as_json(results)}  # fmt: skip
    print(tables(results, record))
    path = args.json or os.path.join(data_dir, "bench-shards.json")
    with open(path, "w") as f:
        json.dump(_finite(record), f, indent=1)
    print(f"\nall numbers: {path}", file=sys.stderr)


def tables(results: Results, record: dict[str, Any]) -> str:
    cores = [e["cores"] for e in results.extra["fit"]]
    epochs = {
        lr: {k: math.inf if e is None else e for k, e in row.items()} for lr, row in record["sensitivity"].items()
    }
    return "\n\n".join([
        f"m = {record['m']:,} × 100 float32 (J* rows: {record['converge_m']:,}), chunks of 65,536, B = {B}, lr {LR}, "
        f"sync_every {H_DEFAULT} unless said; median [min–max] of {record['rounds']} interleaved rounds\n"
        f"machine: {describe(record['machine'])}",
        tables_.epochs_table(tables_.only(results, EPOCHS)),
        f"One process (fit) used {statistics.median(cores):.2f} [{min(cores):.2f}–{max(cores):.2f}] cores (its CPU "
        "time over its wall time).",
        f"J* = {record['optimum']:.6f} (L-BFGS)",
        tables_.optimum_table(tables_.only(results, OPTIMUM), MAX_EPOCHS),
        f"Epochs to J* + {TOL:g} by learning rate (B = {B}, default sync_every):",
        tables_.sensitivity_table(epochs, MAX_EPOCHS),
        tables_.costs_table(tables_.only(results, COSTS)),
        tables_.project_table(results, B, H_DEFAULT, record["m"]),
    ])  # fmt: skip


def _finite(x: Any) -> Any:
    """JSON without Infinity: a run that never got to J* is null."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and math.isinf(x) else x


if __name__ == "__main__":
    main()
