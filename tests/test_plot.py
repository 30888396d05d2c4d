"""streamtrain plot: metrics files read record by record, curves placed at the samples seen, one PNG
written where it may be, and one-line errors for what a user can get wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest

import streamtrain
from streamtrain import ConfigError, DataError, PlotConfig
from streamtrain.cli import main
from streamtrain.outputs import PNG_SIGNATURE
from streamtrain.plots import curves, read_runs


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *fragments):
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamtrain: error: "), err
    for fragment in fragments:
        assert str(fragment) in lines[0], lines[0]


def write_lines(path, *records):
    """A metrics file: each record as one JSON line (text and bytes are written as they are)."""
    lines = [r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode() for r in records]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def epochs(*losses, samples=100, **extra):
    """Epoch records as a mini-batch run writes them, one per loss."""
    return [{"epoch": i, "loss": loss, "seconds": 0.1, "samples": samples, **extra} for i, loss in enumerate(losses, 1)]


def by_label(path_or_runs):
    runs = read_runs(path_or_runs) if isinstance(path_or_runs, os.PathLike) else path_or_runs
    return {c.label: c for c in curves(runs)}


@pytest.fixture
def logged(tmp_path):
    return write_lines(tmp_path / "run.jsonl", *epochs(0.7, 0.5, 0.4))


# -- the image ------------------------------------------------------------------------------------


def test_plot_writes_a_png_of_the_declared_size(capsys, tmp_path, logged):
    out = tmp_path / "curves.png"
    code, printed, err = run(capsys, "plot", logged, "-o", out, "--width", 4, "--height", 3, "--dpi", 50)
    assert (code, err) == (0, "")
    assert printed == f"wrote {out} (200x150 PNG): 1 run, 1 curve of loss against samples seen (linear x)\n"
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert mpimg.imread(out).shape == (150, 200, 4)  # rows, columns, RGBA
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_the_image_is_the_same_for_the_same_runs_and_changes_with_them(tmp_path, logged):
    other = write_lines(tmp_path / "other.jsonl", *epochs(0.7, 0.6, 0.55))
    streamtrain.plot(logged, tmp_path / "a.png")
    streamtrain.plot(logged, tmp_path / "again.png")
    streamtrain.plot(other, tmp_path / "b.png")
    streamtrain.plot([logged, other], tmp_path / "both.png")
    images = {name: (tmp_path / f"{name}.png").read_bytes() for name in ("a", "again", "b", "both")}
    assert images["a"] == images["again"]
    assert len({images["a"], images["b"], images["both"]}) == 3
    assert not np.array_equal(mpimg.imread(tmp_path / "a.png"), mpimg.imread(tmp_path / "b.png"))


def test_title_and_size_are_options_declared_once(tmp_path, logged):
    plain = streamtrain.plot(logged, tmp_path / "plain.png")
    titled = streamtrain.plot(logged, tmp_path / "titled.png", PlotConfig(title="three runs"), dpi=60)
    assert (plain["width"], plain["height"]) == (800, 500)
    assert (titled["width"], titled["height"]) == (480, 300)
    with pytest.raises(ConfigError, match=r"width \* dpi must be 64 to 16,384 pixels, got 1000 \* 100"):
        streamtrain.plot(logged, tmp_path / "huge.png", width=1000)
    with pytest.raises(ConfigError, match="unknown log_x 'sometimes'"):
        PlotConfig(log_x="sometimes")
    assert not (tmp_path / "huge.png").exists()


# -- several runs on one figure, from real training --------------------------------------------------


def test_batch_mini_batch_and_sgd_runs_on_one_figure(tmp_path):
    X = np.random.default_rng(0).standard_normal((3, 600)).astype(np.float32)
    Y = (X[:1] + 0.5 * np.random.default_rng(1).standard_normal((1, 600)) > 0).astype(np.float32)
    source = streamtrain.ArraySource(X, Y, chunk_size=100)
    runs = {"full": dict(lr=1.0), 64: dict(eval_exact_every=1), 1: dict(lr=0.01, eval_exact_every=2)}
    paths = []
    for batch_size, options in runs.items():
        paths.append(tmp_path / f"b{batch_size}.jsonl")
        streamtrain.fit(source, batch_size=batch_size, epochs=3, holdout=0.2, metrics=paths[-1], **options)

    r = streamtrain.plot(paths, tmp_path / "curves.png")
    drawn = by_label([run for p in paths for run in read_runs(p)])
    assert r["runs"] == 3 and r["curves"] == list(drawn) and len(drawn) == 8
    # 400 samples trained on an epoch: 2 of the 6 chunks are held out.
    # Batch GD: its loss is J before each step (0 samples seen first); no mini-batch mean to draw.
    assert drawn["bfull: exact loss"].x == [0, 400, 800] and "bfull: training loss" not in drawn
    assert drawn["bfull: validation loss"].x == [400, 800, 1200]  # measured after the step
    assert drawn["b64: training loss"].x == drawn["b64: exact loss"].x == [400, 800, 1200]
    assert drawn["b1: exact loss"].x == [800, 1200]  # every 2 epochs, and after the last
    assert {c.run for c in drawn.values()} == {0, 1, 2}  # one colour a run


def test_lbfgs_iterations_are_placed_by_the_samples_their_passes_read(tmp_path):
    pytest.importorskip("scipy")
    X = np.random.default_rng(0).standard_normal((3, 400))
    Y = (X[:1] > 0.2).astype(np.float64)
    path = tmp_path / "lbfgs.jsonl"
    result = streamtrain.fit(streamtrain.ArraySource(X, Y, chunk_size=100), optimizer="lbfgs", l2=1.0, metrics=path)
    exact = by_label(path)["lbfgs: exact loss"]
    assert exact.x == [400 * r.passes for r in result.history]
    assert exact.y == [r.loss for r in result.history]


# -- reading the records ----------------------------------------------------------------------------


def test_step_records_are_a_thin_line_under_the_epoch_points_and_unknown_keys_are_ignored(tmp_path):
    steps = [
        {"step": s, "epoch": 1 + (s > 2), "samples_seen": 50 * s, "loss": 1.0 / s, "lr": 0.1} for s in (1, 2, 3, 4)
    ]
    path = write_lines(
        tmp_path / "r.jsonl",
        steps[0],
        steps[1],
        {**epochs(0.6)[0], "new_key": [1, 2]},
        steps[2],
        steps[3],
        *epochs(0.6, 0.4)[1:],
    )
    drawn = by_label(path)
    per_step = drawn["r: training loss per step"]
    assert (per_step.x, per_step.y) == ([50, 100, 150, 200], [1.0, 0.5, 1 / 3, 0.25])
    assert per_step.style["linewidth"] < 1 and per_step.style["alpha"] < 1 and "marker" not in per_step.style
    assert drawn["r: training loss"].x == [100, 200] and drawn["r: training loss"].style["marker"]


def test_runs_appended_to_one_file_are_told_apart_and_a_repeated_epoch_replaces_the_first(tmp_path):
    step = {"step": 1, "epoch": 1, "samples_seen": 10, "loss": 0.9}
    path = write_lines(
        tmp_path / "r.jsonl",
        *epochs(0.7, 0.6, 0.5),
        epochs(0, 0, 0.45)[2],  # epoch 3 again: a run resumed from a checkpoint after a hard kill
        *epochs(0.8, 0.7),  # fit appended a second run
        step,  # and a third, logging steps
        *epochs(0.65),
        {**step, "step": 2, "epoch": 2, "samples_seen": 110},
        {**step, "step": 2, "epoch": 2, "samples_seen": 110, "loss": 0.5},  # resumed: step 2 again
    )
    runs = read_runs(path)
    assert [r.name for r in runs] == ["r (1)", "r (2)", "r (3)"]
    assert [runs[0].epochs[e]["loss"] for e in (1, 2, 3)] == [0.7, 0.6, 0.45]
    assert sorted(runs[1].epochs) == [1, 2] and list(runs[2].epochs) == [1]
    assert [(s, r["loss"]) for s, r in runs[2].steps.items()] == [(1, 0.9), (2, 0.5)]


def test_files_with_the_same_stem_are_named_by_their_path(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        write_lines(tmp_path / d / "run.jsonl", *epochs(0.7))
    paths = [tmp_path / "a" / "run.jsonl", tmp_path / "b" / "run.jsonl"]
    r = streamtrain.plot(paths, tmp_path / "c.png")
    assert r["curves"] == [f"{tmp_path / d / 'run'}: training loss" for d in ("a", "b")]
    r = streamtrain.plot([paths[0], write_lines(tmp_path / "other.jsonl", *epochs(0.7))], tmp_path / "d.png")
    assert r["curves"] == ["run: training loss", "other: training loss"]


def test_log_x_when_the_samples_seen_span_more_than_two_decades(tmp_path):
    narrow = write_lines(tmp_path / "narrow.jsonl", *epochs(*[0.5] * 100))  # 100 to 10,000: two decades
    wide = write_lines(
        tmp_path / "wide.jsonl", {"step": 1, "epoch": 1, "samples_seen": 1, "loss": 0.9}, *epochs(0.5, 0.4)
    )
    assert streamtrain.plot(narrow, tmp_path / "n.png")["log_x"] is False
    assert streamtrain.plot(wide, tmp_path / "w.png")["log_x"] is True
    assert streamtrain.plot(wide, tmp_path / "off.png", log_x="off")["log_x"] is False
    assert streamtrain.plot(narrow, tmp_path / "on.png", log_x="on")["log_x"] is True


BAD_LINES = {
    "not JSON": ("{epoch: 1}", "not a JSON object: '{epoch: 1}'"),
    "an array": ("[1, 2]", "not a JSON object: '[1, 2]'"),
    "not text": (b"\xff\xfe\x00", "not a JSON object: '\ufffd\ufffd\\x00'"),
    "no loss": ({"epoch": 2, "samples": 100}, "epoch record without 'loss' (needs epoch, loss, samples)"),
    "no samples": ({"epoch": 2, "loss": 0.5}, "epoch record without 'samples'"),
    "a text loss": ({"epoch": 2, "loss": "low", "samples": 1}, "loss must be a finite number, got 'low'"),
    "NaN": ('{"epoch": 2, "loss": NaN, "samples": 1}', "loss must be a finite number, got nan"),
    "epoch 0": ({"epoch": 0, "loss": 0.5, "samples": 1}, "epoch must be a count from 1, got 0"),
    "epoch true": ({"epoch": True, "loss": 0.5, "samples": 1}, "epoch must be a count from 1, got True"),
    "a text validation loss": ({**epochs(0.5)[0], "validation_loss": "x"}, "validation_loss must be a finite number"),
    "a step without samples_seen": ({"step": 3, "epoch": 1, "loss": 0.5}, "step record without 'samples_seen'"),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_bad_line_is_a_one_line_error_naming_the_file_and_line(capsys, tmp_path, case):
    bad, says = BAD_LINES[case]
    path = tmp_path / "run.jsonl"
    write_lines(path, *epochs(0.7), "", bad, *epochs(0.1))
    code, out, err = run(capsys, "plot", path, "-o", tmp_path / "c.png")
    one_line_error(code, err, f"{path}, line 3: {says}")
    assert out == "" and not (tmp_path / "c.png").exists()


def test_an_endless_line_is_not_read_into_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"x" * (2**20 + 10))
    with pytest.raises(DataError, match=r"big.jsonl, line 1: longer than 1,048,576 bytes: not a metrics file"):
        read_runs(path)


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_an_empty_file_is_an_error(capsys, tmp_path, text):
    (tmp_path / "empty.jsonl").write_text(text)
    code, _, err = run(capsys, "plot", tmp_path / "empty.jsonl", "-o", tmp_path / "c.png")
    one_line_error(code, err, f"{tmp_path / 'empty.jsonl'}: holds no records (an empty metrics file)")


def test_a_missing_file_is_an_error_and_nothing_is_written(capsys, tmp_path, logged):
    code, out, err = run(capsys, "plot", logged, tmp_path / "none.jsonl", "-o", tmp_path / "c.png")
    one_line_error(code, err, tmp_path / "none.jsonl", "No such file or directory")
    assert out == "" and not (tmp_path / "c.png").exists()


# -- where the image goes -------------------------------------------------------------------------


def test_an_existing_image_is_replaced_only_with_overwrite_checked_before_reading(capsys, tmp_path, logged):
    out = tmp_path / "c.png"
    streamtrain.plot(logged, out)
    before = out.read_bytes()
    bad = write_lines(tmp_path / "bad.jsonl", "not json")  # would fail if it were read first
    code, _, err = run(capsys, "plot", bad, "-o", out)
    one_line_error(code, err, f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
    assert out.read_bytes() == before

    other = write_lines(tmp_path / "other.jsonl", *epochs(0.9, 0.2))
    code, printed, err = run(capsys, "plot", other, logged, "-o", out, "--overwrite")
    assert (code, err) == (0, "") and out.read_bytes() != before
    assert printed == f"wrote {out} (800x500 PNG): 2 runs, 2 curves of loss against samples seen (linear x)\n"


@pytest.mark.parametrize("existing", ["metrics", "text", "directory"])
def test_overwrite_replaces_a_png_image_only(capsys, tmp_path, logged, existing):
    out = tmp_path / "c.png"
    if existing == "directory":
        out.mkdir()
    else:
        out.write_text(logged.read_text() if existing == "metrics" else "notes\n")
    before = None if existing == "directory" else out.read_bytes()
    code, _, err = run(capsys, "plot", logged, "-o", out, "--overwrite")
    one_line_error(code, err, out, "directory" if existing == "directory" else "is not a PNG image; not replacing it")
    assert before is None or out.read_bytes() == before


def test_the_image_is_none_of_the_files_read_and_is_named_png(capsys, tmp_path, logged):
    streamtrain.plot(logged, tmp_path / "c.png")
    code, _, err = run(capsys, "plot", logged, tmp_path / "c.png", "-o", tmp_path / "c.png", "--overwrite")
    one_line_error(code, err, "is the data being read")
    code, _, err = run(capsys, "plot", logged, "-o", tmp_path / "c.svg")
    one_line_error(code, err, "c.svg: plot writes PNG images; name the output *.png")
    assert not (tmp_path / "c.svg").exists()


def test_without_matplotlib_the_error_names_the_extra(capsys, monkeypatch, tmp_path, logged):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    code, _, err = run(capsys, "plot", logged, "-o", tmp_path / "c.png")
    one_line_error(code, err, "plot needs matplotlib: pip install 'streamtrain[plot]'")
    assert not (tmp_path / "c.png").exists()


def test_help_does_not_import_matplotlib_and_plotting_leaves_pyplot_alone(tmp_path, logged):
    code = (
        "import sys\nfrom streamtrain.cli import main\n"
        "for argv in (['--help'], ['plot', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0\n"
        "assert 'matplotlib' not in sys.modules\n"
        f"assert main(['plot', {str(logged)!r}, '-o', {str(tmp_path / 'c.png')!r}]) == 0\n"
        "assert 'matplotlib' in sys.modules and 'matplotlib.pyplot' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}  # no screen
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "RUN.jsonl" in proc.stdout and "--log-x {auto,on,off}" in proc.stdout
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG_SIGNATURE
