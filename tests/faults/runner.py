"""Runs the selected fault cases concurrently, so the quick form fits the CI budget.

Each case is an `async def case_x(tmp_path)` coroutine in a `cases_*.py` module; every case
builds its own stack (own broker, ports, directories), so they run side by side in one event
loop on a background thread. `test_suite.py` has one pytest test per case, which waits for
that case's outcome and re-raises its failure: the cases stay separate test results while
the wall time is that of the slowest case, not the sum.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

Case = Callable[[Path], Awaitable[None]]


class Runner:
    def __init__(self, cases: dict[str, Case], tmp: Callable[[str], Path], concurrency: int = 5) -> None:
        self.concurrency = concurrency
        self.cases = cases
        self.tmp = tmp
        self.done: dict[str, threading.Event] = {n: threading.Event() for n in cases}
        self.errors: dict[str, BaseException] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=lambda: asyncio.run(self._all()), name="fault-cases", daemon=True
            )
            self._thread.start()

    async def _all(self) -> None:
        # at most this many at once: a 2-core machine with every case's processes running
        # starves them (a fault's recovery then measures the scheduler, not the product)
        slots = asyncio.Semaphore(self.concurrency)

        async def one(name: str, case: Case) -> None:
            try:
                async with slots:
                    await case(self.tmp(name))
            except BaseException as exc:  # handed to the pytest test of this case
                self.errors[name] = exc
                traceback.print_exc()
            finally:
                self.done[name].set()

        await asyncio.gather(*(one(n, c) for n, c in self.cases.items()))

    def result(self, name: str, timeout: float) -> None:
        self.start()
        if not self.done[name].wait(timeout):
            raise TimeoutError(f"fault case {name} did not finish within {timeout:.0f}s")
        if name in self.errors:
            raise self.errors[name]
