"""Child processes for integration and fault tests: started as the CLI starts them, ready
when a line on stdout matches, stopped by their own pid (never by name).

    p = ChildProcess("ingest", ["-m", "collector", "ingest", "--config", cfg], log, READY)
    await p.start()
    port = int(p.field("port"))      # from the ready line ("... port=4317 ...")
    rc = await p.terminate()         # SIGTERM, SIGKILL if it overstays; p.stop_took_s

stdout is read until the ready line and drained afterwards (a child writing to a full pipe
would block); stderr goes to the log file, whose tail `log()` returns for failure messages.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parent.parent

_START_SLOTS: asyncio.Semaphore | None = None


def _starting() -> asyncio.Semaphore:
    """Processes starting at once (Python imports are CPU-bound): the fault suite's
    concurrent cases would otherwise start dozens together on a 2-core machine. One
    semaphore per event loop."""
    global _START_SLOTS
    if _START_SLOTS is None or _START_SLOTS._get_loop() is not asyncio.get_running_loop():  # type: ignore[attr-defined]
        _START_SLOTS = asyncio.Semaphore(3)
    return _START_SLOTS


class ChildProcess:
    """`python <argv>` (after an optional `prefix` such as `fiu-run -x`, exec'd in place so
    the pid is the same), ready when `ready` (a regex) matches a line of its stdout."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        ready: str = r" ready: ",
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.ready = re.compile(ready)
        self.env = env
        self.prefix = prefix or []
        self.proc: asyncio.subprocess.Process | None = None
        self.match: re.Match[str] | None = None
        self.ready_line = ""
        self.stop_took_s = 0.0  # how long the last terminate() took
        self._drain: asyncio.Task[None] | None = None

    async def start(self, within: float = 240.0, *, queue: bool = False) -> Self:
        """`queue`: wait for a start slot (many agents started together); a restart after a
        fault does not queue (its delay would be part of the outage)."""
        if not queue:
            return await self._start(within)
        async with _starting():
            return await self._start(within)

    async def _start(self, within: float) -> Self:
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
            self.proc = await asyncio.create_subprocess_exec(
                *self.prefix,
                sys.executable,
                *self.argv,
                cwd=str(REPO),
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(within):
                while True:
                    line = (await self.proc.stdout.readline()).decode()
                    if not line:
                        raise AssertionError(f"{self.name} exited before ready:\n{self.log()}")
                    if m := self.ready.search(line):
                        self.match, self.ready_line = m, line.strip()
                        break
        except BaseException:
            await self.kill()
            raise
        self._drain = asyncio.create_task(self._drain_stdout())
        return self

    async def _drain_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while await self.proc.stdout.readline():
            pass

    def field(self, name: str) -> str:
        """`name=VALUE` from the ready line."""
        m = re.search(rf"{name}=(\S+)", self.ready_line)
        assert m, self.ready_line
        return m[1]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    async def kill(self) -> None:
        """SIGKILL (by pid) and reap."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            await self.proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None

    async def terminate(self, within: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL when it overstays `within`. The exit code; the time it
        took is `stop_took_s`."""
        assert self.proc is not None
        t0 = time.monotonic()
        if self.alive():
            self.proc.terminate()
            try:
                async with asyncio.timeout(within):
                    await self.proc.wait()
            except TimeoutError:
                await self.kill()
        self.stop_took_s = time.monotonic() - t0
        rc = self.proc.returncode
        assert rc is not None
        return rc

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


def collector_process(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> ChildProcess:
    """`python -m collector <args>`, ready at its "... ready: ..." line."""
    return ChildProcess(args[0], ["-m", "collector", *args], log_path, r" ready: ", env=env)
