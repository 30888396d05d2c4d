"""The commands that judge a trained model on a store: evaluate and compare (see ``cli``)."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from .cli import add_arrays, add_options, open_store, options_of

__all__ = ["EVALUATE_OPTIONS", "add_model_commands"]

# evaluate's options, declared by compare (which has them all); missing_chunks is the opening's.
EVALUATE_OPTIONS = ("scheduler", "missing_chunks", "weights", "class_weight", "unweighted")


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    """The parsers of evaluate and compare, under ``sub``."""
    from .compare import CompareConfig

    e = sub.add_parser(
        "evaluate",
        help="exact loss and accuracy of a model over a whole store",
        description="Exact mean loss and accuracy of a model over every sample of a store, streamed chunk by chunk.",
    )
    e.add_argument("model", metavar="MODEL", help="model file written by fit")
    e.add_argument("data", metavar="DATA", help="Zarr group or HDF5 file")
    add_options(e, CompareConfig, only=EVALUATE_OPTIONS)
    add_arrays(e)
    e.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    e.set_defaults(run=_evaluate)

    c = sub.add_parser(
        "compare",
        help="mini-batch gradients vs the exact full-batch gradient",
        description="At a model's parameters: the exact loss J and gradient, and for each batch "
        "size how well mini-batch gradients match it (cosine, relative error), the "
        "gradient noise scale B_noise and what it means for the batch size.",
    )
    c.add_argument("model", metavar="MODEL", help="model file written by fit")
    c.add_argument("data", metavar="DATA", help="Zarr group or HDF5 file")
    add_options(c, CompareConfig)
    add_arrays(c)
    c.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    c.set_defaults(run=_compare)


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate
    from .full_batch import check_scheduler
    from .records import to_json

    check_scheduler(args.scheduler)  # before the data is opened
    t0 = time.perf_counter()
    with open_store(args) as source:
        options = {k: getattr(args, k) for k in EVALUATE_OPTIONS if k != "missing_chunks"}
        result = evaluate(source, args.model, **options)
    result["seconds"] = time.perf_counter() - t0
    if args.json:
        print(to_json(result))
    else:
        accuracy = f"  accuracy {result['accuracy']:.4f}" if "accuracy" in result else ""
        weighted = f", weighted by {result['weighted']}" if "weighted" in result else ""
        print(
            f"{args.data}: loss {result['loss']:.6f}{accuracy}  over {result['m']:,} samples "
            f"({result['seconds']:.2f} s, {args.scheduler}{weighted})"
        )
        for line in _metric_lines(result):
            print(f"  {line}")
    return 0


def _metric_lines(r: dict[str, Any]) -> list[str]:
    """evaluate's metrics (see ``streamtrain.metrics``) as text lines."""
    if "roc_auc" in r:
        return [f"ROC-AUC {r['roc_auc']:.4f}" if r["roc_auc"] is not None else "ROC-AUC: one class only"]
    if "rmse" in r:
        per = "" if len(r["rmse"]) == 1 else "  (per output: RMSE " + " ".join(f"{v:.4g}" for v in r["rmse"])
        per += "" if len(r["rmse"]) == 1 else "; R² " + " ".join(f"{v:.4f}" for v in r["r2"]) + ")"
        return [f"RMSE {r['rmse_mean']:.4g}  R² {r['r2_mean']:.4f}{per}"]
    pairs = "  ".join(f"{j}: {p:.3f}/{q:.3f}" for j, (p, q) in enumerate(zip(r["precision"], r["recall"])))
    spec = ",.1f" if any(isinstance(v, float) for row in r["confusion"] for v in row) else ","  # weights summed
    width = max(len(f"{v:{spec}}") for row in r["confusion"] for v in row)
    rows = ["  ".join(f"{v:>{width}{spec}}" for v in row) for row in r["confusion"]]
    return [f"precision/recall by class  {pairs}", "confusion (rows: true class, columns: predicted):", *rows]


def _compare(args: argparse.Namespace) -> int:
    from .compare import CompareConfig, compare
    from .records import to_json

    options = options_of(args, CompareConfig)
    CompareConfig.from_options(options)  # checked before the data is opened
    with open_store(args) as source:
        report = compare(source, args.model, **options)
    print(to_json(report) if args.json else _compare_table(report, args.model))
    return 0


def _compare_table(r: dict, model_path: str) -> str:
    lines = [
        f"{r['data']}: m={r['m']:,}; {r['model']} model {model_path}, l2 {r['l2']}"
        + (f", weighted by {r['weighted']}" if r["weighted"] else ""),
        f"exact J = {r['loss']:.6f}   |grad J| = {r['grad_norm']:.4e}   ({r['scheduler']}, {r['exact_seconds']:.2f} s)",
        f"per-sample gradient variance tr(S) = {r['trace_cov']:.4e}   "
        f"noise scale B_noise = tr(S)/|grad J|^2 = {_bounded(r['noise_scale'], ',.1f')}",
        "",
        f"mini-batches drawn as training draws them (shuffle {r['shuffle']}, seed {r['seed']}):",
        f"{'B':>9} {'batches':>8} {'cos mean':>9} {'cos min':>9} {'rel.err':>9} {'if random':>10}",
    ]
    for row in r["batch_sizes"]:
        cells = [_bounded(row[k], ".4f") for k in ("cosine_mean", "cosine_min", "rel_error_rms", "rel_error_random")]
        lines.append(
            f"{row['batch_size']:>9,} {row['batches']:>8} {cells[0]:>9} {cells[1]:>9} {cells[2]:>9} {cells[3]:>10}"
        )
    lines.append("rel.err = rms of |g_B - grad J| / |grad J|; 'if random': its expected value for random batches")
    lines += [""] + [f"- {line}" for line in r["advice"]]
    return "\n".join(lines)


def _bounded(x: float | None, spec: str) -> str:
    """A number of a compare report as text: "unbounded" for inf (it is null in JSON), "n/a" for None."""
    return "n/a" if x is None else "unbounded" if math.isinf(x) else format(x, spec)
