"""The metric catalogue: raw metric names agents send and the aggregator understands.

This is the semantic half of the wire contract (the .proto is the syntactic half). An agent
may send other metrics (they pass validation and are stored in Kafka) but the aggregator
only derives outputs from the ones listed here. Units are the unit *after* `Series.scale`.

Entity labels say which labels identify the thing a series measures; the aggregator keys
its state by (site, metric, entity labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    COUNTER = 1
    GAUGE = 2


class Domain(Enum):
    LINK = "link"
    CELL = "cell"
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    domain: Domain
    kind: Kind
    unit: str
    labels: tuple[str, ...]
    help: str


def _m(name: str, domain: Domain, kind: Kind, unit: str, labels: tuple[str, ...], help: str) -> MetricSpec:
    return MetricSpec(name, domain, kind, unit, labels, help)


COUNTER, GAUGE = Kind.COUNTER, Kind.GAUGE
LINK, CELL, SERVER = Domain.LINK, Domain.CELL, Domain.SERVER
# Entity labels per domain. `link`: interface or port name; `media`: "optical" | "copper".
LINK_LABELS = ("link", "media")
# `cell`: NR cell (the NRCellDU/NRCellCU id of its DN), `gnb`: gNB (ManagedElement id);
# `function`: a gNB-level object (e.g. "GNBCUUPFunction=1") measured as a whole, with no
# cell label; empty for cells. Counters here may also be sent as DELTA (per-period counts).
CELL_LABELS = ("cell", "gnb", "function")
HOST = ("host",)

METRICS: tuple[MetricSpec, ...] = (
    # --- link: network and optical-fiber links -------------------------------------------
    _m("link_in_octets", LINK, COUNTER, "bytes", LINK_LABELS, "Octets received (ifHCInOctets)."),
    _m("link_out_octets", LINK, COUNTER, "bytes", LINK_LABELS, "Octets sent (ifHCOutOctets)."),
    _m("link_in_packets", LINK, COUNTER, "packets", LINK_LABELS, "Packets received."),
    _m("link_out_packets", LINK, COUNTER, "packets", LINK_LABELS, "Packets sent."),
    _m("link_in_errors", LINK, COUNTER, "packets", LINK_LABELS, "Inbound packets with errors."),
    _m("link_out_errors", LINK, COUNTER, "packets", LINK_LABELS, "Outbound packets with errors."),
    _m("link_in_discards", LINK, COUNTER, "packets", LINK_LABELS, "Inbound packets discarded."),
    _m("link_out_discards", LINK, COUNTER, "packets", LINK_LABELS, "Outbound packets discarded."),
    _m("link_oper_up", LINK, GAUGE, "bool", LINK_LABELS, "1 when ifOperStatus is up, else 0."),
    _m(
        "link_speed_bytes",
        LINK,
        GAUGE,
        "bytes_per_second",
        LINK_LABELS,
        "Nominal link speed in bytes per second (ifHighSpeed * 125000).",
    ),
    _m("link_optical_rx_power_dbm", LINK, GAUGE, "dBm", LINK_LABELS, "Optical receive power."),
    _m("link_optical_tx_power_dbm", LINK, GAUGE, "dBm", LINK_LABELS, "Optical transmit power."),
    _m("link_optical_laser_bias_amperes", LINK, GAUGE, "amperes", LINK_LABELS, "Laser bias current."),
    _m("link_optical_prefec_ber", LINK, GAUGE, "ratio", LINK_LABELS, "Pre-FEC bit error ratio."),
    _m("link_optical_osnr_db", LINK, GAUGE, "dB", LINK_LABELS, "Optical signal-to-noise ratio."),
    # --- cell: 5G NR cell KPIs, 3GPP TS 28.552 measurement names ---------------------------
    _m("RRU.PrbTotDl", CELL, GAUGE, "ratio", CELL_LABELS, "DL PRB utilisation (0..1)."),
    _m("RRU.PrbTotUl", CELL, GAUGE, "ratio", CELL_LABELS, "UL PRB utilisation (0..1)."),
    _m("RRU.PrbUsedDl", CELL, GAUGE, "prb", CELL_LABELS, "Mean DL PRBs used."),
    _m("RRU.PrbUsedUl", CELL, GAUGE, "prb", CELL_LABELS, "Mean UL PRBs used."),
    _m("RRU.PrbAvailDl", CELL, GAUGE, "prb", CELL_LABELS, "Mean DL PRBs available."),
    _m("RRU.PrbAvailUl", CELL, GAUGE, "prb", CELL_LABELS, "Mean UL PRBs available."),
    _m("DRB.UEThpDl", CELL, GAUGE, "bytes_per_second", CELL_LABELS, "Average DL UE throughput."),
    _m("DRB.UEThpUl", CELL, GAUGE, "bytes_per_second", CELL_LABELS, "Average UL UE throughput."),
    _m("DRB.PdcpSduVolumeDL", CELL, COUNTER, "bytes", CELL_LABELS, "DL PDCP SDU data volume."),
    _m("DRB.PdcpSduVolumeUL", CELL, COUNTER, "bytes", CELL_LABELS, "UL PDCP SDU data volume."),
    _m("RRC.ConnMean", CELL, GAUGE, "users", CELL_LABELS, "Mean number of RRC-connected users."),
    _m("RRC.ConnMax", CELL, GAUGE, "users", CELL_LABELS, "Max number of RRC-connected users."),
    _m(
        "RRC.ConnEstabAtt",
        CELL,
        COUNTER,
        "attempts",
        CELL_LABELS,
        "RRC connection establishment attempts (all causes).",
    ),
    _m(
        "RRC.ConnEstabSucc",
        CELL,
        COUNTER,
        "attempts",
        CELL_LABELS,
        "Successful RRC connection establishments (all causes).",
    ),
    _m(
        "MM.HoExeIntraReq", CELL, COUNTER, "attempts", CELL_LABELS, "Intra-gNB handover executions requested."
    ),
    _m(
        "MM.HoExeIntraSucc",
        CELL,
        COUNTER,
        "attempts",
        CELL_LABELS,
        "Intra-gNB handover executions succeeded.",
    ),
    _m(
        "MM.HoExeInterReq", CELL, COUNTER, "attempts", CELL_LABELS, "Inter-gNB handover executions requested."
    ),
    _m(
        "MM.HoExeInterSucc",
        CELL,
        COUNTER,
        "attempts",
        CELL_LABELS,
        "Inter-gNB handover executions succeeded.",
    ),
    _m(
        "RRU.CellUnavailableTime",
        CELL,
        COUNTER,
        "seconds",
        CELL_LABELS,
        "Time the cell was unavailable (all causes); vendor name, see docs/agent.md.",
    ),
    _m(
        "CELL.Availability",
        CELL,
        GAUGE,
        "ratio",
        CELL_LABELS,
        "Cell availability (0..1), vendor-reported (not a 3GPP name).",
    ),
    _m(
        "CELL.CoverageRatio",
        CELL,
        GAUGE,
        "ratio",
        CELL_LABELS,
        "Share of the cell's target area with usable 5G coverage (0..1).",
    ),
    _m("L1M.SS-RSRP", CELL, GAUGE, "dBm", CELL_LABELS, "Mean SS reference signal received power."),
    _m("L1M.SS-RSRQ", CELL, GAUGE, "dB", CELL_LABELS, "Mean SS reference signal received quality."),
    _m("L1M.SS-SINR", CELL, GAUGE, "dB", CELL_LABELS, "Mean SS signal to interference+noise ratio."),
    # --- server: host health, node_exporter names ----------------------------------------
    _m(
        "node_cpu_seconds_total",
        SERVER,
        COUNTER,
        "seconds",
        ("host", "cpu", "mode"),
        "CPU time per mode (raw value in USER_HZ ticks or ns, see Series.scale).",
    ),
    _m("node_memory_MemTotal_bytes", SERVER, GAUGE, "bytes", HOST, "Total memory."),
    _m("node_memory_MemAvailable_bytes", SERVER, GAUGE, "bytes", HOST, "Available memory."),
    _m("node_load1", SERVER, GAUGE, "1", HOST, "1-minute load average."),
    _m("node_load5", SERVER, GAUGE, "1", HOST, "5-minute load average."),
    _m("node_load15", SERVER, GAUGE, "1", HOST, "15-minute load average."),
    _m("node_disk_read_bytes_total", SERVER, COUNTER, "bytes", ("host", "device"), "Bytes read."),
    _m("node_disk_written_bytes_total", SERVER, COUNTER, "bytes", ("host", "device"), "Bytes written."),
    _m(
        "node_disk_reads_completed_total",
        SERVER,
        COUNTER,
        "operations",
        ("host", "device"),
        "Reads completed.",
    ),
    _m(
        "node_disk_writes_completed_total",
        SERVER,
        COUNTER,
        "operations",
        ("host", "device"),
        "Writes completed.",
    ),
    _m(
        "node_disk_io_time_seconds_total",
        SERVER,
        COUNTER,
        "seconds",
        ("host", "device"),
        "Time the device was busy with I/O (raw value in ms, see Series.scale).",
    ),
    _m("node_filesystem_size_bytes", SERVER, GAUGE, "bytes", ("host", "mountpoint"), "FS size."),
    _m("node_filesystem_avail_bytes", SERVER, GAUGE, "bytes", ("host", "mountpoint"), "FS free."),
    _m("node_network_receive_bytes_total", SERVER, COUNTER, "bytes", ("host", "device"), "NIC rx bytes."),
    _m("node_network_transmit_bytes_total", SERVER, COUNTER, "bytes", ("host", "device"), "NIC tx bytes."),
    _m(
        "node_network_receive_packets_total",
        SERVER,
        COUNTER,
        "packets",
        ("host", "device"),
        "NIC rx packets.",
    ),
    _m(
        "node_network_transmit_packets_total",
        SERVER,
        COUNTER,
        "packets",
        ("host", "device"),
        "NIC tx packets.",
    ),
    _m("node_network_receive_errs_total", SERVER, COUNTER, "packets", ("host", "device"), "NIC rx errors."),
    _m("node_network_transmit_errs_total", SERVER, COUNTER, "packets", ("host", "device"), "NIC tx errors."),
    _m("node_network_receive_drop_total", SERVER, COUNTER, "packets", ("host", "device"), "NIC rx drops."),
    _m("node_network_transmit_drop_total", SERVER, COUNTER, "packets", ("host", "device"), "NIC tx drops."),
    _m(
        "node_rapl_joules_total",
        SERVER,
        COUNTER,
        "joules",
        ("host", "device"),
        "RAPL energy per zone (device = package-N or package-N-dram); raw value in microjoules "
        "(see Series.scale), unwrapped at max_energy_range_uj by the agent.",
    ),
    # --- cell distributions (appended: aggregator checkpoints store a metric by its index
    # in this tuple, so new metrics go at the end, never in between) ----------------------
    # Distributions: one series per bin, `le` = the bin's upper bound in dBm / dB ("+Inf" for
    # the open top bin), counts of UE reports (sent as DELTA per period, or as cumulative
    # counters); the aggregator renders them as Prometheus histograms (docs/metrics.md).
    _m(
        "L1M.SS-RSRP.Bin",
        CELL,
        COUNTER,
        "reports",
        (*CELL_LABELS, "le"),
        "UE SS-RSRP reports in the bin up to `le` dBm (TS 28.552 L1M.SS-RSRP.BinX).",
    ),
    _m(
        "L1M.SS-RSRQ.Bin",
        CELL,
        COUNTER,
        "reports",
        (*CELL_LABELS, "le"),
        "UE SS-RSRQ reports in the bin up to `le` dB.",
    ),
    _m(
        "L1M.SS-SINR.Bin",
        CELL,
        COUNTER,
        "reports",
        (*CELL_LABELS, "le"),
        "UE SS-SINR reports in the bin up to `le` dB.",
    ),
)

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}


def unit_of(name: str) -> str:
    """The catalogue unit of metric `name` (after `Series.scale`). Sources and the simulator
    take units from here, never declare them again; an unknown name is a KeyError (a bug)."""
    return BY_NAME[name].unit


def metric_names(domain: Domain, kind: Kind, prefix: str = "") -> tuple[str, ...]:
    """Names of the domain's metrics of one kind (starting with `prefix`), in catalogue order."""
    return tuple(
        m.name for m in METRICS if m.domain is domain and m.kind is kind and m.name.startswith(prefix)
    )


# ISO 3166-1 alpha-2 codes the ingest accepts (the full list, so a new market is not a release).
COUNTRIES: frozenset[str] = frozenset(
    [
        "AD",
        "AE",
        "AF",
        "AG",
        "AI",
        "AL",
        "AM",
        "AO",
        "AQ",
        "AR",
        "AS",
        "AT",
        "AU",
        "AW",
        "AX",
        "AZ",
        "BA",
        "BB",
        "BD",
        "BE",
        "BF",
        "BG",
        "BH",
        "BI",
        "BJ",
        "BL",
        "BM",
        "BN",
        "BO",
        "BQ",
        "BR",
        "BS",
        "BT",
        "BV",
        "BW",
        "BY",
        "BZ",
        "CA",
        "CC",
        "CD",
        "CF",
        "CG",
        "CH",
        "CI",
        "CK",
        "CL",
        "CM",
        "CN",
        "CO",
        "CR",
        "CU",
        "CV",
        "CW",
        "CX",
        "CY",
        "CZ",
        "DE",
        "DJ",
        "DK",
        "DM",
        "DO",
        "DZ",
        "EC",
        "EE",
        "EG",
        "EH",
        "ER",
        "ES",
        "ET",
        "FI",
        "FJ",
        "FK",
        "FM",
        "FO",
        "FR",
        "GA",
        "GB",
        "GD",
        "GE",
        "GF",
        "GG",
        "GH",
        "GI",
        "GL",
        "GM",
        "GN",
        "GP",
        "GQ",
        "GR",
        "GS",
        "GT",
        "GU",
        "GW",
        "GY",
        "HK",
        "HM",
        "HN",
        "HR",
        "HT",
        "HU",
        "ID",
        "IE",
        "IL",
        "IM",
        "IN",
        "IO",
        "IQ",
        "IR",
        "IS",
        "IT",
        "JE",
        "JM",
        "JO",
        "JP",
        "KE",
        "KG",
        "KH",
        "KI",
        "KM",
        "KN",
        "KP",
        "KR",
        "KW",
        "KY",
        "KZ",
        "LA",
        "LB",
        "LC",
        "LI",
        "LK",
        "LR",
        "LS",
        "LT",
        "LU",
        "LV",
        "LY",
        "MA",
        "MC",
        "MD",
        "ME",
        "MF",
        "MG",
        "MH",
        "MK",
        "ML",
        "MM",
        "MN",
        "MO",
        "MP",
        "MQ",
        "MR",
        "MS",
        "MT",
        "MU",
        "MV",
        "MW",
        "MX",
        "MY",
        "MZ",
        "NA",
        "NC",
        "NE",
        "NF",
        "NG",
        "NI",
        "NL",
        "NO",
        "NP",
        "NR",
        "NU",
        "NZ",
        "OM",
        "PA",
        "PE",
        "PF",
        "PG",
        "PH",
        "PK",
        "PL",
        "PM",
        "PN",
        "PR",
        "PS",
        "PT",
        "PW",
        "PY",
        "QA",
        "RE",
        "RO",
        "RS",
        "RU",
        "RW",
        "SA",
        "SB",
        "SC",
        "SD",
        "SE",
        "SG",
        "SH",
        "SI",
        "SJ",
        "SK",
        "SL",
        "SM",
        "SN",
        "SO",
        "SR",
        "SS",
        "ST",
        "SV",
        "SX",
        "SY",
        "SZ",
        "TC",
        "TD",
        "TF",
        "TG",
        "TH",
        "TJ",
        "TK",
        "TL",
        "TM",
        "TN",
        "TO",
        "TR",
        "TT",
        "TV",
        "TW",
        "TZ",
        "UA",
        "UG",
        "UM",
        "US",
        "UY",
        "UZ",
        "VA",
        "VC",
        "VE",
        "VG",
        "VI",
        "VN",
        "VU",
        "WF",
        "WS",
        "YE",
        "YT",
        "ZA",
        "ZM",
        "ZW",
    ]
)

# Positions in METRICS by name (the aggregator's metric index), and every entity label name
# of the catalogue in one sorted tuple (the label columns of the aggregator's series table).
METRIC_INDEX: dict[str, int] = {m.name: i for i, m in enumerate(METRICS)}
LABEL_NAMES: tuple[str, ...] = tuple(sorted({n for m in METRICS for n in m.labels}))
