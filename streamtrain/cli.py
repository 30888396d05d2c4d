"""``streamtrain`` on the command line: parse, call the library, print, map errors to exit codes.

Every option's flag, type, default, choices and help come from its declaration
(``FitConfig``, ``CompareConfig``, ``DataConfig``; see ``streamtrain.config``), so the command
line and the library cannot drift apart. Exit codes: 0 ok, 1 a problem with the data, files
or option values (one-line message), 2 a usage error (argparse), 130 interrupted. zarr and
h5py are imported by the commands that open a store, so ``streamtrain --help`` stays instant;
dask is never imported here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import EpochRecord

__all__ = ["main"]

PROG = "streamtrain"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ._errors import UserError

    try:
        return args.run(args)
    except UserError as e:
        return _fail(str(e))
    except OSError as e:  # unwritable output folder, disk full, ...
        return _fail(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def _parser() -> argparse.ArgumentParser:
    from .compare import CompareConfig
    from .config import FitConfig
    from .synthetic import DataConfig

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train models on column-wise chunked Zarr/HDF5 data far larger than RAM, streamed in mini-batches.",
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
    _add_arrays(f)
    _add_progress(f)
    f.set_defaults(run=_fit)

    e = sub.add_parser(
        "evaluate",
        help="exact loss and accuracy of a model over a whole store",
        description="Exact mean loss and accuracy of a model over every sample of a store, streamed chunk by chunk.",
    )
    e.add_argument("model", metavar="MODEL", help="model file written by fit")
    e.add_argument("data", metavar="DATA", help="Zarr group or HDF5 file")
    add_options(e, FitConfig, only=("scheduler",))
    _add_arrays(e)
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
    _add_arrays(c)
    c.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    c.set_defaults(run=_compare)

    d = sub.add_parser(
        "make-data",
        help="write a generated dataset",
        description="Write a generated dataset chunk by chunk, with its true weights and Bayes "
        "loss (the true model's loss on these samples) in the store's attributes.",
    )
    d.add_argument("out", metavar="OUT", help="store to create (*.zarr directory or *.h5 file)")
    add_options(d, DataConfig)
    d.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _add_progress(d)
    d.set_defaults(run=_make_data)
    return p


def add_options(parser: argparse.ArgumentParser, config: type, only: Sequence[str] | None = None) -> None:
    """One flag per declared option of ``config`` (see ``streamtrain.config``): its name, type,
    default, choices and help all come from the declaration."""
    for f in dataclasses.fields(config):
        if only is not None and f.name not in only:
            continue
        opt = f.metadata["option"]
        shown = "%(default)s" if f.default is not None else opt.derived
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


def _add_arrays(p: argparse.ArgumentParser) -> None:
    p.add_argument("--x", default="X", metavar="NAME", help="array holding X (default: %(default)s)")
    p.add_argument("--y", default="Y", metavar="NAME", help="array holding Y (default: %(default)s)")


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress line on stderr (default: only on a terminal)",
    )


def _fit(args: argparse.Namespace) -> int:
    from .config import FitConfig
    from .sources import open_source
    from .train import fit

    out = _checked_outputs(args)
    with open_source(args.data, x=args.x, y=args.y) as source:
        print(
            f"{args.data}: n_x={source.n_x} m={source.m:,} in {source.n_chunks} chunks "
            f"({source.format}, {source.dtype}, codec {source.codec})"
        )
        result = fit(
            source,
            init=args.init,
            progress=args.progress,
            metrics=args.metrics,
            on_epoch=_print_epoch,
            **options_of(args, FitConfig),
        )
        if "bayes_loss" in source.attrs:
            print(f"Bayes loss of this data (true model): {source.attrs['bayes_loss']:.5f}")
    result.save(out)
    print(f"model written to {out}")
    return 0


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
    return out


def _print_epoch(r: EpochRecord) -> None:
    """One line per epoch: what was measured, for every kind of step."""
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
        parts[-1] += f" (waiting on reads {r.io_wait_s:.2f} s)"
    if r.exact_loss is not None:
        parts.append(f"| exact loss {r.exact_loss:.6f} |grad| {r.exact_grad_norm:.3e}")
    if r.stop is not None:
        parts.append(f"| {'converged' if r.converged else 'stopped'}: {r.stop}")
    print("  ".join(parts), flush=True)


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate
    from .sources import open_source

    t0 = time.perf_counter()
    with open_source(args.data, x=args.x, y=args.y) as source:
        result = evaluate(source, args.model, scheduler=args.scheduler)
    result["seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(result))
    else:
        accuracy = f"  accuracy {result['accuracy']:.4f}" if "accuracy" in result else ""
        print(
            f"{args.data}: loss {result['loss']:.6f}{accuracy}  over {result['m']:,} samples "
            f"({result['seconds']:.2f} s, {args.scheduler})"
        )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .compare import CompareConfig, compare
    from .sources import open_source

    with open_source(args.data, x=args.x, y=args.y) as source:
        report = compare(source, args.model, **options_of(args, CompareConfig))
    print(json.dumps(report) if args.json else _compare_table(report, args.model))
    return 0


def _compare_table(r: dict, model_path: str) -> str:
    lines = [
        f"{r['data']}: m={r['m']:,}; {r['model']} model {model_path}, l2 {r['l2']}",
        f"exact J = {r['loss']:.6f}   |grad J| = {r['grad_norm']:.4e}   ({r['scheduler']}, {r['exact_seconds']:.2f} s)",
        f"per-sample gradient variance tr(S) = {r['trace_cov']:.4e}   "
        f"noise scale B_noise = tr(S)/|grad J|^2 = {r['noise_scale']:,.1f}",
        "",
        f"mini-batches drawn as training draws them (shuffle {r['shuffle']}, seed {r['seed']}):",
        f"{'B':>9} {'batches':>8} {'cos mean':>9} {'cos min':>9} {'rel.err':>9} {'if random':>10}",
    ]
    for row in r["batch_sizes"]:
        lines.append(
            f"{row['batch_size']:>9,} {row['batches']:>8} {row['cosine_mean']:>9.4f} "
            f"{row['cosine_min']:>9.4f} {row['rel_error_rms']:>9.4f} {row['rel_error_random']:>10.4f}"
        )
    lines.append("rel.err = rms of |g_B - grad J| / |grad J|; 'if random': its expected value for random batches")
    lines += [""] + [f"- {line}" for line in r["advice"]]
    return "\n".join(lines)


def _default_model_path(data: str) -> str:
    stem, _ = os.path.splitext(os.path.normpath(data))
    return f"{stem}-model.npz"


def _make_data(args: argparse.Namespace) -> int:
    from .synthetic import TASKS, DataConfig, make_data

    config = DataConfig.from_options(options_of(args, DataConfig))
    t0 = time.perf_counter()
    attrs = make_data(args.out, config, overwrite=args.overwrite, progress=args.progress)
    task = TASKS[config.task]
    m, k = config.m, task.y_rows(task.rows(config))
    print(
        f"wrote {args.out} ({config.task}, {config.format_for(args.out)}, codec {config.codec}): "
        f"X ({config.n_x}, {m}) float32, Y ({k}, {m}) {task.y_dtype} in {time.perf_counter() - t0:.1f} s; "
        f"Bayes loss {attrs['bayes_loss']:.5f}"
    )
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamtrain")
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
