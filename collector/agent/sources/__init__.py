"""Sources of the agent: what is collected, each on its own interval.

    server (host health, node_exporter names)   link (interfaces, optical)   cell (3GPP PM files)
                       \\                            |                            /
                        Source.collect(builder, now) -> AgentPipeline.submit -> spool -> sender

A source fills a BatchBuilder with samples; the scheduler (`run_source`) submits one batch
per collection with the source's spool priority. A failing collection is logged and counted,
never fatal: the next tick tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from collector.agent.batch import BatchBuilder
from collector.agent.metrics import SourceStats
from collector.agent.pipeline import AgentPipeline
from collector.agent.spool import SpoolError
from collector.errors import CollectorError, ConfigError

log = logging.getLogger(__name__)


def load_adapter(
    source: str, spec: str, options: Mapping[str, Any], builtins: Mapping[str, Any], base: type, choices: str
) -> Any:
    """Build a source's adapter: a built-in name or 'package.module:Class', called with
    **options. A built-in may itself be a 'package.module:Class' string (imported only when
    chosen). Errors name `agent.sources.<source>.adapter` or `.options`."""
    key = f"agent.sources.{source}"
    cls: Any = builtins.get(spec, spec)
    if isinstance(cls, str):
        module, _, attr = cls.partition(":")
        if not attr:
            raise ConfigError(
                f"unknown {source} adapter {spec!r} ({choices} or module:Class)", key=f"{key}.adapter"
            )
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot load {source} adapter {spec!r}: {exc}", key=f"{key}.adapter") from exc
    try:
        adapter = cls(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for {source} adapter {spec!r}: {exc}", key=f"{key}.options") from exc
    if not isinstance(adapter, base):
        raise ConfigError(f"{spec!r} is not a {base.__name__}", key=f"{key}.adapter")
    return adapter


class Source(ABC):
    """One kind of telemetry. Subclasses set `name`, `interval_s` and `priority`."""

    name: str = "source"
    interval_s: float = 10.0
    priority: int = 0
    # True when the last collection left work for the next one at once (a split backlog).
    backlog: bool = False

    def __init__(self) -> None:
        self.stats = SourceStats()

    @abstractmethod
    async def collect(self, builder: BatchBuilder, now_unix_nano: int) -> None:
        """Add this tick's samples to `builder`. Raise CollectorError for a failed tick."""

    def committed(self) -> None:  # noqa: B027 - optional hook
        """The batch of the last collect() is in the spool (or it had no samples): release
        what it was built from (e.g. move its PM files to done/). Not called when the
        collection or the spooling failed."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (files, sessions)."""


async def collect_once(source: Source, pipeline: AgentPipeline) -> int | None:
    """Run one collection and submit its batch; the seq, or None when nothing was collected."""
    builder = pipeline.new_builder()
    t0 = time.perf_counter()
    try:
        await source.collect(builder, time.time_ns())
    except (CollectorError, OSError, ValueError) as exc:
        source.stats.errors += 1
        log.error("source %s: collection failed: %s", source.name, exc)
        return None
    except Exception:
        # A third-party adapter's bug must not stop the other sources or the sender: log it
        # with its traceback, count it, try again next tick.
        source.stats.errors += 1
        log.exception("source %s: unexpected error in collection", source.name)
        return None
    finally:
        source.stats.collections += 1
        source.stats.seconds += time.perf_counter() - t0
    n = len(builder)
    if not n:
        source.committed()
        return None
    source.stats.samples += n
    try:
        seq = await pipeline.submit(builder, priority=source.priority)
    except SpoolError as exc:
        # Counted as a drop (reason io_error) by the pipeline; the source lives on, does not
        # commit what it read (a file source reads it again) and the next tick tries again.
        source.stats.errors += 1
        log.error("source %s: batch not spooled: %s", source.name, exc)
        return None
    source.committed()
    return seq


async def run_source(source: Source, pipeline: AgentPipeline, stop: asyncio.Event) -> None:
    """Collect on ticks aligned to the interval until `stop` is set."""
    interval = source.interval_s
    while not stop.is_set():
        failed = False
        try:
            await collect_once(source, pipeline)
        except Exception:
            # Never a silently dead source task: count, log with traceback, next tick.
            source.stats.errors += 1
            log.exception("source %s: unexpected error", source.name)
            failed = True
        if source.backlog and not failed:
            await asyncio.sleep(0)  # more of a split backlog: next batch at once
            continue
        now = time.time()
        delay = interval - (now % interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
