"""The commands of ``streamtrain`` around training: inspect, predict, convert, make-data and plot (see ``cli``).

Each parser's options come from their declarations, as for ``fit``; the handlers call the library
and print one summary line (inspect: its report), warnings about the data as lines of their own.
"""

from __future__ import annotations

import argparse
import time
import warnings

from .cli import add_arrays, add_options, add_progress, add_storage_options, options_of, progress_of, storage_options_of

__all__ = ["add_data_commands"]


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    """The parsers of inspect, info, predict, convert, make-data and plot, under ``sub``."""
    from .convert import ConvertConfig
    from .plots import PlotConfig
    from .synthetic import DataConfig

    i = sub.add_parser(
        "inspect",
        help="what a store holds, and what would spoil a run on it",
        description="Shapes, dtypes, chunks, codec and bytes stored; chunks never written; an estimate of one "
        "epoch's read time; what the labels are and whether they are sorted or clustered along the samples; "
        "with --scan, constant and non-finite features. Each problem is a warning line with its fix.",
    )
    i.add_argument("data", metavar="DATA", help="Zarr group or HDF5 file")
    i.add_argument("--scan", action="store_true", help="also read all of X once: constant and non-finite features")
    add_arrays(i)
    i.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    i.set_defaults(run=_inspect)

    n = sub.add_parser(
        "info",
        help="how a model file was made, and the command that makes it again",
        description="A model file's model and parameters, the data it was trained on, its options, its final "
        "metrics, the versions of the packages that trained it, and the streamtrain fit command that trains the "
        "same model again.",
    )
    n.add_argument("model", metavar="MODEL", help="model file written by fit")
    n.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    n.set_defaults(run=_info)

    r = sub.add_parser(
        "predict",
        help="a model's predictions for every sample of a store",
        description="Score every sample of a store (labels not needed) with a trained model, streamed chunk by "
        "chunk, into a new column-wise store holding one array P (r, m): the predicted class or value, or with "
        "--proba the probabilities.",
    )
    r.add_argument("model", metavar="MODEL", help="model file written by fit")
    r.add_argument("data", metavar="DATA", help="Zarr group or HDF5 file with X")
    r.add_argument("--out", metavar="PRED", required=True, help="store to create (*.zarr directory or *.h5 file)")
    r.add_argument("--proba", action="store_true", help="probabilities (the output layer) instead of classes")
    r.add_argument("--x", default="X", metavar="NAME", help="array holding X (default: %(default)s)")
    r.add_argument("--layout", default="columns", choices=("columns", "rows"), help="as for fit (default: %(default)s)")
    add_storage_options(r)
    r.add_argument("--format", choices=("zarr", "hdf5"), help="output format (default: hdf5 for *.h5, else zarr)")
    r.add_argument("--codec", default="none", choices=("none", "zstd", "gzip"), help="compression (default: none)")
    r.add_argument("--overwrite", action="store_true", help="replace PRED if it exists (a store only)")
    add_progress(r)
    r.set_defaults(run=_predict)

    v = sub.add_parser(
        "convert",
        help="a user's data as a column-wise chunked store",
        description="Write the samples of a Zarr group or HDF5 file (either --layout), a .npy array, a .npz "
        "archive or a CSV file to a new column-wise chunked store, streamed in blocks; the store is swapped "
        "in when complete.",
    )
    v.add_argument("src", metavar="SRC", help="*.zarr, *.h5, *.npy, *.npz or *.csv")
    v.add_argument("dst", metavar="DST", help="store to create (*.zarr directory or *.h5 file)")
    add_options(v, ConvertConfig)
    add_arrays(v)
    v.add_argument(
        "--shuffle",
        action="store_true",
        help="write the samples in a random order (from --seed), so that a store sorted by label or time "
        "trains well from sequential reads: two passes, buckets of 256 MB on disk beside DST",
    )
    v.add_argument("--overwrite", action="store_true", help="replace DST if it exists (a store only)")
    add_progress(v)
    v.set_defaults(run=_convert)

    d = sub.add_parser(
        "make-data",
        help="write a generated dataset",
        description="Write a generated dataset chunk by chunk, with its true weights and Bayes "
        "loss (the true model's loss on these samples) in the store's attributes.",
    )
    d.add_argument("out", metavar="OUT", help="store to create (*.zarr directory or *.h5 file)")
    add_options(d, DataConfig)
    d.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_progress(d)
    d.set_defaults(run=_make_data)

    g = sub.add_parser(
        "plot",
        help="loss curves of runs against samples seen, as a PNG",
        description="Draw the training loss of one or several runs, and their exact and validation losses when "
        "measured, against the samples seen, on one figure: the metrics files written by fit --metrics (their "
        "step records too, as a thin line). Needs matplotlib: pip install 'streamtrain[plot]'.",
    )
    g.add_argument("runs", nargs="+", metavar="RUN.jsonl", help="metrics files written by fit --metrics")
    g.add_argument("-o", "--out", required=True, metavar="PNG", help="the image to write (*.png)")
    add_options(g, PlotConfig)
    g.add_argument("--overwrite", action="store_true", help="replace PNG if it exists (a PNG image only)")
    g.set_defaults(run=_plot)


def _inspect(args: argparse.Namespace) -> int:
    from ._errors import DataWarning
    from .inspection import inspect
    from .records import to_json

    with warnings.catch_warnings():  # chunks never written are part of the report
        warnings.simplefilter("ignore", DataWarning)
        r = inspect(
            args.data, x=args.x, y=args.y, layout=args.layout, scan=args.scan, storage_options=storage_options_of(args)
        )
    if args.json:
        print(to_json(r))
        return 0
    mb = 2**20
    how = "directly" if r["read_path"] == "direct" else f"by {r['read_path']}"
    layout = ", samples as rows (transposed chunk by chunk)" if r["layout"] == "rows" else ""
    print(f"{r['data']}: {r['format']}{layout}, read {how}")
    print(
        f"  X ({r['n_x']}, {r['m']:,}) {r['dtype']} in {r['chunks']:,} chunks of {r['chunk']:,} samples "
        f"({r['chunk_bytes'] / mb:.3g} MB each), codec {r['codec']}: {r['stored_bytes']['X'] / mb:,.1f} MB stored"
    )
    print(f"  Y ({r['k']}, {r['m']:,}) {r['y_dtype']}: {r['stored_bytes']['Y'] / mb:,.1f} MB stored")
    labels = r["labels"]
    print(
        f"  labels: {labels['kind']} (output {labels['output']}); the chunk furthest from the store's mix "
        f"is {labels['furthest_chunk_sigmas']:.1f} standard errors off"
    )
    print(f"  one epoch reads in about {r['epoch_read_s']:.2g} s (from reading a few chunks)")
    for note in r["missing"]:
        print(f"  missing: {note}")
    if "features" in r:
        f = r["features"]
        print(f"  features: {len(f['constant'])} constant, {f['nonfinite']:,} NaN or infinite values")
    for warning in r["warnings"]:
        print(f"warning: {warning}")
    return 0


# What info shows of the last epoch's record: how good the model is, not how fast it was trained.
FINAL_METRICS = ("loss", "accuracy", "exact_loss", "exact_accuracy", "validation_loss", "validation_accuracy")


def _info(args: argparse.Namespace) -> int:
    from .provenance import describe
    from .records import to_json
    from .result import load

    d = describe(load(args.model), args.model)
    if args.json:
        print(to_json(d))
        return 0
    model, data = d["model"], d["data"]
    shapes = ", ".join(f"{k} ({', '.join(map(str, s))})" for k, s in d["parameters"].items())
    print(f"{args.model}: {model['name']} model, {model['output']} output, {d['dtype']}: {shapes}")
    if data:
        print(
            f"trained on {data.get('path')} ({data.get('format')}, X ({data.get('n_x')}, {data.get('m'):,}) "
            f"{data.get('dtype')} in chunks of {data.get('chunk'):,}, codec {data.get('codec')})"
        )
    final = d["final"]
    if final is not None:
        shown = "  ".join(f"{k} {final[k]:.6g}" for k in FINAL_METRICS if final.get(k) is not None)
        print(f"final, after {d['epochs']} epochs: {shown}")
    found = d.get("versions")
    print("versions: " + (", ".join(f"{k} {v}" for k, v in found.items()) if found else "not recorded (an older file)"))
    if d.get("init"):
        print(f"warm start: {d['init']}")
    why = "went on from an earlier run's state" if d.get("continued") else "trained on arrays in memory"
    print(f"made again by: {d['command'] or f'no command ({why})'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .predict import predict

    t0 = time.perf_counter()
    r = predict(
        args.model, args.data, args.out, proba=args.proba, x=args.x, layout=args.layout, format=args.format,
        codec=args.codec, overwrite=args.overwrite, progress=progress_of(args),
        storage_options=storage_options_of(args),
    )  # fmt: skip
    what = "probabilities" if args.proba else "predictions"
    print(
        f"wrote {args.out} ({r['format']}): {what} P ({r['rows']}, {r['m']:,}) {r['dtype']} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .convert import ConvertConfig, convert

    config = ConvertConfig.from_options(options_of(args, ConvertConfig))
    t0 = time.perf_counter()
    r = convert(
        args.src, args.dst, config, x=args.x, y=args.y, layout=args.layout, shuffle=args.shuffle,
        overwrite=args.overwrite, progress=progress_of(args), storage_options=storage_options_of(args),
    )  # fmt: skip
    weights = f", weights {r['weights']} (1, {r['m']:,}) {r['x_dtype']}" if r["weights"] else ""
    print(
        f"wrote {args.dst} ({r['format']}, codec {r['codec']}, chunks of {r['chunk']:,}): "
        f"X ({r['n_x']}, {r['m']:,}) {r['x_dtype']}, Y ({r['k']}, {r['m']:,}) {r['y_dtype']}{weights} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def _make_data(args: argparse.Namespace) -> int:
    from .synthetic import TASKS, DataConfig, make_data

    config = DataConfig.from_options(options_of(args, DataConfig))
    t0 = time.perf_counter()
    attrs = make_data(args.out, config, overwrite=args.overwrite, progress=progress_of(args))
    task = TASKS[config.task]
    m, k = config.m, task.y_rows(task.rows(config))
    print(
        f"wrote {args.out} ({config.task}, {config.format_for(args.out)}, codec {config.codec}): "
        f"X ({config.n_x}, {m}) float32, Y ({k}, {m}) {task.y_dtype} in {time.perf_counter() - t0:.1f} s; "
        f"Bayes loss {attrs['bayes_loss']:.5f}"
    )
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .plots import PlotConfig, plot

    config = PlotConfig.from_options(options_of(args, PlotConfig))
    r = plot(args.runs, args.out, config, overwrite=args.overwrite)
    scale = "log" if r["log_x"] else "linear"
    counts = {"run": r["runs"], "curve": len(r["curves"])}
    counted = ", ".join(f"{n} {what}{'s' if n != 1 else ''}" for what, n in counts.items())
    print(f"wrote {r['out']} ({r['width']}x{r['height']} PNG): {counted} of loss against samples seen ({scale} x)")
    return 0
