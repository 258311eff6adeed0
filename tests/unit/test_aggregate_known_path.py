"""The poll path's usual case - records laid out like their agent's previous one, read without
a Rec per record (PartitionState._add_known, Decoder.read_known) - gives exactly what the
general path (Decoder.read per record) gives, whatever the records hold and however the polls
are cut and bounded."""

from __future__ import annotations

import itertools
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.aggregate import state
from collector.aggregate.config import AggregateSettings
from collector.aggregate.state import PartitionState
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.aggregate_support import NS, T0, SeriesDef, make_batch
from tests.unit.test_aggregate_pollpath import _state_bits, _unissued

CFG = AggregateSettings(windows_s=(10, 60, 300), allowed_lateness_s=10)

SERIES = [
    SeriesDef("link_in_octets", {"link": "a", "media": "optical"}),
    SeriesDef("link_out_octets", {"link": "a", "media": "optical"}),
    SeriesDef("link_speed_bytes", {"link": "a", "media": "optical"}, kind=pb.GAUGE, unit="bytes/s"),
]
AGENTS = (
    ("a1", "jp-tokyo-01", "JP", "Kanto"),
    ("a2", "us-nyc-01", "US", "us-east"),
    ("a3", "jp-osaka-01", "JP", "Kansai"),
)

# what a record is, beside a plain next batch of its agent
KINDS = (
    "next",
    "next",
    "next",
    "next",
    "counters_only",
    "duplicate",
    "older",
    "bad_index",
    "bad_time",
    "bad_gauge",
    "unissued",
    "new_boot",
    "renamed_site",
    "unknown_metric",
    "late",
    "junk",
)


def _records(plan: list[tuple[int, str]]) -> list[bytes]:
    """Records of three agents; `plan`: (agent, kind) per record."""
    seq = [0, 0, 0]
    boot = ["boot-1"] * 3
    region = [a[3] for a in AGENTS]
    out: list[bytes] = []
    for a, kind in plan:
        agent, site, country, _ = AGENTS[a]
        if kind in ("duplicate", "older") and seq[a] > 1:
            s = seq[a] if kind == "duplicate" else seq[a] - 1
        else:
            seq[a] += 1
            s = seq[a]
        if kind == "new_boot":
            boot[a] = f"boot-{s}"
        if kind == "renamed_site":
            region[a] = f"{region[a]}-{s}"
        t = T0 + (s - (3 if kind == "late" else 0)) * 10 * NS + a
        series = SERIES + ([SeriesDef("no_such_metric", {})] if kind == "unknown_metric" else [])
        counters = [(0, t, s * 10**12), (1, t, s * 7)]
        if kind == "bad_index":
            counters[1] = (len(series), t, 1)
        if kind == "bad_time":
            counters[0] = (0, -1, 1)
        gauges = [] if kind == "counters_only" else [(2, t, float("nan") if kind == "bad_gauge" else 1.25e9)]
        if kind == "unknown_metric":
            counters.append((3, t, 5))
        raw = make_batch(
            agent=agent,
            seq=s,
            site=site,
            country=country,
            region=region[a],
            boot=boot[a],
            series=series,
            counters=counters,
            gauges=gauges,
        )
        if kind == "unissued":
            raw = _unissued(raw, s + 1, s + 2)
        out.append(b"\xff" + raw[:3] if kind == "junk" else raw)
    return out


def _general_only(st: PartitionState) -> PartitionState:
    st._add_known = lambda records, max_samples: (0, 0, 0)  # type: ignore[method-assign]
    return st


def _feed(st: PartitionState, values: list[bytes], cuts: list[int], max_samples: int | None) -> list[Any]:
    rows = [(i, v, (("schema", b"telemetry.v1.Batch"),) if i % 3 else None) for i, v in enumerate(values)]
    bounds = sorted({0, len(rows), *(c % (len(rows) + 1) for c in cuts)})
    errors: list[Any] = []
    for a, b in itertools.pairwise(bounds):
        pos = a
        while pos < b:
            _, errs, taken = st.add_prefix(rows[pos:b], max_samples)
            assert taken >= 1
            errors += [(pos + i, e.reason) for i, e in errs]
            pos += taken
            st.advance()
    return errors


@settings(max_examples=80, deadline=None)
@given(
    plan=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(KINDS)), min_size=1, max_size=80),
    cuts=st.lists(st.integers(0, 80), max_size=6),
    max_samples=st.one_of(st.none(), st.integers(1, 40)),
    run=st.integers(1, 8),
)
def test_the_known_path_gives_what_the_general_path_gives(
    plan: list[tuple[int, str]], cuts: list[int], max_samples: int | None, run: int
) -> None:
    values = _records([(a, "next") for a in range(3)] + plan)  # every agent's layout known first
    fast, general = PartitionState(0, CFG), _general_only(PartitionState(0, CFG))
    with mock.patch.object(state, "GENERAL_RUN", run):  # short general runs: more known ones
        fast_errors = _feed(fast, values, cuts, max_samples)
    general_errors = _feed(general, values, cuts, max_samples)
    assert fast_errors == general_errors
    assert _state_bits(fast) == _state_bits(general)
    assert fast.snapshot() == general.snapshot()
    assert (fast.next_offset, fast.records, fast.samples) == (
        general.next_offset,
        general.records,
        general.samples,
    )


def test_the_known_path_takes_the_usual_records_and_the_general_path_the_rest() -> None:
    """It is used: a steady stream of next batches goes through it once each agent's layout
    and table are known, and the records it cannot take go the general way."""
    taken: list[int] = []
    st = PartitionState(0, CFG)
    known = st._add_known

    def counting(records: Any, max_samples: int | None) -> tuple[int, int, int]:
        got = known(records, max_samples)
        taken.append(got[0])
        return got

    st._add_known = counting  # type: ignore[method-assign]
    values = _records([(i % 3, "next") for i in range(60)])
    _feed(st, values, [3, 30], None)
    # poll 1: the first three (layouts unknown) go the general way; poll 2 starts with each
    # agent's second record, read by the full parse's fast path, which learns the layout:
    # a run of the general way, then the known path
    assert taken == [0, 0, 30]
    assert st.sites[0].batches + st.sites[1].batches + st.sites[2].batches == 60


@pytest.mark.parametrize("kind", ["bad_index", "bad_time", "bad_gauge", "junk"])
def test_a_refused_record_in_a_known_layout_poll_is_refused_alone(kind: str) -> None:
    values = _records([(i % 3, "next") for i in range(9)] + [(0, kind)] + [(i % 3, "next") for i in range(6)])
    st = PartitionState(0, CFG)
    errors = _feed(st, values, [3], None)
    assert [i for i, _ in errors] == [9]
    assert st.records == len(values)
    assert sum(s.batches for s in st.sites) == len(values) - 1
