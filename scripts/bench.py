"""Speed, memory and accuracy of one streamed epoch on a large generated store.

    python scripts/bench.py                       # 5,000,000 x 100 float32 store in a temp dir
    python scripts/bench.py --data data/big.zarr  # reuse (or create) a store there

Measures, on the same store and batch size:
  read    one pass of the batch stream with no gradient step (what the disk/codec costs),
          after a first pass that warms the page cache
  epoch   `streamtrain fit --epochs 1` in a child process: epoch seconds and its peak RSS
  loss    the fitted model's exact full-data loss next to the store's Bayes loss
  exact   one exact full-batch loss + gradient at the fitted model: the plain numpy loop
          (scheduler "sync") and Dask's threaded scheduler, run alternately, and how far each
          is from a float64 reference (per-chunk logistic objective, weighted by size)
Timings are the best of --repeat runs. Prints a table and one JSON line (for records).
Targets: peak RSS well under 300 MB, epoch time close to the read time, loss within ~0.002
of the Bayes loss (foundation issue); exact pass on threads <= 1.1 x the numpy loop, both
within 1e-6 of the reference (full-batch issue).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import streamtrain
from streamtrain.batches import BatchStream, Cursor
from streamtrain.models import get_model, objective

LOGISTIC = get_model("logistic")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="store to use; created with make-data if missing (default: a temp dir)")
    p.add_argument("--m", type=int, default=5_000_000)
    p.add_argument("--n-x", type=int, default=100)
    p.add_argument("--codec", default="none")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--shuffle", default="none")
    p.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="streamtrain-bench-") as tmp:
        data = args.data or os.path.join(tmp, "bench.zarr")
        result = {"m": args.m, "n_x": args.n_x, "batch_size": args.batch_size, "shuffle": args.shuffle}
        if not os.path.exists(data):
            result["make_data_s"], result["make_data_rss_mb"] = run_child(
                ["make-data", data, "--m", str(args.m), "--n-x", str(args.n_x), "--codec", args.codec]
            )
        source = streamtrain.open_source(data)
        # The first pass may come from disk, later ones from the page cache: warm it first so
        # the read pass and the epoch see the same storage.
        result["first_read_s"] = read_pass(source, args.batch_size, args.shuffle)
        result["read_s"] = min(read_pass(source, args.batch_size, args.shuffle) for _ in range(args.repeat))
        model = os.path.join(tmp, "model.npz")
        fits = [fit_in_child(data, model, args) for _ in range(args.repeat)]
        result.update(min(fits, key=lambda f: f["epoch_s"]))
        fitted = streamtrain.load(model)
        full = streamtrain.evaluate(source, fitted)
        result["full_loss"], result["bayes_loss"] = full["loss"], source.attrs.get("bayes_loss")
        result.update(exact_passes(source, fitted.params, args.repeat))
    report(result)


def read_pass(source: streamtrain.ChunkSource, batch_size: int, shuffle: str) -> float:
    """Seconds to stream every batch of one epoch with no gradient step."""
    t0 = time.perf_counter()
    for _ in BatchStream(source, batch_size, Cursor(0, 0), shuffle=shuffle):
        pass
    return time.perf_counter() - t0


def exact_passes(source: streamtrain.ChunkSource, params: dict, repeat: int) -> dict:
    """Best seconds of the exact loss + gradient per scheduler, and each one's relative error."""
    ref_loss, ref_grad = reference_loss_and_grad(source, params)
    ref_g = np.concatenate([ref_grad[k].ravel() for k in ref_grad])
    out: dict = {}
    for _ in range(repeat):
        for scheduler in ("sync", "threads"):
            with streamtrain.FullBatch(source, LOGISTIC, scheduler=scheduler) as exact:
                t0 = time.perf_counter()
                loss, grads = exact.loss_and_grad(params)
                seconds = time.perf_counter() - t0
            out[f"exact_{scheduler}_s"] = min(seconds, out.get(f"exact_{scheduler}_s", seconds))
            g = np.concatenate([grads[k].ravel() for k in ref_grad])
            out[f"exact_{scheduler}_loss_rel"] = abs(loss - ref_loss) / abs(ref_loss)
            out[f"exact_{scheduler}_grad_rel"] = float(np.linalg.norm(g - ref_g) / np.linalg.norm(ref_g))
    return out


def reference_loss_and_grad(source: streamtrain.ChunkSource, params: dict) -> tuple[float, dict]:
    """Float64 reference: whole chunks cast to float64, the per-batch API, weighted by chunk size."""
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    loss, grads = 0.0, {k: np.zeros_like(v) for k, v in params.items()}
    for a, b in source.chunk_bounds:
        X, Y = (np.asarray(v, np.float64) for v in source.read(a, b))
        chunk_loss, chunk_grads = objective(params, LOGISTIC.totals(params, X, Y))
        loss += chunk_loss * (b - a) / source.m
        for k in grads:
            grads[k] += chunk_grads[k] * (b - a) / source.m
    return loss, grads


def fit_in_child(data: str, model: str, args: argparse.Namespace) -> dict:
    """Run the real CLI in a child process so its peak RSS is its own."""
    metrics = model + ".jsonl"
    cmd = [
        "fit",
        data,
        "--epochs",
        "1",
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--shuffle",
        args.shuffle,
        "--out",
        model,
        "--metrics",
        metrics,
        "--no-progress",
    ]
    if os.path.exists(metrics):
        os.unlink(metrics)
    wall, peak_mb = run_child(cmd)
    with open(metrics) as f:
        epoch = json.loads(f.readline())
    return {
        "epoch_s": epoch["seconds"],
        "io_wait_s": epoch["io_wait_s"],
        "fit_wall_s": wall,
        "samples_per_s": epoch["samples_per_s"],
        "peak_rss_mb": peak_mb,
    }


def run_child(argv: list[str]) -> tuple[float, float]:
    """Run ``streamtrain ARGV``; its wall seconds and its own peak RSS in MB (from wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamtrain", *argv], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"streamtrain {' '.join(argv)} failed with exit code {proc.returncode}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def report(r: dict) -> None:
    gap = r["full_loss"] - r["bayes_loss"] if r["bayes_loss"] is not None else float("nan")
    rows = [
        (
            "make-data",
            f"{r['make_data_s']:.1f} s, peak RSS {r['make_data_rss_mb']:.0f} MB"
            if "make_data_s" in r
            else "(existing store)",
        ),
        ("read pass", f"{r['read_s']:.2f} s (first pass {r['first_read_s']:.2f} s)"),
        (
            "epoch",
            f"{r['epoch_s']:.2f} s = {r['epoch_s'] / r['read_s']:.2f} x read "
            f"({r['samples_per_s']:,.0f} samples/s, waiting on reads {r['io_wait_s']:.2f} s)",
        ),
        ("fit process", f"{r['fit_wall_s']:.2f} s wall, peak RSS {r['peak_rss_mb']:.0f} MB"),
        ("full-data loss", f"{r['full_loss']:.5f} (Bayes {r['bayes_loss']:.5f}, gap {gap:+.5f})"),
        (
            "exact, numpy",
            f"{r['exact_sync_s']:.2f} s (loss rel. err {r['exact_sync_loss_rel']:.1e}, "
            f"gradient {r['exact_sync_grad_rel']:.1e})",
        ),
        (
            "exact, dask",
            f"{r['exact_threads_s']:.2f} s = {r['exact_threads_s'] / r['exact_sync_s']:.2f} x numpy "
            f"(loss rel. err {r['exact_threads_loss_rel']:.1e}, gradient {r['exact_threads_grad_rel']:.1e})",
        ),
    ]
    print(f"m={r['m']:,} n_x={r['n_x']} B={r['batch_size']} shuffle={r['shuffle']}")
    for name, value in rows:
        print(f"  {name:<15} {value}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
