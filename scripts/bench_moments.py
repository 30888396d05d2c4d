"""--shards K: what becomes of the optimizer's moments after a round (issue 14's "measure it").

    python scripts/bench_moments.py                    # m = 100,000 × 20, about 5 minutes here
    python scripts/bench_moments.py --m 20000 --epochs 2 --quick   # a look in seconds

``fit --shards K`` averages the shards' moments (momentum's v, RMSprop's s, Adam's both) like
their params, in float64 weighted by samples. Two alternatives, run here through the same rounds
(``streamtrain.shards.shard_round``, in this process: results do not depend on where rounds run):

- reset: every round starts from moments of zero (the step count, so Adam's bias correction and
  the learning-rate schedule, goes on);
- local: each shard goes on from its own moments of its last round, never averaged (the client
  would keep K of them).

Each run's exact loss (``streamtrain.loss_and_grad``, float64 sums) after every epoch, for
logistic regression (convex: epochs to within 1e-3 of the L-BFGS optimum J*) and a one-hidden-
layer mlp. Rounds are not timed: the three differ only in the moments a round starts from. The
"averaged" runs are checked against ``streamtrain.fit(shards=K, sync_every=H, scheduler="sync")``
bit for bit before anything is reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
from typing import Any

import numpy as np

import streamtrain
from streamtrain import Cursor, FitConfig, get_model
from streamtrain.binding import for_data
from streamtrain.optim import OptimizerState, optimizer_of, rate_of
from streamtrain.shards import RoundTask, average, shard_chunks, shard_round, shard_seed

VARIANTS = ("averaged", "reset", "local")
OPTIMIZERS = {"momentum": 0.1, "rmsprop": 0.003, "adam": 0.01}  # name: learning rate
MODELS = {"logistic": {}, "mlp": {"hidden": (16,)}}
B, TOL = 100, 1e-3


def rounds_run(source: Any, config: FitConfig, variant: str, epochs: int) -> tuple[dict, list[float]]:
    """Params after ``epochs`` epochs of K shards in rounds of H steps, the moments kept as
    ``variant`` says; the exact loss after each epoch."""
    model = for_data(get_model(config.model, hidden=config.hidden), source)  # an mlp's output from the labels
    K, H, dtype = config.shards, config.sync_every, np.dtype(config.dtype)
    every = math.ceil(source.m / K / B)
    task = RoundTask(source, model, config, (), H, source.m, every)
    params = model.init(source.n_x, source.k, dtype, config.seed)
    fresh = optimizer_of(config, rate_of(config, source.m, every)).init(params)
    opts = [fresh] * K  # the state each shard's next round starts from
    losses = []
    for epoch in range(epochs):
        chunks = shard_chunks(source.n_chunks, K, config.shuffle, config.seed, epoch)
        cursors: list[Cursor | None] = [Cursor(shard_seed(config.seed, K, k), epoch) for k in range(K)]
        tasks = [dataclasses.replace(task, chunks=tuple(int(c) for c in mine)) for mine in chunks]
        while any(c is not None for c in cursors):
            results = [None if c is None else shard_round(tasks[k], params, opts[k], c) for k, c in enumerate(cursors)]
            done = [r for r in results if r is not None and r.samples]
            if not done:
                break
            step = opts[0].step + max(r.steps for r in done)
            params, v, s = average(done, dtype)
            if variant == "averaged":
                opts = [OptimizerState(step, v, s)] * K
            elif variant == "reset":
                opts = [OptimizerState(step, *(_zeros(d) for d in (v, s)))] * K
            else:  # local: a shard's own moments, the step count shared
                opts = [OptimizerState(step, r.v, r.s) if r is not None else o for r, o in zip(results, opts)]
            cursors = [_going_on(r, len(c)) for r, c in zip(results, chunks)]
        loss, _ = streamtrain.loss_and_grad(source, params, model=model, l2=config.l2, scheduler="sync")
        losses.append(float(loss))
    return params, losses


def _zeros(moments: dict) -> dict:
    return {k: np.zeros_like(a) for k, a in moments.items()}


def _going_on(result: Any, n_chunks: int) -> Cursor | None:
    """As streamtrain._sharded_run: a shard's cursor for its next round, None once its epoch is done."""
    if result is None or result.cursor.position >= n_chunks or not result.steps:
        return None
    return result.cursor


def check_averaged(path: str, source: Any, config: FitConfig, epochs: int) -> None:
    """The "averaged" rounds here are fit's rounds, bit for bit: the comparison is of like with like."""
    params, _ = rounds_run(source, config, "averaged", epochs)
    fitted = streamtrain.fit(path, config, epochs=epochs, scheduler="sync", progress=False).params
    if not all(np.array_equal(params[k], fitted[k]) for k in fitted):
        raise SystemExit(f"bench_moments: the averaged rounds differ from fit's ({config.model}, {config.optimizer})")


def first_within(losses: list[float], optimum: float) -> float:
    return next((e for e, loss in enumerate(losses, 1) if loss - optimum < TOL), math.inf)


def measure(path: str, args: argparse.Namespace) -> dict[str, Any]:
    optimum = streamtrain.fit(path, optimizer="lbfgs", progress=False).history[-1].loss
    out: dict[str, Any] = {"optimum": optimum, "runs": []}
    with streamtrain.open_source(path) as source:
        for model, extra in MODELS.items():
            for optimizer, lr in OPTIMIZERS.items():
                for K in args.shards:
                    for H in args.sync_every:
                        config = FitConfig(model=model, optimizer=optimizer, lr=lr, batch_size=B, shards=K,
                                           sync_every=H, **extra)  # fmt: skip
                        if not args.quick and (args.shards[0], args.sync_every[0]) == (K, H):
                            check_averaged(path, source, config, 1)
                        row = {"model": model, "optimizer": optimizer, "lr": lr, "K": K, "H": H}
                        for variant in VARIANTS:
                            row[variant] = rounds_run(source, config, variant, args.epochs)[1]
                        out["runs"].append(row)
                        print(f"bench_moments: {model} {optimizer} K={K} H={H}", file=sys.stderr)
    return out


def table(record: dict[str, Any]) -> str:
    optimum, epochs = record["optimum"], record["epochs"]
    lines = [
        f"m = {record['m']:,} × {record['n_x']}, B = {B}, {epochs} epochs; J* = {optimum:.6f} (logistic, L-BFGS). "
        "Each cell: the exact loss after the last epoch, and for logistic the epochs to J* + 1e-3 (– : not within "
        f"{epochs}).",
        "",
        "| model | optimizer (lr) | K | H | " + " | ".join(VARIANTS) + " |",
        "|---|---|---|---|" + "---|" * len(VARIANTS),
    ]
    for r in record["runs"]:
        cells = []
        for variant in VARIANTS:
            losses = r[variant]
            reached = first_within(losses, optimum) if r["model"] == "logistic" else None
            at = "" if reached is None else f" ({'–' if math.isinf(reached) else reached})"
            cells.append(f"{losses[-1]:.5f}{at}")
        lines.append(f"| {r['model']} | {r['optimizer']} ({r['lr']:g}) | {r['K']} | {r['H']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, default=100_000, help="samples (default 100,000; chunks of m / 20)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--shards", type=int, nargs="+", default=[2, 4], metavar="K")
    p.add_argument("--sync-every", type=int, nargs="+", default=[10, 100, 1000], metavar="H")
    p.add_argument("--quick", action="store_true", help="skip the check against fit")
    p.add_argument("--json", help="where the numbers go (default: none)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="streamtrain-bench-moments-") as scratch:
        path = os.path.join(scratch, "d.zarr")
        streamtrain.make_data(path, m=args.m, n_x=20, chunk=max(1, args.m // 20), seed=7, progress=False)
        record = {"m": args.m, "n_x": 20, "epochs": args.epochs, **measure(path, args)}
    print(table(record))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
