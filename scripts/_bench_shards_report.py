"""scripts/bench_shards.py's tables, and its projection to 8-64 workers on paper.

Values are medians over rounds [min–max]; a ratio to another row is the median of per-round
ratios of their times (scripts/_bench_report.py's Results.ratio).

The projection: an epoch of m samples on W workers, K = W shards taking rounds of H steps of B:

    T(W) = m·c_w / W  +  R · (s + L + (W − 2)·(d + 1/4000))        R = ⌈m / (W·B·H)⌉ rounds

against one process's m·c, where
- c: seconds per sample of one process (fit's epoch / m);
- c_w: seconds per sample of one shard on one worker (K1.w1's epoch / m, its few rounds' costs
  in it). Both read as fast as this machine's page cache (object storage is slower);
- s: a round's start-up on its worker: the task of a one-step round on one worker alone
  (round.w1), less one step (B·c): the shard's stream opened again at its cursor, which re-reads
  the chunk it is in;
- L: the rest of a one-step round on 2 workers (round.w2: broadcast scatter, submit, gather,
  the average);
- d: what one more worker adds to the broadcast scatter (round.w2's less round.w1's, at least 0);
- 1/4000 s: the scheduler's cost per task (Dask's ~4,000 tasks/s, issue 14; not measured here).
Nothing here models a slow worker (the barrier waits for the slowest) or the network's bandwidth.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from _bench_report import Results, Row

PROJECTED_M = 10**9  # a billion samples × 100 features: the user
WORKERS = (8, 16, 32, 64)
TASK_S = 1 / 4000


def only(results: Results, rows: list[Row]) -> Results:
    """The results of some rows, as a Results of their own (one table)."""
    part = Results(rows, len(next(iter(results.values.values()))))
    for row in rows:
        part.values[row.name], part.extra[row.name] = results.values[row.name], results.extra[row.name]
    return part


def _extra(results: Results, name: str, key: str) -> list[float]:
    return [e[key] for e in results.extra[name] if key in e]


def _med(values: list[float], fmt: str = "{:.3g}", never: str = "") -> str:
    """Median [min–max]; ``never`` where every value is inf (a run that never got there)."""
    if not values:
        return "–"
    if any(math.isinf(v) for v in values):
        return never if all(math.isinf(v) for v in values) else f"inf in {sum(map(math.isinf, values))} rounds"
    low, high = fmt.format(min(values)), fmt.format(max(values))
    spread = f" [{low}–{high}]" if low != high else ""
    return fmt.format(statistics.median(values)) + spread


def from_json(rows: list[Row], record: dict[str, Any]) -> Results:
    """The Results a --json file holds (its nulls: runs that never got to J*)."""
    results = Results(rows, record["rounds"])
    for row in rows:
        saved = record["rows"][row.name]
        results.values[row.name] = [math.inf if v is None else v for v in saved["values"]]
        results.extra[row.name] = [{k: math.inf if v is None else v for k, v in e.items()} for e in saved["extra"]]
    return results


def _workers(name: str) -> int:
    return int(name.split(".w")[1].split(".")[0]) if ".w" in name else 1


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def epochs_table(results: Results) -> str:
    """One epoch on the large store: the single process (fit), then K shards on w workers."""
    lines = [
        "| row | what | s per epoch | samples/s | rounds | at the barrier | × fit's time | efficiency "
        "T₁/(k·T_k) | vs K1.w1 | tasks | bytes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results.rows.items():
        k, ratio, to_k1 = _workers(name), results.ratio(name, "fit"), results.ratio(name, "K1.w1")
        cluster = name != "fit"
        seconds = results.got(name)
        barrier = [100 * b / t for b, t in zip(_extra(results, name, "barrier_s"), seconds)]
        cells = [
            f"`{name}`", row.what, _med(seconds) + " s", _med(_extra(results, name, "samples_per_s"), "{:,.0f}"),
            _med(_extra(results, name, "rounds"), "{:.0f}") if cluster else "",
            _med(barrier, "{:.0f}") + "%" if cluster else "",
            "" if ratio is None else f"{ratio:.2f}×", "" if ratio is None else f"{1 / (k * ratio):.2f}",
            "" if to_k1 is None or name in ("fit", "K1.w1") else f"{1 / (k * to_k1):.2f}",
            _med(_extra(results, name, "tasks"), "{:.0f}"), _med(_extra(results, name, "bytes"), "{:,.0f}"),
        ]  # fmt: skip
        lines.append(_row(cells))
    return "\n".join(lines)


def optimum_table(results: Results, max_epochs: int) -> str:
    """Training until J* on the convergence store: epochs, seconds, and what an epoch took."""
    lines = [
        "| row | what | epochs to J* + 1e-3 | s to J* | × fit's | s per epoch | rounds per epoch | tasks per "
        "epoch | bytes per epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    never = f"not in {max_epochs}"
    for name, row in results.rows.items():
        ratio = results.ratio(name, "opt.fit")
        cells = [
            f"`{name}`", row.what, _med(_extra(results, name, "epochs"), "{:.0f}", never),
            _med(results.got(name), never=never), "" if ratio is None or math.isinf(ratio) else f"{ratio:.2f}×",
            _med(_extra(results, name, "epoch_s")), _med(_extra(results, name, "rounds"), "{:.0f}"),
            _med(_extra(results, name, "tasks"), "{:.0f}"), _med(_extra(results, name, "bytes"), "{:,.0f}"),
        ]  # fmt: skip
        lines.append(_row(cells))
    return "\n".join(lines)


def costs_table(results: Results) -> str:
    """Rounds of one step, and the Dask calls a round makes, in milliseconds."""
    lines = [
        "| row | what | round | its slowest task | the rest (overhead) | broadcast scatter of the params "
        "| a no-op task |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = ("task_s", "overhead_s", "scatter_s", "noop_task_s")
    for name, row in results.rows.items():
        columns = [results.got(name), *(_extra(results, name, key) for key in keys)]
        lines.append(_row([f"`{name}`", row.what, *(_med([1e3 * v for v in c]) + " ms" for c in columns)]))
    return "\n".join(lines)


def sensitivity_table(epochs: dict[str, dict[str, float]], max_epochs: int) -> str:
    lines = ["| lr | one process | K = 2 | K = 4 |", "|---|---|---|---|"]
    for lr, row in epochs.items():
        lines.append(_row([lr, *(f"> {max_epochs}" if math.isinf(e) else f"{e:.0f}" for e in row.values())]))
    return "\n".join(lines)


# -- the projection -------------------------------------------------------------------------------


def _median_extra(results: Results, name: str, key: str) -> float:
    return statistics.median(_extra(results, name, key))


def costs(results: Results, B: int, m: int) -> dict[str, float]:
    """c, c_w, s, L, d (see the module's docstring) from the rows fit, K1.w1 (epochs of m samples)
    and round.w*."""
    c = statistics.median(results.got("fit")) / m
    scatter = {w: _median_extra(results, f"round.w{w}", "scatter_s") for w in (1, 2)}
    return {
        "c": c,
        "c_w": statistics.median(results.got("K1.w1")) / m,
        "s": max(_median_extra(results, "round.w1", "task_s") - B * c, 0.0),
        "L": _median_extra(results, "round.w2", "overhead_s"),
        "d": max(scatter[2] - scatter[1], 0.0),
    }


def epoch_seconds(k: dict[str, float], W: int, B: int, H: int, m: int = PROJECTED_M) -> tuple[int, float, float]:
    """Rounds, seconds of steps and seconds of round costs of an epoch on W workers."""
    rounds = math.ceil(m / (W * B * H))
    return rounds, m * k["c_w"] / W, rounds * (k["s"] + k["L"] + (W - 2) * (k["d"] + TASK_S))


def project_table(results: Results, B: int, H_default: int, m: int) -> str:
    """The markdown table: one process, then W workers at the default H and at H = 10 and 1."""
    k = costs(results, B, m)
    alone = PROJECTED_M * k["c"]
    lines = [
        f"Projected to m = {PROJECTED_M:,} × 100, from c = {k['c'] * 1e9:.0f} ns per sample in one process, "
        f"c_w = {k['c_w'] * 1e9:.0f} ns on a worker, a round's start-up "
        f"s = {k['s'] * 1e3:.1f} ms, its overhead L = {k['L'] * 1e3:.1f} ms, d = {k['d'] * 1e3:.2f} ms per "
        f"worker more, {TASK_S * 1e3:.2f} ms per task:",
        "",
        "| workers W | sync_every H | rounds per epoch | steps (m·c_w/W) | round costs | epoch | speed-up over one "
        "process | efficiency |",
        "|---|---|---|---|---|---|---|---|",
        f"| one process | – | – | {alone:,.0f} s | – | {alone:,.0f} s | 1 | 1 |",
    ]
    for H in (H_default, 10, 1):
        for W in WORKERS:
            rounds, steps, overhead = epoch_seconds(k, W, B, H)
            total = steps + overhead
            lines.append(
                f"| {W} | {H} | {rounds:,} | {steps:,.1f} s | {overhead:,.1f} s | {total:,.1f} s "
                f"| {alone / total:.2g}× | {alone / (W * total):.2g} |"
            )
    return "\n".join(lines)
