"""The package's layers, read from its imports: pure maths stays pure, and no module reaches into
another package's private modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "streamtrain"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> list[str]:
    """The streamtrain modules ``path`` imports, as dotted names (``streamtrain.sources._base``)."""
    package = ".".join(("streamtrain", *path.relative_to(PACKAGE).parent.parts))
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names += [module] if node.module else [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return [n for n in names if n.split(".")[0] in ("streamtrain", "dask", "distributed")]


def test_models_are_pure_maths():
    assert set(_imports(PACKAGE / "models.py")) <= {"streamtrain._errors", "streamtrain.labels", "streamtrain.layers"}
    assert set(_imports(PACKAGE / "layers.py")) <= {"streamtrain.labels"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_another_packages_private_module(path):
    own = ".".join(("streamtrain", *path.relative_to(PACKAGE).parent.parts))
    for name in _imports(path):
        parts = name.split(".")
        private = next((i for i, p in enumerate(parts) if p.startswith("_") and i > 0), None)
        if private is not None and private > 1:  # streamtrain._errors is the package's own
            assert ".".join(parts[:private]) == own, f"{path.name} imports {name}"


def test_only_the_exact_path_imports_dask():
    importers = {p.name for p in MODULES if any(n.split(".")[0] in ("dask", "distributed") for n in _imports(p))}
    assert importers == {"full_batch.py"}
