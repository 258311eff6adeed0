"""The agent's durable spool: every batch lives on disk from `submit` until its seq is acked.

Sits between the sources (which build batches) and the sender (which streams them to the
ingest service). `Spool` is the segment store and its index; the files it keeps in the spool
directory each have their own module:

    seq                      highest seq reserved so far (seq_file.py)
    acks.log                 journal of seq ranges that are done (ack_journal.py)
    <prio>-<first seq>.seg   append-only segment files, one chain per priority (segments.py),
                             of records in the format of records.py
    rejected/<seq>.batch     batches the ingest refused, and why (rejected.py)

Deletion is by segment: a segment file is removed once none of its records is live and it is
no longer written to (full, or at close); the segment being written is kept until then. When a
new batch does not fit in `max_bytes`, whole segments are dropped, lowest priority first and
oldest first within a priority, each live record counted as dropped (reason `spool_full`).
Segments are per priority so that dropping low-priority data really frees disk space.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import logging
import os
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from collector.agent.config import SpoolSettings
from collector.agent.spool.ack_journal import AckJournal, covered, seq_ranges
from collector.agent.spool.files import fsync_dir
from collector.agent.spool.reasons import (
    DROP_CORRUPT,
    DROP_IO_ERROR,
    DROP_MAX_AGE,
    DROP_SPOOL_FULL,
    DROP_TOO_LARGE,
    DROP_TORN,
    SpoolError,
)
from collector.agent.spool.records import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    RAW,
    ZLIB,
    Record,
    decode_payload,
    encode_record,
    scan,
)
from collector.agent.spool.rejected import RejectedStore
from collector.agent.spool.segments import Segment, parse_segment_name, segment_path
from collector.agent.spool.seq_file import SeqFile

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SpoolCounters:
    appended: int = 0
    acked: int = 0
    rejected: int = 0
    reject_write_failures: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


class Spool:
    """Durable queue of serialised batches keyed by seq. Not thread-safe; one event loop."""

    def __init__(
        self,
        settings: SpoolSettings,
        directory: Path | None = None,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.settings = settings
        self.dir = Path(directory or settings.dir)
        self.rejected = RejectedStore(self.dir, settings.keep_rejected)
        self.seq_file = SeqFile(self.dir)
        self.journal = AckJournal(self.dir, fsync=settings.fsync != "never")
        self._clock_ns = clock_ns
        self._segments: list[Segment] = []
        self._by_seq: dict[int, Segment] = {}
        self._records: dict[int, Record] = {}
        self._active: dict[int, Segment] = {}
        self._pending: list[int] = []  # heap of live seqs not handed to the sender
        self._taken: set[int] = set()
        self._reject_pending: dict[int, tuple[str, str]] = {}  # seq -> (code, reason)
        self._lock_fd = -1
        self._next_seq = 1
        self._reserved_upto = 0
        self.unissued: tuple[int, int] | None = None
        self.write_ok = True  # False after the last spool write (or seq reservation) failed
        self._bytes = 0
        self.counters = SpoolCounters()
        self.opened = False

    # --- lifecycle ---------------------------------------------------------------------
    def open(self) -> None:
        """Create or recover the spool. Damaged records are skipped and counted.

        Raises SpoolError when the directory cannot be used or another agent holds it.
        """
        if self.opened:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.rejected.create()
            self._lock()
            self._recover()
        except OSError as exc:
            self._abandon()
            raise SpoolError(f"cannot use spool directory {self.dir}: {exc}") from exc
        except SpoolError:
            self._abandon()
            raise
        self.opened = True
        log.info(
            "spool %s: %d batches (%d bytes) to deliver, next seq %d",
            self.dir,
            len(self._records),
            self._bytes,
            self._next_seq,
        )

    def _lock(self) -> None:
        # Two agents on one spool would interleave records and reuse seqs: refuse. The
        # kernel drops the lock when the process dies, so a crash never leaves it stale.
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError(f"spool directory {self.dir} is in use by another agent") from None
        self._lock_fd = fd

    def _abandon(self) -> None:
        """Undo a failed open: close what was opened, forget what was read."""
        for seg in self._segments:
            os.close(seg.fd)
        self._segments.clear()
        self._by_seq.clear()
        self._records.clear()
        self._pending.clear()
        self._bytes = 0
        self.journal.close()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def _recover(self) -> None:
        done = self.journal.read()
        max_seen = max((hi for _, hi in done), default=0)
        for path in sorted(self.dir.iterdir()):
            if path.suffix == ".tmp":
                path.unlink(missing_ok=True)
                continue
            name = parse_segment_name(path.name)
            if name is None:
                continue
            max_seen = max(max_seen, self._recover_segment(path, *name, done))
        reserved = self.seq_file.read()
        if reserved is None:
            if max_seen or self.journal.exists():
                # The seq file is written when a spool is first opened: a used spool without
                # it means it was deleted, and seqs used before could be handed out again.
                raise SpoolError(
                    f"{self.seq_file.path} is missing in a spool that was used; "
                    "restore it or set a new agent_id (and move the spool aside)"
                )
            reserved = 0
            self.seq_file.write(0)
        self._reserved_upto = max(reserved, max_seen)
        self._next_seq = self._reserved_upto + 1
        # A process that died left the rest of its reserved block unused: the highest seq
        # still on disk (the segment being written is kept until it rotates) bounds what it
        # issued. Declared on the wire so the aggregator's ledger does not count them missing.
        if reserved > max_seen:
            self.unissued = (max_seen + 1, reserved)
        self._open_journal()

    def close(self) -> None:
        if not self.opened:
            return
        for seg in [s for s in self._segments if not s.live]:
            self._remove_segment(seg)
        self.sync()
        if self._reserved_upto > self.last_seq:
            # Hand the unused rest of the block back: nothing above last_seq was issued, so
            # the next start continues right after it and skips nothing.
            try:
                self.seq_file.write(self.last_seq)
                self._reserved_upto = self.last_seq
            except OSError as exc:
                log.warning(
                    "cannot shrink %s at close (%s): the next start skips the rest of the reserved block",
                    self.seq_file.path,
                    exc.strerror,
                )
        for seg in self._segments:
            os.close(seg.fd)
        self._segments.clear()
        self._active.clear()
        self.journal.close()
        self._unlock()
        self.opened = False

    def _recover_segment(self, path: Path, prio: int, first: int, done: list[tuple[int, int]]) -> int:
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.error("spool segment %s unreadable (%s): skipped", path, exc.strerror)
            self.counters.dropped[DROP_IO_ERROR] += 1
            return 0
        res = scan(data)
        if res.corrupt or res.torn:
            log.warning(
                "spool segment %s: %d corrupt region(s), %d torn tail(s) skipped", path, res.corrupt, res.torn
            )
            self.counters.dropped[DROP_CORRUPT] += res.corrupt
            self.counters.dropped[DROP_TORN] += res.torn
        max_seq = max((r.seq for r in res.records), default=0)
        # A seq already recovered from another segment (a copy) is live only once.
        live = {r.seq for r in res.records if not covered(done, r.seq) and r.seq not in self._records}
        if not live:
            path.unlink(missing_ok=True)
            return max_seq
        fd = os.open(path, os.O_RDONLY)
        seg = Segment(path, prio, first, fd, len(data), res.records, live, writable=False)
        self._add_segment(seg)
        for r in res.records:
            if r.seq in live:
                self._by_seq[r.seq] = seg
                self._records[r.seq] = r
                heapq.heappush(self._pending, r.seq)
        return max_seq

    def _add_segment(self, seg: Segment) -> None:
        self._segments.append(seg)
        self._bytes += seg.size

    # --- seq ---------------------------------------------------------------------------
    def next_seq(self) -> int:
        """The next seq, persisted (fsync) before it is handed out: never repeats."""
        seq = self._next_seq
        if seq > self._reserved_upto:
            upto = seq + self.settings.seq_block - 1
            self.seq_file.write(upto)
            self._reserved_upto = upto
        self._next_seq = seq + 1
        return seq

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    # --- append ------------------------------------------------------------------------
    def append(self, seq: int, priority: int, created_unix_nano: int, payload: bytes) -> bool:
        """Write one batch; False when it was dropped instead (counted by reason)."""
        if not 0 <= priority <= 9:
            raise ValueError(f"priority must be 0..9, got {priority}")
        fmt = ZLIB if self.settings.compression == "zlib" else RAW
        stored = zlib.compress(payload, 1) if fmt == ZLIB else payload
        rec_bytes = encode_record(seq, priority, created_unix_nano, stored, fmt=fmt)
        if len(rec_bytes) > self.settings.max_bytes or len(stored) > MAX_PAYLOAD:
            log.error("batch seq %d of %d bytes exceeds the spool size: dropped", seq, len(payload))
            self.journal.append([seq])
            self.counters.dropped[DROP_TOO_LARGE] += 1
            return False
        self.expire()
        self._make_room(len(rec_bytes))
        seg = self._active.get(priority)
        try:
            if seg is None:
                seg = self._new_segment(priority, seq)
            written = os.write(seg.fd, rec_bytes)
            if written != len(rec_bytes):
                raise OSError(0, f"short write ({written} of {len(rec_bytes)} bytes)")
        except OSError as exc:
            log.error("spool write failed (%s): batch seq %d dropped", exc.strerror, seq)
            if seg is not None:
                # Whatever part of the record landed is skipped as torn at the next start;
                # never append behind it.
                seg.writable = False
                self._active.pop(priority, None)
                if not seg.live:
                    self._remove_segment(seg)
            self.journal.append([seq])
            self.counters.dropped[DROP_IO_ERROR] += 1
            self.write_ok = False
            return False
        self.write_ok = True
        rec = Record(seq, priority, created_unix_nano, seg.size, len(stored), fmt)
        seg.records.append(rec)
        seg.live.add(seq)
        seg.size += rec.size
        seg.dirty = True
        self._bytes += rec.size
        self._by_seq[seq] = seg
        self._records[seq] = rec
        heapq.heappush(self._pending, seq)
        self.counters.appended += 1
        if seg.size >= self.settings.segment_bytes:
            seg.writable = False
            del self._active[priority]
        return True

    def discard(self, seq: int, reason: str) -> None:
        """Count a batch that is never written (e.g. too large to send) as dropped."""
        self.journal.append([seq])
        self.counters.dropped[reason] += 1

    def _new_segment(self, priority: int, first_seq: int) -> Segment:
        path = segment_path(self.dir, priority, first_seq)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        seg = Segment(path, priority, first_seq, fd, 0, [], set(), writable=True)
        self._add_segment(seg)
        self._active[priority] = seg
        if self.settings.fsync != "never":
            fsync_dir(self.dir)
        return seg

    def _make_room(self, need: int) -> None:
        while self._segments and self._bytes + need > self.settings.max_bytes:
            victim = min(self._segments, key=lambda s: (s.priority, s.first_seq))
            log.warning(
                "spool full: dropping segment %s (%d batches, priority %d)",
                victim.path.name,
                len(victim.live),
                victim.priority,
            )
            self._drop_segment(victim, DROP_SPOOL_FULL)

    def _drop_segment(self, seg: Segment, reason: str) -> None:
        self.counters.dropped[reason] += len(seg.live)
        for s in seg.live:
            self._records.pop(s, None)
            self._by_seq.pop(s, None)
            self._taken.discard(s)
        seg.live.clear()
        self._remove_segment(seg)

    def _remove_segment(self, seg: Segment) -> None:
        os.close(seg.fd)
        try:
            seg.path.unlink()
        except OSError as exc:
            log.error("cannot delete spool segment %s: %s", seg.path, exc.strerror)
        self._segments.remove(seg)
        if self._active.get(seg.priority) is seg:
            del self._active[seg.priority]
        self._bytes -= seg.size
        if len(self._segments) == 0 or self.journal.oversized:
            try:
                self._open_journal()
            except OSError as exc:  # the old journal stays in use; compaction is retried later
                log.warning(
                    "ack journal not compacted (%s): the current one stays in use", exc.strerror or exc
                )

    def expire(self) -> None:
        """Drop batches older than max_age_s (whole segments whose newest batch is too old)."""
        limit = self._clock_ns() - int(self.settings.max_age_s * 1e9)
        for seg in list(self._segments):
            if seg.records and seg.records[-1].created_unix_nano < limit:
                if seg.live:
                    log.warning("spool: %d batches older than max_age_s dropped", len(seg.live))
                self._drop_segment(seg, DROP_MAX_AGE)

    # --- sender side -------------------------------------------------------------------
    def take_next(self) -> tuple[int, bytes] | None:
        """Lowest live seq not yet handed out, with its payload; None when none is waiting."""
        limit = self._clock_ns() - int(self.settings.max_age_s * 1e9)
        while self._pending:
            seq = heapq.heappop(self._pending)
            rec = self._records.get(seq)
            if rec is None or seq in self._taken:
                continue
            if rec.created_unix_nano < limit:
                self._finish([seq], DROP_MAX_AGE)
                continue
            seg = self._by_seq[seq]
            try:
                payload = self._payload(seg, rec)
            except (OSError, zlib.error) as exc:
                log.error("spool read of seq %d failed (%s): dropped", seq, exc)
                self._finish([seq], DROP_IO_ERROR)
                continue
            self._taken.add(seq)
            return seq, payload
        return None

    @staticmethod
    def _payload(seg: Segment, rec: Record) -> bytes:
        return decode_payload(rec, os.pread(seg.fd, rec.length, rec.offset + HEADER_SIZE))

    def has_waiting(self) -> bool:
        while self._pending and (self._pending[0] not in self._records or self._pending[0] in self._taken):
            heapq.heappop(self._pending)
        return bool(self._pending)

    def requeue(self, seqs: Iterable[int]) -> None:
        """Hand batches back (stream broke, retriable ack): they are sent again, in seq order."""
        for s in seqs:
            if s in self._taken and s not in self._reject_pending:
                self._taken.discard(s)
                if s in self._records:
                    heapq.heappush(self._pending, s)

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete acked batches; returns how many were live."""
        return self._finish(seqs, None)

    def reject(self, seq: int, code: str, reason: str) -> bool:
        """Move a refused batch aside to rejected/ and forget it (never retried).

        When rejected/ cannot be written (disk full, permissions) the batch stays in the
        spool, is not sent again, and the move is retried by `retry_rejected()` (the agent's
        housekeeping): it is never forgotten without a copy.
        """
        rec = self._records.get(seq)
        if rec is None:
            return False
        self._taken.add(seq)  # never handed to the sender again
        if not self._move_rejected(seq, rec, code, reason):
            self._reject_pending[seq] = (code, reason)
            self.counters.reject_write_failures += 1
            return True
        self._finish([seq], "rejected")
        return True

    def _move_rejected(self, seq: int, rec: Record, code: str, reason: str) -> bool:
        seg = self._by_seq[seq]
        try:
            self.rejected.write(seq, self._payload(seg, rec), code, reason, self._clock_ns())
        except zlib.error as exc:
            # The stored payload itself is damaged: no copy can ever be made.
            log.error("rejected batch %d is damaged in the spool (%s): dropped", seq, exc)
            self._finish([seq], DROP_CORRUPT)
            self._reject_pending.pop(seq, None)
            return True
        except OSError as exc:
            log.error(
                "cannot keep rejected batch %d in %s (%s): kept in the spool, retried",
                seq,
                self.rejected.dir,
                exc.strerror or exc,
            )
            return False
        with contextlib.suppress(OSError):
            self.rejected.trim()
        return True

    def retry_rejected(self) -> int:
        """Retry moving rejected batches aside that could not be written; returns how many moved."""
        moved = 0
        for seq, (code, reason) in list(self._reject_pending.items()):
            rec = self._records.get(seq)
            if rec is None:  # dropped meanwhile (spool full, max age): counted there
                del self._reject_pending[seq]
                continue
            if not self._move_rejected(seq, rec, code, reason):
                break  # still failing: try again at the next housekeeping tick
            if seq in self._records:
                self._finish([seq], "rejected")
            self._reject_pending.pop(seq, None)
            moved += 1
        return moved

    @property
    def rejects_pending(self) -> int:
        """Rejected batches kept in the spool because rejected/ could not be written."""
        return len(self._reject_pending)

    def _finish(self, seqs: Iterable[int], reason: str | None) -> int:
        gone: list[int] = []
        for s in seqs:
            rec = self._records.pop(s, None)
            if rec is None:
                continue
            gone.append(s)
            self._taken.discard(s)
            seg = self._by_seq.pop(s)
            seg.live.discard(s)
            # The segment being written stays until it is full (rotated): deleting and
            # re-creating a file per batch would cost two fsyncs per batch.
            if not seg.live and not seg.writable:
                self._remove_segment(seg)
        if not gone:
            return 0
        if reason is None:
            self.counters.acked += len(gone)
        elif reason == "rejected":
            self.counters.rejected += len(gone)
        else:
            self.counters.dropped[reason] += len(gone)
        self.journal.append(gone)
        return len(gone)

    # --- the journal of finished seqs --------------------------------------------------
    def _open_journal(self) -> None:
        """(Re)write acks.log holding only ranges that still matter (inside live segments)."""
        ranges: list[tuple[int, int]] = []
        for seg in self._segments:
            ranges.extend(seq_ranges(r.seq for r in seg.records if r.seq not in seg.live))
        self.journal.rewrite(ranges)

    # --- durability --------------------------------------------------------------------
    def sync(self) -> None:
        """fsync every segment written since the last sync, and the journal."""
        for seg in self._segments:
            if seg.dirty:
                os.fsync(seg.fd)
                seg.dirty = False
        self.journal.sync()

    # --- introspection -----------------------------------------------------------------
    @property
    def rejected_dir(self) -> Path:
        return self.rejected.dir

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._records)

    @property
    def in_flight(self) -> int:
        return len(self._taken)

    def oldest_created_unix_nano(self) -> int | None:
        oldest = None
        for seg in self._segments:
            r = seg.oldest_live()
            if r is not None and (oldest is None or r.created_unix_nano < oldest):
                oldest = r.created_unix_nano
        return oldest

    def live_seqs(self) -> list[int]:
        return sorted(self._records)
