"""Batch deduplication by (agent_id, seq): each agent's seen-bitmap and unissued ranges.

The first step after decoding in the per-partition state (collector/aggregate/state.py):
an agent retries a batch until it is acknowledged, so the same seq may arrive several
times; only the first copy counts. A seq more than `dedup_window` behind the agent's
newest one can no longer be told apart and is dropped as `dedup_expired`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Unissued seq ranges remembered per agent (one per agent restart that left part of a
# reserved block unused); older ones are forgotten, their seqs then count as expected.
MAX_GAPS = 64

Verdict = Literal["new", "duplicate", "dedup_expired"]


@dataclass(slots=True)
class Agent:
    site: int
    lo: int  # lowest seq seen
    hi: int  # highest seq seen
    mask: int  # bit i set: seq hi - i was seen (i < dedup_window)
    received: int  # distinct seqs accepted
    # seq ranges [first, last] the agent declared as never issued (sorted, disjoint), and
    # how many seqs inside them arrived anyway (the declaration was too wide)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    gap_hits: int = 0

    def declare_unissued(self, first: int, last: int, window: int) -> None:
        if any(lo <= first and last <= hi for lo, hi in self.gaps):
            return  # already known: every batch of a boot repeats it
        # seqs of the range that already arrived count as issued (the dedup mask knows them)
        for seq in range(max(first, self.hi - window + 1), min(last, self.hi) + 1):
            if self.mask >> (self.hi - seq) & 1 and not self.in_gap(seq):
                self.gap_hits += 1
        keep: list[tuple[int, int]] = []
        for lo, hi in self.gaps:
            if hi < first - 1 or lo > last + 1:
                keep.append((lo, hi))
            else:  # overlapping or adjacent: merge
                first, last = min(first, lo), max(last, hi)
        keep.append((first, last))
        keep.sort()
        self.gaps = keep[-MAX_GAPS:]

    def in_gap(self, seq: int) -> bool:
        return any(lo <= seq <= hi for lo, hi in self.gaps)

    def expected(self) -> int:
        """Seqs issued in [lo, hi]: the range minus what the agent declared unissued (a
        declared seq that arrived anyway counts as issued)."""
        skipped = sum(max(0, min(hi, self.hi) - max(lo, self.lo) + 1) for lo, hi in self.gaps)
        return self.hi - self.lo + 1 - skipped + self.gap_hits


class Dedup:
    """Every agent of one partition, by agent_id."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.agents: dict[str, Agent] = {}
        self._all_seen = (1 << window) - 1  # an agent's bitmap with every bit set

    def verdict(self, agent_id: str, seq: int, site: int, unissued: tuple[int, int] | None = None) -> Verdict:
        """Whether batch `seq` of this agent is new (and records it), a duplicate, or too old
        to tell."""
        a = self.agents.get(agent_id)
        w = self.window
        if a is None:
            a = self.agents[agent_id] = Agent(site, seq, seq, 1, 1)
            if unissued is not None:
                a.declare_unissued(*unissued, w)
            return "new"
        if unissued is not None:
            a.declare_unissued(*unissued, w)
        a.site = site
        if seq > a.hi:
            shift = seq - a.hi
            a.mask = ((a.mask << shift) | 1) & self._all_seen if shift < w else 1
            a.hi = seq
        else:
            back = a.hi - seq
            if back >= w:
                return "dedup_expired"
            bit = 1 << back
            if a.mask & bit:
                return "duplicate"
            a.mask |= bit
        a.lo = min(a.lo, seq)
        a.received += 1
        if a.gaps and a.in_gap(seq):
            a.gap_hits += 1
        return "new"
