"""The agent's durable spool: every batch lives on disk from `submit` until its seq is acked.

Sits between the sources (which build batches) and the sender (which streams them to the
ingest service). Layout of the spool directory:

    seq                      highest seq reserved so far (written with fsync before use)
    acks.log                 journal of seq ranges that are done (acked, rejected, expired)
    <prio>-<first seq>.seg   append-only segment files, one chain per priority
    rejected/<seq>.batch     batches the ingest refused (INVALID_ARGUMENT, PERMISSION_DENIED)
    rejected/<seq>.json      ... and why

Record format (little-endian), repeated until the end of a segment:

    magic "\\xa7S" | format u8 | priority u8 | length u32 | crc32 u32 | seq u64 |
    created_unix_nano i64 | payload (length bytes)

format 1: the payload is a serialised telemetry.v1.Batch; format 2: the same, zlib-compressed
(`spool.compression: zlib`; a batch repeats its series table, so this shrinks it ~10x).
`crc32` is zlib.crc32 over the header fields after it and the format/priority/length, then
the stored payload. A segment is never appended to after a restart, so a torn tail can only be the
last record of a segment; at start-up torn and corrupt records are skipped and counted, and
scanning resynchronises on the next record whose checksum holds.

Deletion is by segment: a segment file is removed once none of its records is live and it is
no longer written to (full, or at close); the segment being written is kept until then. When a
new batch does not fit in `max_bytes`, whole segments are dropped, lowest priority first and
oldest first within a priority, each live record counted as dropped (reason `spool_full`).
Segments are per priority so that dropping low-priority data really frees disk space.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import heapq
import json
import logging
import os
import re
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from collector.agent.config import SpoolSettings
from collector.errors import CollectorError

log = logging.getLogger(__name__)

MAGIC = b"\xa7S"
RAW, ZLIB = 1, 2  # record formats
FORMATS = (RAW, ZLIB)
HEADER = struct.Struct("<2sBBIIQq")
_CRC_FIELDS = struct.Struct("<BBIQq")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 64 * 1024 * 1024
_ACK = struct.Struct("<QQI")
_SEG_NAME = re.compile(r"^(\d)-(\d{20})\.seg$")

# Reasons a batch leaves the spool without an OK ack (label values of the drop counter).
DROP_SPOOL_FULL = "spool_full"
DROP_MAX_AGE = "max_age"
DROP_TOO_LARGE = "too_large"
DROP_IO_ERROR = "io_error"
DROP_CORRUPT = "corrupt"
DROP_TORN = "torn"


class SpoolError(CollectorError):
    """The spool directory cannot be used at all (permissions, not a directory)."""


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    priority: int
    created_unix_nano: int
    offset: int  # of the header within the segment
    length: int  # of the stored payload
    fmt: int = RAW

    @property
    def size(self) -> int:
        return HEADER_SIZE + self.length


def _crc(fmt: int, priority: int, length: int, seq: int, created: int, payload: bytes) -> int:
    head = _CRC_FIELDS.pack(fmt, priority, length, seq, created)
    return zlib.crc32(payload, zlib.crc32(head))


def encode_record(
    seq: int, priority: int, created_unix_nano: int, payload: bytes, *, fmt: int = RAW
) -> bytes:
    """One spool record: header plus the payload as stored (compress first for ZLIB)."""
    n = len(payload)
    return (
        HEADER.pack(
            MAGIC,
            fmt,
            priority,
            n,
            _crc(fmt, priority, n, seq, created_unix_nano, payload),
            seq,
            created_unix_nano,
        )
        + payload
    )


def decode_payload(rec: Record, stored: bytes) -> bytes:
    """The batch bytes of a record (raises zlib.error if a ZLIB payload does not inflate)."""
    return zlib.decompress(stored) if rec.fmt == ZLIB else stored


@dataclass(slots=True)
class ScanResult:
    records: list[Record] = field(default_factory=list)
    corrupt: int = 0  # regions skipped in the middle (checksum, magic or length wrong)
    torn: int = 0  # an incomplete record at the end


def _valid_at(data: bytes | memoryview, pos: int) -> Record | None:
    if pos + HEADER_SIZE > len(data):
        return None
    magic, fmt, prio, length, crc, seq, created = HEADER.unpack_from(data, pos)
    if magic != MAGIC or fmt not in FORMATS or length > MAX_PAYLOAD:
        return None
    end = pos + HEADER_SIZE + length
    if end > len(data):
        return None
    payload = bytes(data[pos + HEADER_SIZE : end])
    if _crc(fmt, prio, length, seq, created, payload) != crc:
        return None
    return Record(seq, prio, created, pos, length, fmt)


def scan(data: bytes) -> ScanResult:
    """Parse a segment's bytes; never raises. Damaged regions are skipped and counted."""
    out = ScanResult()
    pos = 0
    end = len(data)
    while pos < end:
        rec = _valid_at(data, pos)
        if rec is not None:
            out.records.append(rec)
            pos += rec.size
            continue
        # Damaged here: resynchronise on the next position holding a record that checks out.
        nxt = data.find(MAGIC, pos + 1)
        while nxt != -1 and _valid_at(data, nxt) is None:
            nxt = data.find(MAGIC, nxt + 1)
        if nxt == -1:
            out.torn += 1
            break
        out.corrupt += 1
        pos = nxt
    return out


@dataclass(slots=True)
class _Segment:
    path: Path
    priority: int
    first_seq: int
    fd: int
    size: int
    records: list[Record]
    live: set[int]
    writable: bool
    dirty: bool = False
    first_live_idx: int = 0

    def oldest_live(self) -> Record | None:
        while self.first_live_idx < len(self.records):
            r = self.records[self.first_live_idx]
            if r.seq in self.live:
                return r
            self.first_live_idx += 1
        return None


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
        self.rejected_dir = self.dir / "rejected"
        self._clock_ns = clock_ns
        self._segments: list[_Segment] = []
        self._by_seq: dict[int, _Segment] = {}
        self._records: dict[int, Record] = {}
        self._active: dict[int, _Segment] = {}
        self._pending: list[int] = []  # heap of live seqs not handed to the sender
        self._taken: set[int] = set()
        self._reject_pending: dict[int, tuple[str, str]] = {}  # seq -> (code, reason)
        self._journal_fd = -1
        self._lock_fd = -1
        self._journal_size = 0
        self._journal_dirty = False
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
            self.rejected_dir.mkdir(exist_ok=True)
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
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def _recover(self) -> None:
        done = self._read_journal()
        max_seen = max((hi for _, hi in done), default=0)
        for path in sorted(self.dir.iterdir()):
            if path.suffix == ".tmp":
                path.unlink(missing_ok=True)
                continue
            m = _SEG_NAME.match(path.name)
            if not m:
                continue
            max_seen = max(max_seen, self._recover_segment(path, int(m[1]), int(m[2]), done))
        reserved = self._read_seq_file()
        if reserved is None:
            if max_seen or (self.dir / "acks.log").exists():
                # The seq file is written when a spool is first opened: a used spool without
                # it means it was deleted, and seqs used before could be handed out again.
                raise SpoolError(
                    f"{self.dir / 'seq'} is missing in a spool that was used; "
                    "restore it or set a new agent_id (and move the spool aside)"
                )
            reserved = 0
            self._write_seq_file(0)
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
                self._write_seq_file(self.last_seq)
                self._reserved_upto = self.last_seq
            except OSError as exc:
                log.warning(
                    "cannot shrink %s at close (%s): the next start skips the rest of the reserved block",
                    self.dir / "seq",
                    exc.strerror,
                )
        for seg in self._segments:
            os.close(seg.fd)
        self._segments.clear()
        self._active.clear()
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1
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
        live = {r.seq for r in res.records if not _covered(done, r.seq) and r.seq not in self._records}
        if not live:
            path.unlink(missing_ok=True)
            return max_seq
        fd = os.open(path, os.O_RDONLY)
        seg = _Segment(path, prio, first, fd, len(data), res.records, live, writable=False)
        self._add_segment(seg)
        for r in res.records:
            if r.seq in live:
                self._by_seq[r.seq] = seg
                self._records[r.seq] = r
                heapq.heappush(self._pending, r.seq)
        return max_seq

    def _add_segment(self, seg: _Segment) -> None:
        self._segments.append(seg)
        self._bytes += seg.size

    # --- seq ---------------------------------------------------------------------------
    def _read_seq_file(self) -> int | None:
        path = self.dir / "seq"
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SpoolError(f"cannot read {path}: {exc.strerror}") from exc
        m = re.fullmatch(r"(\d+) ([0-9a-f]{8})\n", text)
        if not m or f"{zlib.crc32(m[1].encode()):08x}" != m[2]:
            # Never guess low: a reused seq would make the aggregator drop real data.
            raise SpoolError(f"{path} is damaged ({text[:40]!r}); set a new agent_id or restore it")
        return int(m[1])

    def _write_seq_file(self, upto: int) -> None:
        path = self.dir / "seq"
        tmp = path.with_suffix(".tmp")
        body = seq_file_body(upto)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(self.dir)

    def next_seq(self) -> int:
        """The next seq, persisted (fsync) before it is handed out: never repeats."""
        seq = self._next_seq
        if seq > self._reserved_upto:
            upto = seq + self.settings.seq_block - 1
            self._write_seq_file(upto)
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
            self._done_journal([seq])
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
            self._done_journal([seq])
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
        self._done_journal([seq])
        self.counters.dropped[reason] += 1

    def _new_segment(self, priority: int, first_seq: int) -> _Segment:
        path = self.dir / f"{priority}-{first_seq:020d}.seg"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        seg = _Segment(path, priority, first_seq, fd, 0, [], set(), writable=True)
        self._add_segment(seg)
        self._active[priority] = seg
        if self.settings.fsync != "never":
            _fsync_dir(self.dir)
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

    def _drop_segment(self, seg: _Segment, reason: str) -> None:
        self.counters.dropped[reason] += len(seg.live)
        for s in seg.live:
            self._records.pop(s, None)
            self._by_seq.pop(s, None)
            self._taken.discard(s)
        seg.live.clear()
        self._remove_segment(seg)

    def _remove_segment(self, seg: _Segment) -> None:
        os.close(seg.fd)
        try:
            seg.path.unlink()
        except OSError as exc:
            log.error("cannot delete spool segment %s: %s", seg.path, exc.strerror)
        self._segments.remove(seg)
        if self._active.get(seg.priority) is seg:
            del self._active[seg.priority]
        self._bytes -= seg.size
        if len(self._segments) == 0 or self._journal_size > 1024 * 1024:
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
    def _payload(seg: _Segment, rec: Record) -> bytes:
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
        batch = self.rejected_dir / f"{seq:020d}.batch"
        try:
            payload = self._payload(seg, rec)
            batch.write_bytes(payload)
            batch.with_suffix(".json").write_text(
                json.dumps(
                    {"seq": seq, "code": code, "reason": reason, "rejected_unix_nano": self._clock_ns()}
                )
                + "\n"
            )
        except zlib.error as exc:
            # The stored payload itself is damaged: no copy can ever be made.
            log.error("rejected batch %d is damaged in the spool (%s): dropped", seq, exc)
            self._finish([seq], DROP_CORRUPT)
            self._reject_pending.pop(seq, None)
            return True
        except OSError as exc:
            with contextlib.suppress(OSError):
                batch.unlink(missing_ok=True)
            log.error(
                "cannot keep rejected batch %d in %s (%s): kept in the spool, retried",
                seq,
                self.rejected_dir,
                exc.strerror or exc,
            )
            return False
        with contextlib.suppress(OSError):
            self._trim_rejected()
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

    def _trim_rejected(self) -> None:
        keep = self.settings.keep_rejected
        files = sorted(self.rejected_dir.glob("*.batch"))
        for f in files[: max(0, len(files) - keep)]:
            f.unlink(missing_ok=True)
            f.with_suffix(".json").unlink(missing_ok=True)

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
        self._done_journal(gone)
        return len(gone)

    # --- the journal of finished seqs --------------------------------------------------
    def _read_journal(self) -> list[tuple[int, int]]:
        path = self.dir / "acks.log"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        out: list[tuple[int, int]] = []
        for pos in range(0, len(data) - _ACK.size + 1, _ACK.size):
            lo, hi, crc = _ACK.unpack_from(data, pos)
            if zlib.crc32(data[pos : pos + 16]) == crc and lo <= hi:
                out.append((lo, hi))
        out.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in out:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        return merged

    def _open_journal(self) -> None:
        """(Re)write acks.log holding only ranges that still matter (inside live segments)."""
        path = self.dir / "acks.log"
        ranges: list[tuple[int, int]] = []
        for seg in self._segments:
            dead = [r.seq for r in seg.records if r.seq not in seg.live]
            ranges.extend(_ranges(dead))
        body = b"".join(_ack_entry(lo, hi) for lo, hi in ranges)
        # The new journal replaces the old one only once it is whole: when writing it fails
        # (a full disk), OSError leaves the old journal open and in use. It holds a superset
        # of the ranges that matter, so nothing is lost. (Closing the old descriptor first
        # would leave its number to the next open, e.g. a new segment, which the journal's
        # appends would then overwrite.)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            written = os.write(fd, body)
            if written != len(body):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(body)} bytes)")
            if self.settings.fsync != "never":
                os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, path)
        except OSError:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        new_fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
        self._journal_fd = new_fd
        self._journal_size = len(body)

    def _done_journal(self, seqs: list[int]) -> None:
        if self._journal_fd < 0:
            return
        body = b"".join(_ack_entry(lo, hi) for lo, hi in _ranges(sorted(seqs)))
        try:
            os.write(self._journal_fd, body)
        except OSError as exc:
            # Only costs a duplicate delivery after a restart, which the aggregator drops.
            log.warning("ack journal write failed: %s", exc.strerror)
            return
        self._journal_size += len(body)
        self._journal_dirty = True

    # --- durability --------------------------------------------------------------------
    def sync(self) -> None:
        """fsync every segment written since the last sync, and the journal."""
        for seg in self._segments:
            if seg.dirty:
                os.fsync(seg.fd)
                seg.dirty = False
        if self._journal_dirty and self._journal_fd >= 0:
            os.fsync(self._journal_fd)
            self._journal_dirty = False

    # --- introspection -----------------------------------------------------------------
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


def seq_file_body(upto: int) -> bytes:
    """Contents of the `seq` file: the highest reserved seq and its CRC32."""
    return f"{upto} {zlib.crc32(str(upto).encode()):08x}\n".encode()


def _covered(ranges: list[tuple[int, int]], seq: int) -> bool:
    """`ranges` sorted and merged (non-overlapping)."""
    i = bisect.bisect_right(ranges, (seq, 2**64)) - 1
    return i >= 0 and ranges[i][1] >= seq


def _ranges(sorted_seqs: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in sorted_seqs:
        if out and out[-1][1] + 1 == s:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def _ack_entry(lo: int, hi: int) -> bytes:
    head = struct.pack("<QQ", lo, hi)
    return head + struct.pack("<I", zlib.crc32(head))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
