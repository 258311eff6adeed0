"""The spool's ack journal: `acks.log`, the seq ranges that are done (acked, rejected,
expired, dropped) while their segment files still exist.

Each entry is `lo u64 | hi u64 | crc32 u32` (little-endian); an entry whose checksum fails is
ignored, so a torn last entry costs at most a duplicate delivery after a restart (which the
aggregator drops). The journal is rewritten whole (only the ranges still inside live
segments) when it grows past COMPACT_BYTES or the spool empties.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import logging
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

_ENTRY = struct.Struct("<QQI")
_RANGE = struct.Struct("<QQ")


def covered(ranges: list[tuple[int, int]], seq: int) -> bool:
    """Whether `seq` lies in one of `ranges` (sorted and merged, non-overlapping)."""
    i = bisect.bisect_right(ranges, (seq, 2**64)) - 1
    return i >= 0 and ranges[i][1] >= seq


def seq_ranges(sorted_seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Runs of consecutive seqs as (lo, hi) ranges."""
    out: list[tuple[int, int]] = []
    for s in sorted_seqs:
        if out and out[-1][1] + 1 == s:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def _entry(lo: int, hi: int) -> bytes:
    head = _RANGE.pack(lo, hi)
    return head + struct.pack("<I", zlib.crc32(head))


class AckJournal:
    """`<spool dir>/acks.log`, kept open for appends. Not thread-safe."""

    COMPACT_BYTES = 1024 * 1024

    def __init__(self, directory: Path, *, fsync: bool) -> None:
        self.path = directory / "acks.log"
        self.fsync = fsync
        self._fd = -1
        self.size = 0
        self._dirty = False

    def exists(self) -> bool:
        return self.path.exists()

    @property
    def oversized(self) -> bool:
        return self.size > self.COMPACT_BYTES

    def read(self) -> list[tuple[int, int]]:
        """The done ranges on disk, sorted and merged; [] without a journal."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out: list[tuple[int, int]] = []
        for pos in range(0, len(data) - _ENTRY.size + 1, _ENTRY.size):
            lo, hi, crc = _ENTRY.unpack_from(data, pos)
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

    def rewrite(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Replace the journal by one holding only `ranges`, and append to that from now on."""
        body = b"".join(_entry(lo, hi) for lo, hi in ranges)
        # The new journal replaces the old one only once it is whole: when writing it fails
        # (a full disk), OSError leaves the old journal open and in use. It holds a superset
        # of the ranges that matter, so nothing is lost. (Closing the old descriptor first
        # would leave its number to the next open, e.g. a new segment, which the journal's
        # appends would then overwrite.)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            written = os.write(fd, body)
            if written != len(body):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(body)} bytes)")
            if self.fsync:
                os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, self.path)
        except OSError:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        new_fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = new_fd
        self.size = len(body)

    def append(self, seqs: list[int]) -> None:
        """Journal `seqs` as done (not yet fsynced: see sync()); a failed write is logged."""
        if self._fd < 0:
            return
        body = b"".join(_entry(lo, hi) for lo, hi in seq_ranges(sorted(seqs)))
        try:
            os.write(self._fd, body)
        except OSError as exc:
            # Only costs a duplicate delivery after a restart, which the aggregator drops.
            log.warning("ack journal write failed: %s", exc.strerror)
            return
        self.size += len(body)
        self._dirty = True

    def sync(self) -> None:
        if self._dirty and self._fd >= 0:
            os.fsync(self._fd)
            self._dirty = False

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
