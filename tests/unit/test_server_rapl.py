"""Host power from RAPL: a fake /sys/class/powercap tree -> the server source's energy
counter (unwrapped exactly at max_energy_range_uj) -> the aggregator's edge_host_power_watts
and edge_site_power_watts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.agent.batch import BatchBuilder
from collector.agent.config import ServerSourceSettings
from collector.agent.sources.server import RaplZone, ServerSource, find_rapl_zones
from collector.aggregate.config import AggregateSettings
from collector.aggregate.outputs import build_frames
from collector.aggregate.state import PartitionState
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.agent_support import SITE

NS = 10**9
RANGE = 262_143_328_850  # a real package's max_energy_range_uj (not a power of two)


def zone(root: Path, name: str, label: str, energy: int, rng: int = RANGE) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "max_energy_range_uj").write_text(f"{rng}\n")
    (d / "energy_uj").write_text(f"{energy}\n")
    return d / "energy_uj"


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    root = tmp_path / "powercap"
    (root / "intel-rapl").mkdir(parents=True)  # the control type: no zone
    zone(root, "intel-rapl:0", "package-0", RANGE - 100_000_000)
    zone(root, "intel-rapl:0:0", "core", 5)  # inside package-0: not sent
    zone(root, "intel-rapl:0:1", "dram", 1_000, rng=65_532_610_987)
    zone(root, "intel-rapl:1", "psys", 7)  # overlaps the packages: not sent
    return root


async def rapl_samples(src: ServerSource, t: int) -> tuple[pb.Batch, dict[str, tuple[int, int]]]:
    b = BatchBuilder("agent-1", SITE, "boot-1")
    await src.collect(b, t)
    batch = b.build(1, t)
    out = {}
    for i, v in zip(batch.counters.series_index, batch.counters.value, strict=True):
        s = batch.series[i]
        if s.metric == "node_rapl_joules_total":
            dev = next(lab.value for lab in s.labels if lab.name == "device")
            assert (s.counter_bits, s.scale, s.unit) == (64, 1e-6, "joules")
            out[dev] = (v, s.start_time_unix_nano)
    return batch, out


def test_zones_found_are_packages_and_dram(powercap: Path) -> None:
    zones = find_rapl_zones(powercap)
    assert [(z.device, z.range_uj) for z in zones] == [
        ("package-0", RANGE),
        ("package-0-dram", 65_532_610_987),
    ]


async def test_energy_counter_is_unwrapped_exactly_at_the_range(powercap: Path) -> None:
    src = ServerSource(ServerSourceSettings(), host="h1", powercap=powercap)
    pkg = powercap / "intel-rapl:0" / "energy_uj"
    t0 = 1_800_000_000 * NS
    _, first = await rapl_samples(src, t0)
    assert first["package-0"] == (RANGE - 100_000_000, t0)
    pkg.write_text("250000000\n")  # wrapped: 100 J to the range, then 250 J
    _, second = await rapl_samples(src, t0 + 10 * NS)
    assert second["package-0"] == (RANGE + 250_000_000, t0)  # same counter life, +350 J
    pkg.write_text("300000000\n")
    # a gap in which 1000 W could have wrapped it (262 s): start over, never guess
    _, third = await rapl_samples(src, t0 + 400 * NS)
    assert third["package-0"] == (300_000_000, t0 + 400 * NS)


async def test_absent_or_unreadable_rapl_sends_nothing(tmp_path: Path) -> None:
    for root in (tmp_path / "none", tmp_path / "unreadable"):
        if root.name == "unreadable":
            d = root / "intel-rapl:0"
            d.mkdir(parents=True)
            (d / "name").write_text("package-0\n")
            (d / "max_energy_range_uj").write_text(f"{RANGE}\n")
            (d / "energy_uj").mkdir()  # reading it fails like a root-only file does
        src = ServerSource(ServerSourceSettings(), host="h1", powercap=root)
        batch, rapl = await rapl_samples(src, 1_800_000_000 * NS)
        assert rapl == {}
        assert len(batch.counters.value) > 0  # the rest of the source still works
        assert src.stats.errors == 0


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2**40), st.integers(0, 2**40), st.lists(st.integers(0, 2**40), min_size=1, max_size=50))
def test_unwrapped_increase_equals_the_energy_used(rng: int, start: int, used: list[int]) -> None:
    start %= rng + 1
    z = RaplZone("package-0", Path("/nonexistent"), rng)
    max_watts = 1000.0
    step_ns = 10 * NS
    raw, t = start, 0
    first = z.update(raw, t, max_watts)
    assert first == start
    total = 0
    for u in used:
        u %= rng  # less than one range between reads: exactly recoverable
        raw = (raw + u) % rng if rng > 1 else 0
        t += step_ns
        v = z.update(raw, t, max_watts)
        assert v is not None
        if 10 * max_watts * 1e6 >= rng:  # the reads are too far apart for this range
            assert z.start_ns == t
            continue
        total += u
        assert v - first == total
        assert z.start_ns == 0


def test_aggregator_publishes_host_and_site_watts(powercap: Path) -> None:
    import asyncio

    src = ServerSource(ServerSourceSettings(), host="h1", powercap=powercap)
    pkg = powercap / "intel-rapl:0" / "energy_uj"
    dram = powercap / "intel-rapl:0:1" / "energy_uj"
    st = PartitionState(0, AggregateSettings(windows_s=(10,)))
    t0 = 1_800_000_000 * NS
    p_raw, d_raw = RANGE - 100_000_000, 1_000
    rows: list = []
    for k in range(12):  # 65 W package (wrapping on the way), 7 W DRAM, 10 s apart
        if k:
            p_raw = (p_raw + 650_000_000) % RANGE
            d_raw += 70_000_000
        pkg.write_text(f"{p_raw}\n")
        dram.write_text(f"{d_raw}\n")
        b = BatchBuilder("agent-1", SITE, "boot-1")
        asyncio.run(src.collect(b, t0 + k * 10 * NS))
        st.add(k, b.build(k + 1, t0 + k * 10 * NS).SerializeToString())
        st.advance()
        rows.append(k)
    frames = build_frames([st.view()])
    host = frames["edge_host_power_watts"].filter(window="10s")
    assert host["host"].to_list() == ["h1"]
    assert host["value"].to_list() == [pytest.approx(72.0, rel=1e-12)]
    site = frames["edge_site_power_watts"].filter(window="10s")
    assert site["site"].to_list() == [SITE.site_id]
    assert site["value"].to_list() == [pytest.approx(72.0, rel=1e-12)]
