"""Cell source adapters: the simulator's cells read at wall-clock time, and a device adapter."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from collector import catalog, wire
from collector.agent.batch import BatchBuilder
from collector.agent.config import AgentSettings, CellSourceSettings
from collector.agent.main import build_sources
from collector.agent.sources.cell import CellSource
from collector.agent.sources.cell_adapters import CellAdapter, CellReading, make_adapter
from collector.agent.sources.pm_parser import MEASUREMENTS
from collector.errors import ConfigError
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from collector.simulate.agent_adapters import SimulatedCellAdapter
from collector.simulate.config import SimulateSettings
from collector.simulate.generator import FleetGenerator
from collector.simulate.topology import CELL_COUNTERS, CELL_GAUGES, FleetModel
from tests.agent_support import SITE

NS = 10**9
START = 1_780_000_000  # a fixed run start (Unix s), so the ticks are known


def _simulated(**opts: object) -> CellSource:
    options = {
        "seed": 7,
        "country": "US",
        "site": 1,
        "cells": 5,
        "interval_s": 1.0,
        "start_unix_s": START,
        **opts,
    }
    return CellSource(CellSourceSettings(enabled=True, adapter="simulated", options=options))


def _at(src: CellSource, unix_ns: int) -> None:
    assert isinstance(src.adapter, SimulatedCellAdapter)
    src.adapter.sim.clock = lambda: unix_ns


def _batch(b: BatchBuilder) -> pb.Batch:
    return wire.parse_batch(b.build(1, time.time_ns()).SerializeToString())


def _by_series(batch: pb.Batch) -> dict[tuple[str, str], tuple[pb.Series, int, float | int]]:
    """(metric, cell) -> (series, time, value)."""
    out = {}
    for cols in (wire.counter_columns(batch), wire.gauge_columns(batch)):
        for i, t, v in zip(cols.series_index, cols.time_unix_nano, cols.value, strict=True):
            s = batch.series[i]
            cell = {lab.name: lab.value for lab in s.labels}["cell"]
            out[(s.metric, cell)] = (s, int(t), v.item())
    return out


async def test_simulated_cells_equal_the_simulator_generator_at_the_due_tick() -> None:
    src = _simulated()
    _at(src, (START + 50) * NS + NS // 2)  # half way through tick 50
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    got = _by_series(_batch(b))
    # the simulator's own generator, same fleet, same tick
    m = FleetModel(
        SimulateSettings.model_validate(
            dict(
                seed=7,
                countries=("US",),
                sites_per_country=2,
                links_per_site=0,
                cells_per_site=5,
                hosts_per_site=0,
                record_link=False,
                interval_s=1.0,
                jitter_s=0.0,
                start_unix_s=START,
                clear_every_s=0.0,
                reset_every_s=0.0,
                gap_probability=0.0,
                silent_after_s=0.0,
            )
        )
    )
    due = 50
    block = FleetGenerator(m, START * NS).block(due + 1)
    rows = [i for i, si in enumerate(m.cells["site"].tolist()) if si == 1]
    assert len(rows) == 5
    assert len(got) == 5 * (len(CELL_COUNTERS) + len(CELL_GAUGES))
    t = int(block.t[1, due])
    assert t == (START + due) * NS
    site_start = m.initial_start_ns(1, START * NS)
    assert 0 < site_start < START * NS  # the counters started before the run (site boot)
    for i in rows:
        c0, g0 = int(m.cells["c0"][i]), int(m.cells["g0"][i])
        cell = dict(m.counters[c0].labels)["cell"]
        for j, meas in enumerate(CELL_COUNTERS):
            s, ts, v = got[(meas, cell)]
            assert isinstance(v, int)
            assert v == int(block.values[c0 + j, due])  # exact integer
            assert (s.kind, s.counter_bits) == (pb.COUNTER, 64)
            assert s.start_time_unix_nano == int(block.start[c0 + j, due]) == site_start
            assert ts == t
        for j, meas in enumerate(CELL_GAUGES):
            s, ts, v = got[(meas, cell)]
            assert v == block.gauges[g0 + j, due]
            assert (s.kind, ts) == (pb.GAUGE, t)
    for s, _, _ in got.values():  # TS 28.552 names, catalogue units, no scaling needed
        spec = catalog.BY_NAME[s.metric]
        assert s.unit == spec.unit == MEASUREMENTS[s.metric].unit
        assert s.scale == 0.0
        assert {lab.name: lab.value for lab in s.labels}["gnb"].startswith("gNB-")


async def test_simulated_cells_send_nothing_until_the_next_tick_is_due() -> None:
    src = _simulated()
    t50 = (START + 50) * NS + NS // 10
    _at(src, t50)
    first = BatchBuilder("a", SITE, "boot")
    await src.collect(first, time.time_ns())
    assert len(first) == 5 * 15
    again = BatchBuilder("a", SITE, "boot")
    _at(src, t50 + NS // 2)  # still tick 50
    await src.collect(again, time.time_ns())
    assert len(again) == 0  # never the same samples twice
    _at(src, (START - 10) * NS)  # the clock went back before the run start
    await src.collect(again, time.time_ns())
    assert len(again) == 0
    _at(src, t50 + 3 * NS)  # tick 53: the missed ticks are generated, the latest is sent
    later = BatchBuilder("a", SITE, "boot")
    await src.collect(later, time.time_ns())
    a, z = _by_series(_batch(first)), _by_series(_batch(later))
    assert {ts for _, ts, _ in z.values()} == {(START + 53) * NS}
    for (meas, cell), (_, _, v) in z.items():
        if meas.startswith("DRB.PdcpSduVolume"):
            assert v > a[(meas, cell)][2]  # traffic moved the counters on
    assert src.stats.errors == 0


@pytest.mark.parametrize(
    "options",
    [
        {"country": "FR"},  # not a simulated country
        {"color": "red"},  # not an option
        {"cells": 0},
        {"cells": "many"},
        {"site": -1},
        {"interval_s": 0},
        {"seed": -5},
    ],
)
def test_bad_simulated_options_are_a_config_error_naming_the_key(options: dict) -> None:
    with pytest.raises(ConfigError, match=r"agent\.sources\.cell\.options"):
        make_adapter("simulated", options)
    with pytest.raises(ConfigError, match=r"agent\.sources\.cell\.options"):
        CellSource(CellSourceSettings(enabled=True, adapter="simulated", options=options))


def test_bad_adapter_or_options_of_the_pm_reader_name_their_key() -> None:
    with pytest.raises(ConfigError, match=r"agent\.sources\.cell\.adapter"):
        CellSource(CellSourceSettings(enabled=True, adapter="oss"))
    with pytest.raises(ConfigError, match=r"agent\.sources\.cell\.adapter"):
        make_adapter("tests.unit.test_agent_cell_adapters:Missing", {})
    with pytest.raises(ConfigError, match=r"agent\.sources\.cell\.options"):
        CellSource(CellSourceSettings(enabled=True, options={"cells": 3}))  # pm_xml


def test_simulated_adapter_is_selected_by_the_agent_yaml() -> None:
    a = AgentSettings.model_validate(
        {
            "sources": {
                "server": {"enabled": False},
                "link": {"enabled": False},
                "cell": {
                    "enabled": True,
                    "adapter": "simulated",
                    "interval_s": 10,
                    "options": {"country": "JP", "site": 2, "cells": 3, "interval_s": 10},
                },
            }
        }
    )
    (src,) = build_sources(a)
    assert isinstance(src, CellSource)
    assert isinstance(src.adapter, SimulatedCellAdapter)
    assert src.adapter.sim.model.sites[-1].info.site_id.startswith("jp-")
    assert len(src.adapter.sim.rows(src.adapter.sim.model.cells)) == 3


class OssAdapter(CellAdapter):
    """A device adapter as a third party would write one (used via module:Class)."""

    def __init__(self, cell: str = "NRCell-1") -> None:
        self.cell = cell

    async def read(self) -> Sequence[CellReading]:
        return [
            CellReading(
                self.cell,
                "gNB-7",
                counters={"MM.HoExeIntraReq": 2**32 - 1, "MM.HoExeIntraSucc": 2**32, "Vendor.Thing": 1},
                gauges={"RRU.PrbTotDl": 0.5, "L1M.SS-RSRP": float("nan")},
                counter_bits=32,
                counter_start_unix_nano=42,
                time_unix_nano=7 * NS,
            )
        ]


async def test_device_adapter_declares_width_and_start_and_bad_values_are_skipped() -> None:
    src = CellSource(
        CellSourceSettings(
            enabled=True, adapter="tests.unit.test_agent_cell_adapters:OssAdapter", options={"cell": "c9"}
        )
    )
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    got = _by_series(_batch(b))
    assert set(got) == {("MM.HoExeIntraReq", "c9"), ("RRU.PrbTotDl", "c9")}
    s, t, v = got[("MM.HoExeIntraReq", "c9")]
    assert (s.counter_bits, s.start_time_unix_nano, t, v) == (32, 42, 7 * NS, 2**32 - 1)
    assert src.stats.errors == 1  # 2^32 does not fit the declared 32 bits
    assert src.unknown_measurements == 1  # Vendor.Thing
