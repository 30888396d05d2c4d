"""How fast streamtrain trains next to what the disk, the store libraries and its peers allow.

    python scripts/bench.py                               # 5,000,000 x 100 float32, 3 rounds
    python scripts/bench.py --m 200000 --rounds 2         # a quick run (well under a minute)
    python scripts/bench.py --only read,fit.raw --rounds 5
    python scripts/bench.py --list                        # the rows, without running them

Makes once, with ``streamtrain make-data`` in a child process, the stores it reads (in
--data-dir, default data/bench/m<M>/): raw.zarr and zstd.zarr (chunks of 65,536 samples, no
codec / Zstd level 3), raw.h5 (HDF5, chunked alike), default.zarr (make-data's default chunks)
and small.zarr (m/10 samples, default chunks). Then runs ROWS round by round in one process,
every row once per round in an order rotated each round, after warming the page cache, and
prints a markdown table: each row's median [min–max] over the rounds, its ratio to its floor
and, for peers, to streamtrain (ratios are medians of per-round ratios), and the issue's
targets, pass or fail. All numbers, with the machine, go to --json (default: bench.json next
to the data). Rows of the peers need ``pip install '.[bench]'`` and are skipped without it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from functools import cached_property, partial
from typing import Any

import numpy as np
from _bench_data import STORES, Chunk, chunk_bytes, describe, ensure_store, evict, machine, read_chunks, run_child
from _bench_peers import Skipped, sklearn_batches, sklearn_sgd, torch_epoch, torch_loader
from _bench_report import Measured, Results, Row, as_json, at_least, at_most, table

import streamtrain
from streamtrain.models import batch_objective
from streamtrain.optim import get_optimizer

B, LR = 1000, 0.5  # batch size and learning rate of every B = 1000 row
SGD_LR = 0.01  # the B = 1 rows: a rate per-sample steps stay stable at
MEMORY_M, SGD_M = 500_000, 300_000  # in-memory samples of the step, peer and B = 1 rows (at most)
# Samples a PyTorch DataLoader delivers per round (per sample reads, per batch reads): each read
# decodes whole chunks, so an epoch at m = 5M takes hours; a few seconds' worth is scaled to m.
LOADER_SAMPLES = {False: 300, True: 4 * B}
LOGISTIC = streamtrain.get_model("logistic")


class Bench:
    """What the rows share: the stores' paths, their files, in-memory samples, a scratch folder."""

    def __init__(self, m: int, stores: dict[str, str], scratch: str) -> None:
        self.m, self.stores, self.scratch = m, stores, scratch
        self.memory_m = min(m, MEMORY_M)
        self.sgd_m = min(SGD_M, max(m // 4, 1))
        self._chunks: dict[str, list[Chunk]] = {}
        self._buffer = bytearray()

    def chunks(self, store: str) -> list[Chunk]:
        """Where the store's chunks lie in its files; listed once."""
        if store not in self._chunks:
            self._chunks[store] = chunk_bytes(self.stores[store])
            largest = max(size for _, _, size in self._chunks[store])
            if len(self._buffer) < largest:
                self._buffer = bytearray(largest)
        return self._chunks[store]

    def read_chunks(self, store: str) -> int:
        """Read every chunk's bytes of ``store`` straight from its files into one reused buffer."""
        return read_chunks(self.chunks(store), self._buffer)

    @cached_property
    def memory(self) -> tuple[np.ndarray, np.ndarray]:
        """The first ``memory_m`` samples of raw.zarr: X (n_x, memory_m) float32, Y (1, memory_m)."""
        source = streamtrain.open_source(self.stores["raw"])
        return source.read(0, self.memory_m)

    def per_m(self, seconds: float, samples: int) -> float:
        """Seconds for ``samples`` scaled to an epoch of m samples."""
        return seconds * self.m / samples


def timed(run: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    t0 = time.perf_counter()
    run(*args, **kwargs)
    return time.perf_counter() - t0


# -- the rows' measurements ---------------------------------------------------------------------


def read_api(store: str, b: Bench) -> Measured:
    """Every chunk of X and Y through the store library's own API: zarr ``[:, a:b]`` or h5py's."""
    path = b.stores[store]
    if path.endswith(".h5"):
        import h5py

        with h5py.File(path, "r") as f:
            return Measured(timed(_read_slices, f["X"], f["Y"]))
    import zarr

    group = zarr.open_group(path, mode="r")
    return Measured(timed(_read_slices, group["X"], group["Y"]))


def _read_slices(X: Any, Y: Any) -> None:  # zarr arrays or h5py datasets
    chunk = X.chunks[1]
    for a in range(0, X.shape[1], chunk):
        X[:, a : a + chunk], Y[:, a : a + chunk]


def read_chunk_files(store: str, b: Bench) -> Measured:
    """The disk floor: every chunk's bytes (zarr files, HDF5 byte ranges) read into one buffer."""
    b.chunks(store)  # listed once, outside the timing
    return Measured(timed(b.read_chunks, store))


def gradient_step(b: Bench) -> Measured:
    """The step alone: batch_objective + SGD update over in-memory batches, scaled to m."""
    X, Y = b.memory
    Y = Y.astype(np.float32)
    params = LOGISTIC.init(X.shape[0], 1, np.dtype(np.float32), 0)
    opt = get_optimizer("sgd", LR, beta1=0.9, beta2=0.999, eps=1e-8)
    state = opt.init(params)
    t0 = time.perf_counter()
    for a in range(0, X.shape[1], B):
        _, grads, _ = batch_objective(LOGISTIC, params, X[:, a : a + B], Y[:, a : a + B], m=X.shape[1])
        params, state = opt.update(grads, state, params)
    return Measured(b.per_m(time.perf_counter() - t0, X.shape[1]))


def _fit(data: str | streamtrain.ChunkSource, **options: Any) -> Measured:
    """One epoch of streamtrain.fit; its epoch seconds (as the CLI reports them) and waits."""
    records: list = []
    wall = timed(streamtrain.fit, data, epochs=1, progress=False, on_epoch=records.append, **options)
    r = records[-1]
    return Measured(r.seconds, {"io_wait_s": r.io_wait_s, "wall_s": wall})


def fit_store(store: str, shuffle: str, b: Bench) -> Measured:
    return _fit(b.stores[store], batch_size=B, lr=LR, shuffle=shuffle)


def fit_memory(b: Bench) -> Measured:
    """fit on the in-memory samples (ArraySource), scaled to m: what the peers are compared with."""
    r = _fit(streamtrain.ArraySource(*b.memory), batch_size=B, lr=LR, shuffle="none")
    return Measured(b.per_m(r.value, b.memory_m), r.extra)


def peer(run: Callable[..., float], b: Bench) -> Measured:
    X, Y = b.memory
    return Measured(b.per_m(run(X, Y, B, LR), X.shape[1]))


def loader_streamtrain(b: Bench) -> Measured:
    """One epoch of ``iter_batches`` (shuffle buffer, the default), samples first as a torch loop takes them."""
    seen, t0 = 0, time.perf_counter()
    for batch in streamtrain.iter_batches(b.stores["raw"], batch_size=B, samples_first=True):
        seen += batch.X.shape[0]  # handed over as it comes: the loop's own work is not the loader's
    assert seen == b.m
    return Measured(time.perf_counter() - t0)


def loader_torch(batch_reads: bool, b: Bench) -> Measured:
    """A PyTorch DataLoader over raw.zarr for LOADER_SAMPLES shuffled samples, scaled to m."""
    samples = min(b.m, LOADER_SAMPLES[batch_reads])
    return Measured(b.per_m(torch_loader(b.stores["raw"], B, samples, batch_reads), samples))


def sgd_streamtrain(b: Bench) -> Measured:
    """B = 1: one epoch of fit over ``sgd_m`` in-memory samples, in samples/s."""
    X, Y = (a[:, : b.sgd_m] for a in b.memory)
    r = _fit(streamtrain.ArraySource(X, Y), batch_size=1, lr=SGD_LR, shuffle="none")
    return Measured(b.sgd_m / r.value, r.extra)


def sgd_sklearn(b: Bench) -> Measured:
    X, Y = (a[:, : b.sgd_m] for a in b.memory)
    return Measured(b.sgd_m / sklearn_sgd(X, Y, SGD_LR))


def exact_pass(scheduler: str, b: Bench) -> Measured:
    """One exact loss and gradient over raw.zarr (FullBatch.loss_and_grad) at the initial params."""
    source = streamtrain.open_source(b.stores["raw"])
    params = LOGISTIC.init(source.n_x, source.k, np.dtype(np.float32), 0)
    with streamtrain.FullBatch(source, LOGISTIC, scheduler=scheduler) as exact:
        return Measured(timed(exact.loss_and_grad, params))


def cold_files(b: Bench) -> Measured:
    evict(b.stores["default"])
    return read_chunk_files("default", b)


def cold_fit(b: Bench) -> Measured:
    evict(b.stores["default"])
    return fit_store("default", "none", b)


def peak_rss(store: str, options: list[str], b: Bench) -> Measured:
    """Peak RSS (MB) of ``streamtrain fit`` (default options but these), one epoch, in a child process."""
    out = os.path.join(b.scratch, "rss-model.npz")  # removed after each run: fit would not overwrite it
    argv = ["fit", b.stores[store], "--epochs", "1", "--no-progress", "--out", out, *options]
    wall, peak_mb = run_child(argv, b.scratch)
    os.unlink(out)
    return Measured(peak_mb, {"wall_s": wall})


# -- the table of rows: name, what, measurement, unit, floor, streamtrain row, the targets --

RAW, ZSTD, H5, DEFAULT = ("raw",), ("zstd",), ("h5",), ("default",)
ROWS = [
    Row("read.raw.api", "raw zarr: every chunk via zarr `[:, a:b]`", partial(read_api, "raw"),
        floor="read.raw.files", stores=RAW),
    Row("read.raw.files", "raw zarr: chunk files read into one buffer", partial(read_chunk_files, "raw"), stores=RAW),
    Row("read.zstd.api", "zstd zarr: every chunk via zarr", partial(read_api, "zstd"),
        floor="read.zstd.files", stores=ZSTD),
    Row("read.zstd.files", "zstd zarr: chunk files read, not decoded", partial(read_chunk_files, "zstd"), stores=ZSTD),
    Row("read.h5.api", "HDF5: every chunk via h5py `ds[:, a:b]`", partial(read_api, "h5"),
        floor="read.h5.files", stores=H5),
    Row("read.h5.files", "HDF5: chunks' byte ranges read into one buffer", partial(read_chunk_files, "h5"), stores=H5),
    Row("step", "gradient step alone, in memory (scaled to m)", gradient_step, stores=RAW),
    Row("fit.raw.none", "raw zarr: fit --shuffle none", partial(fit_store, "raw", "none"), floor="read.raw.files",
        targets=(at_most(0.6, "read.raw.api"), at_most(1.3, "read.raw.files", "stretch")), stores=RAW),
    Row("fit.raw.buffer", "raw zarr: fit --shuffle buffer", partial(fit_store, "raw", "buffer"),
        floor="read.raw.files", targets=(at_most(1.15, "fit.raw.none"),), stores=RAW),
    Row("fit.zstd.none", "zstd zarr: fit --shuffle none", partial(fit_store, "zstd", "none"), floor="read.zstd.api",
        targets=(at_most(0.7, "read.zstd.api"),), stores=ZSTD),
    Row("fit.zstd.buffer", "zstd zarr: fit --shuffle buffer", partial(fit_store, "zstd", "buffer"),
        floor="read.zstd.api", stores=ZSTD),
    Row("fit.h5.none", "HDF5: fit --shuffle none", partial(fit_store, "h5", "none"), floor="read.h5.files",
        targets=(at_most(1.3, "read.h5.api"),), stores=H5),
    Row("fit.h5.buffer", "HDF5: fit --shuffle buffer", partial(fit_store, "h5", "buffer"), floor="read.h5.files",
        stores=H5),
    Row("fit.memory", "fit on in-memory arrays (scaled to m)", fit_memory, floor="step", stores=RAW),
    Row("peer.torch", "PyTorch nn.Linear + SGD, same batches (scaled)", partial(peer, torch_epoch), floor="step",
        ref="fit.memory", stores=RAW),  # default threads: erratic on shared cores, so the target is held on 1 thread
    Row("peer.torch.1", "PyTorch as above, on one thread", partial(peer, partial(torch_epoch, threads=1)),
        floor="step", ref="fit.memory", targets=(at_least(4, "fit.memory"),), stores=RAW),
    Row("peer.sklearn", "sklearn partial_fit, same batches (scaled)", partial(peer, sklearn_batches), floor="step",
        ref="fit.memory", targets=(at_least(10, "fit.memory"),), stores=RAW),
    Row("loader.streamtrain", "raw zarr: iter_batches, shuffle buffer, an epoch", loader_streamtrain,
        floor="read.raw.files", stores=RAW),
    Row("loader.torch", "raw zarr: PyTorch DataLoader, a zarr read per sample (scaled)",
        partial(loader_torch, False), ref="loader.streamtrain", stores=RAW),
    Row("loader.torch.batch", "raw zarr: PyTorch DataLoader, a zarr read per batch (scaled)",
        partial(loader_torch, True), ref="loader.streamtrain", stores=RAW),
    Row("sgd1.streamtrain", "B = 1: fit on in-memory samples", sgd_streamtrain, unit="samples/s",
        targets=(at_least(1_000_000),), stores=RAW),
    Row("sgd1.sklearn", "B = 1: sklearn partial_fit on the block", sgd_sklearn, unit="samples/s",
        ref="sgd1.streamtrain", stores=RAW),
    Row("exact.sync", "exact loss + gradient, raw zarr: numpy loop", partial(exact_pass, "sync"), stores=RAW),
    Row("exact.threads", "exact loss + gradient, raw zarr: Dask threads", partial(exact_pass, "threads"),
        floor="exact.sync", targets=(at_most(1.1, "exact.sync"),), stores=RAW),
    Row("cold.files", "cold cache, default store: chunk files read", cold_files, stores=DEFAULT),
    Row("cold.fit", "cold cache, default store: fit --shuffle none", cold_fit, floor="cold.files",
        targets=(at_most(1.1, "cold.files"),), stores=DEFAULT),
    Row("rss.tenth", "peak RSS of fit (default options) at m/10", partial(peak_rss, "small", []), unit="MB",
        stores=("small",)),
    Row("rss.m", "peak RSS of fit (default options) at m", partial(peak_rss, "default", []), unit="MB",
        targets=(at_most(250), at_most(1.1, "rss.tenth", "flat in m")), stores=DEFAULT),
    Row("rss.buffer", "peak RSS of fit --shuffle buffer at m", partial(peak_rss, "default", ["--shuffle", "buffer"]),
        unit="MB", targets=(at_most(250),), stores=DEFAULT),
]  # fmt: skip


# -- running ------------------------------------------------------------------------------------


def selected(only: str | None) -> list[Row]:
    """The rows whose names start with one of the comma-separated prefixes (all without --only)."""
    if not only:
        return ROWS
    prefixes = [p.strip() for p in only.split(",") if p.strip()]
    rows = [row for row in ROWS if any(row.name.startswith(p) for p in prefixes)]
    if not rows:
        raise SystemExit(f"bench: no row starts with {only!r}; see --list")
    return rows


def _tiny_fit(X: np.ndarray, Y: np.ndarray) -> None:
    streamtrain.fit(streamtrain.ArraySource(X, Y), batch_size=1, lr=SGD_LR, epochs=1, progress=False)


def _tiny_exact(X: np.ndarray, Y: np.ndarray) -> None:
    with streamtrain.FullBatch(streamtrain.ArraySource(X, Y), LOGISTIC, scheduler="threads") as exact:
        exact.loss_and_grad(LOGISTIC.init(X.shape[0], 1, np.dtype(np.float32), 0))


# One-time costs of a row (imports, first calls, compiling), paid on a few in-memory samples.
FIRST_CALLS = {
    "sgd1.streamtrain": _tiny_fit,
    "exact.threads": _tiny_exact,
    "peer.torch": partial(torch_epoch, batch_size=B, lr=LR),
    "peer.torch.1": partial(torch_epoch, batch_size=B, lr=LR, threads=1),
    "peer.sklearn": partial(sklearn_batches, batch_size=B, lr=LR),
    "sgd1.sklearn": partial(sklearn_sgd, lr=SGD_LR),
}


def warm_up(b: Bench, rows: list[Row]) -> None:
    """Before the first round: the warm stores into the page cache, and each row's one-time costs."""
    for store in {s for row in rows for s in row.stores} & {"raw", "zstd", "h5"}:
        b.read_chunks(store)
        source = streamtrain.open_source(b.stores[store])
        source.read(*source.chunk_bounds[0])  # the store library's first call
    for row in rows:
        if row.name in FIRST_CALLS:
            with contextlib.suppress(Skipped):
                FIRST_CALLS[row.name](*(a[:, :2000] for a in b.memory))


def run_rounds(b: Bench, rows: list[Row], rounds: int) -> Results:
    """Every row once per round, the order rotated by one each round; progress on stderr."""
    results = Results(rows, rounds)
    for r in range(rounds):
        shift = r % len(rows)
        for row in rows[shift:] + rows[:shift]:
            if row.name in results.skipped:
                continue
            try:
                results.add(row.name, r, row.measure(b))
            except Skipped as e:
                results.skipped[row.name] = str(e)
                continue
            value = results.values[row.name][r]
            print(f"bench: round {r + 1}/{rounds} {row.name:<18} {value:,.4g} {row.unit}", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, default=5_000_000, help="samples in each store (default 5,000,000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every row (default 3)")
    p.add_argument("--only", metavar="ROWS", help="comma-separated prefixes of row names, e.g. read,fit.raw")
    p.add_argument("--data-dir", help="where the stores are made once and reused (default data/bench/m<M>)")
    p.add_argument("--json", help="where all the numbers go (default bench.json in the data dir)")
    p.add_argument("--list", action="store_true", help="list the rows and exit")
    args = p.parse_args(argv)
    rows = selected(args.only)
    if args.list:
        print("\n".join(f"{row.name:<18} {row.what}" for row in rows))
        return
    if args.m < 1000 or args.rounds < 1:
        raise SystemExit("bench: --m must be at least 1000 and --rounds at least 1")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data_dir = args.data_dir or os.path.join(repo, "data", "bench", f"m{args.m}")
    needed = sorted({s for row in rows for s in row.stores}, key=list(STORES).index)
    scratch = tempfile.mkdtemp(prefix="streamtrain-bench-")
    try:
        stores = {name: ensure_store(data_dir, name, args.m, scratch) for name in needed}
        b = Bench(args.m, stores, scratch)
        warm_up(b, rows)
        results = run_rounds(b, rows, args.rounds)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(results, args, b, data_dir)


def report(results: Results, args: argparse.Namespace, b: Bench, data_dir: str) -> None:
    """The markdown table on stdout, every number in the JSON file."""
    info = machine()
    print(
        f"m = {args.m:,} × 100 float32, B = {B}, lr {LR}, median [min–max] of {args.rounds} interleaved rounds; "
        f"in memory: {b.memory_m:,} samples (B = 1 rows: {b.sgd_m:,})"
    )
    print(f"machine: {describe(info)}\n")
    print(table(results))
    path = args.json or os.path.join(data_dir, "bench.json")
    record = {
        "machine": info,
        "m": args.m,
        "rounds": args.rounds,
        "batch_size": B,
        "lr": LR,
        "memory_m": b.memory_m,
        "sgd_m": b.sgd_m,
        "stores": b.stores,
        "rows": as_json(results),
    }
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"\nall numbers: {path}")


if __name__ == "__main__":
    main()
