"""Link adapters: where the link source's readings come from.

An adapter reads links from somewhere (this host, a device, the simulator) and hands over
`LinkReading`s; collector/agent/sources/link.py turns them into the catalogue's `link_*`
series. Your own is a class

    class MyGnmiAdapter(LinkAdapter):
        def __init__(self, **options): ...          # agent.sources.link.options
        async def read(self) -> Sequence[LinkReading]: ...
        async def close(self) -> None: ...

named `agent.sources.link.adapter: "mypkg.gnmi:MyGnmiAdapter"`. Built in: `linux`
(/sys/class/net of this host), `synthetic` (deterministic links with optical readings, for
tests and benchmarks), `snmp` and `gnmi` (devices: snmp.py, gnmi.py) and `simulated` (one
site's links of the simulator's model, a shorthand for
`collector.simulate.agent_adapters:SimulatedLinkAdapter`). An adapter fills what it knows and
leaves the rest None; it reports each counter's width (e.g. 32 for SNMP ifInOctets, 64 for
ifHCInOctets) and when the counters last started (a device's ifCounterDiscontinuityTime, or 0
when unknown), so a reset is never mistaken for a wrap downstream.
"""

from __future__ import annotations

import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from collector.agent.sources import load_adapter

COUNTERS = (
    "in_octets",
    "out_octets",
    "in_packets",
    "out_packets",
    "in_errors",
    "out_errors",
    "in_discards",
    "out_discards",
)
# LinkReading's optical fields, in catalogue order (`link_optical_<field>` is the metric).
OPTICAL = ("rx_power_dbm", "tx_power_dbm", "laser_bias_amperes", "prefec_ber", "osnr_db")


@dataclass(slots=True)
class LinkReading:
    """One link at one moment. None means: this adapter does not know it."""

    name: str
    media: str | None = None  # "optical" | "copper"; None lets the settings decide
    in_octets: int | None = None
    out_octets: int | None = None
    in_packets: int | None = None
    out_packets: int | None = None
    in_errors: int | None = None
    out_errors: int | None = None
    in_discards: int | None = None
    out_discards: int | None = None
    counter_bits: int = 64
    # Per-counter widths where they differ from counter_bits, e.g. SNMP's Counter32
    # ifInErrors next to Counter64 ifHCInOctets: (("in_errors", 32), ...).
    counter_bits_of: tuple[tuple[str, int], ...] = ()
    # Discontinuity marker: when the counters (re)started, ns since the epoch; 0 = unknown.
    counter_start_unix_nano: int = 0
    oper_up: bool | None = None
    speed_bytes_per_second: int | None = None
    rx_power_dbm: float | None = None
    tx_power_dbm: float | None = None
    laser_bias_amperes: float | None = None
    prefec_ber: float | None = None
    osnr_db: float | None = None
    time_unix_nano: int = 0  # 0: the collection time


class LinkAdapter(ABC):
    """Reads links from somewhere: this host, a device over gNMI/SNMP, a simulator."""

    @abstractmethod
    async def read(self) -> Sequence[LinkReading]:
        """Current readings of every link; raise CollectorError/OSError when unreachable."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions."""


# --- linux ----------------------------------------------------------------------------
_SYS_STATS = {
    "in_octets": "rx_bytes",
    "out_octets": "tx_bytes",
    "in_packets": "rx_packets",
    "out_packets": "tx_packets",
    "in_errors": "rx_errors",
    "out_errors": "tx_errors",
    "in_discards": "rx_dropped",
    "out_discards": "tx_dropped",
}


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None  # e.g. speed of a down link reads EINVAL


class LinuxLinkAdapter(LinkAdapter):
    """This host's interfaces from /sys/class/net (64-bit kernel counters).

    Discontinuity: counters start at host boot; when an interface is re-created (new
    ifindex) or a counter goes backwards (driver reset) the start moves to that moment.
    No optical readings: reading SFP DOM needs ethtool ioctls; use a device adapter.
    """

    def __init__(self, sysfs: str = "/sys/class/net", boot_time_unix_nano: int | None = None) -> None:
        self.root = Path(sysfs)
        self.boot_ns = (
            boot_time_unix_nano if boot_time_unix_nano is not None else int(psutil.boot_time() * 1e9)
        )
        self._state: dict[str, tuple[int | None, int, tuple[int | None, ...]]] = {}
        self.bits = 64 if sys.maxsize > 2**32 else 32

    async def read(self) -> Sequence[LinkReading]:
        now = time.time_ns()
        out: list[LinkReading] = []
        for d in sorted(self.root.iterdir()):
            stats = d / "statistics"
            if not stats.is_dir():
                continue
            counters = {k: _read_int(stats / f) for k, f in _SYS_STATS.items()}
            ifindex = _read_int(d / "ifindex")
            values = tuple(counters.values())
            prev = self._state.get(d.name)
            start = self.boot_ns
            if prev is not None:
                p_ifindex, start, p_values = prev
                went_back = any(
                    a is not None and b is not None and a < b for a, b in zip(values, p_values, strict=True)
                )
                if p_ifindex != ifindex or went_back:
                    start = now
            self._state[d.name] = (ifindex, start, values)
            try:
                oper = (d / "operstate").read_text().strip()
            except OSError:
                oper = "unknown"
            speed = _read_int(d / "speed")
            c = counters
            out.append(
                LinkReading(
                    name=d.name,
                    in_octets=c["in_octets"],
                    out_octets=c["out_octets"],
                    in_packets=c["in_packets"],
                    out_packets=c["out_packets"],
                    in_errors=c["in_errors"],
                    out_errors=c["out_errors"],
                    in_discards=c["in_discards"],
                    out_discards=c["out_discards"],
                    counter_bits=self.bits,
                    counter_start_unix_nano=start,
                    oper_up=None if oper == "unknown" else oper == "up",
                    speed_bytes_per_second=speed * 125_000 if speed and speed > 0 else None,
                )
            )
        return out


# --- synthetic ------------------------------------------------------------------------
class SyntheticLinkAdapter(LinkAdapter):
    """Deterministic links: counters grow at a fixed rate per link; every
    `optical_every`-th link is optical with plausible DOM readings. For tests and benches."""

    def __init__(
        self,
        links: int = 8,
        optical_every: int = 2,
        speed_gbps: int = 100,
        load: float = 0.3,
        counter_bits: int = 64,
        prefix: str = "et-0/0/",
        start_unix_nano: int = 1,
    ) -> None:
        self.links = links
        self.optical_every = max(1, optical_every)
        self.speed = speed_gbps * 125_000_000
        self.load = load
        self.bits = counter_bits
        self.prefix = prefix
        self.start_ns = start_unix_nano

    async def read(self) -> Sequence[LinkReading]:
        now = time.time_ns()
        elapsed = (now - self.start_ns) / 1e9
        mask = (1 << self.bits) - 1
        out = []
        for i in range(self.links):
            rate = self.speed * self.load * (1 + (i % 7) / 10)
            octets = int(rate * elapsed)
            optical = i % self.optical_every == 0
            out.append(
                LinkReading(
                    name=f"{self.prefix}{i}",
                    media="optical" if optical else "copper",
                    in_octets=octets & mask,
                    out_octets=(octets // 2) & mask,
                    in_packets=(octets // 800) & mask,
                    out_packets=(octets // 1600) & mask,
                    in_errors=0,
                    out_errors=0,
                    in_discards=i,
                    out_discards=0,
                    counter_bits=self.bits,
                    counter_start_unix_nano=self.start_ns,
                    oper_up=True,
                    speed_bytes_per_second=self.speed,
                    rx_power_dbm=-2.5 - (i % 5) * 0.3 if optical else None,
                    tx_power_dbm=1.0 if optical else None,
                    laser_bias_amperes=0.0065 if optical else None,
                    prefec_ber=1e-9 * (1 + i % 3) if optical else None,
                    osnr_db=32.0 - (i % 4) if optical else None,
                )
            )
        return out


def _snmp(**options: Any) -> LinkAdapter:
    # Device adapters import their protocol library only when configured.
    from collector.agent.sources.snmp import SnmpLinkAdapter

    return SnmpLinkAdapter(**options)


def _gnmi(**options: Any) -> LinkAdapter:
    from collector.agent.sources.gnmi import GnmiLinkAdapter

    return GnmiLinkAdapter(**options)


BUILTIN_ADAPTERS: dict[str, Callable[..., LinkAdapter] | str] = {
    "linux": LinuxLinkAdapter,
    "synthetic": SyntheticLinkAdapter,
    # the simulator's (collector/simulate/agent_adapters.py), by name: loaded like any
    # 'module:Class' adapter, so the edge code never imports the simulator
    "simulated": "collector.simulate.agent_adapters:SimulatedLinkAdapter",
    "snmp": _snmp,
    "gnmi": _gnmi,
}


def check_options(spec: str, options: dict[str, Any]) -> None:
    """The device adapters' options checked as the agent checks them at start, without
    reading their secrets (those are resolved on the host that has them): what
    `collector config` can tell about an agent file. Raises ConfigError naming the key."""
    from collector.agent.sources.devices import validate_options

    if spec == "snmp":
        from collector.agent.sources.snmp import SnmpOptions

        validate_options(SnmpOptions, options)
    elif spec == "gnmi":
        from collector.agent.sources.gnmi import GnmiOptions

        validate_options(GnmiOptions, options)


def make_adapter(spec: str, options: dict[str, Any]) -> LinkAdapter:
    """'linux', 'simulated', 'synthetic', 'snmp', 'gnmi' or 'package.module:Class' (a
    LinkAdapter taking **options)."""
    return load_adapter(
        "link", spec, options, BUILTIN_ADAPTERS, LinkAdapter, "linux, simulated, synthetic, snmp, gnmi"
    )
