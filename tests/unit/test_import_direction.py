"""Imports flow one way: the edge agent never imports the simulator (the simulator uses the
agent). Checked on the source text, lazy imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import collector

PACKAGE = Path(collector.__file__).parent


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def test_the_agent_never_imports_the_simulator() -> None:
    files = sorted((PACKAGE / "agent").rglob("*.py"))
    assert len(files) > 10  # the walk found the package
    offenders = {
        str(f.relative_to(PACKAGE)): sorted(m for m in _imports(f) if m.startswith("collector.simulate"))
        for f in files
    }
    assert {f: m for f, m in offenders.items() if m} == {}


def test_the_catalogue_imports_nothing_of_the_package() -> None:
    assert not any(m.startswith("collector") for m in _imports(PACKAGE / "catalog.py"))
