"""``streamtrain`` on the command line: parse, call the library, print, map errors to exit codes.

Exit codes: 0 ok, 1 a problem with the data, files or option values (one-line message),
2 a usage error (argparse), 130 interrupted. Heavy imports (numpy, zarr, h5py) happen inside
the commands so that ``streamtrain --help`` stays instant; dask is never imported here.
"""

from __future__ import annotations

import argparse
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
        description="Train models on column-wise chunked Zarr/HDF5 data far larger than RAM, "
                    "streamed in mini-batches.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(title="commands", metavar="COMMAND", required=True)

    f = sub.add_parser("fit", help="train a model by streaming a store",
                       description="Train a model by streaming mini-batches X{t}, Y{t} from a store; "
                                   "prints one line per epoch and where the model file went.")
    f.add_argument("data", metavar="DATA", help="Zarr group (directory) or HDF5 file with X (n_x, m), Y (1, m)")
    f.add_argument("--model", default="logistic", choices=["logistic"], help="model (default: %(default)s)")
    f.add_argument("--batch-size", type=int, default=256, metavar="B",
                   help="samples per step: 1 = SGD, m = batch gradient descent (default: %(default)s)")
    f.add_argument("--epochs", type=int, default=5, metavar="E", help="passes over the data (default: %(default)s)")
    f.add_argument("--lr", type=float, default=0.1, metavar="A", help="learning rate (default: %(default)s)")
    f.add_argument("--shuffle", default="chunks", choices=["none", "chunks", "buffer"],
                   help="none: store order; chunks: new chunk order each epoch; buffer: also shuffle "
                        "samples inside a memory-bounded buffer of chunks (default: %(default)s)")
    f.add_argument("--buffer-mb", type=float, default=192, metavar="MB",
                   help="memory for the chunks in flight with --shuffle buffer (default: %(default)s)")
    f.add_argument("--prefetch", type=int, default=2, metavar="N",
                   help="chunks read ahead in a background thread; 0 reads inline (default: %(default)s)")
    f.add_argument("--seed", type=int, default=0, metavar="S", help="seed of every random choice (default: %(default)s)")
    f.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="(default: %(default)s)")
    f.add_argument("--init", metavar="MODEL", help="warm start from this model file")
    f.add_argument("--out", metavar="MODEL.npz", help="model file to write (default: DATA's name + -model.npz)")
    f.add_argument("--metrics", metavar="FILE.jsonl", help="append one JSON line per epoch here")
    f.add_argument("--x", default="X", metavar="NAME", help="array holding X (default: %(default)s)")
    f.add_argument("--y", default="Y", metavar="NAME", help="array holding Y (default: %(default)s)")
    f.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress line on stderr (default: only on a terminal)")
    f.set_defaults(run=_fit)

    d = sub.add_parser("make-data", help="write a generated logistic dataset",
                       description="Write a generated logistic-regression dataset chunk by chunk, with its "
                                   "true weights and Bayes loss in the store's attributes.")
    d.add_argument("out", metavar="OUT", help="store to create (*.zarr directory or *.h5 file)")
    d.add_argument("--m", type=int, default=200_000, help="samples (default: %(default)s)")
    d.add_argument("--n-x", type=int, default=100, help="features (default: %(default)s)")
    d.add_argument("--format", choices=["zarr", "hdf5"], help="default: hdf5 for *.h5/*.hdf5, else zarr")
    d.add_argument("--chunk", type=int, metavar="C", help="samples per chunk (default: about 8 MiB of X)")
    d.add_argument("--codec", default="none", choices=["none", "zstd", "gzip"], help="(default: %(default)s)")
    d.add_argument("--seed", type=int, default=0, metavar="S", help="(default: %(default)s)")
    d.add_argument("--w-norm", type=float, default=3.0, help="norm of the true weights (default: %(default)s)")
    d.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    d.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress line on stderr (default: only on a terminal)")
    d.set_defaults(run=_make_data)
    return p


def _fit(args: argparse.Namespace) -> int:
    from .sources import open_source
    from .train import fit

    with open_source(args.data, x=args.x, y=args.y) as source:
        out = args.out or _default_model_path(args.data)
        print(f"{args.data}: n_x={source.n_x} m={source.m:,} in {source.n_chunks} chunks "
              f"({source.format}, {source.dtype}, codec {source.codec})")
        print(f"training {args.model}: batch size {args.batch_size}, {args.epochs} epoch(s), lr {args.lr}, "
              f"shuffle {args.shuffle}, seed {args.seed}, {args.dtype}")
        result = fit(source, model=args.model, batch_size=args.batch_size, epochs=args.epochs, lr=args.lr,
                     shuffle=args.shuffle, seed=args.seed, dtype=args.dtype, init=args.init,
                     prefetch=args.prefetch, buffer_bytes=int(args.buffer_mb * 2**20),
                     progress=args.progress, metrics=args.metrics, on_epoch=_print_epoch)
        if "bayes_loss" in source.attrs:
            print(f"Bayes loss of this data (true model): {source.attrs['bayes_loss']:.5f}")
    result.save(out)
    print(f"model written to {out}")
    return 0


def _print_epoch(record: dict) -> None:
    print(f"epoch {record['epoch']}: loss {record['loss']:.5f}  {record['samples_per_s']:,.0f} samples/s  "
          f"{record['seconds']:.2f} s (waiting on reads {record['io_wait_s']:.2f} s)", flush=True)


def _default_model_path(data: str) -> str:
    stem, _ = os.path.splitext(os.path.normpath(data))
    return f"{stem}-model.npz"


def _make_data(args: argparse.Namespace) -> int:
    from .synthetic import make_data

    fmt = args.format or ("hdf5" if args.out.lower().endswith((".h5", ".hdf5")) else "zarr")
    t0 = time.perf_counter()
    attrs = make_data(args.out, m=args.m, n_x=args.n_x, format=fmt, chunk=args.chunk, codec=args.codec,
                      seed=args.seed, w_norm=args.w_norm, overwrite=args.overwrite, progress=args.progress)
    print(f"wrote {args.out} ({fmt}, codec {args.codec}): X ({args.n_x}, {args.m}) float32, "
          f"Y (1, {args.m}) uint8 in {time.perf_counter() - t0:.1f} s; "
          f"Bayes loss {attrs['bayes_loss']:.5f}")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamtrain")
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
