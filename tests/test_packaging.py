"""How the package is installed and named: one version, every extra in `all`, `python -m streamtrain`."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import streamtrain

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
PYPROJECT = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
TOOLS = {"test", "lint", "bench", "all"}  # extras for working on streamtrain, not features of it


def test_the_version_is_written_once_and_installed_as_written():
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "streamtrain.__version__"}
    assert importlib.metadata.version("streamtrain") == streamtrain.__version__
    proc = subprocess.run([sys.executable, "-m", "streamtrain", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"streamtrain {streamtrain.__version__}"


def test_the_all_extra_holds_every_feature_extra():
    extras = PYPROJECT["project"]["optional-dependencies"]
    (everything,) = extras["all"]
    named = set(re.fullmatch(r"streamtrain\[(.*)\]", everything).group(1).split(","))
    assert named == set(extras) - TOOLS
