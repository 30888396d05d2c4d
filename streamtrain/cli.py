"""``streamtrain`` on the command line: parse, call the library, print, map errors to exit codes.

Exit codes: 0 ok, 1 a problem with the data, files or option values (one-line message),
2 a usage error (argparse), 130 interrupted. Heavy imports (numpy, zarr, h5py) happen inside
the commands so that ``streamtrain --help`` stays instant; dask is never imported here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

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
    f.add_argument(
        "--model",
        default="logistic",
        choices=["logistic", "softmax", "linear", "mlp"],
        help="logistic (0/1 labels), softmax (one-hot or class-id labels), linear (real values, "
        "squared error), mlp (hidden layers) (default: %(default)s)",
    )
    f.add_argument("--hidden", type=_sizes, metavar="N,N,...", help="mlp hidden layer sizes, e.g. 64,32 (default: 64)")
    f.add_argument(
        "--activation",
        default="relu",
        choices=["relu", "tanh", "sigmoid"],
        help="mlp hidden activation (default: %(default)s)",
    )
    f.add_argument(
        "--output",
        choices=["sigmoid", "softmax", "identity"],
        help="mlp output layer (default: from the data: make-data's task, else softmax for "
        "labels with several rows, else sigmoid)",
    )
    f.add_argument(
        "--batch-size",
        type=_batch_size,
        metavar="B",
        help="samples per step: 1 = SGD, m = batch gradient descent, 'full' = exact "
        "full-batch steps through Dask (default: 256; full with --optimizer lbfgs)",
    )
    f.add_argument(
        "--epochs",
        type=int,
        metavar="E",
        help="passes over the data; for lbfgs, the most iterations (default: 5; lbfgs 100)",
    )
    f.add_argument("--lr", type=float, default=0.1, metavar="A", help="learning rate (default: %(default)s)")
    f.add_argument(
        "--optimizer",
        default="sgd",
        choices=["sgd", "momentum", "rmsprop", "adam", "lbfgs"],
        help="sgd, momentum, rmsprop, adam: steps of size --lr; lbfgs: L-BFGS on the exact "
        "full-batch objective, the reference optimum (needs scipy) (default: %(default)s)",
    )
    f.add_argument(
        "--beta1", type=float, default=0.9, help="momentum's and adam's first-moment decay (default: %(default)s)"
    )
    f.add_argument(
        "--beta2", type=float, default=0.999, help="rmsprop's and adam's second-moment decay (default: %(default)s)"
    )
    f.add_argument("--eps", type=float, default=1e-8, help="rmsprop's and adam's epsilon (default: %(default)s)")
    f.add_argument(
        "--lr-schedule",
        default="constant",
        choices=["constant", "inverse-time", "exponential", "step"],
        help="constant: A; inverse-time: A/(1 + decay*t); exponential: A*decay^t; step: "
        "A*decay^floor(t/step), t counted in epochs or steps (--lr-per) (default: %(default)s)",
    )
    f.add_argument(
        "--lr-decay",
        type=float,
        metavar="D",
        help="the schedule's decay (default: 1 for inverse-time, 0.95 exponential, 0.5 step)",
    )
    f.add_argument(
        "--lr-step",
        type=int,
        default=1,
        metavar="N",
        help="step schedule: decay every N epochs or steps (default: %(default)s)",
    )
    f.add_argument(
        "--lr-per",
        default="epoch",
        choices=["epoch", "step"],
        help="what t counts in the schedule (default: %(default)s)",
    )
    f.add_argument(
        "--l2",
        type=float,
        default=0.0,
        metavar="LAMBDA",
        help="L2 penalty: J = mean loss + LAMBDA/(2m) * sum of squared weights (default: %(default)s)",
    )
    f.add_argument(
        "--shuffle",
        default="chunks",
        choices=["none", "chunks", "buffer"],
        help="none: store order; chunks: new chunk order each epoch; buffer: also shuffle "
        "samples inside a memory-bounded buffer of chunks (default: %(default)s)",
    )
    f.add_argument(
        "--buffer-mb",
        type=float,
        default=192,
        metavar="MB",
        help="memory for the chunks in flight with --shuffle buffer (default: %(default)s)",
    )
    f.add_argument(
        "--prefetch",
        type=int,
        default=2,
        metavar="N",
        help="chunks read ahead in a background thread; 0 reads inline (default: %(default)s)",
    )
    f.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of every random choice (default: %(default)s)"
    )
    f.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="(default: %(default)s)")
    f.add_argument("--init", metavar="MODEL", help="warm start from this model file")
    f.add_argument(
        "--eval-exact-every",
        type=int,
        metavar="N",
        help="also compute the exact loss and gradient norm over all the data every N epochs "
        "and after the last (one extra pass each)",
    )
    _add_scheduler(f)
    f.add_argument("--out", metavar="MODEL.npz", help="model file to write (default: DATA's name + -model.npz)")
    f.add_argument("--metrics", metavar="FILE.jsonl", help="append one JSON line per epoch here")
    _add_arrays(f)
    f.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress line on stderr (default: only on a terminal)",
    )
    f.set_defaults(run=_fit)

    e = sub.add_parser(
        "evaluate",
        help="exact loss and accuracy of a model over a whole store",
        description="Exact mean loss and accuracy of a model over every sample of a store, streamed chunk by chunk.",
    )
    e.add_argument("model", metavar="MODEL", help="model file written by fit")
    e.add_argument("data", metavar="DATA", help="Zarr group or HDF5 file")
    _add_scheduler(e, extra="; sync streams without Dask")
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
    c.add_argument("data", metavar="DATA", help="Zarr group or HDF5 file")
    c.add_argument("--model", required=True, metavar="MODEL.npz", help="model file written by fit")
    c.add_argument(
        "--batch-size",
        type=int,
        nargs="+",
        metavar="B",
        help="batch sizes to compare, besides the model's own (default: 16 64 256 ... 65536, up to m)",
    )
    c.add_argument(
        "--batches", type=int, default=32, metavar="N", help="mini-batches drawn per batch size (default: %(default)s)"
    )
    c.add_argument("--l2", type=float, metavar="LAMBDA", help="L2 penalty of J (default: the model's own)")
    c.add_argument(
        "--shuffle",
        default="chunks",
        choices=["none", "chunks", "buffer"],
        help="how mini-batches are drawn, as in fit (default: %(default)s)",
    )
    c.add_argument("--seed", type=int, default=0, metavar="S", help="(default: %(default)s)")
    _add_scheduler(c)
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
    d.add_argument(
        "--task",
        default="logistic",
        choices=["logistic", "softmax", "linear"],
        help="logistic: Y (1, m) of 0/1; softmax: Y (1, m) class ids; linear: Y (outputs, m) "
        "real values with Gaussian noise (default: %(default)s)",
    )
    d.add_argument("--classes", type=int, default=3, metavar="K", help="softmax classes (default: %(default)s)")
    d.add_argument("--outputs", type=int, default=1, metavar="K", help="linear outputs (default: %(default)s)")
    d.add_argument("--noise", type=float, default=1.0, help="linear noise std (default: %(default)s)")
    d.add_argument("--m", type=int, default=200_000, help="samples (default: %(default)s)")
    d.add_argument("--n-x", type=int, default=100, help="features (default: %(default)s)")
    d.add_argument("--format", choices=["zarr", "hdf5"], help="default: hdf5 for *.h5/*.hdf5, else zarr")
    d.add_argument("--chunk", type=int, metavar="C", help="samples per chunk (default: about 8 MiB of X)")
    d.add_argument("--codec", default="none", choices=["none", "zstd", "gzip"], help="(default: %(default)s)")
    d.add_argument("--seed", type=int, default=0, metavar="S", help="(default: %(default)s)")
    d.add_argument("--w-norm", type=float, default=3.0, help="norm of the true weights (default: %(default)s)")
    d.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    d.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress line on stderr (default: only on a terminal)",
    )
    d.set_defaults(run=_make_data)
    return p


def _batch_size(text: str) -> int | str:
    if text == "full":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'full', got {text!r}") from None


def _sizes(text: str) -> list[int]:
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 64,32, got {text!r}") from None


def _add_scheduler(p: argparse.ArgumentParser, extra: str = "") -> None:
    p.add_argument(
        "--scheduler",
        default="threads",
        metavar="S",
        help="where exact full-data passes run: threads, local (a dask.distributed cluster on "
        f"this machine) or tcp://HOST:PORT (a running Dask scheduler){extra} "
        "(default: %(default)s)",
    )


def _add_arrays(p: argparse.ArgumentParser) -> None:
    p.add_argument("--x", default="X", metavar="NAME", help="array holding X (default: %(default)s)")
    p.add_argument("--y", default="Y", metavar="NAME", help="array holding Y (default: %(default)s)")


def _fit(args: argparse.Namespace) -> int:
    from .sources import open_source
    from .train import fit

    with open_source(args.data, x=args.x, y=args.y) as source:
        out = args.out or _default_model_path(args.data)
        print(
            f"{args.data}: n_x={source.n_x} m={source.m:,} in {source.n_chunks} chunks "
            f"({source.format}, {source.dtype}, codec {source.codec})"
        )
        result = fit(
            source,
            model=args.model,
            hidden=args.hidden,
            activation=args.activation,
            output=args.output,
            batch_size=args.batch_size,
            epochs=args.epochs,
            lr=args.lr,
            optimizer=args.optimizer,
            beta1=args.beta1,
            beta2=args.beta2,
            eps=args.eps,
            lr_schedule=args.lr_schedule,
            lr_decay=args.lr_decay,
            lr_step=args.lr_step,
            lr_per=args.lr_per,
            l2=args.l2,
            shuffle=args.shuffle,
            seed=args.seed,
            dtype=args.dtype,
            init=args.init,
            eval_exact_every=args.eval_exact_every,
            scheduler=args.scheduler,
            prefetch=args.prefetch,
            buffer_bytes=int(args.buffer_mb * 2**20),
            progress=args.progress,
            metrics=args.metrics,
            on_epoch=_print_epoch,
        )
        if "bayes_loss" in source.attrs:
            print(f"Bayes loss of this data (true model): {source.attrs['bayes_loss']:.5f}")
    result.save(out)
    print(f"model written to {out}")
    return 0


def _print_epoch(record: dict) -> None:
    """One line per epoch: what was measured, for every kind of step."""
    parts = [f"epoch {record['epoch']}: loss {record['loss']:.6f}"]
    if "grad_norm" in record:  # exact full-batch steps (batch GD, L-BFGS)
        parts.append(f"(exact) |grad| {record['grad_norm']:.3e}")
    if "accuracy" in record:
        parts.append(f"accuracy {record['accuracy']:.4f}")
    if "samples_per_s" in record:
        parts.append(f"{record['samples_per_s']:,.0f} samples/s")
    if "passes" in record:
        parts.append(f"{record['passes']} passes")
    parts.append(f"{record['seconds']:.2f} s")
    if "io_wait_s" in record:
        parts[-1] += f" (waiting on reads {record['io_wait_s']:.2f} s)"
    if "exact_loss" in record:
        parts.append(f"| exact loss {record['exact_loss']:.6f} |grad| {record['exact_grad_norm']:.3e}")
    if "stop" in record:
        parts.append(f"| {'converged' if record['converged'] else 'stopped'}: {record['stop']}")
    print("  ".join(parts), flush=True)


def _evaluate(args: argparse.Namespace) -> int:
    from .full_batch import evaluate
    from .sources import open_source
    from .train import load

    model = load(args.model)
    t0 = time.perf_counter()
    with open_source(args.data, x=args.x, y=args.y) as source:
        result = evaluate(source, model.params, model=model.spec, scheduler=args.scheduler)
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
    from .compare import compare
    from .sources import open_source
    from .train import load

    model = load(args.model)
    l2 = model.config.get("l2", 0.0) if args.l2 is None else args.l2
    with open_source(args.data, x=args.x, y=args.y) as source:
        trained = model.config.get("batch_size")
        report = compare(
            source,
            model.params,
            model=model.spec,
            batch_sizes=args.batch_size,
            batches=args.batches,
            l2=l2,
            shuffle=args.shuffle,
            seed=args.seed,
            scheduler=args.scheduler,
            train_batch_size=trained if isinstance(trained, int) else None,
        )
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
    from .synthetic import make_data

    fmt = args.format or ("hdf5" if args.out.lower().endswith((".h5", ".hdf5")) else "zarr")
    t0 = time.perf_counter()
    attrs = make_data(
        args.out,
        m=args.m,
        n_x=args.n_x,
        task=args.task,
        classes=args.classes,
        outputs=args.outputs,
        noise=args.noise,
        format=fmt,
        chunk=args.chunk,
        codec=args.codec,
        seed=args.seed,
        w_norm=args.w_norm,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    y = f"Y ({args.outputs}, {args.m}) float32" if args.task == "linear" else f"Y (1, {args.m}) uint8"
    print(
        f"wrote {args.out} ({args.task}, {fmt}, codec {args.codec}): X ({args.n_x}, {args.m}) float32, "
        f"{y} in {time.perf_counter() - t0:.1f} s; Bayes loss {attrs['bayes_loss']:.5f}"
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
