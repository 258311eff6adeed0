"""How tests wait: poll a condition until it holds or a bound passes, never a bare sleep.

    assert await eventually(lambda: server.acked >= 3, within=30)
    assert await eventually(prometheus_has_series, within=60)      # a coroutine function too
    assert wait_until(lambda: _get(url), within=20)           # from synchronous tests

Each returns the condition's last value (falsy when the bound passed), so the assertion's
message can show what was seen. The bound is a ceiling, not a timing assertion: a fast run
returns at the first true poll.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(pred: Callable[[], Any], within: float = 10.0, step: float = 0.02) -> Any:
    """Poll a cheap, non-blocking `pred` on the event loop (a coroutine function too, for a
    probe that does I/O)."""

    async def value() -> Any:
        got = pred()
        return await got if inspect.isawaitable(got) else got

    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while loop.time() < end:
        if got := await value():
            return got
        await asyncio.sleep(step)
    return await value()


async def eventually_in_thread(pred: Callable[[], Any], within: float = 10.0, step: float = 0.25) -> Any:
    """Poll a blocking `pred` (urllib calls) in a worker thread, so the event loop's own
    servers keep running meanwhile."""
    return await eventually(lambda: asyncio.to_thread(pred), within, step)


def wait_until(pred: Callable[[], Any], within: float, step: float = 0.5) -> Any:
    """Poll `pred` from synchronous code (tests driving child processes over HTTP)."""
    deadline = time.monotonic() + within
    while True:
        got = pred()
        if got or time.monotonic() >= deadline:
            return got
        time.sleep(step)
