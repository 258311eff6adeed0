"""The simulated fleet's signals: every sample's exact value, tick by tick.

Part of `collector simulate`: FleetGenerator walks the ticks of a run over a FleetModel
(topology.py). Counters are generated as exact integers: each tick a uint64 increment is
drawn (floats only shape the *rate*; the increment is an integer from then on) and counter
values are wrapping uint64 sums of increments, masked to 32 bits for series that declare
32-bit width. A block of ticks is generated for the whole fleet at once as (series x ticks)
NumPy matrices: no Python object per sample. Restarts and counter clears (the model's
schedule) start a counter segment from 0 with a new start time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from collector.simulate.geo import diurnal_load
from collector.simulate.noise import U64
from collector.simulate.topology import LINK_COUNTERS, FleetModel

# Share of the interval a connected user is actively receiving (PDCP volume model).
_ACTIVE_SHARE = 0.005


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
                    np.full(st.counter_hi - st.counter_lo, self.sites[st.index].start_ns[0], dtype=np.int64)
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
            lo, hi = st.counter_lo, st.counter_hi
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
            values[rows] = v & m.counter_mask[rows][:, None]
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
        links = m.links
        if not len(links["site"]):
            return
        iv = m.interval_s
        keys = links["key"].astype(U64)
        u = m.noise.u
        ld = load[links["site"]]
        speed = links["speed"][:, None]
        cap = speed * iv
        rate_in = speed * links["util"][:, None] * ld * (0.85 + 0.3 * u(keys * 4096 + 1, ticks))
        oct_in = np.floor(np.minimum(rate_in * iv, cap))
        out_ratio = 0.4 + 0.5 * m.noise.static(keys * 4096 + 2)[:, None]
        oct_out = np.floor(np.minimum(oct_in * out_ratio * (0.9 + 0.2 * u(keys * 4096 + 3, ticks)), cap))
        pkt_in = (600 + 800 * m.noise.static(keys * 4096 + 4)).astype(U64)[:, None]
        pkt_out = (600 + 800 * m.noise.static(keys * 4096 + 5)).astype(U64)[:, None]
        c0 = links["c0"]
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
        g0 = links["g0"]
        gauges[g0] = 1.0
        gauges[g0 + 1] = speed
        opt = links["optical"].astype(bool)
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
        cells = m.cells
        if not len(cells["site"]):
            return
        s = m.settings
        iv = m.interval_s
        keys = cells["key"].astype(U64)
        u = m.noise.u
        ld = load[cells["site"]]
        pres = present[cells["site"]]
        # Per-subscriber DL speed: a per-cell weight that dips at the local busy hour, scaled
        # per tick so the mean over each country's *delivered* cells is the target exactly.
        w = m.cell_speed_w[:, None] * (1.0 - 0.35 * ld) * (0.8 + 0.4 * u(keys * 4096 + 1, ticks))
        thp = np.empty_like(w)
        for c in s.countries:
            cm = cells["country"] == c
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
        c0 = cells["c0"]
        inc[c0] = np.floor(thp * conn * _ACTIVE_SHARE * iv).astype(U64)
        inc[c0 + 1] = np.floor(thp_ul * conn * _ACTIVE_SHARE * iv).astype(U64)
        # about 0.001 handover attempts per connected user per second; rounded stochastically
        # (floor(x + u), expectation x) so a quiet cell sampled every second still has some
        req = np.floor(conn * 0.001 * iv + u(keys * 4096 + 6, ticks))
        fail = np.floor(req * m.cell_fail[:, None] + u(keys * 4096 + 7, ticks))
        inc[c0 + 2] = req.astype(U64)
        inc[c0 + 3] = np.maximum(req - fail, 0).astype(U64)
        g0 = cells["g0"]
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
        hosts = m.hosts
        if not len(hosts["site"]):
            return
        s = m.settings
        iv = m.interval_s
        keys = hosts["key"].astype(U64)
        u = m.noise.u
        ld = load[hosts["site"]]
        ncpu = s.cpus_per_host
        total = round(100 * iv)  # USER_HZ ticks per CPU per interval
        hbase = 0.5 + 0.5 * m.noise.static(keys * 4096 + 1)[:, None]
        c0 = hosts["c0"]
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
        g0 = hosts["g0"]
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
