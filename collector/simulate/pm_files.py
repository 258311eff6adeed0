"""The simulated gNBs' PM files: TS 32.435 measCollecFiles written from the cell model.

In agents mode with `simulate.pm_files` on, the simulated cells do not go into the agents'
batches as counters: like real gNBs, each site writes one measCollecFile per granularity
period (`simulate.pm_granularity_s`, 15 min by default; `collector run` uses 10 s so the
accelerated run shows cell metrics soon) into its agent's PM directory, and the agent's
real cell source (collector/agent/sources/cell.py: parse -> validate -> DELTA / period
gauges -> spool -> ingest) reads it. So `collector run` exercises the real cell path.

Values per period and cell, from the generator's blocks (what the gNB counted, whatever
the agent did): volumes and handovers = the sum of the model's per-tick increments over the
ticks in the period, written in the file's TS 28.552 units (integer Mbit, floored; the
sub-Mbit rest carries into the next period, as a gNB's internal byte counter would);
gauges = the mean over the period's ticks (RRC.ConnMax: the maximum), in percent, kbit/s,
UEs, dBm, dB. Distributions (L1M.SS-RSRP/RSRQ/SINR.Bin<X>): one UE report per connected
user per 10 s of the period, spread as a normal distribution around the period's mean
(sigma 6 dB RSRP, 2 dB RSRQ, 4 dB SINR) over TS 38.133's bins, rounded to whole reports that
add up exactly; the file has every bin with a report and the empty bins next to them (so a
bucket never spans more than one bin's range). `truth` holds, per written period, the
catalogue-unit figures the aggregator must publish: throughput = Mbit * 125000 / period,
PRB ratio = percent / 100, histogram buckets = reports <= each written bin's bound, ...
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from collector.agent.sources.pm_parser import MEASUREMENTS
from collector.simulate.generator import Block
from collector.simulate.pm_writer import render_meas_collec
from collector.simulate.topology import CELL_COUNTERS, CELL_GAUGES, FleetModel

NS = 1_000_000_000
MBIT = 125_000  # bytes per Mbit
# catalogue gauge name -> (factor to the file's raw unit, statistic over the period)
_GAUGE_RAW = {
    "RRU.PrbTotDl": (100.0, "mean"),
    "RRU.PrbTotUl": (100.0, "mean"),
    "DRB.UEThpDl": (1 / 125, "mean"),
    "DRB.UEThpUl": (1 / 125, "mean"),
    "RRC.ConnMean": (1.0, "mean"),
    "RRC.ConnMax": (1.0, "max"),
    "CELL.Availability": (100.0, "mean"),
    "CELL.CoverageRatio": (100.0, "mean"),
    "L1M.SS-RSRP": (1.0, "mean"),
    "L1M.SS-RSRQ": (1.0, "mean"),
    "L1M.SS-SINR": (1.0, "mean"),
}


# distribution -> (the period mean it is centred on, sigma, histogram family)
_DISTRIBUTIONS = {
    "L1M.SS-RSRP.Bin": ("L1M.SS-RSRP", 6.0, "edge_cell_ss_rsrp_report_dbm"),
    "L1M.SS-RSRQ.Bin": ("L1M.SS-RSRQ", 2.0, "edge_cell_ss_rsrq_report_db"),
    "L1M.SS-SINR.Bin": ("L1M.SS-SINR", 4.0, "edge_cell_ss_sinr_report_db"),
}
REPORT_EVERY_S = 10  # one report per connected UE per 10 s


def bin_counts(dist: str, mean: float, reports: int) -> dict[int, int]:
    """Reports per bin X of a distribution: a normal around `mean`, whole reports summing to
    `reports` (largest remainders), the bins with reports and their empty neighbours."""
    first, step, n = MEASUREMENTS[dist].bins or (0.0, 1.0, 1)
    sigma = _DISTRIBUTIONS[dist][1]

    def cdf(x: float) -> float:
        return 0.5 * (1.0 + math.erf((x - mean) / (sigma * math.sqrt(2.0))))

    uppers = [first + step * x for x in range(n - 1)] + [math.inf]
    probs, below = [], 0.0
    for u in uppers:
        c = 1.0 if u == math.inf else cdf(u)
        probs.append(c - below)
        below = c
    raw = [p * reports for p in probs]
    counts = [int(r) for r in raw]
    for x in sorted(range(n), key=lambda i: (counts[i] - raw[i], i))[: reports - sum(counts)]:
        counts[x] += 1
    keep = {x for x in range(n) if counts[x]}
    keep |= {x + d for x in keep for d in (-1, 1) if 0 <= x + d < n}
    return {x: counts[x] for x in sorted(keep)}


@dataclass(slots=True)
class _Acc:
    period: int  # index: [period * G, (period + 1) * G)
    inc: np.ndarray  # cells x counters, integer units (bytes, attempts)
    gsum: np.ndarray  # cells x gauges
    gmax: np.ndarray
    n: int = 0
    partial: bool = False  # began after the period's start: not written


@dataclass(slots=True)
class PmWriter:
    """Accumulates the cells of every site per period and writes each finished period."""

    model: FleetModel
    granularity_s: int
    dirs: dict[int, Path]  # site index -> its agent's pm_dir
    # (site_id, gnb, cell, period end ns) -> {catalogue family key: value}
    truth: dict[tuple[str, str, str, int], dict[str, float]] = field(default_factory=dict)
    files: int = 0
    _acc: dict[int, _Acc] = field(default_factory=dict)
    _carry: dict[int, np.ndarray] = field(default_factory=dict)  # sub-Mbit rest per site

    def __post_init__(self) -> None:
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)

    def _rows(self, site: int) -> tuple[np.ndarray, np.ndarray]:
        sel = self.model.cells["site"] == site
        return self.model.cells["c0"][sel], self.model.cells["g0"][sel]

    def add(self, block: Block) -> list[int]:
        """Account one block; returns the sites that got a new file."""
        g_ns = self.granularity_s * NS
        wrote = []
        nc, ng = len(CELL_COUNTERS), len(CELL_GAUGES)
        for site in self.dirs:
            c0, g0 = self._rows(site)
            if not len(c0):
                continue
            cidx = c0[:, None] + np.arange(nc)[None, :]
            gidx = g0[:, None] + np.arange(ng)[None, :]
            for k in range(block.n_ticks):
                t = int(block.t[site, k])
                # the tick's increment covers (t - interval, t]: its period holds t - 1 ns
                p = (t - 1) // g_ns
                acc = self._acc.get(site)
                if acc is not None and p > acc.period:
                    if acc.partial:
                        self._carry[site] = np.zeros((len(c0), 2), np.uint64)
                    else:
                        self._write(site, acc)
                        wrote.append(site)
                    acc = None
                if acc is None:
                    # A site's first period is only written when the run began at its start:
                    # a gNB does not report a period it did not see whole.
                    partial = site not in self._carry and t - self.model.interval_ns > p * g_ns
                    acc = self._acc[site] = _Acc(
                        p,
                        np.zeros((len(c0), nc), np.uint64),
                        np.zeros((len(c0), ng)),
                        np.full((len(c0), ng), -np.inf),
                        0,
                        partial,
                    )
                acc.inc += block.raw_increment[cidx, k]
                g = block.gauges[gidx, k]
                acc.gsum += g
                acc.gmax = np.maximum(acc.gmax, g)
                acc.n += 1
        return wrote

    def _write(self, site: int, acc: _Acc) -> None:
        st = self.model.sites[site]
        c0, _ = self._rows(site)
        labels = [dict(self.model.counters[int(c)].labels) for c in c0]
        carry = self._carry.get(site)
        if carry is None:
            carry = np.zeros((len(c0), 2), np.uint64)
        vol = acc.inc[:, :2] + carry
        mbit = vol // np.uint64(MBIT)
        self._carry[site] = vol - mbit * np.uint64(MBIT)
        g_s = self.granularity_s
        end_ns = (acc.period + 1) * g_s * NS
        cells: dict[str, dict[str, float | int | str]] = {}
        gnb = labels[0]["gnb"] if labels else st.info.site_id
        for i, lb in enumerate(labels):
            v: dict[str, float | int | str] = {
                "DRB.PdcpSduVolumeDL": int(mbit[i, 0]),
                "DRB.PdcpSduVolumeUL": int(mbit[i, 1]),
                "MM.HoExeIntraReq": int(acc.inc[i, 2]),
                "MM.HoExeIntraSucc": int(acc.inc[i, 3]),
            }
            for j, name in enumerate(CELL_GAUGES):
                factor, stat = _GAUGE_RAW[name]
                raw = (acc.gmax[i, j] if stat == "max" else acc.gsum[i, j] / acc.n) * factor
                v[name] = round(float(raw), 6)
            reports = round(float(v["RRC.ConnMean"]) * g_s / REPORT_EVERY_S)
            hist: dict[str, dict[int, int]] = {}
            if reports > 0:
                for dist, (mean_of, _, _) in _DISTRIBUTIONS.items():
                    hist[dist] = bin_counts(dist, float(v[mean_of]), reports)
                    v.update({f"{dist}{x}": n for x, n in hist[dist].items()})
            cells[lb["cell"]] = v
            truth = _catalogue(v, g_s)
            truth.update(_histogram_truth(hist))
            self.truth[(st.info.site_id, lb["gnb"], lb["cell"], end_ns)] = truth
        begin = dt.datetime.fromtimestamp(acc.period * g_s, dt.UTC)
        data = render_meas_collec(
            begin=begin, duration_s=g_s, element=gnb, cells=cells, positional=site % 2 == 1
        )
        d = self.dirs[site]
        name = f"A{begin:%Y%m%d.%H%M}+0000-{begin + dt.timedelta(seconds=g_s):%H%M}+0000_{gnb}.xml"
        tmp = d / f".{name}.part"
        tmp.write_bytes(data)
        os.replace(tmp, d / name)  # appears complete: settle_s can be 0
        self.files += 1


def _histogram_truth(hist: dict[str, dict[int, int]]) -> dict[str, float]:
    """family_bucket/le=<bound> -> reports <= bound for every bin written, + Inf and _count
    (the bounds spelt as /metrics does: "-96.0", "+Inf")."""
    out: dict[str, float] = {}
    for dist, counts in hist.items():
        fam = _DISTRIBUTIONS[dist][2]
        spec = MEASUREMENTS[dist]
        total = 0
        for x, n in sorted(counts.items()):
            total += n
            le = spec.bin_le(x)
            out[f"{fam}_bucket/le={'+Inf' if le == '+Inf' else repr(float(le or 'nan'))}"] = total
        out[f"{fam}_bucket/le=+Inf"] = sum(counts.values())
        out[f"{fam}_count"] = sum(counts.values())
    return out


def _catalogue(v: dict[str, float | int | str], period_s: int) -> dict[str, float]:
    """What the aggregator publishes for a cell from these file values (window = period)."""
    f = {k: float(x) for k, x in v.items() if not isinstance(x, str)}
    out = {
        "edge_cell_throughput_bytes_per_second/dl": f["DRB.PdcpSduVolumeDL"] * MBIT / period_s,
        "edge_cell_throughput_bytes_per_second/ul": f["DRB.PdcpSduVolumeUL"] * MBIT / period_s,
        "edge_cell_handover_attempts_per_second": f["MM.HoExeIntraReq"] / period_s,
        "edge_cell_prb_utilization_ratio/dl": f["RRU.PrbTotDl"] * 0.01,
        "edge_cell_prb_utilization_ratio/ul": f["RRU.PrbTotUl"] * 0.01,
        "edge_cell_user_throughput_bytes_per_second/dl": f["DRB.UEThpDl"] * 125,
        "edge_cell_user_throughput_bytes_per_second/ul": f["DRB.UEThpUl"] * 125,
        "edge_cell_connected_users": f["RRC.ConnMean"],
        "edge_cell_connected_users_peak": f["RRC.ConnMax"],
        "edge_cell_ss_rsrp_dbm": f["L1M.SS-RSRP"],
    }
    if f["MM.HoExeIntraReq"] > 0:
        out["edge_cell_handover_success_ratio"] = min(1.0, f["MM.HoExeIntraSucc"] / f["MM.HoExeIntraReq"])
    return out
