"""3GPP TS 32.435 PM files -> validated period values: the cell source's parser.

Sits between a PM file on disk and collector/agent/sources/cell.py, which turns the values
into DELTA / period-gauge samples and owns the file lifecycle. What it guarantees:

* **Safe XML**: parsed by defusedxml with DTDs, entities and external references forbidden,
  whatever the file's encoding (a UTF-16 file cannot smuggle a `<!DOCTYPE` past a byte
  search, as it could before). A file that is not well-formed, or uses those features, is
  broken: `PmFileError` naming the file (the source moves it to failed/).
* **Both encodings** of TS 32.435: `<measTypes>a b</measTypes>` + `<measResults>1 2
  </measResults>`, and `<measType p="1">a</measType>` + `<r p="1">1</r>`.
* **Per-value validation**: a bad value rejects that value only, by reason (REASONS); the
  file's other values go through. NIL (or an empty result) means "not available in this
  period": no sample, counted as `nil`.
* **Object model**: a measured object whose DN ends in NRCellDU=x or NRCellCU=x is cell x of
  gNB g (g = the ManagedElement id); any other object (GNBCUUPFunction=1, GNBDUFunction=1,
  GNBCUCPFunction=1, ...) is a gNB-level function: labels {gnb, function="GNBCUUPFunction=1"},
  never a cell label.
* **suspect**: values of a measValue with `<suspect>true</suspect>` are kept and sent, and
  counted as suspect (the agent's /metrics) and named in the file's log line.
* **TS 28.552 names** (MEASUREMENTS): sub-counters (`RRC.ConnEstabAtt.mo-Data`,
  `DRB.PdcpSduVolumeDL.<5QI>`) of a measurement that has them are summed into it; when a
  file carries the measurement's own total too, the total is used and the sub-counters are
  ignored (never both).
* **Distributions** (`L1M.SS-RSRP.Bin<X>`, `L1M.SS-RSRQ.Bin<X>`, `L1M.SS-SINR.Bin<X>`): the
  count of UE reports in bin X of the period. TS 28.552 (5.1.1.22.1) leaves the bins to the
  implementation; bin X is read as reported value X of TS 38.133's mapping tables
  (SS-RSRP 10.1.6.1: RSRP_0 < -156 dBm, then 1 dB steps, RSRP_126 >= -31 dBm; SS-RSRQ
  10.1.11.1: < -43 dB, 0.5 dB steps, >= 20 dB; SS-SINR 10.1.16.1: < -23 dB, 0.5 dB steps,
  >= 40 dB). Each bin travels as a DELTA count of the series `<name>.Bin` with the label
  `le` = the bin's upper bound (`+Inf` for the last), so the aggregator renders Prometheus
  histogram buckets; per-SSB sub-counters (`.Bin<X>.<ssb>`) are summed into the cell's bin.
"""

from __future__ import annotations

import datetime as dt
import gzip
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from collector import catalog
from collector.errors import CollectorError

MAX_FILE_BYTES = 64 * 1024 * 1024
U64 = 1 << 64


class PmFileError(CollectorError):
    """A PM file that cannot be read as a TS 32.435 measCollecFile; names the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"PM file {self.path}: {problem}")


@dataclass(frozen=True, slots=True)
class PmSpec:
    """How a TS 28.552 measurement becomes a catalogue series."""

    metric: str  # catalogue name (collector/catalog.py)
    counter: bool  # a count over the period (DELTA); else a statistic (period gauge)
    unit: str  # catalogue unit after `scale` (collector/catalog.py's)
    scale: float  # raw value * scale = value in `unit` (0 means 1)
    raw_unit: str  # the unit TS 28.552 gives the raw value
    lo: float | None = 0.0  # smallest valid raw value (None: no bound)
    hi: float | None = None  # largest valid raw value
    subcounters: bool = False  # `<name>.<sub>` values are summed into `metric`
    standard: str = "TS 28.552"  # where the name is defined; "vendor" for non-3GPP inputs
    # distributions: (upper bound of bin 0, bin width, number of bins); the last bin is open
    bins: tuple[float, float, int] | None = None

    def bin_le(self, x: int) -> str | None:
        """The `le` label of bin x (its upper bound, "+Inf" for the last); None outside."""
        assert self.bins is not None
        first, step, n = self.bins
        if not 0 <= x < n:
            return None
        return "+Inf" if x == n - 1 else f"{first + step * x:g}"


def _catalogued(metric: str, counter: bool) -> str:
    """`metric`'s catalogue unit, checked to be of the kind the table says (a bug otherwise)."""
    spec = catalog.BY_NAME[metric]
    if (spec.kind is catalog.Kind.COUNTER) != counter:
        raise AssertionError(f"{metric} is a {spec.kind.name.lower()} in collector/catalog.py")
    return spec.unit


def _c(metric: str, scale: float, raw: str, *, subs: bool = False, std: str = "TS 28.552") -> PmSpec:
    return PmSpec(metric, True, _catalogued(metric, True), scale, raw, 0.0, None, subs, std)


def _g(
    metric: str,
    scale: float,
    raw: str,
    *,
    lo: float | None = 0.0,
    hi: float | None = None,
    std: str = "TS 28.552",
) -> PmSpec:
    return PmSpec(metric, False, _catalogued(metric, False), scale, raw, lo, hi, False, std)


def _bins(metric: str, first: float, step: float, n: int, table: str, std: str = "TS 28.552") -> PmSpec:
    return PmSpec(
        metric,
        True,
        _catalogued(metric, True),
        0.0,
        f"UE reports in bin X (TS 38.133 {table})",
        0.0,
        None,
        True,
        std,
        (first, step, n),
    )


# Accepted measurements: TS 28.552 name -> catalogue series. docs/agent.md's table is
# generated from this (scripts/gen_metrics_doc.py).
MEASUREMENTS: dict[str, PmSpec] = {
    # radio resource utilisation (5.1.1.2)
    "RRU.PrbTotDl": _g("RRU.PrbTotDl", 0.01, "%", hi=100.0),
    "RRU.PrbTotUl": _g("RRU.PrbTotUl", 0.01, "%", hi=100.0),
    "RRU.PrbUsedDl": _g("RRU.PrbUsedDl", 0.0, "PRBs (mean)"),
    "RRU.PrbUsedUl": _g("RRU.PrbUsedUl", 0.0, "PRBs (mean)"),
    "RRU.PrbAvailDl": _g("RRU.PrbAvailDl", 0.0, "PRBs (mean)"),
    "RRU.PrbAvailUl": _g("RRU.PrbAvailUl", 0.0, "PRBs (mean)"),
    # UE throughput and PDCP data volume (5.1.1.3, 5.1.2.1)
    "DRB.UEThpDl": _g("DRB.UEThpDl", 125.0, "kbit/s"),
    "DRB.UEThpUl": _g("DRB.UEThpUl", 125.0, "kbit/s"),
    "DRB.PdcpSduVolumeDL": _c("DRB.PdcpSduVolumeDL", 125_000.0, "Mbit", subs=True),
    "DRB.PdcpSduVolumeUL": _c("DRB.PdcpSduVolumeUL", 125_000.0, "Mbit", subs=True),
    # RRC connections (5.1.1.4, 5.1.1.15)
    "RRC.ConnMean": _g("RRC.ConnMean", 0.0, "UEs (mean)"),
    "RRC.ConnMax": _g("RRC.ConnMax", 0.0, "UEs (max)"),
    "RRC.ConnEstabAtt": _c("RRC.ConnEstabAtt", 0.0, "count", subs=True),
    "RRC.ConnEstabSucc": _c("RRC.ConnEstabSucc", 0.0, "count", subs=True),
    # mobility (5.1.1.6): intra-gNB and inter-gNB handover executions
    "MM.HoExeIntraReq": _c("MM.HoExeIntraReq", 0.0, "count", subs=True),
    "MM.HoExeIntraSucc": _c("MM.HoExeIntraSucc", 0.0, "count", subs=True),
    "MM.HoExeInterReq": _c("MM.HoExeInterReq", 0.0, "count", subs=True),
    "MM.HoExeInterSucc": _c("MM.HoExeInterSucc", 0.0, "count", subs=True),
    # SS radio quality means (vendor-reported cell means of the L1M measurements)
    "L1M.SS-RSRP": _g("L1M.SS-RSRP", 0.0, "dBm", lo=None),
    "L1M.SS-RSRQ": _g("L1M.SS-RSRQ", 0.0, "dB", lo=None),
    "L1M.SS-SINR": _g("L1M.SS-SINR", 0.0, "dB", lo=None),
    # SS radio quality distributions (5.1.1.22.1): `<name>.Bin<X>`, bin X = TS 38.133 reported
    # value X; sent as `<name>.Bin` DELTA counts with `le` = the bin's upper bound
    "L1M.SS-RSRP.Bin": _bins("L1M.SS-RSRP.Bin", -156.0, 1.0, 127, "10.1.6.1"),
    "L1M.SS-RSRQ.Bin": _bins(
        "L1M.SS-RSRQ.Bin", -43.0, 0.5, 128, "10.1.11.1", std="TS 28.552 pattern (SS-RSRQ): vendor"
    ),
    "L1M.SS-SINR.Bin": _bins(
        "L1M.SS-SINR.Bin", -23.0, 0.5, 128, "10.1.16.1", std="TS 28.552 pattern (SS-SINR): vendor"
    ),
    # availability: unavailable time per period (seconds, per cause summed) -> the TS 28.554
    # availability KPI 1 - unavailable / period; the percentage some vendors report directly
    "RRU.CellUnavailableTime": _c(
        "RRU.CellUnavailableTime",
        0.0,
        "s",
        subs=True,
        std="TS 32.405 (RRU.UTRANCellUnavailableTime) for NR: vendor",
    ),
    "CELL.Availability": _g("CELL.Availability", 0.01, "%", hi=100.0, std="vendor"),
    "CELL.CoverageRatio": _g("CELL.CoverageRatio", 0.01, "%", hi=100.0, std="vendor"),
}

# Why a value was rejected (the agent's collector_agent_pm_values_rejected_total{reason}).
REASONS = (
    "unknown_index",
    "result_count",
    "no_object",
    "not_a_number",
    "not_finite",
    "negative",
    "counter_overflow",
    "fractional_counter",
    "out_of_range",
    "too_old",
    "in_future",
    "unknown_bin",
)
NIL_TEXT = frozenset({"", "NIL", "nil", "Nil", "-"})


@dataclass(frozen=True, slots=True)
class PmObject:
    """A measured object: a cell (cell set, function empty) or a gNB-level function."""

    gnb: str
    cell: str = ""
    function: str = ""

    def labels(self) -> dict[str, str]:
        if self.cell:
            return {"cell": self.cell, "gnb": self.gnb}
        return {"gnb": self.gnb, "function": self.function}


@dataclass(frozen=True, slots=True)
class PmValue:
    obj: PmObject
    spec: PmSpec
    begin_unix_nano: int
    end_unix_nano: int
    value: int | float  # raw value (int for counters)
    suspect: bool
    le: str = ""  # a distribution bin's upper bound (the `le` label); "" otherwise

    def labels(self) -> dict[str, str]:
        out = self.obj.labels()
        if self.le:
            out["le"] = self.le
        return out

    @property
    def name(self) -> str:
        """The series this value belongs to within its object: metric (+ bin)."""
        return f"{self.spec.metric}{{le={self.le}}}" if self.le else self.spec.metric


@dataclass(slots=True)
class PmFile:
    name: str
    element: str  # the gNB (ManagedElement id) the file is from
    values: list[PmValue] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first case
    unknown: Counter[str] = field(default_factory=Counter)  # measurement names not accepted
    nil: int = 0
    suspect: int = 0

    def reject(self, reason: str, where: str) -> None:
        self.rejected[reason] += 1
        self.examples.setdefault(reason, where)

    @property
    def periods(self) -> set[tuple[int, int]]:
        return {(v.begin_unix_nano, v.end_unix_nano) for v in self.values}

    def summary(self) -> str:
        """One line about what was not taken as is (for the file's single log line)."""
        parts = []
        if self.rejected:
            parts.append(
                f"{sum(self.rejected.values())} values rejected ("
                + ", ".join(f"{r}: {n}, first {self.examples[r]}" for r, n in sorted(self.rejected.items()))
                + ")"
            )
        if self.unknown:
            parts.append(
                f"{sum(self.unknown.values())} values of measurements not accepted "
                f"({', '.join(sorted(self.unknown)[:5])}"
                f"{', ...' if len(self.unknown) > 5 else ''})"
            )
        if self.suspect:
            parts.append(f"{self.suspect} values flagged suspect (kept)")
        return "; ".join(parts)


def _local(tag: Any) -> str:
    return tag[tag.index("}") + 1 :] if isinstance(tag, str) and tag[:1] == "{" else str(tag)


def _strip_namespaces(root: Any) -> None:
    # Vendors differ in namespace use: lookups below are by local name.
    for el in root.iter():
        el.tag = _local(el.tag)


def time_ns(text: str | None, what: str, name: str) -> int:
    """xs:dateTime with its offset (Z, +09:00) -> ns since the epoch; UTC without one."""
    if not text:
        raise PmFileError(name, f"{what} missing")
    try:
        t = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise PmFileError(name, f"{what} {text!r} is not an xs:dateTime") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)  # TS 32.435 requires an offset; assume UTC without one
    return (t - _EPOCH) // dt.timedelta(microseconds=1) * 1000


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def duration_ns(text: str | None, name: str) -> int:
    m = _DURATION.match((text or "").strip())
    if not m or not any(m.groups()):
        raise PmFileError(name, f"granPeriod duration {text!r} is not a whole-second xs:duration")
    d, h, mi, s = (int(x or 0) for x in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60_000_000_000 + s * 1_000_000_000


def _rdns(dn: str) -> list[tuple[str, str]]:
    out = []
    for part in dn.split(","):
        k, sep, v = part.partition("=")
        if sep and k.strip() and v.strip():
            out.append((k.strip(), v.strip()))
    return out


def measured_object(obj_ldn: str, element_dn: str) -> PmObject | None:
    """A cell (NRCellDU=x / NRCellCU=x as last cell RDN) or a gNB-level function."""
    rdns = _rdns(obj_ldn)
    if not rdns:
        return None
    gnb = next((v for k, v in rdns if k == "ManagedElement"), "")
    if not gnb:
        gnb = next((v for k, v in _rdns(element_dn) if k == "ManagedElement"), "")
    if not gnb:
        ed = _rdns(element_dn)
        gnb = ed[-1][1] if ed else "unknown"
    cell = next((v for k, v in reversed(rdns) if k in ("NRCellDU", "NRCellCU")), "")
    if cell:
        return PmObject(gnb, cell=cell)
    k, v = rdns[-1]
    return PmObject(gnb, function=f"{k}={v}")


_BIN = re.compile(r"^(?P<base>.+\.Bin)(?P<x>\d+)(?:\.(?P<sub>.+))?$")


def lookup_bin(meas: str) -> tuple[PmSpec, int, bool] | None:
    """(spec, bin index, is a sub-counter) for `<name>.Bin<X>[.<sub>]` of a distribution."""
    m = _BIN.match(meas)
    if m is None:
        return None
    spec = MEASUREMENTS.get(m["base"])
    if spec is None or spec.bins is None:
        return None
    return spec, int(m["x"]), m["sub"] is not None


def lookup(meas: str) -> tuple[PmSpec, bool] | None:
    """(spec, is a sub-counter) for an accepted name or a sub-counter of one."""
    spec = MEASUREMENTS.get(meas)
    if spec is not None:
        return spec, False
    base = meas
    while "." in base:
        base = base.rsplit(".", 1)[0]
        spec = MEASUREMENTS.get(base)
        if spec is not None:
            return (spec, True) if spec.subcounters else None
    return None


def check_value(text: str, spec: PmSpec) -> tuple[str | None, int | float | None]:
    """(reason, None) for a bad value, (None, None) for NIL, (None, value) for a good one."""
    t = text.strip()
    if t in NIL_TEXT:
        return None, None
    try:
        v: int | float = int(t)
    except ValueError:
        try:
            v = float(t)
        except ValueError:
            return "not_a_number", None
        if not math.isfinite(v):
            return "not_finite", None
    if spec.counter:
        if isinstance(v, float):
            if not v.is_integer():
                return "fractional_counter", None
            v = int(v)
        if v < 0:
            return "negative", None
        if v >= U64:
            return "counter_overflow", None
        return None, v
    if spec.lo is not None and v < spec.lo:
        return "negative" if spec.lo == 0 else "out_of_range", None
    if spec.hi is not None and v > spec.hi:
        return "out_of_range", None
    return None, float(v)


def parse_pm_bytes(data: bytes, name: str) -> PmFile:
    """Parse a measCollecFile; PmFileError naming `name` when it is not one (not well-formed,
    DTD/entities, no header or period). Bad values are rejected one by one, not the file."""
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise PmFileError(
            name, f"DTDs, entities and external references are not allowed ({type(exc).__name__})"
        ) from None
    except SafeET.ParseError as exc:
        raise PmFileError(name, f"not well-formed XML ({exc})") from None
    except (LookupError, ValueError) as exc:  # e.g. an unknown encoding in the declaration
        raise PmFileError(name, f"unreadable XML ({exc})") from None
    _strip_namespaces(root)
    if root.tag != "measCollecFile":
        raise PmFileError(name, f"root element is <{root.tag}>, not <measCollecFile>")
    header = root.find("fileHeader")
    if header is None:
        raise PmFileError(name, "no <fileHeader>")
    collec = header.find("measCollec")
    time_ns(collec.get("beginTime") if collec is not None else None, "fileHeader/measCollec@beginTime", name)
    sender = header.find("fileSender")
    sender_dn = (sender.get("localDn") or "") if sender is not None else ""
    out = PmFile(name, "")
    sums: dict[tuple[PmObject, PmSpec, int, int, str], list[Any]] = {}
    for md in root.findall("measData"):
        me = md.find("managedElement")
        element_dn = ((me.get("localDn") or "") if me is not None else "") or sender_dn
        if not out.element:
            ed = _rdns(element_dn)
            out.element = next((v for k, v in ed if k == "ManagedElement"), ed[-1][1] if ed else "")
        for mi in md.findall("measInfo"):
            _meas_info(mi, element_dn, name, out, sums)
    # totals and sub-counters: the measurement's own total wins; else the sum of its subs
    for (obj, spec, begin, end, le), (total, subs, suspect) in sums.items():
        if total is None:
            if subs >= U64:
                out.reject(
                    "counter_overflow",
                    f"{obj.labels()} {spec.metric}{le and ' le=' + le} (sum of sub-counters)",
                )
                continue
            total = subs
        out.values.append(PmValue(obj, spec, begin, end, total, suspect, le))
    return out


def _meas_info(
    mi: Any,
    element_dn: str,
    name: str,
    out: PmFile,
    sums: dict[tuple[PmObject, PmSpec, int, int, str], list[Any]],
) -> None:
    info_id = mi.get("measInfoId", "?")
    gp = mi.find("granPeriod")
    if gp is None:
        raise PmFileError(name, f"measInfo {info_id!r}: no <granPeriod>")
    end = time_ns(gp.get("endTime"), f"measInfo {info_id!r} granPeriod@endTime", name)
    begin = end - duration_ns(gp.get("duration"), name)
    if begin >= end:
        raise PmFileError(name, f"measInfo {info_id!r}: granPeriod duration is zero")
    types: dict[str, str] = {}
    positional: list[str] = []
    mt = mi.find("measTypes")
    if mt is not None:
        positional = (mt.text or "").split()
        types.update((str(i), t) for i, t in enumerate(positional, start=1))
    for el in mi.findall("measType"):
        p = el.get("p")
        if p is not None and (el.text or "").strip():
            types[p] = (el.text or "").strip()
    for mv in mi.findall("measValue"):
        obj_ldn = mv.get("measObjLdn") or ""
        obj = measured_object(obj_ldn, element_dn)
        suspect_el = mv.find("suspect")
        suspect = suspect_el is not None and (suspect_el.text or "").strip().lower() == "true"
        results: list[tuple[str | None, str]] = []
        mr = mv.find("measResults")
        if mr is not None:
            raw = (mr.text or "").split()
            results.extend(
                (str(i), r) if i <= len(positional) else (None, r) for i, r in enumerate(raw, start=1)
            )
        results.extend((r.get("p"), r.text or "") for r in mv.findall("r"))
        where_obj = f"measInfo {info_id!r} object {obj_ldn!r}"
        if obj is None:
            for _ in results:
                out.reject("no_object", where_obj)
            continue
        for p, text in results:
            meas = types.get(p) if p is not None else None
            if meas is None:
                out.reject("unknown_index" if p is not None else "result_count", f"{where_obj} p={p!r}")
                continue
            if text.strip() in NIL_TEXT:
                out.nil += 1
                continue
            le = ""
            found = lookup(meas)
            if found is None:
                binned = lookup_bin(meas)
                if binned is None:
                    out.unknown[meas] += 1
                    continue
                spec, x, is_sub = binned
                le = spec.bin_le(x) or ""
                if not le:
                    out.reject(
                        "unknown_bin",
                        f"{where_obj} {meas} (bins 0..{spec.bins[2] - 1})"
                        if spec.bins
                        else f"{where_obj} {meas}",
                    )
                    continue
            else:
                spec, is_sub = found
                if spec.bins is not None:  # `L1M.SS-RSRP.Bin` without an index
                    out.unknown[meas] += 1
                    continue
            reason, value = check_value(text, spec)
            if reason is not None:
                out.reject(reason, f"{where_obj} {meas}={text.strip()[:32]!r}")
                continue
            if value is None:
                out.nil += 1
                continue
            if suspect:
                out.suspect += 1
            key = (obj, spec, begin, end, le)
            if not spec.counter:
                out.values.append(PmValue(obj, spec, begin, end, value, suspect))
                continue
            acc = sums.setdefault(key, [None, 0, False])
            if is_sub:
                acc[1] += int(value)
            else:
                acc[0] = int(value)
            acc[2] = acc[2] or suspect


def read_pm_file(path: Path) -> PmFile:
    """Read (and gunzip) a PM file; PmFileError names the file on any problem."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        else:
            with path.open("rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise PmFileError(path, f"cannot read: {exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise PmFileError(path, f"larger than {MAX_FILE_BYTES} bytes")
    return parse_pm_bytes(data, str(path))
