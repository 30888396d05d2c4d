"""scripts/bench.py still runs against the package: a few rows at a tiny m, one round.

It asserts that the table and the JSON come out, never a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_bench_runs_a_few_rows_and_writes_its_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--m", "20000", "--rounds", "1", "--only", "read.raw,step,fit.raw.none,exact.sync"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the package next to the script, as the test sees it
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), *argv, "--data-dir", str(tmp_path), "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "| row | what | median [min–max] |" in done.stdout
    assert "`fit.raw.none`" in done.stdout and "≤ 0.6× read.raw.api" in done.stdout
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"read.raw.api", "read.raw.files", "step", "fit.raw.none", "exact.sync"}
    assert all(row["values"][0] > 0 for row in rows.values())


def test_bench_shards_lists_its_rows_without_starting_a_cluster():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_shards.py"), "--list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names[0] == "fit" and {"K4.w2", "opt.K2.w2.H1", "round.w2"} <= set(names)


def test_bench_moments_checks_its_rounds_against_fit_and_prints_its_table(tmp_path):
    """Its "averaged" rounds must be fit's bit for bit (it exits non-zero otherwise), at a tiny m."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["--m", "4000", "--epochs", "1", "--shards", "2", "--sync-every", "5", "--json", str(tmp_path / "m.json")]
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_moments.py"), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "| model | optimizer (lr) | K | H | averaged | reset | local |" in done.stdout
    runs = json.loads((tmp_path / "m.json").read_text())["runs"]
    assert len(runs) == 6 and all(len(r[v]) == 1 for r in runs for v in ("averaged", "reset", "local"))
