"""docs/architecture.md's "Where things live" matches the tree: every module of the package
is named there, and every file it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _section() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    return text.split("## Where things live", 1)[1].split("\n## ", 1)[0]


def _modules() -> list[Path]:
    pkg = ROOT / "collector"
    return [
        p
        for p in pkg.rglob("*.py")
        if "proto" not in p.relative_to(pkg).parts and p.name not in ("__init__.py", "__main__.py")
    ]


def test_every_module_of_the_package_is_named() -> None:
    section = _section()
    missing = []
    for p in _modules():
        if p.name.endswith("_cmd.py") or p.name == "main.py":
            continue  # the entry points: named as a group ("*_cmd.py", "main.py")
        if p.name not in section:
            missing.append(str(p.relative_to(ROOT)))
        if p.parent.name != "collector" and f"{p.parent.name}/" not in section:
            missing.append(f"{p.parent.name}/")
    assert not missing, f"not in docs/architecture.md's 'Where things live': {sorted(set(missing))}"


def test_every_file_it_names_exists() -> None:
    names = {p.name for p in _modules()}
    names |= {p.name for d in ("tests", "scripts", "bench") for p in (ROOT / d).glob("*.py")}
    named = set(re.findall(r"(?<![*\w])([a-z][a-z_]*\.py)\b", _section()))
    assert named, "the section names no file"
    assert not named - names, f"named but not in the tree: {sorted(named - names)}"
