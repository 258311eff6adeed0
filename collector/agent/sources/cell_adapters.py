"""Cell adapters: where the cell source reads cells from when not from PM files.

`agent.sources.cell.adapter` names one: `pm_xml` (the default: PM files, read by
collector/agent/sources/cell.py itself), `simulated` (one site's cells of `collector
simulate`'s model, a shorthand for `collector.simulate.agent_adapters:SimulatedCellAdapter`)
or a device source (an OSS northbound API, O1/VES, a vendor REST API) as a class

    class MyOssAdapter(CellAdapter):
        def __init__(self, **options): ...          # agent.sources.cell.options
        async def read(self) -> Sequence[CellReading]: ...
        async def close(self) -> None: ...

named `agent.sources.cell.adapter: "mypkg.oss:MyOssAdapter"`. A `CellReading` carries a
cell's cumulative counters as integers and its gauges in the catalogue's unit (ratio,
bytes/s, users, dBm, dB; scale 1), by TS 28.552 name, with the counters' width (32 or 64
bit) and when they last started (0 when unknown), so a reset is never mistaken for a wrap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.agent.sources import load_adapter


@dataclass(slots=True)
class CellReading:
    """One cell at one moment, by TS 28.552 name (the names of pm_parser.MEASUREMENTS).

    `counters` are cumulative integers that fit `counter_bits`; `gauges` are in the
    catalogue's unit (ratio 0..1, bytes/s, users, dBm, dB). A measurement the adapter does
    not know is left out.
    """

    cell: str
    gnb: str
    counters: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    counter_bits: int = 64
    # Discontinuity marker: when the counters (re)started, ns since the epoch; 0 = unknown.
    counter_start_unix_nano: int = 0
    time_unix_nano: int = 0  # 0: the collection time


class CellAdapter(ABC):
    """Reads cells from somewhere other than PM files: an OSS/O1 API, a simulator."""

    @abstractmethod
    async def read(self) -> Sequence[CellReading]:
        """New readings of every cell (none when nothing new); raise CollectorError/OSError
        when unreachable."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions."""


PM_XML = "pm_xml"
BUILTIN_ADAPTERS: dict[str, type[CellAdapter] | str] = {
    # the simulator's (collector/simulate/agent_adapters.py), by name: loaded like any
    # 'module:Class' adapter, so the edge code never imports the simulator
    "simulated": "collector.simulate.agent_adapters:SimulatedCellAdapter",
}


def make_adapter(spec: str, options: dict[str, Any]) -> CellAdapter:
    """'simulated' or 'package.module:Class' (a CellAdapter taking **options); the PM file
    reader (`pm_xml`) is built into CellSource."""
    return load_adapter("cell", spec, options, BUILTIN_ADAPTERS, CellAdapter, f"{PM_XML}, simulated")
