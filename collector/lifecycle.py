"""The shape every long-lived component shares: `async start()`, `async stop()`, `async with`.

A component (the ingest server, the aggregator, an agent pipeline, the embedded broker, a
metrics endpoint, the local Prometheus) subclasses `Component` and writes `start()` and
`stop()`; `async with component:` then starts it and stops it on the way out, whatever
ends the block. Both methods must be idempotent (a second `start()` or `stop()` does
nothing, a `stop()` without a `start()` too) so that a failed start can be cleaned up with
the same `stop()`, and `stop()` bounds its own grace period. `stop()` may take optional
keyword arguments (a grace period); `__aexit__` calls it with none.

This module sits below the components, next to `errors.py`: it imports nothing of theirs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Component(ABC):
    """`async with` for a long-lived component with idempotent `start()` and `stop()`."""

    @abstractmethod
    async def start(self) -> None:
        """Bring the component up; a second call while it runs does nothing."""

    @abstractmethod
    async def stop(self) -> None:
        """Bring it down within its grace period; a second call (or one before start) does nothing."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
