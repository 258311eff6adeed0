"""One site of `collector simulate`'s model, read at wall-clock time.

The engine behind the link and cell sources' `simulated` adapters: it builds the simulator's
own FleetModel/FleetGenerator (collector/simulate/model.py) for a fleet of `site + 1` sites of
one country, and hands out the block holding the latest tick due by the wall clock, so a real
`collector agent` streams the same values `collector simulate` would generate for that site
at that tick. The fleet runner's faults (agent restarts, gaps, the silent site) stay off: a
real agent's restart is real.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from collector.errors import ConfigError

if TYPE_CHECKING:
    from collector.simulate.model import Block, FleetGenerator, FleetModel


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
        from collector.simulate.config import SimulateSettings
        from collector.simulate.model import FleetGenerator, FleetModel, start_ns_for

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
