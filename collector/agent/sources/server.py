"""Server source: this host's health under node_exporter metric names.

CPU time comes from /proc/stat as integer USER_HZ ticks (Series.scale = 1/USER_HZ turns them
into seconds), so counters stay integers end to end; other counters come from psutil with
`nowrap=False` (psutil's own wrap "correction" would hide resets the aggregator must see).
Every counter declares its width (64 bit on a 64-bit kernel) and the host boot time as its
discontinuity marker: these kernel counters restart when the host boots.

Host power comes from the Linux powercap RAPL zones (/sys/class/powercap/intel-rapl:*, also
used for AMD): `energy_uj` counts microjoules and wraps at the zone's `max_energy_range_uj`,
which is no power of two, so no wire width describes it. The agent therefore unwraps it with
exactly that range into a 64-bit counter (`RaplZone`): a decrease adds one range, which is
exact while at most one wrap fits between two reads (read interval x `rapl_max_watts` below
the range); a longer gap could hide wraps and starts the counter over (a new start time),
so the aggregator excludes that interval instead of guessing. Package zones and DRAM
subzones are sent (`node_rapl_joules_total{device="package-0"|"package-0-dram"}`, scale
1e-6 -> joules); core/uncore are part of their package and psys overlaps them, so they are
left out. No zones, or unreadable `energy_uj` (root-only on kernels since 5.10): nothing is
sent, nothing fails.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from collector.agent.batch import BatchBuilder, SeriesDef, counter_def, gauge_def
from collector.agent.config import ServerSourceSettings
from collector.agent.sources import Source
from collector.catalog import unit_of

log = logging.getLogger(__name__)

# /proc counters are `unsigned long` in the kernel: 64 bit on 64-bit kernels.
KERNEL_COUNTER_BITS = 64 if sys.maxsize > 2**32 else 32
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_NIC_FIELDS = (
    ("node_network_receive_bytes_total", "bytes_recv"),
    ("node_network_transmit_bytes_total", "bytes_sent"),
    ("node_network_receive_packets_total", "packets_recv"),
    ("node_network_transmit_packets_total", "packets_sent"),
    ("node_network_receive_errs_total", "errin"),
    ("node_network_transmit_errs_total", "errout"),
    ("node_network_receive_drop_total", "dropin"),
    ("node_network_transmit_drop_total", "dropout"),
)


def read_proc_stat(path: Path = Path("/proc/stat")) -> dict[str, tuple[int, ...]]:
    """Per-CPU tick counters from /proc/stat: {"0": (user, nice, system, idle, ...)}."""
    out: dict[str, tuple[int, ...]] = {}
    with path.open() as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                if out:
                    break  # the cpuN lines are contiguous
                continue
            parts = line.split()
            out[parts[0][3:]] = tuple(int(x) for x in parts[1 : 1 + len(CPU_MODES)])
    return out


@dataclass(slots=True)
class RaplZone:
    """One RAPL energy counter, unwrapped at its `max_energy_range_uj` (see module doc)."""

    device: str  # "package-0", "package-0-dram"
    energy: Path
    range_uj: int
    start_ns: int = 0
    offset: int = 0
    last_uj: int = -1
    last_ns: int = 0

    def update(self, uj: int, now_ns: int, max_watts: float) -> int | None:
        """The unwrapped counter in µJ (a 64-bit counter starting at `start_ns`), or None for
        a value outside [0, max_energy_range_uj]."""
        if not 0 <= uj <= self.range_uj:
            return None
        gap_s = (now_ns - self.last_ns) / 1e9
        if self.last_uj < 0 or gap_s <= 0 or gap_s * max_watts * 1e6 >= self.range_uj:
            # first read, or a gap that could hide a wrap (or a clock step): start over
            self.start_ns, self.offset = now_ns, 0
        elif uj < self.last_uj:
            self.offset += self.range_uj  # one wrap: the counter went past the range to 0
        self.last_uj, self.last_ns = uj, now_ns
        return (self.offset + uj) & 0xFFFF_FFFF_FFFF_FFFF


def find_rapl_zones(root: Path = Path("/sys/class/powercap")) -> list[RaplZone]:
    """Package zones and their DRAM subzones with a readable energy counter."""
    zones: list[RaplZone] = []
    try:
        dirs = sorted(root.glob("intel-rapl:*"))
    except OSError:
        return zones
    for d in dirs:
        parts = d.name.split(":")
        try:
            name = (d / "name").read_text().strip()
            range_uj = int((d / "max_energy_range_uj").read_text().strip())
            int((d / "energy_uj").read_text().strip())
        except (OSError, ValueError):
            continue  # absent, or root-only energy_uj
        if len(parts) == 2 and name.startswith("package"):
            device = name
        elif len(parts) == 3 and name == "dram":
            device = f"package-{parts[1]}-dram"
        else:
            continue  # core/uncore are inside their package; psys overlaps it
        if range_uj > 0:
            zones.append(RaplZone(device, d / "energy_uj", range_uj))
    return zones


class ServerSource(Source):
    name = "server"

    def __init__(
        self,
        settings: ServerSourceSettings,
        *,
        host: str | None = None,
        boot_time_unix_nano: int | None = None,
        proc_stat: Path = Path("/proc/stat"),
        powercap: Path = Path("/sys/class/powercap"),
    ) -> None:
        super().__init__()
        self.settings = settings
        self.interval_s = settings.interval_s
        self.priority = settings.priority
        self.host = host or settings.host or socket.gethostname()
        self.start_ns = (
            boot_time_unix_nano if boot_time_unix_nano is not None else int(psutil.boot_time() * 1e9)
        )
        self.proc_stat = proc_stat
        self._defs: dict[tuple[str, str, str], SeriesDef] = {}
        self._user_hz = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self.rapl = find_rapl_zones(powercap) if settings.rapl else []
        if self.rapl:
            log.info("server source: RAPL energy from %s", ", ".join(z.device for z in self.rapl))
            short = min(z.range_uj for z in self.rapl) / 1e6 / settings.rapl_max_watts
            if settings.interval_s >= short:
                log.warning(
                    "server source: interval_s %g s >= %.0f s, the shortest RAPL wrap "
                    "time at rapl_max_watts: every energy reading will start over",
                    settings.interval_s,
                    short,
                )

    def _counter(
        self,
        metric: str,
        label: str,
        value: str,
        scale: float = 0.0,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> SeriesDef:
        key = (metric, value, extra[0][1] if extra else "")
        d = self._defs.get(key)
        if d is None:
            labels = {"host": self.host, **dict(extra)}
            if label:
                labels[label] = value
            d = self._defs[key] = counter_def(
                metric,
                labels,
                unit=unit_of(metric),
                bits=KERNEL_COUNTER_BITS,
                start_time_unix_nano=self.start_ns,
                scale=scale,
            )
        return d

    def _gauge(self, metric: str, label: str, value: str) -> SeriesDef:
        key = (metric, value, "g")
        d = self._defs.get(key)
        if d is None:
            labels = {"host": self.host}
            if label:
                labels[label] = value
            d = self._defs[key] = gauge_def(metric, labels, unit=unit_of(metric))
        return d

    async def collect(self, builder: BatchBuilder, now_unix_nano: int) -> None:
        t = now_unix_nano
        self._cpu(builder, t)
        mem = psutil.virtual_memory()
        builder.gauge(self._gauge("node_memory_MemTotal_bytes", "", ""), t, float(mem.total))
        builder.gauge(self._gauge("node_memory_MemAvailable_bytes", "", ""), t, float(mem.available))
        for name, v in zip(("node_load1", "node_load5", "node_load15"), os.getloadavg(), strict=True):
            builder.gauge(self._gauge(name, "", ""), t, v)
        self._disks(builder, t)
        self._filesystems(builder, t)
        self._nics(builder, t)
        self._rapl(builder, t)

    def _rapl(self, builder: BatchBuilder, t: int) -> None:
        for z in self.rapl:
            try:
                uj = int(z.energy.read_text().strip())
            except (OSError, ValueError):
                continue  # the zone went away (hot-unplug, permissions changed)
            v = z.update(uj, t, self.settings.rapl_max_watts)
            if v is None:
                self.stats.errors += 1
                log.warning(
                    "RAPL %s: energy_uj=%d beyond max_energy_range_uj=%d: skipped", z.device, uj, z.range_uj
                )
                continue
            d = self._defs.get(("node_rapl_joules_total", z.device, str(z.start_ns)))
            if d is None:
                d = self._defs[("node_rapl_joules_total", z.device, str(z.start_ns))] = counter_def(
                    "node_rapl_joules_total",
                    {"host": self.host, "device": z.device},
                    unit=unit_of("node_rapl_joules_total"),
                    bits=64,
                    start_time_unix_nano=z.start_ns,
                    scale=1e-6,
                )
            builder.counter(d, t, v)

    def _cpu(self, builder: BatchBuilder, t: int) -> None:
        try:
            ticks = read_proc_stat(self.proc_stat)
        except OSError:
            ticks = {}
        if ticks:
            scale = 1.0 / self._user_hz
            for cpu, values in ticks.items():
                for mode, v in zip(CPU_MODES, values, strict=False):
                    builder.counter(
                        self._counter("node_cpu_seconds_total", "cpu", cpu, scale, (("mode", mode),)),
                        t,
                        v,
                    )
            return
        # Not Linux: psutil's float seconds as integer nanoseconds (scale 1e-9).
        for i, ct in enumerate(psutil.cpu_times(percpu=True)):
            for mode in CPU_MODES:
                secs: float | None = getattr(ct, mode, None)
                if secs is not None:
                    builder.counter(
                        self._counter("node_cpu_seconds_total", "cpu", str(i), 1e-9, (("mode", mode),)),
                        t,
                        round(secs * 1e9),
                    )

    def _excluded(self, name: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    def _disks(self, builder: BatchBuilder, t: int) -> None:
        disks = psutil.disk_io_counters(perdisk=True, nowrap=False) or {}
        for dev, io in disks.items():
            if self._excluded(dev, self.settings.disk_exclude):
                continue
            builder.counter(self._counter("node_disk_read_bytes_total", "device", dev), t, io.read_bytes)
            builder.counter(self._counter("node_disk_written_bytes_total", "device", dev), t, io.write_bytes)
            builder.counter(
                self._counter("node_disk_reads_completed_total", "device", dev),
                t,
                io.read_count,
            )
            builder.counter(
                self._counter("node_disk_writes_completed_total", "device", dev),
                t,
                io.write_count,
            )
            busy_ms = getattr(io, "busy_time", None)  # Linux and FreeBSD only
            if busy_ms is not None:
                builder.counter(
                    self._counter("node_disk_io_time_seconds_total", "device", dev, 1e-3),
                    t,
                    busy_ms,
                )

    def _filesystems(self, builder: BatchBuilder, t: int) -> None:
        types = set(self.settings.fs_types)
        seen: set[str] = set()
        for part in psutil.disk_partitions(all=False):
            if part.fstype not in types or part.mountpoint in seen:
                continue
            seen.add(part.mountpoint)
            try:
                u = psutil.disk_usage(part.mountpoint)
            except OSError:
                continue  # unmounted between listing and stat, or no permission
            mp = part.mountpoint
            builder.gauge(self._gauge("node_filesystem_size_bytes", "mountpoint", mp), t, float(u.total))
            builder.gauge(self._gauge("node_filesystem_avail_bytes", "mountpoint", mp), t, float(u.free))

    def _nics(self, builder: BatchBuilder, t: int) -> None:
        nics = psutil.net_io_counters(pernic=True, nowrap=False) or {}
        get: Callable[[object, str], int] = getattr
        for nic, io in nics.items():
            if self._excluded(nic, self.settings.nic_exclude):
                continue
            for metric, attr in _NIC_FIELDS:
                builder.counter(self._counter(metric, "device", nic), t, get(io, attr))
