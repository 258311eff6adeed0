"""collector.lifecycle.Component: `async with` starts, and stops whatever ends the block."""

from __future__ import annotations

import pytest

from collector.lifecycle import Component


class _Recorder(Component):
    def __init__(self, fail_start: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_start = fail_start

    async def start(self) -> None:
        self.calls.append("start")
        if self.fail_start:
            raise OSError("port taken")

    async def stop(self, grace_s: float = 1.0) -> None:
        self.calls.append(f"stop {grace_s:g}")


async def test_async_with_starts_then_stops_with_the_default_grace() -> None:
    c = _Recorder()
    async with c as entered:
        assert entered is c
        assert c.calls == ["start"]
    assert c.calls == ["start", "stop 1"]


async def test_an_error_in_the_block_still_stops_and_propagates() -> None:
    c = _Recorder()
    with pytest.raises(ValueError, match="boom"):
        async with c:
            raise ValueError("boom")
    assert c.calls == ["start", "stop 1"]


async def test_a_failed_start_does_not_enter_the_block() -> None:
    c = _Recorder(fail_start=True)
    entered = False
    with pytest.raises(OSError, match="port taken"):
        async with c:
            entered = True
    assert not entered
    assert c.calls == ["start"]  # the component cleans up its own failed start


def test_a_component_without_start_and_stop_cannot_be_built() -> None:
    class Half(Component):
        async def start(self) -> None:
            pass

    with pytest.raises(TypeError, match="stop"):
        Half()  # type: ignore[abstract]
