"""What PM values the agent has already spooled: the cell source's memory of sent periods.

Sits beside collector/agent/sources/cell.py. A gNB or an OSS may deliver the same period
twice (a re-export, a file copied back, a second mediation path). The aggregator counts each
(series, period) once whatever happens (collector/aggregate/periods.py); this ledger lets the
agent recognise a repeat itself, so it is counted on the agent's /metrics and moved to done/
without being sent again.

What is remembered is one 64-bit fingerprint per (measured object, period, set of accepted
measurement names) of a file: a file whose every (object, period) group was spooled before
is `repeated`; a file with some new groups sends those only. Values are not part of the
fingerprint: a re-export of a period with different values is a repeat too (the aggregator
would keep the first anyway). A group with one more measurement is new and sent whole (the
aggregator then drops its known values as `duplicate`).

Crash safety: fingerprints are appended (and fsynced) only after the batch holding their
values is in the spool and before the file moves to done/ (CellSource.committed()). A crash
before the append leaves the file in pm_dir: it is sent again, and the aggregator drops the
copy. A crash after it leaves a file whose values are all known: it goes to done/ unsent.

File format (`<pm_dir>/.collector-pm-sent` by default): the magic line below, then records
of 16 bytes, little-endian (fingerprint u64, period end in ns since the epoch i64). A torn
last record (a crash mid-append) is ignored. Entries whose period ended before
`agent.sources.cell.max_age_s` are dropped on load and by compaction (such files are
rejected as too old anyway); at most `max_entries` are kept, the oldest periods going first
(forgetting one only means the aggregator, not the agent, drops a repeat).
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"collector-pm-sent v1\n"
RECORD = struct.Struct("<Qq")
DEFAULT_NAME = ".collector-pm-sent"


def fingerprint(
    gnb: str, cell: str, function: str, begin_ns: int, end_ns: int, measurements: Iterable[str]
) -> int:
    """64-bit fingerprint of one (object, period, measurement set) group of a file."""
    h = hashlib.blake2b(digest_size=8, person=b"pm-sent-v1")
    h.update("\x1f".join((gnb, cell, function, str(begin_ns), str(end_ns))).encode())
    h.update(b"\x1e")
    h.update("\x1f".join(sorted(set(measurements))).encode())
    return int.from_bytes(h.digest(), "little")


class SentLedger:
    """Fingerprints of the PM value groups already in the spool, persisted append-only."""

    def __init__(self, path: Path | None, *, max_entries: int = 1_000_000) -> None:
        self.path = path
        self.max_entries = max_entries
        self._end: dict[int, int] = {}  # fingerprint -> period end (ns)
        self._records = 0  # records in the file (live or not): compaction trigger
        self._loaded = False
        self._broken = False  # the file cannot be written: keep going in memory only

    def __len__(self) -> int:
        return len(self._end)

    def __contains__(self, key: int) -> bool:
        return key in self._end

    def load(self, oldest_end_ns: int) -> None:
        """Read the file once (a missing one is empty; an unreadable one is logged)."""
        if self._loaded:
            return
        self._loaded = True
        if self.path is None:
            return
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error(
                "PM sent-ledger %s unreadable (%s): repeated files are left to the aggregator's dedup",
                self.path,
                exc.strerror,
            )
            return
        if not data.startswith(MAGIC):
            log.error("PM sent-ledger %s is not a ledger file: ignored (rewritten)", self.path)
            self._records = 1 << 62  # compact (rewrite) at the next add
            return
        body = memoryview(data)[len(MAGIC) :]
        n = len(body) // RECORD.size
        for key, end in RECORD.iter_unpack(body[: n * RECORD.size]):
            if end >= oldest_end_ns:
                self._end[key] = max(end, self._end.get(key, end))
        self._records = n
        if len(body) % RECORD.size:
            log.warning("PM sent-ledger %s: torn last record ignored", self.path)
            self._records = 1 << 62  # rewrite without it

    def add(self, entries: dict[int, int], oldest_end_ns: int) -> None:
        """Remember `entries` (fingerprint -> period end) durably before their files move."""
        new = {k: e for k, e in entries.items() if e >= oldest_end_ns and k not in self._end}
        if not new:
            return
        self._end.update(new)
        over = len(self._end) - self.max_entries
        if over > 0:
            for k, _ in sorted(self._end.items(), key=lambda kv: kv[1])[:over]:
                del self._end[k]
        if self.path is None or self._broken:
            return
        try:
            if self._records > 2 * len(self._end) + 4096:
                self._rewrite(oldest_end_ns)
            else:
                self._append(new)
        except OSError as exc:
            self._broken = True
            log.error(
                "PM sent-ledger %s cannot be written (%s): repeated files are left to the aggregator's dedup",
                self.path,
                exc.strerror,
            )

    def _append(self, new: dict[int, int]) -> None:
        assert self.path is not None
        with self.path.open("ab") as f:
            if f.tell() == 0:
                f.write(MAGIC)
            f.write(b"".join(RECORD.pack(k, e) for k, e in new.items()))
            f.flush()
            os.fsync(f.fileno())
        self._records += len(new)

    def _rewrite(self, oldest_end_ns: int) -> None:
        assert self.path is not None
        self._end = {k: e for k, e in self._end.items() if e >= oldest_end_ns}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as f:
            f.write(MAGIC)
            f.write(b"".join(RECORD.pack(k, e) for k, e in self._end.items()))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._records = len(self._end)
