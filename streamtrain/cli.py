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
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__

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
    "open_store",
    "options_of",
    "progress_of",
    "storage_options_of",
]

PROG = "streamtrain"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: "a problem with the data (NaN/inf in it too), a file or an option value, named on one line",
    EXIT_USAGE: "a usage error: unknown command or flag, a value of the wrong type",
    EXIT_DIVERGED: "diverged: training's loss became non-finite or ran away, or a model's loss is not finite",
    EXIT_INTERRUPTED: "interrupted (SIGINT, Ctrl-C)",
    EXIT_TERMINATED: "terminated (SIGTERM)",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from ._errors import DivergedError, UserError

    # numpy's overflow/invalid warnings (from Dask's threads too) would break the one-line
    # message: every result is checked to be finite, and a non-finite one is an error naming why.
    warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
    try:
        if getattr(args, "config", None) is not None:
            args = _with_job(parser, args, argv)
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
    from ._cli_model import add_model_commands
    from .config import CheckpointConfig, FitConfig

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train models on column-wise chunked Zarr/HDF5 data far larger than RAM, streamed in mini-batches.",
        epilog=_exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(title="commands", metavar="COMMAND", required=True)

    f = sub.add_parser(
        "fit",
        help="train a model by streaming a store",
        description="Train a model by streaming mini-batches X{t}, Y{t} from a store; "
        "prints one line per epoch and where the model file went.",
    )
    f.add_argument(
        "data", metavar="DATA", nargs="?", help="Zarr group (directory) or HDF5 file with X (n_x, m), Y (1, m)"
    )
    f.add_argument(
        "--config",
        metavar="JOB.toml",
        help="read the options from a job file (one key per option: batch_size = 1000, data = ...); "
        "flags given here win over it",
    )
    add_options(f, FitConfig)
    f.add_argument("--init", metavar="MODEL", help="warm start from this model file")
    f.add_argument("--out", metavar="MODEL.npz", help="model file to write (default: DATA's name + -model.npz)")
    f.add_argument("--metrics", metavar="FILE.jsonl", help="append one JSON line per epoch here")
    f.add_argument(
        "--log-every",
        type=int,
        metavar="N",
        help="also append a step record (step, epoch, samples seen, loss, learning rate, time) every N steps "
        "to --metrics",
    )
    add_options(f, CheckpointConfig)
    f.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --checkpoint-dir (from the start if there is none yet); "
        "the result is the same as a run never stopped",
    )
    add_arrays(f)
    add_progress(f)
    f.set_defaults(run=_fit, command=f)

    add_model_commands(sub)
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
        help="progress bar on stderr (default: only on a terminal)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar, nor a line per epoch")


def progress_of(args: argparse.Namespace) -> bool | None:
    """Whether to draw the progress bar: never with --quiet, else as --progress says (None: on a terminal)."""
    return False if args.quiet else args.progress


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


def open_store(args: argparse.Namespace) -> ChunkSource:
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


def _with_job(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None
) -> argparse.Namespace:
    """The arguments again, with the job file's values (``jobs.read_job``) as the command's defaults:
    a flag given on the command line wins over the file. A value written as text is read as its flag
    reads it (batch_size = "full", hidden = "64,32"); one it cannot read is an error naming the key."""
    from ._errors import ConfigError
    from .jobs import read_job

    job = read_job(args.config)
    for action in args.command._actions:  # argparse keeps its actions there; it has no public view of them
        value = job.get(action.dest)
        if isinstance(value, str) and callable(action.type):
            try:
                job[action.dest] = action.type(value)
            except (ValueError, TypeError, ConfigError) as e:
                raise ConfigError(f"{args.config}: {action.dest} = {value!r}: {e}") from None
    args.command.set_defaults(**job)
    return parser.parse_args(argv)


def _fit(args: argparse.Namespace) -> int:
    from .config import CheckpointConfig, FitConfig
    from .train import fit

    if args.data is None:  # a usage error (exit 2), as a missing argument is
        args.command.error("the following arguments are required: DATA (or data = ... in --config)")
    config = FitConfig.from_options(options_of(args, FitConfig))  # checked before the data is opened
    saving = options_of(args, CheckpointConfig)
    CheckpointConfig.from_options(saving)
    out = _checked_outputs(args)
    say = (lambda line: None) if args.quiet else print  # --quiet: the model file's line only
    with open_store(args) as source:
        say(
            f"{args.data}: n_x={source.n_x} m={source.m:,} in {source.n_chunks} chunks "
            f"({source.format}, {source.dtype}, codec {source.codec})"
        )
        result = fit(
            source,
            config,
            init=args.init,
            progress=progress_of(args),
            metrics=args.metrics,
            log_every=args.log_every,
            on_epoch=None if args.quiet else _print_epoch,
            resume=args.resume,
            on_resume=None if args.quiet else _print_resumed,
            **saving,
        )
        bayes_loss = source.attrs.get("bayes_loss")
        plain = config.weights is None and config.class_weight is None  # the Bayes loss is the unweighted J's
        if plain and isinstance(bayes_loss, (int, float)) and not isinstance(bayes_loss, bool):  # the store's word
            say(f"Bayes loss of this data (true model): {bayes_loss:.5f}")
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

    if args.log_every is not None and args.metrics is None:
        raise ConfigError("--log-every N appends step records to the metrics file: give --metrics FILE.jsonl")
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
    if r.rounds is not None and r.barrier_s is not None:  # --shards
        rounds = f"{r.rounds} round{'s' * (r.rounds != 1)}"
        parts[-1] += f" ({rounds}, waiting at the barrier {100 * r.barrier_s / max(r.seconds, 1e-9):.0f}%)"
    if r.exact_loss is not None:
        parts.append(f"| exact loss {r.exact_loss:.6f} |grad| {r.exact_grad_norm:.3e}")
    if r.validation_loss is not None:
        held = f" accuracy {r.validation_accuracy:.4f}" if r.validation_accuracy is not None else ""
        parts.append(f"| validation loss {r.validation_loss:.6f}{held}")
    if r.stop is not None:
        parts.append(f"| {'converged' if r.converged else 'stopped'}: {r.stop}")
    print("  ".join(parts), flush=True)


def _default_model_path(data: str) -> str:
    """DATA's name with -model.npz: next to DATA, or for a store at a URL in the current directory
    (models are written to local paths)."""
    from .sources import is_url

    if is_url(data):
        data = data.rstrip("/").rpartition("/")[2]
    stem, _ = os.path.splitext(os.path.normpath(data))
    return f"{stem}-model.npz"


if __name__ == "__main__":
    sys.exit(main())
