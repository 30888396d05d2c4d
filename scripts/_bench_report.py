"""The rows of scripts/bench.py, their targets, and the markdown table and JSON they make.

A ratio compares costs: seconds, MB, or the inverse of a rate (samples/s), so a ratio above 1
always means the row costs more than the row it is compared with. Ratios are taken round by
round (each round ran both rows close together in time) and their median is reported; that
cancels most of the machine's drift between rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any, NamedTuple


class Measured(NamedTuple):
    value: float  # in the row's unit
    extra: dict[str, float] = {}  # noqa: RUF012 (never mutated)


class Target(NamedTuple):
    """The issue's target for a row: its own value, or its cost ratio to row ``vs``, bounded."""

    bound: float
    at_most: bool
    vs: str | None = None
    note: str = ""


def at_most(bound: float, vs: str | None = None, note: str = "") -> Target:
    return Target(bound, True, vs, note)


def at_least(bound: float, vs: str | None = None, note: str = "") -> Target:
    return Target(bound, False, vs, note)


class Row(NamedTuple):
    name: str
    what: str
    measure: Callable[[Any], Measured]  # given the bench's context
    unit: str = "s"  # s, samples/s or MB
    floor: str | None = None  # the row this one cannot beat (or should approach)
    ref: str | None = None  # for a peer: the streamtrain row it is compared with
    targets: tuple[Target, ...] = ()
    stores: tuple[str, ...] = ()


class Results:
    """Every round's value (None where a row was skipped) and extras, per row."""

    def __init__(self, rows: list[Row], rounds: int) -> None:
        self.rows = {row.name: row for row in rows}
        self.values: dict[str, list[float | None]] = {row.name: [None] * rounds for row in rows}
        self.extra: dict[str, list[dict[str, float]]] = {row.name: [{} for _ in range(rounds)] for row in rows}
        self.skipped: dict[str, str] = {}

    def add(self, name: str, round_: int, measured: Measured) -> None:
        self.values[name][round_] = measured.value
        self.extra[name][round_] = measured.extra

    def got(self, name: str | None) -> list[float]:
        return [v for v in self.values.get(name or "", []) if v is not None]

    def ratio(self, name: str, vs: str | None) -> float | None:
        """Median over rounds of cost(name) / cost(vs), or None when either has no value."""
        if vs is None or vs not in self.values:
            return None
        unit = self.rows[name].unit
        pairs = [(a, b) for a, b in zip(self.values[name], self.values[vs]) if a is not None and b is not None]
        if not pairs:
            return None
        return statistics.median(b / a if unit == "samples/s" else a / b for a, b in pairs)

    def check(self, name: str, target: Target) -> tuple[float | None, bool | None]:
        """The compared quantity and whether it meets the target (None: not measured)."""
        got = self.ratio(name, target.vs) if target.vs else _median(self.got(name))
        if got is None:
            return None, None
        return got, got <= target.bound if target.at_most else got >= target.bound


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _number(x: float, unit: str) -> str:
    if unit == "samples/s":
        return f"{x:,.0f}"
    if unit == "MB":
        return f"{x:.0f}"
    return f"{x:.3g}" if x < 10 else f"{x:.1f}"


def _value(results: Results, row: Row) -> str:
    got = results.got(row.name)
    if not got:
        return "–"
    spread = f" [{_number(min(got), row.unit)}–{_number(max(got), row.unit)}]" if len(got) > 1 else ""
    return f"{_number(statistics.median(got), row.unit)}{spread}{_suffix(row.unit)}"


def _suffix(unit: str) -> str:
    return "/s" if unit == "samples/s" else f" {unit}"


def _ratio(x: float | None, vs: str | None = None) -> str:
    return "" if x is None else f"{x:.2f}×" + (f" {vs}" if vs else "")


def _target(results: Results, row: Row, target: Target) -> str:
    got, ok = results.check(row.name, target)
    sign = "≤" if target.at_most else "≥"
    if target.vs:
        goal, shown = f"{sign} {target.bound:g}× {target.vs}", _ratio(got)
    else:
        goal, shown = f"{sign} {_number(target.bound, row.unit)}{_suffix(row.unit)}", ""
    verdict = "not run" if ok is None else "pass" if ok else "**fail**"
    note = f" ({target.note})" if target.note else ""
    return f"{goal}{note}: {shown + ' ' if shown else ''}{verdict}"


def _notes(results: Results, row: Row) -> str:
    if row.name in results.skipped:
        return f"skipped: {results.skipped[row.name]}"
    waits = [e["io_wait_s"] for e in results.extra[row.name] if e.get("io_wait_s") is not None]
    return f"waited on reads {statistics.median(waits):.3g} s" if waits else ""


def table(results: Results) -> str:
    """The markdown table: one line per row."""
    lines = [
        "| row | what | median [min–max] | × floor | × streamtrain | target | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results.rows.values():
        cells = [
            f"`{row.name}`",
            row.what,
            _value(results, row),
            _ratio(results.ratio(row.name, row.floor), row.floor),
            _ratio(results.ratio(row.name, row.ref)),
            "<br>".join(_target(results, row, t) for t in row.targets),
            _notes(results, row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def as_json(results: Results) -> dict[str, Any]:
    """Every raw number, and each target's verdict."""
    out: dict[str, Any] = {}
    for name, row in results.rows.items():
        got = results.got(name)
        out[name] = {
            "what": row.what,
            "unit": row.unit,
            "values": results.values[name],
            "extra": results.extra[name],
            "median": _median(got),
            "min": min(got, default=None),
            "max": max(got, default=None),
            "floor": row.floor,
            "ratio_to_floor": results.ratio(name, row.floor),
            "ref": row.ref,
            "ratio_to_ref": results.ratio(name, row.ref),
            "targets": [
                {**t._asdict(), "got": got_, "met": ok} for t in row.targets for got_, ok in [results.check(name, t)]
            ],
            "skipped": results.skipped.get(name),
        }
    return out
