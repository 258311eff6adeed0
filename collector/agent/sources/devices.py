"""What the device adapters (snmp, gnmi) of the link source share.

Options are validated into pydantic models here so a bad value is a configuration error
naming its key (`agent.sources.link.options.targets[1].address`); secrets (SNMP community
and keys, gNMI password) come from the environment or a file, are held as SecretStr, and
never reach a log line or a label. Each target runs in its own task on its own interval,
so a slow or dead device never delays the others: `read()` only collects what the tasks
have finished since the previous read.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, SecretStr
from pydantic import ValidationError as PydanticValidationError

from collector.errors import ConfigError

log = logging.getLogger(__name__)
KEY = "agent.sources.link.options"
M = TypeVar("M", bound=BaseModel)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def validate_options(model: type[M], options: dict[str, Any]) -> M:
    """`model` from the adapter's options; the first error names its key (the entrypoint
    adds the file or environment variable it came from)."""
    try:
        return model.model_validate(options)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        raise ConfigError(err["msg"], key=KEY + loc) from None


def secret(
    value: SecretStr | None, env: str, file: Path | None, key: str, required: bool = True
) -> str | None:
    """A secret from `<key>_env` (environment variable name), `<key>_file` (first line) or
    the inline `<key>` (discouraged: it sits in the config file), in that order."""
    if env:
        v = os.environ.get(env)
        if v is None:
            raise ConfigError(f"environment variable {env!r} is not set", key=f"{key}_env")
        return v
    if file is not None:
        try:
            lines = file.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror}", key=f"{key}_file") from exc
        if not lines or not lines[0].strip():
            raise ConfigError(f"{file} is empty", key=f"{key}_file")
        return lines[0].strip()
    if value is not None:
        return value.get_secret_value()
    if required:
        raise ConfigError(f"set {key.rsplit('.', 1)[1]}_env or {key.rsplit('.', 1)[1]}_file", key=key)
    return None


def wanted(name: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
        fnmatch.fnmatchcase(name, p) for p in exclude
    )


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` or until `stop` is set; True when stopping."""
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def next_tick(now_s: float, interval_s: float) -> float:
    """Seconds until the next wall-clock multiple of the interval (ticks aligned like the
    sources' own)."""
    return interval_s - (now_s % interval_s)


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    tasks = list(tasks)
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t


class TargetTasks:
    """One task per device target, started by the adapter's first read (on the agent's event
    loop), which waits for every target's first attempt; all stopped together at close.
    What the snmp and gnmi adapters share. `stop` is the event their loops wait on."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def started(self) -> bool:
        return bool(self._tasks) or self.stop.is_set()

    async def start(
        self, targets: Sequence[Any], run: Callable[[Any], Coroutine[Any, Any, None]], first_wait_s: float
    ) -> None:
        """Start `run(target)` for every target (each has `name` and a `tried` event), then
        wait at most `first_wait_s` for every first attempt (see first_results)."""
        if self.started:
            return
        self._tasks = [asyncio.create_task(run(t), name=f"{self.kind}-{t.name}") for t in targets]
        await first_results((t.tried for t in targets), first_wait_s)

    async def close(self) -> None:
        self.stop.set()
        await cancel_all(self._tasks)
        self._tasks = []


async def first_results(events: Iterable[asyncio.Event], timeout_s: float) -> None:
    """The first read waits (at most `timeout_s`) for every target's first attempt, so the
    first collection (and `collector agent --once`) carries data; later reads never wait."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    if not waiters:
        return
    try:
        await asyncio.wait(waiters, timeout=timeout_s)
    finally:
        for w in waiters:
            w.cancel()
