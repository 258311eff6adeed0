"""Server and link sources: catalogue names, integer counters, widths, discontinuity markers."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import BaseModel

from collector import catalog, wire
from collector.agent.batch import BatchBuilder
from collector.agent.config import AgentSettings, LinkSourceSettings, ServerSourceSettings
from collector.agent.sources.link import LinkSource
from collector.agent.sources.link_adapters import (
    LinkAdapter,
    LinkReading,
    LinuxLinkAdapter,
    SyntheticLinkAdapter,
    make_adapter,
)
from collector.agent.sources.server import ServerSource, read_proc_stat
from collector.errors import ConfigError
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.agent_support import SITE


def _batch(b: BatchBuilder) -> pb.Batch:
    return wire.parse_batch(b.build(1, time.time_ns()).SerializeToString())


def _samples(batch: pb.Batch) -> dict[tuple[str, tuple[tuple[str, str], ...]], float | int]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float | int] = {}
    for cols in (wire.counter_columns(batch), wire.gauge_columns(batch)):
        for i, v in zip(cols.series_index, cols.value, strict=True):
            s = batch.series[i]
            out[(s.metric, tuple((lab.name, lab.value) for lab in s.labels))] = v.item()
    return out


async def test_server_source_uses_catalogue_names_and_integer_counters() -> None:
    src = ServerSource(ServerSourceSettings(host="edge-1"), boot_time_unix_nano=123)
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    batch = _batch(b)
    metrics = {s.metric for s in batch.series}
    assert {"node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_load1"} <= metrics
    assert metrics <= set(catalog.BY_NAME)
    for s in batch.series:
        spec = catalog.BY_NAME[s.metric]
        assert {lab.name for lab in s.labels} == set(spec.labels), s.metric
        if s.kind == pb.COUNTER:
            assert spec.kind is catalog.Kind.COUNTER
            assert s.counter_bits in (32, 64)
            assert s.start_time_unix_nano == 123
    cols = wire.counter_columns(batch)
    assert cols.value.dtype.kind == "u"  # uint64 on the wire, never floats
    cpu = [s for s in batch.series if s.metric == "node_cpu_seconds_total"]
    assert {lab.value for s in cpu for lab in s.labels if lab.name == "mode"} >= {"user", "idle"}
    assert all(0 < s.scale < 1 for s in cpu)  # ticks -> seconds


async def test_server_source_covers_every_server_metric_of_the_catalogue(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """CPU per mode, memory, load, disk I/O and space, per-NIC bytes/packets/errors/drops:
    every `server` metric of the catalogue, counters as exact integers beyond 2^53."""
    from collector.agent.sources import server as server_mod

    big = 2**63 + 7  # a float64 would round it
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1\n")
    io = SimpleNamespace(read_bytes=big, write_bytes=big + 1, read_count=11, write_count=12, busy_time=13)
    nic = SimpleNamespace(
        bytes_recv=big,
        bytes_sent=big + 1,
        packets_recv=3,
        packets_sent=4,
        errin=5,
        errout=6,
        dropin=7,
        dropout=8,
    )
    part = SimpleNamespace(mountpoint="/data", fstype="ext4")
    monkeypatch.setattr(server_mod.psutil, "disk_io_counters", lambda **_: {"sda": io, "loop0": io})
    monkeypatch.setattr(server_mod.psutil, "net_io_counters", lambda **_: {"eth0": nic, "lo": nic})
    monkeypatch.setattr(server_mod.psutil, "disk_partitions", lambda **_: [part])
    monkeypatch.setattr(server_mod.psutil, "disk_usage", lambda _: SimpleNamespace(total=1000, free=600))
    rapl = tmp_path / "powercap" / "intel-rapl:0"  # host power (RAPL): one package zone
    rapl.mkdir(parents=True)
    for f, v in (("name", "package-0"), ("max_energy_range_uj", "262143328850"), ("energy_uj", "12345")):
        (rapl / f).write_text(v + "\n")
    src = ServerSource(
        ServerSourceSettings(host="edge-1"), boot_time_unix_nano=123, proc_stat=stat, powercap=rapl.parent
    )
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    batch = _batch(b)
    wanted = {m.name for m in catalog.METRICS if m.domain is catalog.Domain.SERVER}
    assert {s.metric for s in batch.series} == wanted
    got = {(m, frozenset(labels)): v for (m, labels), v in _samples(batch).items()}

    def value(metric: str, **labels: str) -> float | int:
        return got[(metric, frozenset({"host": "edge-1", **labels}.items()))]

    assert value("node_disk_read_bytes_total", device="sda") == big
    assert value("node_disk_writes_completed_total", device="sda") == 12
    assert value("node_disk_io_time_seconds_total", device="sda") == 13  # ms, scale 1e-3
    (busy,) = {s.scale for s in batch.series if s.metric == "node_disk_io_time_seconds_total"}
    assert busy == pytest.approx(1e-3)
    assert value("node_network_transmit_bytes_total", device="eth0") == big + 1
    assert value("node_network_receive_drop_total", device="eth0") == 7
    assert value("node_filesystem_avail_bytes", mountpoint="/data") == 600
    modes = {
        lab.value
        for s in batch.series
        if s.metric == "node_cpu_seconds_total"
        for lab in s.labels
        if lab.name == "mode"
    }
    assert modes == set(server_mod.CPU_MODES)
    assert value("node_cpu_seconds_total", cpu="0", mode="steal") == 8
    devices = {
        lab.value
        for s in batch.series
        for lab in s.labels
        if lab.name == "device" and s.metric != "node_rapl_joules_total"
    }
    assert devices == {"sda", "eth0"}  # loop* and lo are excluded by default
    assert value("node_rapl_joules_total", device="package-0") == 12345  # µJ, scale 1e-6


def test_proc_stat_parser_reads_per_cpu_ticks(tmp_path: Path) -> None:
    p = tmp_path / "stat"
    p.write_text(
        "cpu  10 0 5 100 1 0 0 0 0 0\ncpu0 6 0 3 50 1 0 0 0 0 0\ncpu1 4 0 2 50 0 0 0 0 0 0\nintr 1 2\n"
    )
    assert read_proc_stat(p) == {"0": (6, 0, 3, 50, 1, 0, 0, 0), "1": (4, 0, 2, 50, 0, 0, 0, 0)}


def _fake_net(root: Path, name: str, ifindex: int, rx: int, oper: str = "up", speed: str = "10000") -> None:
    d = root / name
    (d / "statistics").mkdir(parents=True, exist_ok=True)
    for f in (
        "rx_bytes",
        "tx_bytes",
        "rx_packets",
        "tx_packets",
        "rx_errors",
        "tx_errors",
        "rx_dropped",
        "tx_dropped",
    ):
        (d / "statistics" / f).write_text(f"{rx if f == 'rx_bytes' else 7}\n")
    (d / "ifindex").write_text(f"{ifindex}\n")
    (d / "operstate").write_text(oper + "\n")
    (d / "speed").write_text(speed + "\n")


async def test_linux_adapter_marks_counter_restarts(tmp_path: Path) -> None:
    _fake_net(tmp_path, "eth0", 2, 1000)
    _fake_net(tmp_path, "eth1", 3, 2**40, oper="down", speed="-1")
    ad = LinuxLinkAdapter(str(tmp_path), boot_time_unix_nano=555)
    first = {r.name: r for r in await ad.read()}
    assert first["eth0"].counter_start_unix_nano == 555
    assert first["eth0"].speed_bytes_per_second == 10_000 * 125_000
    assert first["eth1"].oper_up is False
    assert first["eth1"].speed_bytes_per_second is None
    assert first["eth1"].in_octets == 2**40
    _fake_net(tmp_path, "eth0", 2, 500)  # went backwards: driver reset
    _fake_net(tmp_path, "eth1", 9, 2**40 + 1)  # re-created interface
    second = {r.name: r for r in await ad.read()}
    assert second["eth0"].counter_start_unix_nano > 555
    assert second["eth1"].counter_start_unix_nano > 555


async def test_link_source_filters_and_maps_media(tmp_path: Path) -> None:
    _fake_net(tmp_path, "lo", 1, 1)
    _fake_net(tmp_path, "eth0", 2, 1000)
    _fake_net(tmp_path, "xe-0", 3, 2000)
    s = LinkSourceSettings(
        adapter="linux", options={"sysfs": str(tmp_path)}, exclude=["lo"], media={"xe-*": "optical"}
    )
    src = LinkSource(s)
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    got = _samples(_batch(b))
    assert got[("link_in_octets", (("link", "xe-0"), ("media", "optical")))] == 2000
    assert got[("link_in_octets", (("link", "eth0"), ("media", "copper")))] == 1000
    assert got[("link_oper_up", (("link", "eth0"), ("media", "copper")))] == 1.0
    assert not any(dict(k[1])["link"] == "lo" for k in got)


async def test_synthetic_optical_links_carry_dom_readings() -> None:
    src = LinkSource(LinkSourceSettings(adapter="synthetic", options={"links": 4}, exclude=[]))
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    batch = _batch(b)
    got = _samples(batch)
    opt = (("link", "et-0/0/0"), ("media", "optical"))
    for m in (
        "link_optical_rx_power_dbm",
        "link_optical_tx_power_dbm",
        "link_optical_laser_bias_amperes",
        "link_optical_prefec_ber",
        "link_optical_osnr_db",
    ):
        assert (m, opt) in got
    assert ("link_optical_rx_power_dbm", (("link", "et-0/0/1"), ("media", "copper"))) not in got
    assert {s.metric for s in batch.series} <= set(catalog.BY_NAME)
    octets = next(s for s in batch.series if s.metric == "link_in_octets")
    assert octets.counter_bits == 64
    assert octets.start_time_unix_nano == 1


async def test_simulated_adapter_reads_the_simulator_links_at_the_due_tick() -> None:
    from collector.simulate.config import SimulateSettings
    from collector.simulate.generator import FleetGenerator
    from collector.simulate.topology import FleetModel

    start = time.time() // 1 - 50  # a run that started 50 one-second ticks ago
    opts = {
        "seed": 7,
        "country": "US",
        "site": 1,
        "links": 4,
        "interval_s": 1.0,
        "start_unix_s": start,
        "clear_every_s": 0.0,
    }
    src = LinkSource(LinkSourceSettings(adapter="simulated", options=opts, exclude=[]))
    adapter = src.adapter
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    due = adapter.gen.next_tick - 1  # type: ignore[attr-defined]
    assert 50 <= due <= 55
    batch = _batch(b)
    assert {s.metric for s in batch.series} <= set(catalog.BY_NAME)
    widths = {
        dict((lab.name, lab.value) for lab in s.labels)["media"]: s.counter_bits
        for s in batch.series
        if s.metric == "link_in_octets"
    }
    assert widths == {"optical": 64, "copper": 32}  # copper counters wrap at 2^32
    # the same values as the simulator's own generator at that tick, optical readings too
    m = FleetModel(
        SimulateSettings.model_validate(
            dict(
                seed=7,
                countries=("US",),
                sites_per_country=2,
                links_per_site=4,
                cells_per_site=0,
                hosts_per_site=0,
                interval_s=1.0,
                jitter_s=0.0,
                start_unix_s=start,
                clear_every_s=0.0,
                reset_every_s=0.0,
                gap_probability=0.0,
                silent_after_s=0.0,
            )
        )
    )
    block = FleetGenerator(m, round(start * 1e9)).block(due + 1)
    got = _samples(batch)
    site_rows = [i for i, si in enumerate(m.links["site"].tolist()) if si == 1]
    assert len(site_rows) == 4
    for i in site_rows:
        c0, g0 = int(m.links["c0"][i]), int(m.links["g0"][i])
        labels = m.counters[c0].labels
        assert got[("link_in_octets", labels)] == int(block.values[c0, due])
        assert got[("link_out_discards", labels)] == int(block.values[c0 + 7, due])
        if m.links["optical"][i]:
            assert got[("link_optical_rx_power_dbm", labels)] == block.gauges[g0 + 2, due]
    times = wire.counter_columns(batch).time_unix_nano
    assert set(times.tolist()) == {int(block.t[1, due])}
    # nothing new before the next tick is due; then the counters move on
    gen = adapter.gen  # type: ignore[attr-defined]
    gen.start_ns += 5 * 10**9  # the clock 5 ticks earlier: no new tick is due
    assert await adapter.read() == []
    gen.start_ns -= 15 * 10**9  # 10 ticks later than the first read
    later = {r.name: r for r in await adapter.read()}
    first = {dict(lab)["link"]: v for (met, lab), v in got.items() if met == "link_in_octets"}
    moved = [later[n].in_octets != v for n, v in first.items()]
    assert all(moved)


def test_simulated_adapter_bad_options_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"agent\.sources\.link\.options"):
        make_adapter("simulated", {"country": "FR"})
    with pytest.raises(ConfigError, match=r"agent\.sources\.link\.options"):
        make_adapter("simulated", {"color": "red"})


class EchoAdapter(LinkAdapter):
    """A device adapter as a third party would write one (used via module:Class)."""

    def __init__(self, name: str = "ge-1/0/0", bits: int = 32) -> None:
        self.name = name
        self.bits = bits

    async def read(self) -> Sequence[LinkReading]:
        return [
            LinkReading(
                self.name,
                media="optical",
                in_octets=2**32 - 1,
                counter_bits=self.bits,
                counter_start_unix_nano=42,
                rx_power_dbm=float("nan"),
            )
        ]


async def test_pluggable_adapter_by_import_path_declares_32_bit_counters() -> None:
    src = LinkSource(
        LinkSourceSettings(
            adapter="tests.unit.test_agent_sources:EchoAdapter", options={"name": "ge-9"}, exclude=[]
        )
    )
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    batch = _batch(b)
    (s,) = batch.series  # the NaN optical reading is not sent
    assert (s.metric, s.counter_bits, s.start_time_unix_nano) == ("link_in_octets", 32, 42)


@pytest.mark.parametrize("spec", ["nope", "os:path", "tests.unit.test_agent_sources:Missing"])
def test_bad_adapter_is_a_config_error_naming_the_key(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"agent\.sources\.link"):
        make_adapter(spec, {})


def test_synthetic_adapter_rejects_unknown_option() -> None:
    with pytest.raises(ConfigError, match="options"):
        make_adapter("synthetic", {"bogus": 1})
    assert isinstance(make_adapter("synthetic", {"links": 2}), SyntheticLinkAdapter)


def _fields(model: type[BaseModel], prefix: str = "agent") -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for name, f in model.model_fields.items():
        out.append((f"{prefix}.{name}", f.description))
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(_fields(ann, f"{prefix}.{name}"))
    return out


def test_every_agent_setting_is_documented() -> None:
    fields = _fields(AgentSettings)
    assert len(fields) > 40
    missing = [k for k, d in fields if not d or len(d) < 10]
    assert not missing, missing


class BrokenAdapter(LinkAdapter):
    def __init__(self) -> None:
        self.calls = 0

    async def read(self) -> Sequence[LinkReading]:
        self.calls += 1
        if self.calls == 1:
            raise KeyError("bug in a third-party adapter")
        return [LinkReading("ge-0", in_octets=5)]


async def test_a_failing_collection_is_counted_and_the_next_tick_works(tmp_path: Path) -> None:
    from collector.agent.pipeline import AgentPipeline
    from collector.agent.sources import collect_once
    from tests.agent_support import agent_settings

    src = LinkSource(LinkSourceSettings(exclude=[]), adapter=BrokenAdapter())
    s = agent_settings(tmp_path, "127.0.0.1:9")
    async with AgentPipeline(s, agent_id="a", site=SITE, boot_id="b", spool_dir=tmp_path) as p:
        assert await collect_once(src, p) is None
        assert await collect_once(src, p) == 1
    assert (src.stats.errors, src.stats.collections, src.stats.samples) == (1, 2, 1)


class OddAdapter(LinkAdapter):
    async def read(self) -> Sequence[LinkReading]:
        return [
            LinkReading("a", in_octets=2**32, out_octets=7, counter_bits=32),
            LinkReading("b", in_octets=1, counter_bits=16),
        ]


async def test_values_the_ingest_would_refuse_are_skipped_not_sent() -> None:
    src = LinkSource(LinkSourceSettings(exclude=[]), adapter=OddAdapter())
    b = BatchBuilder("x", SITE, "boot")
    await src.collect(b, time.time_ns())
    got = _samples(_batch(b))
    assert got == {("link_out_octets", (("link", "a"), ("media", "copper"))): 7}
    assert src.stats.errors == 1


@pytest.mark.parametrize("bad", ["-lead", "has space", "x" * 65, "é"])
def test_agent_and_site_ids_follow_the_wire_rule(bad: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        AgentSettings.model_validate({"agent_id": bad})
    with pytest.raises(ValidationError):
        AgentSettings.model_validate({"site": {"site_id": bad}})
    assert AgentSettings.model_validate({"agent_id": "jp-tokyo-01.edge:1"}).agent_id
