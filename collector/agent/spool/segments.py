"""One segment file of the spool: `<prio>-<first seq>.seg`, an append-only chain of records
(collector/agent/spool/records.py) of one priority, open for the spool's lifetime.

A segment is written only in the run that created it (never appended to after a restart) and
deleted once none of its records is live and it is no longer written to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from collector.agent.spool.records import Record

_NAME = re.compile(r"^(\d)-(\d{20})\.seg$")


def segment_path(directory: Path, priority: int, first_seq: int) -> Path:
    return directory / f"{priority}-{first_seq:020d}.seg"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """(priority, first seq) of a segment file name; None for any other file."""
    m = _NAME.match(name)
    return (int(m[1]), int(m[2])) if m else None


@dataclass(slots=True)
class Segment:
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
