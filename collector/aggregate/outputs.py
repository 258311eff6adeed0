"""What the aggregator publishes: output metric families and how they derive from state.

The last stage before exposition. Raw catalogue metrics (collector/catalog.py) map to
output families in Prometheus base units (bytes, seconds, ratios 0..1); counters become
rates over each window, gauges become avg/min/max over each window, and a few families
are derived by joining series of one entity (utilisation = throughput / speed). Every
output carries `site`, `country` and `region`, so country roll-ups are PromQL recording
rules and aggregators scale out by partition.

`FAMILIES` is the single list docs/metrics.md is generated from (scripts/gen_metrics_doc.py).
`build_frames()` turns the Polars state of the partitions this instance owns into one
DataFrame per family (label columns + `value`), computed at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from collector.aggregate.frames import NS
from collector.aggregate.ledger import SiteLedger
from collector.aggregate.state import PartitionView
from collector.catalog import LABEL_NAMES, METRIC_INDEX

SITE = ("site", "country", "region")
Put = Callable[[str, pl.DataFrame], None]


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    type: str  # "gauge" | "counter" | "histogram" (rendered by collector/exposition/histogram.py)
    unit: str
    labels: tuple[str, ...]
    help: str
    source: str = ""  # raw metrics it is computed from, for the docs


def window_label(w: int) -> str:
    return f"{w // 3600}h" if w % 3600 == 0 else f"{w // 60}m" if w % 60 == 0 else f"{w}s"


LINK = ("link", "media")
CELL = ("cell", "gnb", "function")

# family name -> (entity labels, unit, help); rows of RATES / GAUGES feed them.
_RATE_FAMILIES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "edge_link_throughput_bytes_per_second": (LINK, "bytes/s", "Link throughput over the window."),
    "edge_link_packets_per_second": (LINK, "packets/s", "Link packet rate over the window."),
    "edge_link_errors_per_second": (LINK, "packets/s", "Link error rate over the window."),
    "edge_link_discards_per_second": (LINK, "packets/s", "Link discard rate over the window."),
    "edge_cell_throughput_bytes_per_second": (
        CELL,
        "bytes/s",
        "Cell PDCP SDU throughput (DRB.PdcpSduVolume*) over the window.",
    ),
    "edge_cell_handover_attempts_per_second": (
        CELL,
        "1/s",
        "Intra-gNB handover executions requested per second (MM.HoExeIntraReq).",
    ),
    "edge_cell_inter_gnb_handover_attempts_per_second": (
        CELL,
        "1/s",
        "Inter-gNB handover executions requested per second (MM.HoExeInterReq).",
    ),
    "edge_cell_rrc_connection_attempts_per_second": (
        CELL,
        "1/s",
        "RRC connection establishment attempts per second, all causes (RRC.ConnEstabAtt).",
    ),
    "edge_host_network_throughput_bytes_per_second": (
        ("host", "device"),
        "bytes/s",
        "Host NIC throughput over the window.",
    ),
    "edge_host_network_packets_per_second": (("host", "device"), "packets/s", "Host NIC packet rate."),
    "edge_host_network_errors_per_second": (("host", "device"), "packets/s", "Host NIC error rate."),
    "edge_host_network_drops_per_second": (("host", "device"), "packets/s", "Host NIC drop rate."),
    "edge_host_disk_throughput_bytes_per_second": (("host", "device"), "bytes/s", "Disk throughput."),
    "edge_host_disk_operations_per_second": (
        ("host", "device"),
        "operations/s",
        "Disk reads/writes completed per second.",
    ),
    "edge_host_disk_io_utilization_ratio": (
        ("host", "device"),
        "ratio",
        "Share of the window the disk was busy with I/O.",
    ),
}
# raw counter -> (family, direction or "")
RATES: dict[str, tuple[str, str]] = {
    "link_in_octets": ("edge_link_throughput_bytes_per_second", "in"),
    "link_out_octets": ("edge_link_throughput_bytes_per_second", "out"),
    "link_in_packets": ("edge_link_packets_per_second", "in"),
    "link_out_packets": ("edge_link_packets_per_second", "out"),
    "link_in_errors": ("edge_link_errors_per_second", "in"),
    "link_out_errors": ("edge_link_errors_per_second", "out"),
    "link_in_discards": ("edge_link_discards_per_second", "in"),
    "link_out_discards": ("edge_link_discards_per_second", "out"),
    "DRB.PdcpSduVolumeDL": ("edge_cell_throughput_bytes_per_second", "dl"),
    "DRB.PdcpSduVolumeUL": ("edge_cell_throughput_bytes_per_second", "ul"),
    "MM.HoExeIntraReq": ("edge_cell_handover_attempts_per_second", ""),
    "MM.HoExeInterReq": ("edge_cell_inter_gnb_handover_attempts_per_second", ""),
    "RRC.ConnEstabAtt": ("edge_cell_rrc_connection_attempts_per_second", ""),
    "node_network_receive_bytes_total": ("edge_host_network_throughput_bytes_per_second", "receive"),
    "node_network_transmit_bytes_total": ("edge_host_network_throughput_bytes_per_second", "transmit"),
    "node_network_receive_packets_total": ("edge_host_network_packets_per_second", "receive"),
    "node_network_transmit_packets_total": ("edge_host_network_packets_per_second", "transmit"),
    "node_network_receive_errs_total": ("edge_host_network_errors_per_second", "receive"),
    "node_network_transmit_errs_total": ("edge_host_network_errors_per_second", "transmit"),
    "node_network_receive_drop_total": ("edge_host_network_drops_per_second", "receive"),
    "node_network_transmit_drop_total": ("edge_host_network_drops_per_second", "transmit"),
    "node_disk_read_bytes_total": ("edge_host_disk_throughput_bytes_per_second", "read"),
    "node_disk_written_bytes_total": ("edge_host_disk_throughput_bytes_per_second", "write"),
    "node_disk_reads_completed_total": ("edge_host_disk_operations_per_second", "read"),
    "node_disk_writes_completed_total": ("edge_host_disk_operations_per_second", "write"),
    "node_disk_io_time_seconds_total": ("edge_host_disk_io_utilization_ratio", ""),
}
_GAUGE_FAMILIES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "edge_link_oper_up_ratio": (LINK, "ratio", "Share of samples with the link operationally up."),
    "edge_link_speed_bytes_per_second": (LINK, "bytes/s", "Nominal link speed."),
    "edge_link_optical_rx_power_dbm": (LINK, "dBm", "Optical receive power."),
    "edge_link_optical_tx_power_dbm": (LINK, "dBm", "Optical transmit power."),
    "edge_link_optical_laser_bias_amperes": (LINK, "amperes", "Laser bias current."),
    "edge_link_optical_prefec_ber_ratio": (LINK, "ratio", "Pre-FEC bit error ratio."),
    "edge_link_optical_osnr_db": (LINK, "dB", "Optical signal-to-noise ratio."),
    "edge_cell_prb_utilization_ratio": (
        CELL,
        "ratio",
        "PRB utilisation: RRU.PrbTot* (percent / 100), or where a cell reports "
        "only RRU.PrbUsed* and RRU.PrbAvail*, used / available (stat=avg only).",
    ),
    "edge_cell_user_throughput_bytes_per_second": (
        CELL,
        "bytes/s",
        "Average per-user throughput (DRB.UEThp*).",
    ),
    "edge_cell_connected_users": (CELL, "users", "Mean RRC-connected users (RRC.ConnMean)."),
    "edge_cell_connected_users_peak": (CELL, "users", "Peak RRC-connected users (RRC.ConnMax)."),
    "edge_cell_availability_ratio": (
        CELL,
        "ratio",
        "Cell availability: the TS 28.554 KPI 1 - unavailable time / period "
        "(RRU.CellUnavailableTime, stat=avg only), else the vendor's CELL.Availability.",
    ),
    "edge_cell_coverage_ratio": (CELL, "ratio", "Share of the target area with usable 5G coverage."),
    "edge_cell_ss_rsrp_dbm": (CELL, "dBm", "SS reference signal received power."),
    "edge_cell_ss_rsrq_db": (CELL, "dB", "SS reference signal received quality."),
    "edge_cell_ss_sinr_db": (CELL, "dB", "SS signal to interference and noise ratio."),
    "edge_host_memory_total_bytes": (("host",), "bytes", "Total memory."),
    "edge_host_memory_available_bytes": (("host",), "bytes", "Available memory."),
    "edge_host_load1": (("host",), "1", "1-minute load average."),
    "edge_host_load5": (("host",), "1", "5-minute load average."),
    "edge_host_load15": (("host",), "1", "15-minute load average."),
    "edge_host_filesystem_size_bytes": (("host", "mountpoint"), "bytes", "Filesystem size."),
    "edge_host_filesystem_avail_bytes": (("host", "mountpoint"), "bytes", "Filesystem free space."),
}
GAUGES: dict[str, tuple[str, str]] = {
    "link_oper_up": ("edge_link_oper_up_ratio", ""),
    "link_speed_bytes": ("edge_link_speed_bytes_per_second", ""),
    "link_optical_rx_power_dbm": ("edge_link_optical_rx_power_dbm", ""),
    "link_optical_tx_power_dbm": ("edge_link_optical_tx_power_dbm", ""),
    "link_optical_laser_bias_amperes": ("edge_link_optical_laser_bias_amperes", ""),
    "link_optical_prefec_ber": ("edge_link_optical_prefec_ber_ratio", ""),
    "link_optical_osnr_db": ("edge_link_optical_osnr_db", ""),
    "RRU.PrbTotDl": ("edge_cell_prb_utilization_ratio", "dl"),
    "RRU.PrbTotUl": ("edge_cell_prb_utilization_ratio", "ul"),
    "DRB.UEThpDl": ("edge_cell_user_throughput_bytes_per_second", "dl"),
    "DRB.UEThpUl": ("edge_cell_user_throughput_bytes_per_second", "ul"),
    "RRC.ConnMean": ("edge_cell_connected_users", ""),
    "RRC.ConnMax": ("edge_cell_connected_users_peak", ""),
    "CELL.Availability": ("edge_cell_availability_ratio", ""),
    "CELL.CoverageRatio": ("edge_cell_coverage_ratio", ""),
    "L1M.SS-RSRP": ("edge_cell_ss_rsrp_dbm", ""),
    "L1M.SS-RSRQ": ("edge_cell_ss_rsrq_db", ""),
    "L1M.SS-SINR": ("edge_cell_ss_sinr_db", ""),
    "node_memory_MemTotal_bytes": ("edge_host_memory_total_bytes", ""),
    "node_memory_MemAvailable_bytes": ("edge_host_memory_available_bytes", ""),
    "node_load1": ("edge_host_load1", ""),
    "node_load5": ("edge_host_load5", ""),
    "node_load15": ("edge_host_load15", ""),
    "node_filesystem_size_bytes": ("edge_host_filesystem_size_bytes", ""),
    "node_filesystem_avail_bytes": ("edge_host_filesystem_avail_bytes", ""),
}


# raw distribution metric (one series per bin, label `le` = its upper bound) -> histogram
# family, unit, help. A histogram per cell and window: the UE reports of the cell's newest
# period (PM files: window = the granularity period) or window (cumulative bin counters).
_HIST_HELP = (
    " Prometheus histogram of the UE reports of the cell's newest period (window = the "
    "PM granularity period): _bucket{le} = reports <= le (cumulative, bounds from TS "
    "38.133's reporting ranges, the same bounds for every cell of the family so sum by "
    "(le) aggregates cells, sites and countries), _count = all reports; no _sum (binned "
    "reports carry no exact sum). It is the distribution of one period, not a "
    "cumulative counter: use histogram_quantile() on it directly, without rate()."
)
HISTOGRAMS: dict[str, tuple[str, str, str]] = {
    "L1M.SS-RSRP.Bin": (
        "edge_cell_ss_rsrp_report_dbm",
        "dBm",
        "Distribution of UE SS-RSRP reports (L1M.SS-RSRP.BinX) in dBm." + _HIST_HELP,
    ),
    "L1M.SS-RSRQ.Bin": (
        "edge_cell_ss_rsrq_report_db",
        "dB",
        "Distribution of UE SS-RSRQ reports (L1M.SS-RSRQ.BinX) in dB." + _HIST_HELP,
    ),
    "L1M.SS-SINR.Bin": (
        "edge_cell_ss_sinr_report_db",
        "dB",
        "Distribution of UE SS-SINR reports (L1M.SS-SINR.BinX) in dB." + _HIST_HELP,
    ),
}


def _sources(table: dict[str, tuple[str, str]], fam: str) -> str:
    return ", ".join(f"`{m}`" for m, (f, _) in table.items() if f == fam)


def _has_direction(table: dict[str, tuple[str, str]], fam: str) -> bool:
    return any(d for f, d in table.values() if f == fam)


def total_base(rate_family: str) -> str | None:
    """Name (without _total) of the corrected cumulative counter behind a rate family."""
    if rate_family == "edge_host_disk_io_utilization_ratio":
        return "edge_host_disk_io_time_seconds"
    if not rate_family.endswith("_per_second"):
        return None
    return rate_family.removesuffix("_per_second").replace("_throughput_", "_")


def _families() -> list[Family]:
    out: list[Family] = []
    for name, (ent, unit, _) in _RATE_FAMILIES.items():
        base = total_base(name)
        if base is None:
            continue
        d = ("direction",) if _has_direction(RATES, name) else ()
        count_unit = "seconds" if base.endswith("_seconds") else unit.removesuffix("/s") or "1"
        out.append(
            Family(
                base + "_total",
                "counter",
                count_unit,
                (*SITE, *ent, *d),
                f"Corrected cumulative counter behind {name}: every counted delta since "
                "the series' first sample, resets and wraps already taken out (rate() and "
                "increase() work across 32-bit wraps and agent restarts); as of the last "
                "committed checkpoint, so an aggregator restart never makes it go down.",
                _sources(RATES, name),
            )
        )
        out.append(
            Family(
                base + "_created",
                "gauge",
                "seconds",
                (*SITE, *ent, *d),
                f"Creation time of {base}_total (event time of the series' first sample, Unix seconds).",
                _sources(RATES, name),
            )
        )
    for name, (ent, unit, help_) in _RATE_FAMILIES.items():
        d = ("direction",) if _has_direction(RATES, name) else ()
        out.append(
            Family(
                name,
                "gauge",
                unit,
                (*SITE, *ent, *d, "window"),
                help_ + " Exact integer counter deltas / elapsed time; resets and wraps never go negative.",
                _sources(RATES, name),
            )
        )
    for name, (ent, unit, help_) in _GAUGE_FAMILIES.items():
        d = ("direction",) if _has_direction(GAUGES, name) else ()
        out.append(
            Family(
                name,
                "gauge",
                unit,
                (*SITE, *ent, *d, "window", "stat"),
                help_ + " stat=avg|min|max over the window.",
                _sources(GAUGES, name),
            )
        )
    for raw, (name, unit, help_) in HISTOGRAMS.items():
        out.append(Family(name, "histogram", unit, (*SITE, *CELL, "window"), help_, f"`{raw}` (`le`)"))
    out += [
        Family(
            "edge_link_utilization_ratio",
            "gauge",
            "ratio",
            (*SITE, *LINK, "direction", "window"),
            "Link throughput divided by its nominal speed (average over the window).",
            "`link_*_octets`, `link_speed_bytes`",
        ),
        Family(
            "edge_cell_handover_success_ratio",
            "gauge",
            "ratio",
            (*SITE, *CELL, "window"),
            "Intra-gNB handover executions succeeded / requested in the window (absent without requests).",
            "`MM.HoExeIntraSucc`, `MM.HoExeIntraReq`",
        ),
        Family(
            "edge_cell_inter_gnb_handover_success_ratio",
            "gauge",
            "ratio",
            (*SITE, *CELL, "window"),
            "Inter-gNB handover executions succeeded / requested in the window (absent without requests).",
            "`MM.HoExeInterSucc`, `MM.HoExeInterReq`",
        ),
        Family(
            "edge_cell_rrc_setup_success_ratio",
            "gauge",
            "ratio",
            (*SITE, *CELL, "window"),
            "RRC connection establishments succeeded / attempted in the window, all causes "
            "(TS 28.554 RRC setup success rate; absent without attempts).",
            "`RRC.ConnEstabSucc`, `RRC.ConnEstabAtt`",
        ),
        Family(
            "edge_host_cpu_utilization_ratio",
            "gauge",
            "ratio",
            (*SITE, "host", "window"),
            "Share of CPU time not idle, over all CPUs of the host.",
            "`node_cpu_seconds_total`",
        ),
        Family(
            "edge_host_memory_used_ratio",
            "gauge",
            "ratio",
            (*SITE, "host", "window"),
            "1 - available / total memory (window averages).",
            "`node_memory_MemAvailable_bytes`, `node_memory_MemTotal_bytes`",
        ),
        Family(
            "edge_site_link_throughput_bytes_per_second",
            "gauge",
            "bytes/s",
            (*SITE, "direction", "window"),
            "Sum of the site's link throughputs.",
            "`link_*_octets`",
        ),
        Family(
            "edge_site_cell_throughput_bytes_per_second",
            "gauge",
            "bytes/s",
            (*SITE, "direction", "window"),
            "Sum of the site's cell PDCP throughputs.",
            "`DRB.PdcpSduVolume*`",
        ),
        Family(
            "edge_site_host_network_throughput_bytes_per_second",
            "gauge",
            "bytes/s",
            (*SITE, "direction", "window"),
            "Sum of the site's host NIC throughputs.",
            "`node_network_*_bytes_total`",
        ),
        Family(
            "edge_host_power_watts",
            "gauge",
            "watts",
            (*SITE, "host", "window"),
            "Host power from its RAPL energy counters (packages + DRAM), average over the window.",
            "`node_rapl_joules_total`",
        ),
        Family(
            "edge_site_power_watts",
            "gauge",
            "watts",
            (*SITE, "window"),
            "Sum of the site's host power (hosts with RAPL counters only).",
            "`node_rapl_joules_total`",
        ),
        Family(
            "edge_site_cell_connected_users",
            "gauge",
            "users",
            (*SITE, "window"),
            "Sum over the site's cells of mean RRC-connected users.",
            "`RRC.ConnMean`",
        ),
        Family(
            "edge_site_cell_availability_ratio",
            "gauge",
            "ratio",
            (*SITE, "window"),
            "Mean availability of the site's cells.",
            "`CELL.Availability`",
        ),
        # completeness ledger
        Family(
            "collector_site_batches_received_total",
            "counter",
            "batches",
            SITE,
            "Distinct batches (agent_id, seq) accepted from the site.",
            "ledger",
        ),
        Family(
            "collector_site_batches_duplicate_total",
            "counter",
            "batches",
            SITE,
            "Batches dropped because their (agent_id, seq) was already counted.",
            "ledger",
        ),
        Family(
            "collector_site_batches_missing",
            "gauge",
            "batches",
            SITE,
            "Seqs between an agent's first and highest seen that never arrived (gaps).",
            "ledger",
        ),
        Family(
            "collector_site_completeness_ratio",
            "gauge",
            "ratio",
            SITE,
            "Batches received / batches expected from the seq range of the site's agents.",
            "ledger",
        ),
        Family(
            "collector_site_samples_expected",
            "gauge",
            "samples",
            SITE,
            "Samples the site's live series should have delivered up to the partition's closed "
            "event time (capped at its newest sample): per series (end - first) // step + 1, "
            "step = the smallest gap seen between two of its samples; keeps growing while a "
            "series or its site is silent, until the series expires. Series with fewer than two "
            "samples are left out.",
            "ledger",
        ),
        Family(
            "collector_site_samples_completeness_ratio",
            "gauge",
            "ratio",
            SITE,
            "Distinct samples received / collector_site_samples_expected, over the same series "
            "and event time (absent while nothing is expected).",
            "ledger",
        ),
        Family(
            "collector_site_last_event_timestamp_seconds",
            "gauge",
            "seconds",
            SITE,
            "Event time of the newest sample from the site; `time() - this` is how long "
            "the site has been silent (or its clock behind).",
            "ledger",
        ),
        Family(
            "collector_site_samples_received_total",
            "counter",
            "samples",
            SITE,
            "Samples accepted into windows.",
            "ledger",
        ),
        Family(
            "collector_site_samples_dropped_total",
            "counter",
            "samples",
            (*SITE, "reason"),
            "Samples not counted, by reason: late, duplicate, dedup_expired, rejected, "
            "unknown_metric, cardinality, too_old, overlap (the last two: period samples, "
            "see docs/aggregator.md).",
            "ledger",
        ),
        Family(
            "collector_site_intervals_excluded_total",
            "counter",
            "intervals",
            (*SITE, "reason"),
            "Counter intervals left out of every window because their delta is unknowable, by "
            "reason: ambiguous_gap = the interval's length times the series' plausible rate (its "
            "link's speed, else aggregate.max_counter_rate) exceeds the counter range 2^bits, so "
            "any number of wraps could hide in it. The samples themselves still count.",
            "ledger",
        ),
        Family(
            "collector_site_window_end_timestamp_seconds",
            "gauge",
            "seconds",
            (*SITE, "window"),
            "End (exclusive, event time) of the newest closed window of each length for the "
            "site: the window the edge_* window gauges of the site show (a series silent in it "
            "still shows its own last window; aggregate.window_end_timestamps stamps every "
            "sample with its own window end).",
            "ledger",
        ),
        Family(
            "collector_site_series",
            "gauge",
            "series",
            SITE,
            "Active (not stale) series of the site.",
            "ledger",
        ),
    ]
    return out


FAMILIES: tuple[Family, ...] = tuple(_families())
BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}

_RATE_MAP = pl.DataFrame(
    {
        "metric_i": [METRIC_INDEX[m] for m in RATES],
        "family": [f for f, _ in RATES.values()],
        "direction": [d for _, d in RATES.values()],
    },
    schema={"metric_i": pl.Int16, "family": pl.String, "direction": pl.String},
)
_GAUGE_MAP = pl.DataFrame(
    {
        "metric_i": [METRIC_INDEX[m] for m in GAUGES],
        "family": [f for f, _ in GAUGES.values()],
        "direction": [d for _, d in GAUGES.values()],
    },
    schema={"metric_i": pl.Int16, "family": pl.String, "direction": pl.String},
)


@dataclass(frozen=True, slots=True)
class _Lookup:
    """The rows of a frame keyed by a small dense non-negative integer (a series id, a
    catalogue index), found by position: `pos[k]` is the row whose key is k, -1 for none;
    the last entry, -1, stands for every key outside them. `join` is the inner join on that
    key done as a gather: hash joins of a 40-site body's window rows with the series labels
    and with the family maps were about half of build_frames' CPU (docs/aggregator.md,
    Exposition)."""

    key: str
    pos: npt.NDArray[np.int64]
    rest: pl.DataFrame  # the frame without its key column, in `pos`'s row numbers

    @classmethod
    def of(cls, frame: pl.DataFrame, key: str) -> _Lookup:
        keys = frame.get_column(key).to_numpy()
        assert not len(keys) or int(keys.min()) >= 0, f"negative {key}"
        pos = np.full((int(keys.max()) + 1 if len(keys) else 0) + 1, -1, np.int64)
        pos[keys] = np.arange(len(keys))
        assert np.count_nonzero(pos >= 0) == len(keys), f"{key} is not unique"
        return cls(key, pos, frame.drop(key))

    def join(self, left: pl.DataFrame) -> pl.DataFrame:
        """`left.join(frame, on=key)` (inner, the same columns) in `left`'s row order: a
        row whose key has no row in the frame is dropped. A column name on both sides other
        than the key raises (the join would have suffixed it)."""
        k = left.get_column(self.key)
        if k.null_count():  # a null key matches nothing
            k = k.cast(pl.Int64).fill_null(-1)
        idx = k.to_numpy().astype(np.int64, copy=False)
        none = len(self.pos) - 1
        rows = self.pos[np.where((idx >= 0) & (idx < none), idx, none)]
        if len(rows) and int(rows.min()) < 0:
            keep = rows >= 0
            left, rows = left.filter(pl.Series(keep)), rows[keep]
        return left.hstack(self.rest.gather(rows))


_RATE_OF = _Lookup.of(_RATE_MAP, "metric_i")
_GAUGE_OF = _Lookup.of(_GAUGE_MAP, "metric_i")


def _window_frames(st: PartitionView, meta: _Lookup) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Latest closed windows of every series with its labels (`meta`: st.meta by sid), all
    window lengths."""
    cs, gs = [], []
    for w in st.windows_s:
        wl = pl.lit(window_label(w))
        c = st.latest_counters[w]
        if len(c):
            cs.append(meta.join(c).with_columns(window=wl, window_s=pl.lit(w)))
        g = st.latest_gauges[w]
        if len(g):
            gs.append(meta.join(g).with_columns(window=wl, window_s=pl.lit(w)))
    # Period series (PM files): their newest period, window = the period's length.
    if st.newest_period_counters is not None and len(st.newest_period_counters):
        cs.append(meta.join(st.newest_period_counters))
    if st.newest_period_gauges is not None and len(st.newest_period_gauges):
        gs.append(meta.join(st.newest_period_gauges))
    c = pl.concat(cs, how="diagonal_relaxed") if cs else pl.DataFrame()
    g = pl.concat(gs, how="diagonal_relaxed") if gs else pl.DataFrame()
    if len(c):
        c = c.with_columns(
            rate=pl.when(pl.col("dt") > 0)
            .then(pl.col("inc").cast(pl.Float64) * pl.col("scale") * NS / pl.col("dt").cast(pl.Float64))
            .otherwise(None)
        )
    if len(g):
        # State keeps raw values; `Series.scale` turns them into the catalogue unit (the cell
        # PM source sends PRB use and availability in percent with scale 0.01, UE throughput
        # in kbit/s with scale 125). Scale is >= 0 (the decoder rejects other values), so
        # min and max keep their order.
        s = pl.col("scale")
        g = g.with_columns(
            avg=pl.col("sum") * s / pl.col("cnt").cast(pl.Float64),
            min=pl.col("min") * s,
            max=pl.col("max") * s,
        )
    return c, g


def build_frames(
    states: Iterable[PartitionView], *, timestamps: bool = False, total_timestamps: bool = False
) -> dict[str, pl.DataFrame]:
    """family name -> DataFrame of its label columns (strings) and `value` (Float64).

    `timestamps`: window samples also get `timestamp_ms` = their window's end, rendered as
    the sample's timestamp (aggregate.window_end_timestamps). `total_timestamps`: corrected
    totals get the event time they are complete up to (aggregate.total_timestamps)."""
    cs, gs, ledgers, totals = [], [], [], []
    for st in states:
        meta = _Lookup.of(st.meta, "sid")
        c, g = _window_frames(st, meta)
        if len(c):
            cs.append(c)
        if len(g):
            gs.append(g)
        ledgers.append(_ledger(st))
        if st.totals is not None and len(st.totals):
            totals.append(meta.join(st.totals))
    out: dict[str, list[pl.DataFrame]] = {}

    def put(name: str, frame: pl.DataFrame) -> None:
        fam = BY_NAME[name]
        if len(frame):
            cols = [*[pl.col(lb).cast(pl.String) for lb in fam.labels], pl.col("value").cast(pl.Float64)]
            if fam.type == "histogram":
                cols.append(pl.col("le").cast(pl.Float64))
            if timestamps and "window" in fam.labels and "end" in frame.columns:
                cols.append((pl.col("end") // 1_000_000).alias("timestamp_ms"))
            elif total_timestamps and fam.type == "counter" and "at" in frame.columns:
                cols.append((pl.col("at") // 1_000_000).alias("timestamp_ms"))
            out.setdefault(name, []).append(frame.select(cols))

    if totals:
        t = _RATE_OF.join(pl.concat(totals))
        exact = pl.col("hi").cast(pl.Float64) * 4294967296.0 + pl.col("lo").cast(pl.Float64)
        t = t.with_columns(value=exact * pl.col("scale"))
        for (fam,), part in t.partition_by("family", as_dict=True).items():
            base = total_base(str(fam))
            if base is not None:
                put(base + "_total", part)
                put(base + "_created", part.with_columns(value=pl.col("created") / 1e9).drop("at"))
    ends = [f.select(*SITE, "window", "end") for f in (*cs, *gs) if "end" in f.columns]
    if ends:
        e = (
            pl.concat(ends)
            .group_by(*SITE, "window", maintain_order=True)
            .agg(value=pl.col("end").max() / 1e9)
        )
        put("collector_site_window_end_timestamp_seconds", e)

    if cs:
        c = pl.concat(cs, how="diagonal_relaxed")
        rated = c.filter(pl.col("rate").is_not_null())
        r = _RATE_OF.join(rated)
        for (fam,), part in r.partition_by("family", as_dict=True).items():
            put(str(fam), part.rename({"rate": "value"}))
        _site_sums(r, put)
        _derived_counters(c, put)
        _power(rated, put)
        _histograms(c, put)
    if gs:
        g = pl.concat(gs, how="diagonal_relaxed")
        gm = _GAUGE_OF.join(g)
        stats = pl.concat(
            [
                gm.with_columns(stat=pl.lit(s), value=pl.col(col))
                for s, col in (("avg", "avg"), ("min", "min"), ("max", "max"))
            ]
        )
        for (fam,), part in stats.partition_by("family", as_dict=True).items():
            put(str(fam), part)
        _derived_gauges(g, put)
        if cs:
            _utilization(c, g, put)
    if cs:
        _availability(c, g if gs else pl.DataFrame(), put)
    led = pl.concat([x for x in ledgers if len(x)]) if any(len(x) for x in ledgers) else None
    if led is not None:
        for (fam,), part in led.partition_by("family", as_dict=True).items():
            put(str(fam), part)
    return {k: pl.concat(v, how="diagonal_relaxed") for k, v in out.items()}


def _site_sums(r: pl.DataFrame, put: Put) -> None:
    sums = {
        "edge_link_throughput_bytes_per_second": "edge_site_link_throughput_bytes_per_second",
        "edge_cell_throughput_bytes_per_second": "edge_site_cell_throughput_bytes_per_second",
        "edge_host_network_throughput_bytes_per_second": "edge_site_host_network_throughput_bytes_per_second",
    }
    part = r.filter(pl.col("family").is_in(list(sums)))
    # A gNB-level object (GNBCUUPFunction=1) measures its cells' traffic again: cells only.
    part = part.filter(
        ~(
            (pl.col("family") == "edge_cell_throughput_bytes_per_second")
            & (pl.col("function").fill_null("") != "")
        )
    )
    if not len(part):
        return
    # Roll-ups are sums of rates (float64): a sum of byte counts over many 402 Tb/s links
    # would pass 2^64, rates of even 10^6 such links stay far inside float64's range.
    agg = part.group_by(
        "family", "site", "country", "region", "direction", "window", maintain_order=True
    ).agg(pl.col("rate").sum().alias("value"))
    for (fam,), p in agg.partition_by("family", as_dict=True).items():
        put(sums[str(fam)], p)


_CELL_KEYS = ["site_i", "site", "country", "region", "cell", "gnb", "function", "window"]


def _derived_counters(c: pl.DataFrame, put: Put) -> None:
    keys = _CELL_KEYS
    for family, att, ok in (
        ("edge_cell_handover_success_ratio", "MM.HoExeIntraReq", "MM.HoExeIntraSucc"),
        ("edge_cell_inter_gnb_handover_success_ratio", "MM.HoExeInterReq", "MM.HoExeInterSucc"),
        ("edge_cell_rrc_setup_success_ratio", "RRC.ConnEstabAtt", "RRC.ConnEstabSucc"),
    ):
        req = c.filter(pl.col("metric_i") == METRIC_INDEX[att]).select(*keys, req=pl.col("inc"))
        succ = c.filter(pl.col("metric_i") == METRIC_INDEX[ok]).select(*keys, succ=pl.col("inc"))
        ratio = req.join(succ, on=keys, maintain_order="left").filter(pl.col("req") > 0)
        put(
            family,
            ratio.with_columns(
                value=(pl.col("succ").cast(pl.Float64) / pl.col("req").cast(pl.Float64)).clip(0.0, 1.0)
            ),
        )
    cpu = c.filter((pl.col("metric_i") == METRIC_INDEX["node_cpu_seconds_total"]) & (pl.col("dt") > 0))
    if len(cpu):
        hk = ["site_i", "site", "country", "region", "host", "window"]
        secs = pl.col("inc").cast(pl.Float64) * pl.col("scale")
        agg = cpu.group_by(hk, maintain_order=True).agg(
            total=secs.sum(), idle=secs.filter(pl.col("mode") == "idle").sum()
        )
        put(
            "edge_host_cpu_utilization_ratio",
            agg.filter(pl.col("total") > 0).with_columns(
                value=(1.0 - pl.col("idle") / pl.col("total")).clip(0.0, 1.0)
            ),
        )


_HIST_IDS = {METRIC_INDEX[m]: fam for m, (fam, _, _) in HISTOGRAMS.items()}


def _histograms(c: pl.DataFrame, put: Put) -> None:
    """Bin counts of a cell's distribution -> per-bucket rows (`le`, value) of its histogram
    family; collector/exposition/histogram.py makes them cumulative."""
    h = c.filter(pl.col("metric_i").is_in(list(_HIST_IDS)))
    if not len(h):
        return
    keys = [*_CELL_KEYS, "metric_i"]
    # One period per histogram: its bins' newest end. A bin the newest period did not report
    # counts 0 there, never with an older period's count.
    h = h.filter(pl.col("end") == pl.col("end").max().over(keys))
    # the decoder rejected series whose le is not a number or +Inf (registry.is_bound)
    le = (
        pl.when(pl.col("le") == "+Inf")
        .then(pl.lit(float("inf")))
        .otherwise(pl.col("le").cast(pl.Float64, strict=False))
    )
    h = h.with_columns(le=le, value=pl.col("inc").cast(pl.Float64) * pl.col("scale"))
    for (m,), part in h.partition_by("metric_i", as_dict=True).items():
        put(_HIST_IDS[int(m)], part)


def _power(rated: pl.DataFrame, put: Put) -> None:
    """Watts = joules per second of a host's RAPL zones, summed per host and per site."""
    e = rated.filter(pl.col("metric_i") == METRIC_INDEX["node_rapl_joules_total"])
    if not len(e):
        return
    hosts = e.group_by("site", "country", "region", "host", "window", maintain_order=True).agg(
        value=pl.col("rate").sum()
    )
    put("edge_host_power_watts", hosts)
    put(
        "edge_site_power_watts",
        hosts.group_by("site", "country", "region", "window", maintain_order=True).agg(
            value=pl.col("value").sum()
        ),
    )


def _availability(c: pl.DataFrame, g: pl.DataFrame, put: Put) -> None:
    """TS 28.554 availability = 1 - unavailable seconds / elapsed seconds of the window (a
    cell that also reports the vendor's CELL.Availability keeps that one: one series each)."""
    un = c.filter((pl.col("metric_i") == METRIC_INDEX["RRU.CellUnavailableTime"]) & (pl.col("dt") > 0))
    if len(un) and len(g):
        vendor = g.filter(pl.col("metric_i") == METRIC_INDEX["CELL.Availability"]).select(_CELL_KEYS)
        un = un.join(vendor, on=_CELL_KEYS, how="anti", maintain_order="left")
    if len(un):
        put(
            "edge_cell_availability_ratio",
            un.with_columns(
                stat=pl.lit("avg"),
                value=(
                    1.0
                    - pl.col("inc").cast(pl.Float64) * pl.col("scale") * NS / pl.col("dt").cast(pl.Float64)
                ).clip(0.0, 1.0),
            ),
        )


def _prb_from_counts(g: pl.DataFrame, put: Put) -> None:
    """PRB utilisation = mean used / mean available PRBs, for cells without RRU.PrbTot*."""
    keys = _CELL_KEYS
    for d, used, avail, tot in (
        ("dl", "RRU.PrbUsedDl", "RRU.PrbAvailDl", "RRU.PrbTotDl"),
        ("ul", "RRU.PrbUsedUl", "RRU.PrbAvailUl", "RRU.PrbTotUl"),
    ):
        u = g.filter(pl.col("metric_i") == METRIC_INDEX[used]).select(*keys, u=pl.col("avg"))
        a = g.filter(pl.col("metric_i") == METRIC_INDEX[avail]).select(*keys, a=pl.col("avg"))
        t = g.filter(pl.col("metric_i") == METRIC_INDEX[tot]).select(keys)
        r = (
            u.join(a, on=keys, maintain_order="left")
            .filter(pl.col("a") > 0)
            .join(t, on=keys, how="anti", maintain_order="left")
        )
        put(
            "edge_cell_prb_utilization_ratio",
            r.with_columns(
                direction=pl.lit(d), stat=pl.lit("avg"), value=(pl.col("u") / pl.col("a")).clip(0.0, 1.0)
            ),
        )


def _derived_gauges(g: pl.DataFrame, put: Put) -> None:
    hk = ["site_i", "site", "country", "region", "host", "window"]
    tot = g.filter(pl.col("metric_i") == METRIC_INDEX["node_memory_MemTotal_bytes"]).select(
        *hk, tot=pl.col("avg")
    )
    av = g.filter(pl.col("metric_i") == METRIC_INDEX["node_memory_MemAvailable_bytes"]).select(
        *hk, av=pl.col("avg")
    )
    mem = tot.join(av, on=hk, maintain_order="left").filter(pl.col("tot") > 0)
    put(
        "edge_host_memory_used_ratio",
        mem.with_columns(value=(1.0 - pl.col("av") / pl.col("tot")).clip(0.0, 1.0)),
    )
    cells = g.filter(pl.col("metric_i") == METRIC_INDEX["RRC.ConnMean"])
    put(
        "edge_site_cell_connected_users",
        cells.group_by("site", "country", "region", "window", maintain_order=True).agg(
            value=pl.col("avg").sum()
        ),
    )
    _prb_from_counts(g, put)
    avail = g.filter(pl.col("metric_i") == METRIC_INDEX["CELL.Availability"])
    put(
        "edge_site_cell_availability_ratio",
        avail.group_by("site", "country", "region", "window", maintain_order=True).agg(
            value=pl.col("avg").mean()
        ),
    )


def _utilization(c: pl.DataFrame, g: pl.DataFrame, put: Put) -> None:
    keys = ["site_i", "site", "country", "region", "link", "media", "window"]
    speed = g.filter(pl.col("metric_i") == METRIC_INDEX["link_speed_bytes"]).select(
        *keys, speed=pl.col("avg")
    )
    thr = c.filter(
        pl.col("metric_i").is_in([METRIC_INDEX["link_in_octets"], METRIC_INDEX["link_out_octets"]])
        & pl.col("rate").is_not_null()
    )
    thr = thr.with_columns(
        direction=pl.when(pl.col("metric_i") == METRIC_INDEX["link_in_octets"])
        .then(pl.lit("in"))
        .otherwise(pl.lit("out"))
    )
    u = thr.join(speed, on=keys, maintain_order="left").filter(pl.col("speed") > 0)
    put("edge_link_utilization_ratio", u.with_columns(value=pl.col("rate") / pl.col("speed")))


def _ledger(st: PartitionView) -> pl.DataFrame:
    rows: dict[str, list] = {"family": [], "site": [], "country": [], "region": [], "reason": [], "value": []}

    def add(fam: str, s: SiteLedger, value: float, reason: str = "") -> None:
        rows["family"].append(fam)
        rows["site"].append(s.site_id)
        rows["country"].append(s.country)
        rows["region"].append(s.region)
        rows["reason"].append(reason)
        rows["value"].append(float(value))

    for s in st.sites:
        add("collector_site_batches_received_total", s, s.batches)
        add("collector_site_batches_duplicate_total", s, s.dup_batches)
        add("collector_site_batches_missing", s, max(0, s.expected - s.received))
        if s.expected:
            add("collector_site_completeness_ratio", s, min(1.0, s.received / s.expected))
        add("collector_site_samples_expected", s, s.samples_expected)
        if s.samples_expected:
            add(
                "collector_site_samples_completeness_ratio",
                s,
                min(1.0, s.samples_counted / s.samples_expected),
            )
        if s.last_event_ns is not None:
            add("collector_site_last_event_timestamp_seconds", s, s.last_event_ns / 1e9)
        add("collector_site_samples_received_total", s, s.samples)
        for reason, n in s.dropped.items():
            add("collector_site_samples_dropped_total", s, n, reason)
        for reason, n in s.excluded.items():
            add("collector_site_intervals_excluded_total", s, n, reason)
        add("collector_site_series", s, s.series)
    return pl.DataFrame(
        rows,
        schema={
            "family": pl.String,
            "site": pl.String,
            "country": pl.String,
            "region": pl.String,
            "reason": pl.String,
            "value": pl.Float64,
        },
    )


assert set(LABEL_NAMES) >= {lb for f in FAMILIES for lb in f.labels} - {
    "site",
    "country",
    "region",
    "window",
    "stat",
    "direction",
    "reason",
}
