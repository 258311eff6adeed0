"""Child processes this process started (the embedded broker, a local Prometheus, ...).

Every component that forks a long-lived helper registers it here while it runs, so the
entrypoint can kill them all by pid when the user forces an exit (a second Ctrl-C) and
the components' own graceful `stop()` will not run. Graceful stops unregister.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading

_lock = threading.Lock()
_children: dict[int, str] = {}


def track(proc: subprocess.Popen[bytes] | subprocess.Popen[str], name: str) -> None:
    """Remember `proc` (started by this process) until `untrack`."""
    with _lock:
        _children[proc.pid] = name


def untrack(proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None) -> None:
    if proc is None:
        return
    with _lock:
        _children.pop(proc.pid, None)


async def terminate(proc: subprocess.Popen[bytes] | None, grace_s: float) -> None:
    """Stop a child started by this process, by pid: SIGCONT (a paused child cannot handle
    SIGTERM), SIGTERM, up to `grace_s` to exit, then SIGKILL; reaped and untracked."""
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
    untrack(proc)


def tracked() -> dict[int, str]:
    """pid -> name of every child still registered."""
    with _lock:
        return dict(_children)


def kill_all() -> list[int]:
    """SIGKILL every registered child by pid (SIGCONT first: a paused one must die too)."""
    with _lock:
        pids = list(_children)
        _children.clear()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
    for pid in pids:  # reap, so none is left as a zombie of ours
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
    return pids
