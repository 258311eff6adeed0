"""SNMP varbinds -> LinkReading: the pure mapping, the modular packet sums, the uptime clock
and the side-by-side GETBULK walk (against an in-memory table with GETBULK semantics)."""

from __future__ import annotations

import bisect
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.agent.sources import snmp
from collector.agent.sources.snmp import (
    COLUMNS,
    FALLBACK32,
    PRIMARY,
    SYS_UPTIME,
    UptimeClock,
    needs_fallback,
    readings_from_table,
    walk_columns,
)

U32, U64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)


@st.composite
def rows(draw: Any) -> dict[str, dict[int, Any]]:
    cols: dict[str, dict[int, Any]] = {n: {} for n in COLUMNS}
    for i in draw(st.sets(st.integers(1, 2**31 - 1), min_size=1, max_size=6)):
        hc = draw(st.booleans())
        for n in (
            "ifInErrors",
            "ifOutErrors",
            "ifInDiscards",
            "ifOutDiscards",
            "ifInOctets",
            "ifOutOctets",
            "ifInUcastPkts",
            "ifOutUcastPkts",
            "ifInMulticastPkts",
            "ifInBroadcastPkts",
            "ifOutMulticastPkts",
            "ifOutBroadcastPkts",
        ):
            cols[n][i] = draw(U32)
        if hc:
            for n in COLUMNS:
                if n.startswith("ifHC"):
                    cols[n][i] = draw(U64)
        cols["ifOperStatus"][i] = draw(st.integers(1, 7))
        cols["ifHighSpeed"][i] = draw(st.integers(0, 1_600_000))
        cols["ifSpeed"][i] = draw(U32)
        cols["ifCounterDiscontinuityTime"][i] = draw(U32)
        if draw(st.booleans()):
            cols["ifName"][i] = f"et-0/0/{i}".encode()
        cols["ifDescr"][i] = f"descr {i}".encode()
        cols["ifAlias"][i] = draw(st.sampled_from([b"", b"uplink to tokyo", "東京".encode()]))
    return cols


@settings(max_examples=200, deadline=None)
@given(rows(), st.integers(0, 2**62), st.sampled_from(["name", "alias", "descr"]))
def test_every_row_maps_to_one_reading_with_its_declared_width(
    cols: dict[str, dict[int, Any]], boot: int, label: str
) -> None:
    out = readings_from_table(cols, boot_ns=boot, time_ns=boot + 1, prefix="sw1:", label=label)
    idx = sorted(cols["ifOperStatus"])
    assert len(out) == len(idx)
    for i, r in zip(idx, out, strict=True):
        name = cols["ifName"].get(i, b"").decode() or cols["ifDescr"][i].decode()
        if label == "alias":
            name = cols["ifAlias"][i].decode() or name
        elif label == "descr":
            name = cols["ifDescr"][i].decode()
        assert r.name == "sw1:" + name
        if i in cols["ifHCInOctets"]:
            assert r.counter_bits == 64
            assert (r.in_octets, r.out_octets) == (cols["ifHCInOctets"][i], cols["ifHCOutOctets"][i])
            assert (
                r.in_packets
                == (
                    cols["ifHCInUcastPkts"][i]
                    + cols["ifHCInMulticastPkts"][i]
                    + cols["ifHCInBroadcastPkts"][i]
                )
                % 2**64
            )
            assert dict(r.counter_bits_of) == dict.fromkeys(
                ("in_errors", "out_errors", "in_discards", "out_discards"), 32
            )
        else:
            assert r.counter_bits == 32
            assert r.counter_bits_of == ()
            assert (r.in_octets, r.out_octets) == (cols["ifInOctets"][i], cols["ifOutOctets"][i])
            assert (
                r.out_packets
                == (cols["ifOutUcastPkts"][i] + cols["ifOutMulticastPkts"][i] + cols["ifOutBroadcastPkts"][i])
                % 2**32
            )
        assert r.in_errors == cols["ifInErrors"][i]
        assert r.out_discards == cols["ifOutDiscards"][i]
        assert r.oper_up == (cols["ifOperStatus"][i] == 1)
        high, low = cols["ifHighSpeed"][i], cols["ifSpeed"][i]
        want = high * 125_000 if high else (low // 8 if 0 < low < 2**32 - 1 else None)
        assert r.speed_bytes_per_second == want
        assert r.counter_start_unix_nano == boot + cols["ifCounterDiscontinuityTime"][i] * 10**7
        assert r.time_unix_nano == boot + 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(U32, U32), min_size=1, max_size=3), st.sampled_from([32, 64]))
def test_a_modular_sum_of_counters_is_a_counter_of_the_same_width(
    parts: list[tuple[int, int]], bits: int
) -> None:
    # each component counter moves from a to a + d (wrapping at its width); the summed
    # counter's modular delta is the total increase whenever that fits the width
    m = 1 << bits
    starts = [a % m for a, _ in parts]
    ends = [(a + d) % m for a, d in parts]
    total = sum(d for _, d in parts)
    delta = (sum(ends) % m - sum(starts) % m) % m
    if total < m:
        assert delta == total


def test_uptime_clock_is_stable_across_jitter_and_moves_on_reboot() -> None:
    c = UptimeClock()
    boot = c.update(100_000, 10**18, 10.0)
    # later polls: the round trip and centisecond rounding move the estimate a little
    assert c.update(101_000, 10**18 + 10_000 * 10**6 + 7_000_000, 10.0) == boot
    assert c.update(102_000, 10**18 + 20_000 * 10**6 - 9_000_000, 10.0) == boot
    # a reboot: uptime went back far from its wrap point
    rebooted = c.update(500, 10**18 + 30_000 * 10**6, 10.0)
    assert rebooted == 10**18 + 30_000 * 10**6 - 500 * 10**7
    # the 32-bit TimeTicks wrap after ~497 days is not a reboot
    c2 = UptimeClock()
    b2 = c2.update(2**32 - 300, 10**18, 10.0)
    assert c2.update(700, 10**18 + 1000 * 10**7, 10.0) == b2 + 2**32 * 10**7


class _EndOfMibView:
    pass


_EndOfMibView.__name__ = "EndOfMibView"


class FakeAgent:
    """GETBULK over a sorted OID table, with a response size cap (truncation)."""

    def __init__(self, table: dict[tuple[int, ...], int], cap: int) -> None:
        self.oids = sorted(table)
        self.table = table
        self.cap = cap
        self.requests = 0

    def next(self, oid: tuple[int, ...]) -> tuple[tuple[int, ...], Any]:
        k = bisect.bisect_right(self.oids, oid)
        if k >= len(self.oids):
            return oid, _EndOfMibView()
        o = self.oids[k]
        return o, self.table[o]

    async def bulk(self, s: Any, oids: list[tuple[int, ...]]) -> list[tuple[tuple[int, ...], Any]]:
        self.requests += 1
        out = [((*SYS_UPTIME, 0), 4242)]
        cursors = list(oids)
        for _ in range(s.max_repetitions):
            for j, c in enumerate(cursors):
                o, v = self.next(c)
                cursors[j] = o
                out.append((o, v))
        return out[: max(2, self.cap)]


@settings(max_examples=100, deadline=None)
@given(rows(), st.integers(1, 30), st.integers(2, 400), st.booleans())
async def test_side_by_side_walk_reads_every_column_exactly(
    cols: dict[str, dict[int, Any]], reps: int, cap: int, hide_hc: bool
) -> None:
    table: dict[tuple[int, ...], int] = {(*SYS_UPTIME, 0): 4242}
    for n, values in cols.items():
        if hide_hc and n.startswith("ifHC"):
            continue
        for i, v in values.items():
            if isinstance(v, int):
                table[(*COLUMNS[n], i)] = v
    agent = FakeAgent(table, cap)
    session = snmp._Session(None, None, None, None, reps, 10.0)
    orig = snmp._bulk
    snmp._bulk = agent.bulk  # type: ignore[assignment]
    try:
        got, uptime = await walk_columns(session, PRIMARY)
        if needs_fallback(got):
            more, _ = await walk_columns(session, FALLBACK32)
            got.update(more)
    finally:
        snmp._bulk = orig  # type: ignore[assignment]
    assert uptime == 4242
    for n in got:
        want = {i: v for i, v in cols[n].items() if isinstance(v, int)}
        if hide_hc and n.startswith("ifHC"):
            want = {}
        assert got[n] == want, n
    has_hc = not hide_hc and any(cols["ifHCInOctets"])
    all_hc = has_hc and set(cols["ifHCInOctets"]) == set(cols["ifOperStatus"])
    assert ("ifInOctets" in got) == (not all_hc)
