"""The simulator as the agent's link and cell adapters: one site of `collector simulate`'s
model, read at wall-clock time.

`agent.sources.link.adapter` / `agent.sources.cell.adapter: simulated` (shorthands for
`collector.simulate.agent_adapters:SimulatedLinkAdapter` / `:SimulatedCellAdapter`) load these
through the agent's `module:Class` adapter mechanism, so a real `collector agent` streams the
values `collector simulate` would generate for that site at that tick, while the agent's code
never imports the simulator (the simulator uses the agent, never the reverse).

`SimulatedSite` builds the simulator's own FleetModel/FleetGenerator for a fleet of `site + 1`
sites of one country and hands out the block holding the latest tick due by the wall clock.
The fleet runner's faults (agent restarts, gaps, the silent site) stay off: a real agent's
restart is real.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from collector.agent.sources.cell_adapters import CellAdapter, CellReading
from collector.agent.sources.link_adapters import COUNTERS, OPTICAL, LinkAdapter, LinkReading
from collector.errors import ConfigError
from collector.simulate.config import SimulateSettings
from collector.simulate.generator import Block, FleetGenerator
from collector.simulate.topology import CELL_COUNTERS, CELL_GAUGES, LINK_GAUGES, FleetModel, start_ns_for

# Gauge rows of a link in the model: oper status and speed, then (optical links) OPTICAL.
_LINK_GAUGES = len(LINK_GAUGES)


class SimulatedSite:
    """The last site of a one-country fleet (`site` = its index in the country, a real city).

    `due()` generates the ticks missed since the last call and returns the latest block and
    its column, or None when no new tick is due (never the same tick twice). `clock` (ns since
    the epoch) is the wall clock; tests replace it.
    """

    MAX_BLOCK = 4096  # ticks generated at once when catching up

    def __init__(
        self,
        key: str,
        *,
        seed: int,
        country: str,
        site: int,
        interval_s: float,
        start_unix_s: float | None,
        **shape: Any,
    ) -> None:
        if isinstance(site, bool) or not isinstance(site, int) or site < 0:
            raise ConfigError(f"simulated adapter: site must be an integer >= 0, got {site!r}", key=key)
        fleet = dict(
            links_per_site=0, cells_per_site=0, hosts_per_site=0, record_link=False, clear_every_s=0.0
        )
        fleet.update(shape)
        try:
            settings = SimulateSettings.model_validate(
                dict(
                    seed=seed,
                    countries=(country,),
                    sites_per_country=site + 1,
                    interval_s=interval_s,
                    jitter_s=0.0,
                    start_unix_s=start_unix_s,
                    reset_every_s=0.0,
                    gap_probability=0.0,
                    silent_after_s=0.0,
                    **fleet,
                )
            )
        except ValueError as exc:
            raise ConfigError(f"simulated adapter: {exc}", key=key) from exc
        self.model: FleetModel = FleetModel(settings)
        self.gen: FleetGenerator = FleetGenerator(self.model, start_ns_for(settings))
        self.index = self.model.n_sites - 1
        self.clock: Callable[[], int] = time.time_ns

    def due_tick(self) -> int:
        return (self.clock() - self.gen.start_ns) // self.model.interval_ns

    def due(self) -> tuple[Block, int] | None:
        due = self.due_tick()
        if due < self.gen.next_tick:
            return None  # no new tick yet: never the same samples twice
        block = None
        while self.gen.next_tick <= due:
            block = self.gen.block(min(self.MAX_BLOCK, due + 1 - self.gen.next_tick))
        assert block is not None
        return block, block.n_ticks - 1

    def rows(self, table: dict[str, Any]) -> list[int]:
        """Rows of a model entity table (model.links, model.cells) that belong to this site."""
        return [i for i, si in enumerate(table["site"].tolist()) if si == self.index]


class SimulatedLinkAdapter(LinkAdapter):
    """Links of one simulated site, from `collector simulate`'s model (collector/simulate/):
    its link generator (diurnal load in the site's local time, optical DOM readings, 32-bit
    copper counters that wrap, counter clears with a new start time), deterministic for a
    seed, read at wall-clock time. Lets a real `collector agent` stream simulated links.

    The model is a fleet of `site + 1` sites of `country` with links only; the readings are
    those of the last one (a real city). Agent restarts, gaps and the silent site are the
    fleet runner's faults and stay off (a real agent's restart is real). A read returns the
    latest tick due, generating the ticks missed since the last read, or nothing when no new
    tick is due.
    """

    def __init__(
        self,
        seed: int = 20260401,
        country: str = "JP",
        site: int = 0,
        links: int = 8,
        interval_s: float = 10.0,
        record_link: bool = False,
        wrap32: bool = True,
        clear_every_s: float = 43_200.0,
        start_unix_s: float | None = None,
    ) -> None:
        self.sim = SimulatedSite(
            "agent.sources.link.options",
            seed=seed,
            country=country,
            site=site,
            interval_s=interval_s,
            start_unix_s=start_unix_s,
            links_per_site=links,
            record_link=record_link,
            wrap32=wrap32,
            clear_every_s=clear_every_s,
        )
        self.model = m = self.sim.model
        self.gen = self.sim.gen
        self.site = self.sim.index
        rows = self.sim.rows(m.links)
        self._c0 = [int(m.links["c0"][i]) for i in rows]
        self._g0 = [int(m.links["g0"][i]) for i in rows]
        self._names = [dict(m.counters[c].labels)["link"] for c in self._c0]
        self._optical = [bool(m.links["optical"][i]) for i in rows]
        self._bits = [int(m.links["bits"][i]) for i in rows]

    async def read(self) -> Sequence[LinkReading]:
        got = self.sim.due()
        if got is None:
            return []  # no new tick yet: never the same samples twice
        block, k = got
        t = int(block.t[self.site, k])
        out = []
        for name, c0, g0, optical, bits in zip(
            self._names, self._c0, self._g0, self._optical, self._bits, strict=True
        ):
            v = block.values[c0 : c0 + len(COUNTERS), k].tolist()
            g = block.gauges[g0 : g0 + (_LINK_GAUGES + len(OPTICAL) if optical else _LINK_GAUGES), k].tolist()
            out.append(
                LinkReading(
                    name=name,
                    media="optical" if optical else "copper",
                    **dict(zip(COUNTERS, v, strict=True)),
                    counter_bits=bits,
                    counter_start_unix_nano=int(block.start[c0, k]),
                    oper_up=g[0] > 0.5,
                    speed_bytes_per_second=int(g[1]),
                    **(dict(zip(OPTICAL, g[_LINK_GAUGES:], strict=True)) if optical else {}),
                    time_unix_nano=t,
                )
            )
        return out


class SimulatedCellAdapter(CellAdapter):
    """5G NR cells of one simulated site, from `collector simulate`'s model: its cell
    generator (diurnal load in the site's local time, per-subscriber DL speed calibrated to
    the country's figure, coverage, handovers), deterministic for a seed, read at wall-clock
    time. Lets a real `collector agent` stream simulated cells.

    The model is a fleet of `site + 1` sites of `country` with `cells` cells each (cells
    only); the readings are those of the last site (a real city). The DL speed calibration
    holds over that fleet's cells. A read returns the latest tick due, generating the ticks
    missed since the last read, or nothing when no new tick is due.
    """

    def __init__(
        self,
        seed: int = 20260401,
        country: str = "JP",
        site: int = 0,
        cells: int = 12,
        interval_s: float = 30.0,
        start_unix_s: float | None = None,
    ) -> None:
        key = "agent.sources.cell.options"
        if isinstance(cells, bool) or not isinstance(cells, int) or cells < 1:
            raise ConfigError(
                f"simulated cell adapter: cells must be an integer >= 1, got {cells!r}", key=key
            )
        self.sim = SimulatedSite(
            key,
            seed=seed,
            country=country,
            site=site,
            interval_s=interval_s,
            start_unix_s=start_unix_s,
            cells_per_site=cells,
        )
        m = self.sim.model
        rows = self.sim.rows(m.cells)
        self._c0 = [int(m.cells["c0"][i]) for i in rows]
        self._g0 = [int(m.cells["g0"][i]) for i in rows]
        self._labels = [dict(m.counters[c].labels) for c in self._c0]
        self._bits = [m.counters[c].bits for c in self._c0]
        self._counters = CELL_COUNTERS
        self._gauges = CELL_GAUGES

    async def read(self) -> Sequence[CellReading]:
        got = self.sim.due()
        if got is None:
            return []  # no new tick yet: never the same samples twice
        block, k = got
        t = int(block.t[self.sim.index, k])
        nc, ng = len(self._counters), len(self._gauges)
        out = []
        for labels, c0, g0, bits in zip(self._labels, self._c0, self._g0, self._bits, strict=True):
            out.append(
                CellReading(
                    cell=labels["cell"],
                    gnb=labels["gnb"],
                    counters=dict(zip(self._counters, block.values[c0 : c0 + nc, k].tolist(), strict=True)),
                    gauges=dict(zip(self._gauges, block.gauges[g0 : g0 + ng, k].tolist(), strict=True)),
                    counter_bits=bits,
                    counter_start_unix_nano=int(block.start[c0, k]),
                    time_unix_nano=t,
                )
            )
        return out
