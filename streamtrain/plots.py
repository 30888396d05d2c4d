"""Learning curves: the losses of one or several runs against the samples they have seen, on one figure.

``plot(runs, out)`` reads metrics files written by ``fit(metrics=...)`` (``fit --metrics``) and
draws each run's training loss and, when they were measured, its exact and validation losses
into one PNG. Batch gradient descent, mini-batch and SGD on the same store, drawn together,
show what the batch size trades: progress per sample against noise.

What a metrics file holds, one JSON object a line (keys not named here are ignored):
- epoch records (``EpochRecord.to_dict``): ``epoch``, ``loss``, ``samples`` (stepped over in that
  epoch: m for a full-batch step, m per pass for L-BFGS), and ``exact_loss``,
  ``validation_loss`` when measured. ``grad_norm`` marks a record whose ``loss`` is the exact J
  (full-batch steps, L-BFGS).
- step records (they have a ``step``): ``step``, ``epoch``, ``samples_seen`` (so far) and the
  ``loss`` of that batch, drawn as a thin, lighter line under the run's epoch points.

The samples seen after an epoch are the running sum of ``samples`` in epoch order; losses
measured over an epoch's samples (the mean mini-batch loss) or after it (exact, validation)
are drawn there. A full-batch step records J *before* its step, so it is drawn at the samples
seen before the epoch (0 for the first): batch gradient descent is not shown a step late.

``fit`` appends to a metrics file, so a file may hold several runs: a record of epoch 1 that
follows a finished epoch, a later epoch or a later step starts the next run. A record that
repeats an epoch or step of its run (a run resumed from a checkpoint after a hard kill) replaces
the earlier one.

matplotlib is an optional extra (``pip install 'streamtrain[plot]'``), imported only to draw,
and only its object API on an Agg canvas: no screen is needed, and a caller's pyplot backend and
figures are left alone.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ._errors import ConfigError, DataError
from .checkpoint import atomic_write
from .declared import Declared, option, positive, positive_int
from .outputs import check_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["LOG_X", "SERIES", "Curve", "PlotConfig", "Run", "curves", "plot", "read_runs"]

MIN_PIXELS, MAX_PIXELS = 64, 2**14  # a side of the image; matplotlib itself refuses 2**16
MAX_LINE_BYTES = 2**20  # a longer "line" is not a metrics record (a binary file, a wrong path)
DECADES = 2  # log_x auto: a log axis when the samples seen span more than this many powers of 10

LOG_X = {
    "auto": f"when the samples seen span more than {DECADES} decades",
    "on": "always",
    "off": "never",
}


def _title(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be text, got {value!r}")
    return value


@dataclass(frozen=True)
class PlotConfig(Declared):
    """plot's options: the figure, not the data (the metrics files and the image are arguments)."""

    title: str | None = option(None, "a title above the curves", check=_title, parse=str, metavar="T")
    log_x: str = option("auto", "log-scale x axis: " + ", ".join(f"{k}: {v}" for k, v in LOG_X.items()), choices=LOG_X)
    width: float = option(8.0, "figure width in inches", check=positive, metavar="IN")
    height: float = option(5.0, "figure height in inches", check=positive, metavar="IN")
    dpi: int = option(100, "pixels per inch: the image is width*dpi by height*dpi pixels", check=positive_int)

    def _derived(self) -> dict[str, Any]:
        for side in ("width", "height"):
            pixels = getattr(self, side) * self.dpi
            if not MIN_PIXELS <= pixels <= MAX_PIXELS:
                raise ConfigError(
                    f"{side} * dpi must be {MIN_PIXELS} to {MAX_PIXELS:,} pixels, got {getattr(self, side):g} * "
                    f"{self.dpi} = {pixels:,.0f}"
                )
        return {}


# -- reading metrics files ----------------------------------------------------------------------


@dataclass
class Run:
    """One run of a metrics file: its epoch and step records by number (a later line replaces an earlier)."""

    name: str
    epochs: dict[int, dict[str, Any]] = field(default_factory=dict)
    steps: dict[int, dict[str, Any]] = field(default_factory=dict)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Need(NamedTuple):
    """What a record's value must be: the check, and how an error says it."""

    ok: Callable[[Any], bool]
    what: str


COUNT = Need(lambda v: _whole(v) and v >= 1, "a count from 1")
SAMPLES = Need(lambda v: _whole(v) and v >= 0, "a whole number >= 0")
FINITE = Need(_finite, "a finite number")
_EPOCH_KEYS = {"epoch": COUNT, "loss": FINITE, "samples": SAMPLES}
_STEP_KEYS = {"step": COUNT, "epoch": COUNT, "samples_seen": SAMPLES, "loss": FINITE}
_MEASURED = ("exact_loss", "validation_loss")  # null (to_json's infinity) or absent: not measured


def read_runs(path: str | os.PathLike, name: str | None = None) -> list[Run]:
    """The runs of one metrics file, in order, named ``name`` (default: the file's stem), then
    ``name (2)``... when it holds several. DataError names the file and line of a bad record."""
    path = os.fspath(path)
    name = name or os.path.splitext(os.path.basename(path))[0]
    runs: list[Run] = []
    previous: dict[str, Any] | None = None
    with open(path, "rb") as f:
        for n, line in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
            if not line.strip():  # a blank line, as an editor may leave at the end
                continue
            record = _record(line, f"{path}, line {n}")
            if not runs or _starts_a_run(record, previous):
                runs.append(Run(name))
            run, previous = runs[-1], record
            if "step" in record:
                run.steps[record["step"]] = record
            else:
                run.epochs[record["epoch"]] = record
    if not runs:
        raise DataError(f"{path}: holds no records (an empty metrics file)")
    if len(runs) > 1:
        for i, run in enumerate(runs, 1):
            run.name = f"{name} ({i})"
    return runs


def _record(line: bytes, where: str) -> dict[str, Any]:
    """One line as an epoch or step record with its keys checked; DataError saying ``where``."""
    if len(line) > MAX_LINE_BYTES:
        raise DataError(f"{where}: longer than {MAX_LINE_BYTES:,} bytes: not a metrics file")
    try:
        record = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8 text
        record = None
    if not isinstance(record, dict):
        shown = line.decode("utf-8", "replace").strip()
        raise DataError(f"{where}: not a JSON object: {shown[:60]!r}{'...' if len(shown) > 60 else ''}")
    kind, keys = ("step", _STEP_KEYS) if "step" in record else ("epoch", _EPOCH_KEYS)
    for key, need in keys.items():
        if key not in record:
            raise DataError(f"{where}: {kind} record without {key!r} (needs {', '.join(keys)})")
        if not need.ok(record[key]):
            raise DataError(f"{where}: {key} must be {need.what}, got {record[key]!r}")
    for key in _MEASURED:
        if record.get(key) is not None and not FINITE.ok(record[key]):
            raise DataError(f"{where}: {key} must be {FINITE.what}, got {record[key]!r}")
    return record


def _starts_a_run(record: dict[str, Any], previous: dict[str, Any] | None) -> bool:
    """Whether ``record`` begins a new run appended after ``previous``: it is of epoch 1 and
    follows a finished epoch, a later epoch, or a later step of epoch 1."""
    if previous is None or record["epoch"] != 1:
        return False
    if "step" not in previous or previous["epoch"] > 1:
        return True
    return "step" in record and record["step"] <= previous["step"]


# -- curves -------------------------------------------------------------------------------------


class Curve(NamedTuple):
    label: str
    run: int  # which run: its colour
    x: list[int]  # samples seen
    y: list[float]
    style: dict[str, Any]  # matplotlib's keywords


Point = tuple[int, float] | None  # (samples seen, loss)


def _training(r: dict[str, Any], before: int, after: int) -> Point:
    return None if "grad_norm" in r else (after, r["loss"])


def _exact(r: dict[str, Any], before: int, after: int) -> Point:
    if "grad_norm" not in r:
        return None if r.get("exact_loss") is None else (after, r["exact_loss"])
    return (after if "passes" in r else before, r["loss"])  # L-BFGS: J at the point it accepted


def _validation(r: dict[str, Any], before: int, after: int) -> Point:
    return None if r.get("validation_loss") is None else (after, r["validation_loss"])


class Series(NamedTuple):
    """A curve of each run: its name, its point of an epoch record (given the samples seen before
    and after the epoch), and its look."""

    name: str
    point: Callable[[dict[str, Any], int, int], Point]
    style: dict[str, Any]


SERIES = (
    Series("training loss", _training, dict(marker="o", markersize=4, linestyle="-")),
    Series("exact loss", _exact, dict(marker="s", markersize=4, linestyle="--")),
    Series("validation loss", _validation, dict(marker="^", markersize=4, linestyle=":")),
)
STEP_STYLE = dict(linewidth=0.8, alpha=0.35)  # thin and light: many noisy batch losses under the epoch points


def curves(runs: Sequence[Run]) -> list[Curve]:
    """The curves of ``runs``: their step losses and each of ``SERIES`` they have points of."""
    out = []
    for i, run in enumerate(runs):
        if run.steps:
            steps = [run.steps[s] for s in sorted(run.steps)]
            x, y = [r["samples_seen"] for r in steps], [r["loss"] for r in steps]
            out.append(Curve(f"{run.name}: training loss per step", i, x, y, STEP_STYLE))
        seen = 0
        points: list[list[Point]] = [[] for _ in SERIES]
        for epoch in sorted(run.epochs):
            r = run.epochs[epoch]
            before, seen = seen, seen + r["samples"]
            for series, kept in zip(SERIES, points):
                kept.append(series.point(r, before, seen))
        for series, kept in zip(SERIES, points):
            drawn = [p for p in kept if p is not None]
            if drawn:
                x, y = [p[0] for p in drawn], [p[1] for p in drawn]
                out.append(Curve(f"{run.name}: {series.name}", i, x, y, series.style))
    return out


def _log_x(mode: str, drawn: Sequence[Curve]) -> bool:
    """Whether x is log-scaled: ``on``, ``off``, or for ``auto`` when the samples seen span more
    than two decades, where a linear axis would crush the first hundredth (where SGD makes most of
    its progress) against the y axis. Zero (a full-batch run's start) has no place on a log axis."""
    if mode != "auto":
        return mode == "on"
    xs = [x for c in drawn for x in c.x if x > 0]
    return bool(xs) and max(xs) > 10**DECADES * min(xs)


# -- drawing ------------------------------------------------------------------------------------


def plot(
    runs: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    config: PlotConfig | None = None,
    /,
    *,
    overwrite: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Draw the loss curves of the metrics files ``runs`` (see the module docstring) into the PNG
    ``out``; return what was written: out, runs (how many), curves (their labels), width and
    height in pixels, log_x.

    ``options`` are ``PlotConfig``'s (title, log_x, width, height, dpi), or change ``config``'s.
    ``out`` is checked before any file is read; an existing one is replaced only with
    ``overwrite`` and only if it is a PNG image, and the image is written atomically.
    """
    c = PlotConfig.from_options({**(config.to_dict() if config else {}), **options})
    paths = [os.fspath(runs)] if isinstance(runs, (str, os.PathLike)) else [os.fspath(p) for p in runs]
    if not paths:
        raise ConfigError("plot needs at least one metrics file")
    target = check_output(out, "image", data=paths[0], overwrite=overwrite)
    for path in paths[1:]:  # the image may be none of the files read
        check_output(target, "image", data=path, overwrite=overwrite)
    if not target.lower().endswith(".png"):
        raise ConfigError(f"{target}: plot writes PNG images; name the output *.png")
    _matplotlib()  # missing: said before any file is read
    found = [run for path, name in zip(paths, _names(paths)) for run in read_runs(path, name)]
    drawn = curves(found)
    log_x = _log_x(c.log_x, drawn)
    figure = _figure(drawn, c, log_x)
    atomic_write(target, lambda f: figure.savefig(f, format="png"))
    width, height = figure.canvas.get_width_height()
    labels = [curve.label for curve in drawn]
    return {"out": target, "runs": len(found), "curves": labels, "width": width, "height": height, "log_x": log_x}


def _names(paths: Sequence[str]) -> list[str]:
    """The legend's name of each file: its stem, or where two stems are the same, its path without suffix."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    return [s if stems.count(s) == 1 else os.path.splitext(os.path.normpath(p))[0] for s, p in zip(stems, paths)]


def _matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("plot needs matplotlib: pip install 'streamtrain[plot]'") from None


def _figure(drawn: Sequence[Curve], c: PlotConfig, log_x: bool) -> Figure:
    """The curves on one figure, on an Agg canvas of its own."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    figure = Figure(figsize=(c.width, c.height), dpi=c.dpi, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for curve in drawn:
        ax.plot(curve.x, curve.y, label=curve.label, color=f"C{curve.run % 10}", **curve.style)
    if log_x:
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 1M: samples run to millions
    ax.set_xlabel("samples seen")
    ax.set_ylabel("loss")
    if c.title:
        ax.set_title(c.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure
