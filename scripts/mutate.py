"""Mutation testing with hand-made one-line mutants: which small bugs does the test suite miss?

    nice -n 10 python scripts/mutate.py      # every mutant (about twenty minutes)
    python scripts/mutate.py --list          # the mutants, without running anything
    python scripts/mutate.py --check         # is every snippet still in the code? (seconds)
    python scripts/mutate.py --only NAME     # one mutant (repeatable)

Each mutant (``mutants.py``, ``mutants_reliability.py``) replaces one snippet of one module in a temporary copy of the
repository (the real tree is never edited) and runs only the test files that cover that
module, with ``pytest -x``. Killed: a test failed, or the run exceeded its timeout (a hang
is noticed too). Survived: every test passed, so the suite misses that bug. Equivalent
mutants change nothing observable; they are listed with the reason, not run, and left out
of the score. A snippet no longer in the code is reported as "not found" (exit status 1):
update its entry in ``mutants.py``.

A maintainer's tool, not part of CI: it runs the tests of a module once per mutant.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mutants_reliability
from mutants import MUTANTS as CORE_MUTANTS
from mutants import TESTS, Mutant

MUTANTS = CORE_MUTANTS + mutants_reliability.MUTANTS

ROOT = Path(__file__).resolve().parents[1]
PYTEST = (sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider")
# Not copied: history, caches and generated data.
IGNORE = shutil.ignore_patterns(".git", "__pycache__", ".*_cache", "*.egg-info", ".venv", "build", "dist", "data")
KILLED, SURVIVED, TIMEOUT = "killed", "survived", "timeout"
EQUIVALENT, NOT_FOUND, AMBIGUOUS, INVALID = "equivalent", "not found", "ambiguous", "invalid"
UNSCORED = (EQUIVALENT, NOT_FOUND, AMBIGUOUS, INVALID)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # The tests send themselves SIGINT: a script started in the background (``cmd &``) would pass
    # on SIGINT ignored, and they would fail without any mutant. A handler is reset at exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    mutants = _select(args.only)
    if args.list:
        _print_list(mutants)
        return 0
    problems = {m.name: p for m in mutants if (p := _snippet_problem(ROOT, m))}
    if args.check:
        for name, problem in problems.items():
            print(f"{problem:<11} {name}")
        print(f"{len(mutants) - len(problems)} of {len(mutants)} snippets found")
        return 1 if problems else 0
    with tempfile.TemporaryDirectory(prefix="streamtrain-mutants-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=IGNORE)
        _check_imports_from(copy)
        results = _run_all(copy, mutants, problems, args.timeout)
    _print_table(results)
    return 1 if any(status in (NOT_FOUND, AMBIGUOUS, INVALID) for _, status, _ in results) else 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--check", action="store_true", help="only check that every snippet is found, once")
    p.add_argument("--only", action="append", metavar="NAME", help="run only this mutant (repeatable)")
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds per mutant (default: 5x its tests' clean run, >= 60)"
    )
    return p


def _select(names: list[str] | None) -> list[Mutant]:
    if not names:
        return MUTANTS
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"mutate.py: unknown mutant {', '.join(unknown)} (see --list)")
    return [known[n] for n in names]


def _snippet_problem(repo: Path, m: Mutant) -> str:
    """'' when the mutant applies: its snippet is found exactly once and the result compiles."""
    path = repo / m.path
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    count = text.count(m.original)
    if count != 1:
        return NOT_FOUND if count == 0 else AMBIGUOUS
    try:
        compile(text.replace(m.original, m.mutated), str(path), "exec")
    except SyntaxError:
        return INVALID
    return ""


def _env(copy: Path) -> dict[str, str]:
    # The copy first on the path (the venv may hold an editable install of another tree), and
    # no bytecode: a mutant written in the same second as the original must not reuse its .pyc.
    return {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}


def _check_imports_from(copy: Path) -> None:
    code = "import streamtrain; print(streamtrain.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=copy.parent, env=_env(copy), capture_output=True, text=True)
    if not out.stdout.strip().startswith(str(copy)):
        sys.exit(f"mutate.py: the copy's tests would import streamtrain from {out.stdout.strip() or out.stderr}")


def _run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float]:
    """(KILLED | SURVIVED | TIMEOUT, seconds) of one pytest run in the copy."""
    t0 = time.perf_counter()
    # A session of its own, so a timeout also ends the processes the tests started.
    proc = subprocess.Popen(
        [*PYTEST, *tests],
        cwd=copy,
        env=_env(copy),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return TIMEOUT, time.perf_counter() - t0
    return (SURVIVED if code == 0 else KILLED), time.perf_counter() - t0


def _tests_of(copy: Path, m: Mutant) -> tuple[str, ...]:
    return tuple(f"tests/{t}" for t in TESTS.get(m.path, ()) if (copy / "tests" / t).exists())


def _baselines(copy: Path, mutants: list[Mutant], problems: dict[str, str]) -> dict[tuple[str, ...], float]:
    """Seconds of a clean run of each test set the mutants need; exits if one fails unmutated."""
    seconds: dict[tuple[str, ...], float] = {}
    for m in mutants:
        tests = _tests_of(copy, m)
        if m.equivalent or m.name in problems or tests in seconds:
            continue
        status, seconds[tests] = _run_tests(copy, tests, timeout=1800)
        if status != SURVIVED:
            sys.exit(f"mutate.py: the tests fail without any mutant: {' '.join(tests)}")
    return seconds


def _run_all(
    copy: Path, mutants: list[Mutant], problems: dict[str, str], timeout: float | None
) -> list[tuple[Mutant, str, float]]:
    baselines = _baselines(copy, mutants, problems)
    results = []
    for i, m in enumerate(mutants, start=1):
        if m.equivalent or m.name in problems:
            results.append((m, EQUIVALENT if m.equivalent else problems[m.name], 0.0))
            continue
        tests = _tests_of(copy, m)
        path = copy / m.path
        original = path.read_text(encoding="utf-8")
        path.write_text(original.replace(m.original, m.mutated), encoding="utf-8")
        try:
            status, seconds = _run_tests(copy, tests, timeout or max(60.0, 5 * baselines[tests]))
        finally:
            path.write_text(original, encoding="utf-8")
        results.append((m, status, seconds))
        print(f"[{i}/{len(mutants)}] {status:<9} {m.name} ({seconds:.1f} s)", file=sys.stderr, flush=True)
    return results


def _print_list(mutants: list[Mutant]) -> None:
    for m in mutants:
        note = f"  [equivalent: {m.equivalent}]" if m.equivalent else ""
        print(f"{m.name:<32} {m.path:<34} {m.reason}{note}")


def _print_table(results: list[tuple[Mutant, str, float]]) -> None:
    print(f"{'status':<11} {'mutant':<32} {'file':<34} {'s':>5}  bug")
    for m, status, seconds in results:
        print(f"{status:<11} {m.name:<32} {m.path:<34} {seconds:5.1f}  {m.reason}")
    scored = [status for _, status, _ in results if status not in UNSCORED]
    killed = sum(status in (KILLED, TIMEOUT) for status in scored)
    share = f" ({100 * killed / len(scored):.0f}%)" if scored else ""
    others = ", ".join(f"{sum(s == u for _, s, _ in results)} {u}" for u in UNSCORED)
    print(f"\nmutation score: {killed}/{len(scored)} non-equivalent mutants killed{share}; {others}")
    for m, status, _ in results:
        if status == SURVIVED:
            print(f"  survived: {m.name} ({m.path}): {m.reason}")
        elif m.equivalent:
            print(f"  equivalent: {m.name}: {m.equivalent}")


if __name__ == "__main__":
    sys.exit(main())
