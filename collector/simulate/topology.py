"""The simulated fleet's topology: sites (real cities of each country), their links, 5G cells
and hosts, every series (metric, unit, labels, width) as a row of the counter or gauge table,
the per-entity static parameters, and the per-tick schedule of each site (sample times, gaps,
the silent site, agent restarts, counter clears).

Part of `collector simulate`. What the series' values are, tick by tick, is generator.py's
(FleetGenerator); the randomness behind both is noise.py's. Metric names are the catalogue's
(collector/catalog.py) and units are taken from it.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from collector.agent.batch import SiteInfo
from collector.catalog import Domain, Kind, metric_names, unit_of
from collector.simulate.config import SimulateSettings
from collector.simulate.geo import City, city_for
from collector.simulate.noise import CELL_KEY, HOST_KEY, LINK_KEY, ROW_KEY, SITE_KEY, STATIC_TICK, U64, Noise

NS = 1_000_000_000
MASK64 = 2**64 - 1
MASK32 = 2**32 - 1

# The simulated metrics: names checked against, and units taken from, the catalogue
# (collector/catalog.py). The order of each tuple is the order of the model's rows.
LINK_COUNTERS = metric_names(Domain.LINK, Kind.COUNTER)
LINK_GAUGES = ("link_oper_up", "link_speed_bytes")
OPTICAL_GAUGES = metric_names(Domain.LINK, Kind.GAUGE, "link_optical_")
CELL_COUNTERS = ("DRB.PdcpSduVolumeDL", "DRB.PdcpSduVolumeUL", "MM.HoExeIntraReq", "MM.HoExeIntraSucc")
CELL_GAUGES = (
    "RRU.PrbTotDl",
    "RRU.PrbTotUl",
    "DRB.UEThpDl",
    "DRB.UEThpUl",
    "RRC.ConnMean",
    "RRC.ConnMax",
    "CELL.Availability",
    "CELL.CoverageRatio",
    "L1M.SS-RSRP",
    "L1M.SS-RSRQ",
    "L1M.SS-SINR",
)
CPU_METRIC = "node_cpu_seconds_total"
CPU_MODES = ("user", "system", "iowait", "idle")
HOST_COUNTERS = (
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_network_receive_packets_total",
    "node_network_transmit_packets_total",
    "node_network_receive_errs_total",
    "node_network_transmit_errs_total",
    "node_network_receive_drop_total",
    "node_network_transmit_drop_total",
)
# Host power: a RAPL package zone as the server source sends it (microjoules, scale 1e-6 ->
# joules, already unwrapped into a 64-bit counter by the agent): (metric, device, scale).
RAPL_COUNTER = ("node_rapl_joules_total", "package-0", 1e-6)
HOST_GAUGES = (
    "node_memory_MemTotal_bytes",
    "node_memory_MemAvailable_bytes",
    "node_load1",
    "node_load5",
    "node_load15",
    "node_filesystem_size_bytes",
    "node_filesystem_avail_bytes",
)
RECORD_LINK_NAME = "nict-sdm-402t"
COPPER_BPS = 1e9


@dataclass(frozen=True, slots=True)
class CounterSeries:
    site: int
    metric: str
    unit: str
    labels: tuple[tuple[str, str], ...]
    bits: int
    scale: float = 0.0


@dataclass(frozen=True, slots=True)
class GaugeSeries:
    site: int
    metric: str
    unit: str
    labels: tuple[tuple[str, str], ...]
    scale: float = 0.0


@dataclass(frozen=True, slots=True)
class SimSite:
    index: int
    info: SiteInfo
    city: City
    agent_id: str
    counter_lo: int  # counter rows [counter_lo, counter_hi)
    counter_hi: int
    gauge_lo: int  # gauge rows [gauge_lo, gauge_hi)
    gauge_hi: int

    @property
    def n_series(self) -> int:
        return self.counter_hi - self.counter_lo + self.gauge_hi - self.gauge_lo


def _lab(**kv: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kv.items()))


def start_ns_for(settings: SimulateSettings, now_s: float | None = None) -> int:
    """Simulated start (event time, ns): the configured start or now, floored to the interval."""
    interval_ns = round(settings.interval_s * NS)
    if settings.start_unix_s is not None:
        return round(settings.start_unix_s * NS)
    now = time.time() if now_s is None else now_s
    return int(now * NS) // interval_ns * interval_ns


class FleetModel:
    """Static part of the fleet: sites, series tables and per-entity parameters."""

    def __init__(self, settings: SimulateSettings) -> None:
        self.settings = s = settings
        self.noise = Noise(s.seed)
        self.interval_ns = round(s.interval_s * NS)
        self.interval_s = self.interval_ns / NS
        self.jitter_ns = round(s.jitter_s * NS)
        self.sites: list[SimSite] = []
        self.counters: list[CounterSeries] = []
        self.gauges: list[GaugeSeries] = []
        links: dict[str, list] = {
            k: [] for k in ("site", "c0", "g0", "speed", "util", "optical", "bits", "key", "record")
        }
        cells: dict[str, list] = {k: [] for k in ("site", "c0", "g0", "key", "country")}
        hosts: dict[str, list] = {k: [] for k in ("site", "c0", "g0", "key")}
        # 32-bit octet counters must move less than half their range (2^31) between two
        # delivered samples (a gap of `gap_ticks` ticks included): then a decrease can only be
        # a wrap, also for a reader that takes a bigger wrapped distance for a reset.
        copper_cap = 0.9 * 2**31 / ((s.gap_ticks + 1) * self.interval_s)
        record_done = not s.record_link
        for country in s.countries:
            for i in range(s.sites_per_country):
                city, site_id = city_for(country, i)
                si = len(self.sites)
                counter_lo, gauge_lo = len(self.counters), len(self.gauges)
                n_links = s.links_per_site
                for j in range(n_links + (0 if record_done or country != "JP" else 1)):
                    record = j == n_links
                    key = LINK_KEY + len(links["site"])
                    optical = record or j % 4 != 3
                    u = self.noise.static([key])[0]
                    if record:
                        name, speed, util, bits = RECORD_LINK_NAME, s.record_link_bps / 8, 1.0, 64
                        record_done = True
                    elif optical:
                        name = f"et-0/0/{j}"
                        speed = (400e9 if u < 0.3 else 100e9) / 8
                        util, bits = 0.25 + 0.5 * u, 64
                    else:
                        name = f"ge-0/0/{j}"
                        bits = 32 if s.wrap32 else 64
                        speed = COPPER_BPS / 8
                        if bits == 32:
                            speed = min(speed, copper_cap)
                        util = 0.3 + 0.5 * u
                    labels = _lab(link=name, media="optical" if optical else "copper")
                    links["site"].append(si)
                    links["c0"].append(len(self.counters))
                    links["g0"].append(len(self.gauges))
                    links["speed"].append(speed)
                    links["util"].append(util)
                    links["optical"].append(optical)
                    links["bits"].append(bits)
                    links["key"].append(key)
                    links["record"].append(record)
                    for m in LINK_COUNTERS:
                        self.counters.append(CounterSeries(si, m, unit_of(m), labels, bits))
                    for m in LINK_GAUGES:
                        self.gauges.append(GaugeSeries(si, m, unit_of(m), labels))
                    if optical:
                        for m in OPTICAL_GAUGES:
                            self.gauges.append(GaugeSeries(si, m, unit_of(m), labels))
                for j in range(s.cells_per_site):
                    labels = _lab(cell=f"NRCell-{j + 1:03d}", gnb=f"gNB-{j // 3 + 1:02d}")
                    cells["site"].append(si)
                    cells["c0"].append(len(self.counters))
                    cells["g0"].append(len(self.gauges))
                    cells["key"].append(CELL_KEY + len(cells["key"]))
                    cells["country"].append(country)
                    for m in CELL_COUNTERS:
                        self.counters.append(CounterSeries(si, m, unit_of(m), labels, 64))
                    for m in CELL_GAUGES:
                        self.gauges.append(GaugeSeries(si, m, unit_of(m), labels))
                for h in range(s.hosts_per_site):
                    host = f"edge-{h + 1:02d}"
                    hosts["site"].append(si)
                    hosts["c0"].append(len(self.counters))
                    hosts["g0"].append(len(self.gauges))
                    hosts["key"].append(HOST_KEY + len(hosts["key"]))
                    for cpu in range(s.cpus_per_host):
                        for mode in CPU_MODES:
                            self.counters.append(
                                CounterSeries(
                                    si,
                                    CPU_METRIC,
                                    unit_of(CPU_METRIC),
                                    _lab(host=host, cpu=str(cpu), mode=mode),
                                    64,
                                    0.01,
                                )
                            )
                    for m in HOST_COUNTERS:
                        dev = "nvme0n1" if "disk" in m else "eth0"
                        self.counters.append(
                            CounterSeries(si, m, unit_of(m), _lab(host=host, device=dev), 64)
                        )
                    m, zone, scale = RAPL_COUNTER
                    self.counters.append(
                        CounterSeries(si, m, unit_of(m), _lab(host=host, device=zone), 64, scale)
                    )
                    for m in HOST_GAUGES:
                        lab = _lab(host=host, mountpoint="/") if "filesystem" in m else _lab(host=host)
                        self.gauges.append(GaugeSeries(si, m, unit_of(m), lab))
                info = SiteInfo(site_id, country, city.region, city.timezone)
                self.sites.append(
                    SimSite(
                        si,
                        info,
                        city,
                        f"sim-{site_id}",
                        counter_lo,
                        len(self.counters),
                        gauge_lo,
                        len(self.gauges),
                    )
                )
        self.n_sites = len(self.sites)
        self.nc = len(self.counters)
        self.ng = len(self.gauges)
        self.counter_site = np.array([c.site for c in self.counters], dtype=np.int64)
        self.gauge_site = np.array([g.site for g in self.gauges], dtype=np.int64)
        self.counter_mask = np.array([MASK32 if c.bits == 32 else MASK64 for c in self.counters], dtype=U64)
        self.links = {k: np.array(v) for k, v in links.items()}
        self.cells = {k: np.array(v) for k, v in cells.items()}
        self.hosts = {k: np.array(v) for k, v in hosts.items()}
        self.site_country = np.array([st.info.country for st in self.sites])
        # First counter row of each link, per site (counter clears pick one of them; never the
        # record link, whose counters are meant to run for weeks).
        self.site_links = [
            self.links["c0"][(self.links["site"] == i) & ~self.links["record"].astype(bool)]
            if len(self.links["site"])
            else np.zeros(0, np.int64)
            for i in range(self.n_sites)
        ]
        self.silent_site = self.n_sites - 1 if s.silent_after_s > 0 and self.n_sites > 1 else -1
        self.silent_tick = math.ceil(s.silent_after_s / self.interval_s) if self.silent_site >= 0 else 0
        self._init_cells()

    def _init_cells(self) -> None:
        s, n = self.settings, self.noise
        keys = self.cells["key"].astype(U64) if len(self.cells["key"]) else np.zeros(0, U64)
        self.cell_users = 200 + 1300 * n.static(keys + 1)
        self.cell_speed_w = 0.6 + 0.8 * n.static(keys + 2)
        self.cell_prb = 0.6 + 0.4 * n.static(keys + 3)
        self.cell_fail = 0.005 + 0.025 * n.static(keys + 4)
        self.cell_rsrp = -82 - 22 * n.static(keys + 5)
        self.cell_q = n.static(keys + 6)
        # Coverage is a property of the cell; calibrated so each country's cell mean is the
        # target exactly: 1 - (1 - target) * v / mean(v).
        cov = np.empty(len(keys))
        v = 0.5 + n.static(keys + 7)
        for c in s.countries:
            m = self.cells["country"] == c if len(keys) else np.zeros(0, bool)
            if m.any():
                cov[m] = 1.0 - (1.0 - s.coverage_5g[c]) * v[m] / v[m].mean()
        self.cell_coverage = cov

    # --- initial state -------------------------------------------------------------------

    def initial_values(self) -> npt.NDArray[np.uint64]:
        """Counter values at tick 0 (first boot): random below 2^40; 32-bit series just below
        2^32 so they wrap early in the run."""
        rows = np.arange(self.nc, dtype=U64) + ROW_KEY
        b = self.noise.bits(rows, [STATIC_TICK])[:, 0]
        v = b >> 24  # < 2^40
        is32 = self.counter_mask == MASK32
        if is32.any():
            small = np.array([c.metric.endswith(("errors", "discards")) for c in self.counters])
            margin = np.where(small, b & 3, b & (2**24 - 1))
            v = np.where(is32, MASK32 - margin, v)
        return v.astype(U64)

    def initial_start_ns(self, site: int, start_ns: int) -> int:
        """Counter start time of the first boot: the site came up 1-31 days before the run."""
        u = self.noise.static([SITE_KEY + site * 16 + 1])[0]
        return start_ns - int((1 + 30 * u) * 86400) * NS

    def boot_id(self, site: int, epoch: int) -> str:
        return str(uuid.UUID(self.noise.hex(site, epoch)[:32]))

    def token(self, site: int) -> str:
        return "sim-" + self.noise.hex(site, "token")[:40]

    # --- per-tick site quantities (pure functions of tick) -------------------------------

    def times(self, ticks: npt.NDArray[np.int64], start_ns: int) -> npt.NDArray[np.int64]:
        """Sample times (sites x ticks): nominal tick plus a deterministic jitter."""
        nominal = start_ns + ticks * self.interval_ns
        if not self.jitter_ns:
            return np.broadcast_to(nominal, (self.n_sites, len(ticks))).copy()
        u = self.noise.u(SITE_KEY + np.arange(self.n_sites) * 16 + 2, ticks)
        return nominal[None, :] + (u * self.jitter_ns).astype(np.int64)

    def present(self, ticks: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """False where a site misses the tick (gap) or has gone silent."""
        s = self.settings
        g = s.gap_ticks
        out = np.ones((self.n_sites, len(ticks)), dtype=bool)
        if s.gap_probability > 0 and len(ticks):
            # Ticks are grouped in runs of g + 1; a gap takes the first g ticks of a run, so
            # gaps never touch and at most g ticks in a row are missed (the 32-bit counters
            # rely on it). The first run of the run never has a gap.
            period = ticks // (g + 1)
            first = np.unique(period)
            hit = self.noise.u(SITE_KEY + np.arange(self.n_sites) * 16 + 3, first) < s.gap_probability
            hit[:, first == 0] = False
            in_gap = hit[:, np.searchsorted(first, period)] & ((ticks % (g + 1)) < g)[None, :]
            out &= ~in_gap
        if self.silent_site >= 0:
            out[self.silent_site, ticks >= self.silent_tick] = False
        return out

    def clears(
        self, ticks: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(sites x ticks) link counter clears: flag, which link of the site (index into
        `site_links`), and the clear point q/1024 of the interval before the tick."""
        s = self.settings
        shape = (self.n_sites, len(ticks))
        if s.clear_every_s <= 0 or not len(ticks):
            return np.zeros(shape, bool), np.zeros(shape, np.int64), np.ones(shape, np.int64)
        p = self.interval_s / s.clear_every_s
        keys = SITE_KEY + np.arange(self.n_sites) * 16 + 8
        n_links = np.array([len(x) for x in self.site_links])
        flag = (self.noise.u(keys, ticks) < p) & (ticks >= 1)[None, :] & (n_links > 0)[:, None]
        which = (self.noise.u(keys + 1, ticks) * np.maximum(n_links, 1)[:, None]).astype(np.int64)
        q = 1 + (self.noise.u(keys + 2, ticks) * 1023).astype(np.int64)
        return flag, which, q

    def resets(self, ticks: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """(sites x ticks) restart flags and the restart point q/1024 of the interval before the
        tick (1..1023): the agent came back at t[k] - (t[k] - t[k-1]) * q / 1024."""
        s = self.settings
        shape = (self.n_sites, len(ticks))
        if s.reset_every_s <= 0 or not len(ticks):
            return np.zeros(shape, bool), np.ones(shape, np.int64)
        p = self.interval_s / s.reset_every_s
        keys = SITE_KEY + np.arange(self.n_sites) * 16 + 4
        flag = (self.noise.u(keys, ticks) < p) & (ticks >= 1)[None, :]
        q = 1 + (self.noise.u(keys + 1, ticks) * 1023).astype(np.int64)
        return flag, q
