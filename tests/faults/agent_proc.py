"""`collector agent` exactly as the CLI runs it, plus a ledger of what it issued and what the
ingest acknowledged, for the fault suite's checker.

    python -m tests.faults.agent_proc LEDGER -- agent --config agent.yaml

The ledger is appended with one pwrite(2) per event on an O_APPEND descriptor (Linux appends
whatever the offset), so it survives a SIGKILL of this process (the kernel has the bytes),
and stays writable while case 5 makes write(2) fail: `S <seq>` once a batch is in the spool, `A <seq> ...`
for the seqs of every OK ack applied. Nothing else differs from `collector agent`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from collector import cli
from collector.agent.spool import Spool


def install(ledger: str) -> None:
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    append, ack = Spool.append, Spool.ack

    def logged_append(self: Spool, seq: int, priority: int, created: int, payload: bytes) -> bool:
        ok = append(self, seq, priority, created, payload)
        if ok:
            os.pwrite(fd, f"S {seq}\n".encode(), 0)
        return ok

    def logged_ack(self: Spool, seqs: Iterable[int]) -> int:
        seqs = list(seqs)
        if seqs:
            os.pwrite(fd, ("A " + " ".join(map(str, seqs)) + "\n").encode(), 0)
        return ack(self, seqs)

    Spool.append = logged_append  # type: ignore[method-assign]
    Spool.ack = logged_ack  # type: ignore[method-assign]


if __name__ == "__main__":
    install(sys.argv[1])
    sys.exit(cli.main(sys.argv[3:] if sys.argv[2] == "--" else sys.argv[2:]))
