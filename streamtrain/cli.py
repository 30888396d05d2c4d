"""``streamtrain`` on the command line: parse, call the library, print, map errors to exit codes.

Every option's flag, type, default, choices and help come from its declaration
(``FitConfig``, ``CompareConfig``, ``DataConfig``; see ``streamtrain.config``), so the command
line and the library cannot drift apart. Exit codes are listed in ``EXIT_CODES`` (shown by
``streamtrain --help`` and in the README). zarr and h5py are imported by the commands that open
a store, so ``streamtrain --help`` stays instant; dask is never imported here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import EpochRecord
    from .sources import ChunkSource

__all__ = [
    "EXIT_CODES",
    "PROG",
    "add_arrays",
    "add_options",
    "add_progress",
    "add_storage_options",
    "main",
    "options_of",
    "storage_options_of",
]

PROG = "streamtrain"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143
# evaluate's options, declared by compare (which has them all); missing_chunks is the opening's.
EVALUATE_OPTIONS = ("scheduler", "missing_chunks", "weights", "class_weight", "unweighted")
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: "a problem with the data (NaN/inf in it too), a file or an option value, named on one line",
    EXIT_USAGE: "a usage error: unknown command or flag, a value of the wrong type",
    EXIT_DIVERGED: "diverged: training's loss became non-finite or ran away, or a model's loss is not finite",
    EXIT_INTERRUPTED: "interrupted (SIGINT, Ctrl-C)",
    EXIT_TERMINATED: "terminated (SIGTERM)",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ._errors import DivergedError, UserError

    # numpy's overflow/invalid warnings (from Dask's threads too) would break the one-line
    # message: every result is checked to be finite, and a non-finite one is an error naming why.
    warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
    try:
        with warnings_as_lines():  # such as chunks of weights never written, met as training opens them
            return args.run(args)
    except DivergedError as e:
        return _fail(str(e), EXIT_DIVERGED)
    except UserError as e:
        return _fail(str(e))
    except OSError as e:  # unwritable output folder, disk full, ...
        return _fail(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
    except KeyboardInterrupt as e:  # Ctrl-C, or a signal that stopped training after a step (_signals.Interrupted)
        signum = getattr(e, "signum", 2)
        print(f"{PROG}: interrupted{f' by {e}' if str(e) else ''}", file=sys.stderr)
        return 128 + signum


def _fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
    return code


# What str.splitlines breaks a line at: a path or value given on the command line may hold one.
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def _one_line(text: str) -> str:
    """``text`` with its line-breaking characters escaped (``\\x1e``), so that a message stays one line."""
    return "".join(repr(ch)[1:-1] if ch in _LINE_BREAKS else ch for ch in text)


def _exit_codes_help() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:<5}{meaning}" for code, meaning in EXIT_CODES.items())


def _parser() -> argparse.ArgumentParser:
    from ._cli_data import add_data_commands
    from .compare import CompareConfig
    from .config import CheckpointConfig, FitConfig

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train models on column-wise chunked Zarr/HDF5 data far larger than RAM, streamed in mini-batches.",
        epilog=_exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(title="commands", metavar="COMMAND", required=True)

    f = sub.add_parser(
        "fit",
        help="train a model by streaming a store",
        description="Train a model by streaming mini-batches X{t}, Y{t} from a store; "
        "prints one line per epoch and where the model file went.",
    )
    f.add_argument("data", metavar="DATA", help="Zarr group (directory) or HDF5 file with X (n_x, m), Y (1, m)")
    add_options(f, FitConfig)
    f.add_argument("--init", metavar="MODEL", help="warm start from this model file")
    f.add_argument("--out", metavar="MODEL.npz", help="model file to write (default: DATA's name + -model.npz)")
    f.add_argument("--metrics", metavar="FILE.jsonl", help="append one JSON line per epoch here")
    add_options(f, CheckpointConfig)
    f.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --checkpoint-dir (from the start if there is none yet); "
        "the result is the same as a run never stopped",
    )
    add_arrays(f)
    add_progress(f)
    f.set_defaults(run=_fit)

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

    add_data_commands(sub)
    return p


def add_options(parser: argparse.ArgumentParser, config: type, only: Sequence[str] | None = None) -> None:
    """One flag per declared option of ``config`` (see ``streamtrain.config``): its name, type,
    default, choices and help all come from the declaration."""
    for f in dataclasses.fields(config):
        if only is not None and f.name not in only:
            continue
        opt = f.metadata["option"]
        shown = "%(default)s" if f.default is not None else opt.derived
        if isinstance(f.default, bool):  # a switch: --name / --no-name
            flag = opt.flag or "--" + f.name.replace("_", "-")
            switch, help_text = argparse.BooleanOptionalAction, f"{opt.help} (default: %(default)s)"
            parser.add_argument(flag, dest=f.name, default=f.default, action=switch, help=help_text)
            continue
        parser.add_argument(
            opt.flag or "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=f.default,
            type=opt.parse or str,
            choices=opt.choices,
            nargs=opt.nargs,
            metavar=opt.metavar,
            help=f"{opt.help} (default: {shown})" if shown else opt.help,
        )


def options_of(args: argparse.Namespace, config: type) -> dict[str, Any]:
    """The declared options of ``config`` among the parsed arguments."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config) if hasattr(args, f.name)}


def add_arrays(p: argparse.ArgumentParser) -> None:
    p.add_argument("--x", default="X", metavar="NAME", help="array holding X (default: %(default)s)")
    p.add_argument("--y", default="Y", metavar="NAME", help="array holding Y (default: %(default)s)")
    p.add_argument(
        "--layout",
        default="columns",
        choices=("columns", "rows"),
        help="columns: X (n_x, m), Y (k, m), one sample per column; rows: a store written samples-first, "
        "X (m, n_x) chunked along its rows, Y (m,) or (m, k), transposed chunk by chunk (default: %(default)s)",
    )
    add_storage_options(p)


def add_storage_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage-option",
        action="append",
        metavar="KEY=VALUE",
        help="for DATA at a URL (s3://, gs://, memory://, file://...): an option of its fsspec filesystem, "
        "such as anon=true; the value is read as JSON when it parses, else as text; repeatable",
    )


def storage_options_of(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``--storage-option KEY=VALUE`` pairs given, as a dict (None: none); ConfigError for a malformed one."""
    from .sources import parse_storage_options

    return None if not args.storage_option else parse_storage_options(args.storage_option)


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress line on stderr (default: only on a terminal)",
    )


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """What the data holds that the user should know (DataWarning), as our own stderr lines, when it is met."""
    from ._errors import DataWarning

    with warnings.catch_warnings():  # restores showwarning too
        warnings.simplefilter("always", DataWarning)
        show = warnings.showwarning

        def as_line(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if not issubclass(category, DataWarning):
                return show(message, category, *args, **kwargs)
            print(f"{PROG}: warning: {_one_line(str(message))}", file=sys.stderr)

        warnings.showwarning = as_line
        yield


def _open(args: argparse.Namespace) -> ChunkSource:
    """The store named on the command line, opened; what it holds that the user should know
    (see ``ChunkSource.warnings``) goes to stderr, one line each."""
    from ._errors import DataWarning
    from .sources import open_source

    with warnings.catch_warnings():  # printed below as our own lines, not as Python warnings
        warnings.simplefilter("ignore", DataWarning)
        source = open_source(
            args.data,
            x=args.x,
            y=args.y,
            missing_chunks=args.missing_chunks,
            layout=args.layout,
            storage_options=storage_options_of(args),
        )
    for note in source.warnings:
        print(f"{PROG}: warning: {_one_line(note)}", file=sys.stderr)
    return source


def _fit(args: argparse.Namespace) -> int:
    from .config import CheckpointConfig, FitConfig
    from .train import fit

    config = FitConfig.from_options(options_of(args, FitConfig))  # checked before the data is opened
    saving = options_of(args, CheckpointConfig)
    CheckpointConfig.from_options(saving)
    out = _checked_outputs(args)
    with _open(args) as source:
        print(
            f"{args.data}: n_x={source.n_x} m={source.m:,} in {source.n_chunks} chunks "
            f"({source.format}, {source.dtype}, codec {source.codec})"
        )
        result = fit(
            source,
            config,
            init=args.init,
            progress=args.progress,
            metrics=args.metrics,
            on_epoch=_print_epoch,
            resume=args.resume,
            on_resume=_print_resumed,
            **saving,
        )
        bayes_loss = source.attrs.get("bayes_loss")
        plain = config.weights is None and config.class_weight is None  # the Bayes loss is the unweighted J's
        if plain and isinstance(bayes_loss, (int, float)) and not isinstance(bayes_loss, bool):  # the store's word
            print(f"Bayes loss of this data (true model): {bayes_loss:.5f}")
    result.save(out)
    print(f"model written to {out}")
    return 0


def _print_resumed(path: str, epoch: int, step: int) -> None:
    print(f"resuming from {path} (epoch {epoch}, step {step})", flush=True)


def _checked_outputs(args: argparse.Namespace) -> str:
    """The model file fit will write, once it and the metrics file are known to be writable
    without destroying anything: checked before the data is even opened."""
    from ._errors import ConfigError
    from .outputs import check_output

    out = check_output(args.out or _default_model_path(args.data), "model", data=args.data)
    if args.metrics is not None:
        metrics = check_output(args.metrics, "metrics", data=args.data)
        if os.path.realpath(metrics) == os.path.realpath(out):
            raise ConfigError(f"{metrics}: --metrics and --out name the same file")
    if args.checkpoint_dir is not None:
        check_output(args.checkpoint_dir, "checkpoint-dir", data=args.data)
    return out


def _print_epoch(r: EpochRecord) -> None:
    """One line per epoch: what was measured, for every kind of step."""
    from ._progress import read_share

    parts = [f"epoch {r.epoch}: loss {r.loss:.6f}"]
    if r.exact:  # exact full-batch steps (batch GD, L-BFGS)
        parts.append(f"(exact) |grad| {r.grad_norm:.3e}")
    if r.accuracy is not None:
        parts.append(f"accuracy {r.accuracy:.4f}")
    if r.samples_per_s is not None:
        parts.append(f"{r.samples_per_s:,.0f} samples/s")
    if r.passes is not None:
        parts.append(f"{r.passes} passes")
    parts.append(f"{r.seconds:.2f} s")
    if r.io_wait_s is not None:
        parts[-1] += f" ({read_share(r.io_wait_s, r.seconds, verdict=True)})"
    if r.exact_loss is not None:
        parts.append(f"| exact loss {r.exact_loss:.6f} |grad| {r.exact_grad_norm:.3e}")
    if r.validation_loss is not None:
        held = f" accuracy {r.validation_accuracy:.4f}" if r.validation_accuracy is not None else ""
        parts.append(f"| validation loss {r.validation_loss:.6f}{held}")
    if r.stop is not None:
        parts.append(f"| {'converged' if r.converged else 'stopped'}: {r.stop}")
    print("  ".join(parts), flush=True)


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate
    from .full_batch import check_scheduler
    from .records import to_json

    check_scheduler(args.scheduler)  # before the data is opened
    t0 = time.perf_counter()
    with _open(args) as source:
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
    with _open(args) as source:
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


def _default_model_path(data: str) -> str:
    """DATA's name with -model.npz: next to DATA, or for a store at a URL in the current directory
    (models are written to local paths)."""
    from .sources import is_url

    if is_url(data):
        data = data.rstrip("/").rpartition("/")[2]
    stem, _ = os.path.splitext(os.path.normpath(data))
    return f"{stem}-model.npz"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamtrain")
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
