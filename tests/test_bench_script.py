"""scripts/bench.py still runs against the package: a few rows at a tiny m, one round.

It asserts that the table and the JSON come out, never a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def script(name, *argv):
    """``scripts/<name>`` run with the package next to it (as the tests see it); its stdout. It must exit 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *map(str, argv)], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bench_runs_a_few_rows_and_writes_its_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--m", "20000", "--rounds", "1", "--only", "read.raw,step,fit.raw.none,exact.sync"]
    stdout = script("bench.py", *argv, "--data-dir", tmp_path, "--json", out)
    assert "| row | what | median [min–max] |" in stdout
    assert "`fit.raw.none`" in stdout and "≤ 0.6× read.raw.api" in stdout
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"read.raw.api", "read.raw.files", "step", "fit.raw.none", "exact.sync"}
    assert all(row["values"][0] > 0 for row in rows.values())


def test_bench_shards_lists_its_rows_without_starting_a_cluster():
    names = [line.split()[0] for line in script("bench_shards.py", "--list").splitlines()]
    assert names[0] == "fit" and {"K4.w2", "opt.K2.w2.H1", "round.w2"} <= set(names)


def test_bench_moments_checks_its_rounds_against_fit_and_prints_its_table(tmp_path):
    """Its "averaged" rounds must be fit's bit for bit (it exits non-zero otherwise), at a tiny m."""
    argv = ["--m", "4000", "--epochs", "1", "--shards", "2", "--sync-every", "5", "--json", tmp_path / "m.json"]
    assert "| model | optimizer (lr) | K | H | averaged | reset | local |" in script("bench_moments.py", *argv)
    runs = json.loads((tmp_path / "m.json").read_text())["runs"]
    assert len(runs) == 6 and all(len(r[v]) == 1 for r in runs for v in ("averaged", "reset", "local"))
