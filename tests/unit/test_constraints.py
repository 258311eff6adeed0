"""constraints.txt (the lock `make run` and `make test` install from) against pyproject.toml.

A dependency added to pyproject.toml without `make lock` would install unpinned, and a floor
raised above the locked version would make the lock unsatisfiable: both fail here, naming the
package, before a fresh clone finds out."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return [Requirement(r) for r in reqs]


def _pinned() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for n, line in enumerate((REPO / "constraints.txt").read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        name, sep, version = text.partition("==")
        assert sep, f"constraints.txt:{n}: not an exact pin: {line!r}"
        pins[canonicalize_name(name)] = Version(version.strip())
    return pins


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    pins = _pinned()
    problems = []
    for req in _declared():
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req.name}: in pyproject.toml, missing from constraints.txt (run make lock)")
        elif req.specifier and not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req.name}: locked {pins[name]} is outside pyproject's {req.specifier}")
    assert not problems, "\n".join(problems)


def test_lock_pins_each_package_once() -> None:
    names = [
        canonicalize_name(line.split("==", 1)[0].strip())
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    assert len(names) == len(set(names))
