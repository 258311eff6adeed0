"""The per-site ledger: what each site sent, what was counted and why the rest was not.

Kept by the per-partition state (collector/aggregate/state.py), checkpointed with it and
published by outputs.py as the `collector_aggregate_site_*` families: every sample a
site sent is either counted or dropped with a reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collector.aggregate.dedup import Agent
    from collector.aggregate.registry import SeriesRegistry

# why samples were not counted (the `reason` label of the dropped-samples family)
DROP_REASONS = (
    "late",
    "duplicate",
    "dedup_expired",
    "rejected",
    "unknown_metric",
    "cardinality",
    "too_old",
    "overlap",
)
# counter intervals whose delta is unknowable, by reason (their samples still count)
EXCLUDE_REASONS = ("ambiguous_gap",)


@dataclass(slots=True)
class Site:
    site_id: str
    country: str
    region: str
    series: int = 0
    batches: int = 0
    dup_batches: int = 0
    samples: int = 0
    max_event: int | None = None
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    excluded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EXCLUDE_REASONS, 0))


@dataclass(frozen=True, slots=True)
class SiteLedger:
    site_id: str
    country: str
    region: str
    series: int
    batches: int
    dup_batches: int
    samples: int
    dropped: dict[str, int]
    expected: int  # batches expected from the seq range of the site's agents
    received: int  # distinct batches received in that range
    last_event_ns: int | None = None  # newest event time seen from the site
    # Sample ledger over the series that have a sampling step (>= 2 distinct samples), up to
    # the ledger end (see PartitionState.ledger_end_ns): grid points first + k * step, and
    # distinct samples accepted.
    samples_expected: int = 0
    samples_counted: int = 0
    # counter intervals excluded by reason (ambiguous_gap: could hide a wrap)
    excluded: dict[str, int] = field(default_factory=dict)


def site_ledgers(
    registry: SeriesRegistry, agents: Iterable[Agent], ledger_end_ns: int | None
) -> tuple[SiteLedger, ...]:
    """Every site's ledger as of now: batch counts from the dedup, sample counts from the
    registry's per-series sample ledger up to `ledger_end_ns`."""
    sites = registry.sites
    expected = [0] * len(sites)
    received = [0] * len(sites)
    for a in agents:
        expected[a.site] += a.expected()
        received[a.site] += a.received
    s_expected, s_counted = _sample_ledger(registry, ledger_end_ns)
    return tuple(
        SiteLedger(
            s.site_id,
            s.country,
            s.region,
            s.series,
            s.batches,
            s.dup_batches,
            s.samples,
            dict(s.dropped),
            expected[i],
            received[i],
            s.max_event,
            int(s_expected[i]),
            int(s_counted[i]),
            dict(s.excluded),
        )
        for i, s in enumerate(sites)
    )


def _sample_ledger(
    registry: SeriesRegistry, end: int | None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per site: samples expected and distinct samples processed, over live series with
    a known step. A series expects (end - first) // step + 1 samples: it keeps expecting
    while it (or its site) is silent, until it expires after stale_ttl_s."""
    reg = registry
    expected = np.zeros(len(reg.sites), np.int64)
    counted = np.zeros(len(reg.sites), np.int64)
    n = len(reg.keys)
    if end is None or not n:
        return expected, counted
    sel = np.flatnonzero(reg.live[:n] & (reg.step[:n] > 0))
    per = np.maximum((end - reg.first_sample[sel]) // reg.step[sel] + 1, 0)
    site = reg.site_of[sel]
    np.add.at(expected, site, per)
    np.add.at(counted, site, reg.sample_count[sel])
    return expected, counted
