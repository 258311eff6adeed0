"""The deterministic fleet model: sites, their series, and every sample's exact value.

Part of `collector simulate`. Everything random is a pure function of (seed, entity, tick)
through a counter-based hash (splitmix64), so a sample's value does not depend on how the run
is cut into blocks or batches, and the same seed gives the same fleet on any machine.

Counters are generated as exact integers: each tick a uint64 increment is drawn (floats
only shape the *rate*; the increment is an integer from then on) and counter values are
wrapping uint64 sums of increments, masked to 32 bits for series that declare 32-bit width.
A block of ticks is generated for the whole fleet at once as (series x ticks) NumPy
matrices: no Python object per sample.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from collector.agent.batch import SiteInfo
from collector.catalog import Domain, Kind, metric_names, unit_of
from collector.simulate.config import SimulateSettings
from collector.simulate.geo import City, city_for, diurnal_load

U64 = np.uint64
NS = 1_000_000_000
MASK64 = 2**64 - 1
MASK32 = 2**32 - 1
# Fixed "tick" at which static (per-entity) parameters are drawn.
_STATIC_TICK = 2**40
# Key spaces of the hash, one per kind of entity.
_SITE, _LINK, _CELL, _HOST, _ROW = (k << 44 for k in range(1, 6))

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
# Share of the interval a connected user is actively receiving (PDCP volume model).
_ACTIVE_SHARE = 0.005
RECORD_LINK_NAME = "nict-sdm-402t"
COPPER_BPS = 1e9


_G, _M1, _M2 = U64(0x9E3779B97F4A7C15), U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB)
_S27, _S30, _S31 = U64(27), U64(30), U64(31)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64 finaliser, element-wise (array arithmetic wraps modulo 2^64 by design)."""
    x = x + _G
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


class Noise:
    """Uniform [0, 1) numbers as a pure function of (seed, key, tick)."""

    def __init__(self, seed: int) -> None:
        self._s = int(_mix(np.array([seed], dtype=U64))[0])

    def bits(self, keys: npt.ArrayLike, ticks: npt.ArrayLike) -> npt.NDArray[np.uint64]:
        k = np.asarray(keys, dtype=U64).reshape(-1)
        t = np.asarray(ticks, dtype=np.int64).reshape(-1).astype(U64)
        base = _mix(k ^ U64(self._s))
        return _mix(base[:, None] + t[None, :])

    def u(self, keys: npt.ArrayLike, ticks: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return (self.bits(keys, ticks) >> 11).astype(np.float64) * (1.0 / 2**53)

    def static(self, keys: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return self.u(keys, [_STATIC_TICK])[:, 0]

    def hex(self, *parts: int | str) -> str:
        h = hashlib.sha256(f"{self._s}:{':'.join(map(str, parts))}".encode()).hexdigest()
        return h


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
    c_lo: int  # counter rows [c_lo, c_hi)
    c_hi: int
    g_lo: int  # gauge rows [g_lo, g_hi)
    g_hi: int

    @property
    def n_series(self) -> int:
        return self.c_hi - self.c_lo + self.g_hi - self.g_lo


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
                c_lo, g_lo = len(self.counters), len(self.gauges)
                n_links = s.links_per_site
                for j in range(n_links + (0 if record_done or country != "JP" else 1)):
                    record = j == n_links
                    key = _LINK + len(links["site"])
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
                    cells["key"].append(_CELL + len(cells["key"]))
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
                    hosts["key"].append(_HOST + len(hosts["key"]))
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
                        si, info, city, f"sim-{site_id}", c_lo, len(self.counters), g_lo, len(self.gauges)
                    )
                )
        self.n_sites = len(self.sites)
        self.nc = len(self.counters)
        self.ng = len(self.gauges)
        self.c_site = np.array([c.site for c in self.counters], dtype=np.int64)
        self.g_site = np.array([g.site for g in self.gauges], dtype=np.int64)
        self.c_mask = np.array([MASK32 if c.bits == 32 else MASK64 for c in self.counters], dtype=U64)
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
        rows = np.arange(self.nc, dtype=U64) + _ROW
        b = self.noise.bits(rows, [_STATIC_TICK])[:, 0]
        v = b >> 24  # < 2^40
        is32 = self.c_mask == MASK32
        if is32.any():
            small = np.array([c.metric.endswith(("errors", "discards")) for c in self.counters])
            margin = np.where(small, b & 3, b & (2**24 - 1))
            v = np.where(is32, MASK32 - margin, v)
        return v.astype(U64)

    def initial_start_ns(self, site: int, start_ns: int) -> int:
        """Counter start time of the first boot: the site came up 1-31 days before the run."""
        u = self.noise.static([_SITE + site * 16 + 1])[0]
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
        u = self.noise.u(_SITE + np.arange(self.n_sites) * 16 + 2, ticks)
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
            hit = self.noise.u(_SITE + np.arange(self.n_sites) * 16 + 3, first) < s.gap_probability
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
        keys = _SITE + np.arange(self.n_sites) * 16 + 8
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
        keys = _SITE + np.arange(self.n_sites) * 16 + 4
        flag = (self.noise.u(keys, ticks) < p) & (ticks >= 1)[None, :]
        q = 1 + (self.noise.u(keys + 1, ticks) * 1023).astype(np.int64)
        return flag, q


@dataclass
class SiteState:
    """What the generator carries from one block to the next for one site."""

    epoch: int
    start_ns: list[int]  # counter start time per epoch (the restart time)
    boot_ids: list[str]
    last_present_epoch: int | None = None  # None: no sample delivered yet
    seq: int = 0
    version: int = 0  # discontinuities so far (restarts and counter clears)
    clears: int = 0


@dataclass
class Block:
    """One block of ticks for the whole fleet (rows x ticks matrices)."""

    k0: int
    ticks: npt.NDArray[np.int64]
    t: npt.NDArray[np.int64]  # sites x T, ns
    present: npt.NDArray[np.bool_]  # sites x T
    epoch: npt.NDArray[np.int64]  # sites x T, boot epoch of the site at the tick
    version: npt.NDArray[np.int64]  # sites x T, discontinuities (restarts + clears) so far
    reset_sample: npt.NDArray[np.bool_]  # counters x T: first delivered sample of a new segment
    start: npt.NDArray[np.int64]  # counters x T: start_time_unix_nano of the counter
    counted: npt.NDArray[np.bool_]  # sites x T: delivered and not the series' first sample ever
    values: npt.NDArray[np.uint64]  # counters x T, as sent (masked to the declared width)
    increment: npt.NDArray[np.uint64]  # counters x T, true increment (valid where counted)
    raw_increment: npt.NDArray[np.uint64]  # counters x T, the model's per-tick increment
    gauges: npt.NDArray[np.float64]  # gauges x T

    @property
    def n_ticks(self) -> int:
        return len(self.ticks)


class FleetGenerator:
    """Stateful walk through the ticks of a run: `block(n)` returns the next n ticks."""

    def __init__(self, model: FleetModel, start_ns: int) -> None:
        self.model = m = model
        self.start_ns = start_ns
        self.next_tick = 0
        self._v64 = m.initial_values()  # value at the last generated tick (64-bit sum)
        self._v_present = np.zeros(m.nc, dtype=U64)  # 64-bit value at the last delivered tick
        # Per counter row: segment (restarts and clears so far), segment of the last
        # delivered sample, current start time.
        self._seg = np.zeros(m.nc, dtype=np.int64)
        self._seg_present = np.zeros(m.nc, dtype=np.int64)
        self.sites = [
            SiteState(0, [m.initial_start_ns(i, start_ns)], [m.boot_id(i, 0)]) for i in range(m.n_sites)
        ]
        self._start = (
            np.concatenate(
                [
                    np.full(st.c_hi - st.c_lo, self.sites[st.index].start_ns[0], dtype=np.int64)
                    for st in m.sites
                ]
            )
            if m.nc
            else np.zeros(0, np.int64)
        )

    def block(self, n: int) -> Block:
        m = self.model
        k0 = self.next_tick
        ticks = np.arange(k0, k0 + n, dtype=np.int64)
        self.next_tick += n
        t_ext = m.times(np.arange(k0 - 1, k0 + n, dtype=np.int64), self.start_ns)
        t = t_ext[:, 1:]
        present = m.present(ticks)
        reset, q = m.resets(ticks)
        clear, which, cq = m.clears(ticks)
        clear &= ~reset  # a restart clears everything anyway
        load = np.empty((m.n_sites, n))
        for st in m.sites:
            load[st.index] = diurnal_load(st.info.timezone, t[st.index])
        inc = np.zeros((m.nc, n), dtype=U64)
        gauges = np.zeros((m.ng, n), dtype=np.float64)
        self._links(ticks, load, inc, gauges)
        self._cells(ticks, load, present, inc, gauges)
        self._hosts(ticks, load, inc, gauges)

        values = np.empty_like(inc)
        increment = np.zeros_like(inc)
        epoch = np.empty((m.n_sites, n), dtype=np.int64)
        version = np.empty((m.n_sites, n), dtype=np.int64)
        reset_sample = np.zeros((m.nc, n), dtype=bool)
        start = np.empty((m.nc, n), dtype=np.int64)
        counted = np.zeros((m.n_sites, n), dtype=bool)
        for st in m.sites:
            i = st.index
            state = self.sites[i]
            lo, hi = st.c_lo, st.c_hi
            rows = slice(lo, hi)
            # Discontinuities in tick order: (tick, first row, last row + 1, q, restart?)
            events = [(r, lo, hi, int(q[i, r]), True) for r in np.flatnonzero(reset[i]).tolist()]
            for r in np.flatnonzero(clear[i]).tolist():
                c0 = int(m.site_links[i][which[i, r]])
                events.append((r, c0, c0 + len(LINK_COUNTERS), int(cq[i, r]), False))
            events.sort()
            seg_inc = inc[rows]
            # The first increment after a restart/clear only covers the part of the interval
            # after it.
            for r, a, b, qq, _ in events:
                col = seg_inc[a - lo : b - lo, r]
                seg_inc[a - lo : b - lo, r] = (col // 1024) * qq + (col % 1024) * qq // 1024
            csum = np.cumsum(seg_inc, axis=1, dtype=U64)
            v = csum + self._v64[rows][:, None]
            seg = np.repeat(self._seg[rows][:, None], n, axis=1)
            stt = np.repeat(self._start[rows][:, None], n, axis=1)
            ep = np.full(n, state.epoch, dtype=np.int64)
            ver = np.full(n, state.version, dtype=np.int64)
            for r, a, b, qq, restart in events:
                ra, rb = a - lo, b - lo
                # value = increments since the discontinuity (the counter started from 0)
                v[ra:rb, r:] = csum[ra:rb, r:] - (csum[ra:rb, r - 1][:, None] if r > 0 else 0)
                seg[ra:rb, r:] += 1
                tk, tk1 = int(t_ext[i, r + 1]), int(t_ext[i, r])
                tr = tk - (tk - tk1) * qq // 1024
                stt[ra:rb, r:] = tr
                state.version += 1
                ver[r:] = state.version
                if restart:
                    state.epoch += 1
                    ep[r:] = state.epoch
                    state.start_ns.append(tr)
                    state.boot_ids.append(m.boot_id(i, state.epoch))
                else:
                    state.clears += 1
            epoch[i] = ep
            version[i] = ver
            start[rows] = stt
            values[rows] = v & m.c_mask[rows][:, None]
            # True increments of delivered samples, against the previous delivered sample of
            # the same segment (a new segment counts from 0).
            p_ticks = np.flatnonzero(present[i])
            if len(p_ticks):
                first_ever = state.last_present_epoch is None
                prev_seg = np.empty((hi - lo, len(p_ticks)), dtype=np.int64)
                prev_seg[:, 0] = self._seg_present[rows]
                prev_seg[:, 1:] = seg[:, p_ticks[:-1]]
                same = prev_seg == seg[:, p_ticks]
                base = np.empty((hi - lo, len(p_ticks)), dtype=U64)
                base[:, 0] = self._v_present[rows]
                base[:, 1:] = v[:, p_ticks[:-1]]
                base[~same] = 0
                increment[rows, p_ticks] = v[:, p_ticks] - base
                cnt = np.ones(len(p_ticks), dtype=bool)
                rs = ~same
                if first_ever:
                    cnt[0] = False
                    rs[:, 0] = False
                counted[i, p_ticks] = cnt
                reset_sample[rows, p_ticks] = rs
                state.last_present_epoch = int(ep[p_ticks[-1]])
                self._v_present[rows] = v[:, p_ticks[-1]]
                self._seg_present[rows] = seg[:, p_ticks[-1]]
            self._v64[rows] = v[:, -1]
            self._seg[rows] = seg[:, -1]
            self._start[rows] = stt[:, -1]
        return Block(
            k0,
            ticks,
            t,
            present,
            epoch,
            version,
            reset_sample,
            start,
            counted,
            values,
            increment,
            inc,
            gauges,
        )

    # --- entity models -------------------------------------------------------------------

    def _links(
        self,
        ticks: npt.NDArray[np.int64],
        load: npt.NDArray[np.float64],
        inc: npt.NDArray[np.uint64],
        gauges: npt.NDArray[np.float64],
    ) -> None:
        m = self.model
        L = m.links
        if not len(L["site"]):
            return
        iv = m.interval_s
        keys = L["key"].astype(U64)
        u = m.noise.u
        ld = load[L["site"]]
        speed = L["speed"][:, None]
        cap = speed * iv
        rate_in = speed * L["util"][:, None] * ld * (0.85 + 0.3 * u(keys * 4096 + 1, ticks))
        oct_in = np.floor(np.minimum(rate_in * iv, cap))
        out_ratio = 0.4 + 0.5 * m.noise.static(keys * 4096 + 2)[:, None]
        oct_out = np.floor(np.minimum(oct_in * out_ratio * (0.9 + 0.2 * u(keys * 4096 + 3, ticks)), cap))
        pkt_in = (600 + 800 * m.noise.static(keys * 4096 + 4)).astype(U64)[:, None]
        pkt_out = (600 + 800 * m.noise.static(keys * 4096 + 5)).astype(U64)[:, None]
        c0 = L["c0"]
        oi = oct_in.astype(U64)
        oo = oct_out.astype(U64)
        inc[c0] = oi
        inc[c0 + 1] = oo
        inc[c0 + 2] = oi // pkt_in
        inc[c0 + 3] = oo // pkt_out
        inc[c0 + 4] = np.floor(u(keys * 4096 + 6, ticks) ** 12 * 4).astype(U64)
        inc[c0 + 5] = np.floor(u(keys * 4096 + 7, ticks) ** 12 * 2).astype(U64)
        inc[c0 + 6] = np.floor(np.maximum(ld - 0.8, 0) * 200 * u(keys * 4096 + 8, ticks)).astype(U64)
        inc[c0 + 7] = np.floor(np.maximum(ld - 0.85, 0) * 100 * u(keys * 4096 + 9, ticks)).astype(U64)
        g0 = L["g0"]
        gauges[g0] = 1.0
        gauges[g0 + 1] = speed
        opt = L["optical"].astype(bool)
        if opt.any():
            ko = keys[opt]
            go = g0[opt]
            lo = ld[opt]
            base = m.noise.static(ko * 4096 + 10)[:, None]
            gauges[go + 2] = -2.5 - 4.0 * base - 0.3 * lo + 0.2 * (u(ko * 4096 + 11, ticks) - 0.5)
            gauges[go + 3] = (
                1.0 + 1.5 * m.noise.static(ko * 4096 + 12)[:, None] + 0.1 * (u(ko * 4096 + 13, ticks) - 0.5)
            )
            gauges[go + 4] = 0.035 + 0.03 * base + 0.002 * u(ko * 4096 + 14, ticks)
            gauges[go + 5] = 10.0 ** (-7.0 + 2.5 * base + 0.3 * u(ko * 4096 + 15, ticks))
            gauges[go + 6] = 34.0 - 10.0 * base - 0.5 * lo + 0.4 * (u(ko * 4096 + 16, ticks) - 0.5)

    def _cells(
        self,
        ticks: npt.NDArray[np.int64],
        load: npt.NDArray[np.float64],
        present: npt.NDArray[np.bool_],
        inc: npt.NDArray[np.uint64],
        gauges: npt.NDArray[np.float64],
    ) -> None:
        m = self.model
        C = m.cells
        if not len(C["site"]):
            return
        s = m.settings
        iv = m.interval_s
        keys = C["key"].astype(U64)
        u = m.noise.u
        ld = load[C["site"]]
        pres = present[C["site"]]
        # Per-subscriber DL speed: a per-cell weight that dips at the local busy hour, scaled
        # per tick so the mean over each country's *delivered* cells is the target exactly.
        w = m.cell_speed_w[:, None] * (1.0 - 0.35 * ld) * (0.8 + 0.4 * u(keys * 4096 + 1, ticks))
        thp = np.empty_like(w)
        for c in s.countries:
            cm = C["country"] == c
            if not cm.any():
                continue
            pw = pres[cm]
            n = pw.sum(axis=0)
            mean = np.where(n > 0, (w[cm] * pw).sum(axis=0) / np.maximum(n, 1), w[cm].mean(axis=0))
            thp[cm] = (s.speed_mbps[c] * 1e6 / 8) * w[cm] / mean[None, :]
        thp_ul = thp * (0.10 + 0.05 * u(keys * 4096 + 2, ticks))
        conn = m.cell_users[:, None] * (0.1 + 0.9 * ld) * (0.9 + 0.2 * u(keys * 4096 + 3, ticks))
        conn_max = np.ceil(conn * (1.15 + 0.2 * u(keys * 4096 + 4, ticks)))
        prb = np.clip(
            (0.05 + 0.9 * ld * m.cell_prb[:, None]) * (0.9 + 0.2 * u(keys * 4096 + 5, ticks)), 0.0, 1.0
        )
        c0 = C["c0"]
        inc[c0] = np.floor(thp * conn * _ACTIVE_SHARE * iv).astype(U64)
        inc[c0 + 1] = np.floor(thp_ul * conn * _ACTIVE_SHARE * iv).astype(U64)
        # about 0.001 handover attempts per connected user per second; rounded stochastically
        # (floor(x + u), expectation x) so a quiet cell sampled every second still has some
        req = np.floor(conn * 0.001 * iv + u(keys * 4096 + 6, ticks))
        fail = np.floor(req * m.cell_fail[:, None] + u(keys * 4096 + 7, ticks))
        inc[c0 + 2] = req.astype(U64)
        inc[c0 + 3] = np.maximum(req - fail, 0).astype(U64)
        g0 = C["g0"]
        gauges[g0] = prb
        gauges[g0 + 1] = prb * (0.5 + 0.2 * u(keys * 4096 + 8, ticks))
        gauges[g0 + 2] = thp
        gauges[g0 + 3] = thp_ul
        gauges[g0 + 4] = conn
        gauges[g0 + 5] = conn_max
        outage = u(keys * 4096 + 9, ticks) < 0.002
        gauges[g0 + 6] = np.where(outage, 0.95 + 0.05 * u(keys * 4096 + 10, ticks), 1.0)
        gauges[g0 + 7] = m.cell_coverage[:, None]
        gauges[g0 + 8] = m.cell_rsrp[:, None] - 3.0 * ld + 2.0 * (u(keys * 4096 + 11, ticks) - 0.5)
        gauges[g0 + 9] = -9.0 - 4.0 * m.cell_q[:, None] - 2.0 * ld
        gauges[g0 + 10] = (
            25.0 - 12.0 * ld - 6.0 * m.cell_q[:, None] + 3.0 * (u(keys * 4096 + 12, ticks) - 0.5)
        )

    def _hosts(
        self,
        ticks: npt.NDArray[np.int64],
        load: npt.NDArray[np.float64],
        inc: npt.NDArray[np.uint64],
        gauges: npt.NDArray[np.float64],
    ) -> None:
        m = self.model
        H = m.hosts
        if not len(H["site"]):
            return
        s = m.settings
        iv = m.interval_s
        keys = H["key"].astype(U64)
        u = m.noise.u
        ld = load[H["site"]]
        ncpu = s.cpus_per_host
        total = round(100 * iv)  # USER_HZ ticks per CPU per interval
        hbase = 0.5 + 0.5 * m.noise.static(keys * 4096 + 1)[:, None]
        c0 = H["c0"]
        busy_sum = np.zeros_like(ld)
        for cpu in range(ncpu):
            ck = keys * 4096 + 16 + cpu * 4
            busy = np.clip((0.08 + 0.7 * ld * hbase) * (0.8 + 0.4 * u(ck, ticks)), 0.0, 0.97)
            busy_sum += busy
            user = np.floor(total * busy * 0.7)
            system = np.floor(total * busy * 0.22)
            iowait = np.floor(total * busy * 0.08 * u(ck + 1, ticks))
            base = c0 + cpu * 4
            inc[base] = user.astype(U64)
            inc[base + 1] = system.astype(U64)
            inc[base + 2] = iowait.astype(U64)
            inc[base + 3] = (total - user - system - iowait).astype(U64)
        r = c0 + ncpu * 4
        disk_r = np.floor(5e7 * ld * u(keys * 4096 + 2, ticks) * iv)
        disk_w = np.floor(3e7 * ld * u(keys * 4096 + 3, ticks) * iv)
        rx = np.floor(1.25e9 * 0.4 * ld * (0.8 + 0.4 * u(keys * 4096 + 4, ticks)) * iv)
        tx = np.floor(rx * (0.5 + 0.3 * u(keys * 4096 + 5, ticks)))
        inc[r] = disk_r.astype(U64)
        inc[r + 1] = disk_w.astype(U64)
        inc[r + 2] = rx.astype(U64)
        inc[r + 3] = tx.astype(U64)
        inc[r + 4] = (rx // 900).astype(U64)
        inc[r + 5] = (tx // 700).astype(U64)
        inc[r + 6] = np.floor(u(keys * 4096 + 6, ticks) ** 16 * 2).astype(U64)
        inc[r + 7] = np.floor(u(keys * 4096 + 7, ticks) ** 16 * 2).astype(U64)
        inc[r + 8] = np.floor(np.maximum(ld - 0.9, 0) * 50 * u(keys * 4096 + 8, ticks)).astype(U64)
        inc[r + 9] = np.floor(np.maximum(ld - 0.9, 0) * 30 * u(keys * 4096 + 9, ticks)).astype(U64)
        # Package power: an idle floor per host plus ~25 W per busy CPU, in microjoules.
        idle_w = 60.0 + 40.0 * m.noise.static(keys * 4096 + 15)[:, None]
        watts = idle_w + 25.0 * busy_sum * (0.95 + 0.1 * u(keys * 4096 + 15, ticks))
        inc[r + 10] = np.floor(watts * iv * 1e6).astype(U64)
        g0 = H["g0"]
        mem = np.where(m.noise.static(keys * 4096 + 10) < 0.5, 128.0, 256.0)[:, None] * 2**30
        gauges[g0] = mem
        gauges[g0 + 1] = np.floor(
            mem * np.clip(0.75 - 0.45 * ld * (0.9 + 0.2 * u(keys * 4096 + 11, ticks)), 0.05, 0.95)
        )
        busy_avg = busy_sum  # load average ~ number of busy CPUs
        gauges[g0 + 2] = busy_avg * (0.9 + 0.2 * u(keys * 4096 + 12, ticks))
        gauges[g0 + 3] = busy_avg * 0.97
        gauges[g0 + 4] = busy_avg * 0.93
        fs = 2e12
        gauges[g0 + 5] = fs
        gauges[g0 + 6] = np.floor(
            fs
            * (0.35 + 0.3 * m.noise.static(keys * 4096 + 13)[:, None] - 0.0001 * u(keys * 4096 + 14, ticks))
        )
