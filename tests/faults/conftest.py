"""Every test here is a whole-pipeline fault case: marked `faults` (run them alone with
`pytest -m faults`, the long form with FAULTS_FULL=1; see docs/reliability.md)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from tests.faults.runner import Case, Runner

CASE_MODULES = (
    "tests.faults.cases_processes",
    "tests.faults.cases_network",
    "tests.faults.cases_disk",
    "tests.faults.cases_attacks",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    faults = [i for i in items if "tests/faults/" in str(i.path).replace("\\", "/")]
    for item in faults:
        item.add_marker(pytest.mark.faults)
    # last: the cases load the machine (many processes), the other tests need it quiet
    items[:] = [i for i in items if i not in faults] + faults


def _all_cases() -> dict[str, Case]:
    out: dict[str, Case] = {}
    for mod in CASE_MODULES:
        m = importlib.import_module(mod)
        for name, fn in inspect.getmembers(m, inspect.iscoroutinefunction):
            if name.startswith("case"):
                out[name] = fn
    return out


@pytest.fixture(scope="session")
def fault_runner(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    cases = _all_cases()
    selected = {
        item.name.removeprefix("test_")
        for item in request.session.items
        if "tests/faults/" in str(item.path).replace("\\", "/")
    }
    missing = selected - set(cases)
    assert not missing, f"tests without a case: {missing}"

    def tmp(name: str) -> Path:
        return tmp_path_factory.mktemp(name[:40])

    runner = Runner({n: c for n, c in cases.items() if n in selected}, tmp)
    runner.start()
    return runner
