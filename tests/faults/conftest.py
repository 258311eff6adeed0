"""Every test here is a whole-pipeline fault case: marked `faults` (run them alone with
`pytest -m faults`, the long form with FAULTS_FULL=1; see docs/reliability.md)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.faults)
