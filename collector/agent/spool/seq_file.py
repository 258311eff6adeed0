"""The spool's persisted seq: `seq` holds the highest seq reserved so far, with its CRC32.

A block of seqs is reserved (written with fsync) before any of it is handed out, so a seq
never repeats across restarts or crashes; a damaged or missing file in a used spool is an
error, never a guess (a reused seq would make the aggregator drop real data).
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

from collector.agent.spool.files import fsync_dir
from collector.agent.spool.reasons import SpoolError

_BODY = re.compile(r"(\d+) ([0-9a-f]{8})\n")


def seq_file_body(upto: int) -> bytes:
    """Contents of the `seq` file: the highest reserved seq and its CRC32."""
    return f"{upto} {zlib.crc32(str(upto).encode()):08x}\n".encode()


class SeqFile:
    """`<spool dir>/seq`: read at open, rewritten (tmp + fsync + rename) per reserved block."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / "seq"

    def read(self) -> int | None:
        """The highest reserved seq; None when the file does not exist."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SpoolError(f"cannot read {self.path}: {exc.strerror}") from exc
        m = _BODY.fullmatch(text)
        if not m or f"{zlib.crc32(m[1].encode()):08x}" != m[2]:
            # Never guess low: a reused seq would make the aggregator drop real data.
            raise SpoolError(f"{self.path} is damaged ({text[:40]!r}); set a new agent_id or restore it")
        return int(m[1])

    def write(self, upto: int) -> None:
        """Persist `upto` durably (raises OSError: the caller counts and reports it)."""
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, seq_file_body(upto))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        fsync_dir(self.dir)
