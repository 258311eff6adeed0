"""Cell source: 5G NR cell KPIs (3GPP TS 28.552 names) from an adapter.

PM XML files (TS 32.435 `measCollecFile`, the default adapter `pm_xml`): a gNB or its OSS
drops one XML file per granularity period (typically 15 min) into a directory; this source
reads new files, turns the measurements it knows (see PM_MEASUREMENTS) into samples at the
period's end time, and moves each file to done/ (or deletes it). A malformed file is moved
to failed/ with an error that names it; it never stops the agent.

Both encodings of TS 32.435 are read: `<measTypes>a b</measTypes>` + `<measResults>1 2
</measResults>` and `<measType p="1">a</measType>` + `<r p="1">1</r>`. PM counters in these
files are per-period values (the volume *within* the period): they travel as DELTA samples
over the period [begin, end) (telemetry.v1 DeltaColumns), never summed into a fake running
counter; the other values as period gauges (PeriodGaugeColumns). Both bypass the
aggregator's watermark (collector/aggregate/periods.py), so a file arriving minutes after its
period is not late. Values keep their raw unit and a `Series.scale` that turns them into the
catalogue unit (percent -> ratio 0.01, kbit/s -> bytes/s 125, Mbit -> bytes 125000).

Where cells are read from is an adapter (`agent.sources.cell.adapter`): `pm_xml` (default)
is the PM file reader above; `simulated` reads one site's cells from `collector simulate`'s
model; a device source (an OSS northbound API, O1/VES, a vendor REST API) is a class

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

import datetime as dt
import gzip
import logging
import math
import numbers
import re
import time
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.agent.batch import BatchBuilder, SeriesDef, counter_def, delta_def, gauge_def
from collector.agent.config import CellSourceSettings
from collector.agent.sources import Source, load_adapter
from collector.errors import CollectorError, ConfigError

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 64 * 1024 * 1024


class PmFileError(CollectorError):
    """A PM file that cannot be read as a TS 32.435 measCollecFile; names the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"PM file {self.path}: {problem}")


@dataclass(frozen=True, slots=True)
class PmSpec:
    metric: str
    counter: bool
    unit: str
    scale: float  # raw value * scale = value in `unit`


# TS 28.552 measurement -> catalogue series. Percentages become ratios by scale 0.01.
PM_MEASUREMENTS: dict[str, PmSpec] = {
    "RRU.PrbTotDl": PmSpec("RRU.PrbTotDl", False, "ratio", 0.01),
    "RRU.PrbTotUl": PmSpec("RRU.PrbTotUl", False, "ratio", 0.01),
    "DRB.UEThpDl": PmSpec("DRB.UEThpDl", False, "bytes_per_second", 125.0),  # kbit/s
    "DRB.UEThpUl": PmSpec("DRB.UEThpUl", False, "bytes_per_second", 125.0),
    "DRB.PdcpSduVolumeDL": PmSpec("DRB.PdcpSduVolumeDL", True, "bytes", 125_000.0),  # Mbit
    "DRB.PdcpSduVolumeUL": PmSpec("DRB.PdcpSduVolumeUL", True, "bytes", 125_000.0),
    "RRC.ConnMean": PmSpec("RRC.ConnMean", False, "users", 0.0),
    "RRC.ConnMax": PmSpec("RRC.ConnMax", False, "users", 0.0),
    "MM.HoExeIntraReq": PmSpec("MM.HoExeIntraReq", True, "attempts", 0.0),
    "MM.HoExeIntraSucc": PmSpec("MM.HoExeIntraSucc", True, "attempts", 0.0),
    "CELL.Availability": PmSpec("CELL.Availability", False, "ratio", 0.01),  # percent
    "CELL.CoverageRatio": PmSpec("CELL.CoverageRatio", False, "ratio", 0.01),  # percent
    "L1M.SS-RSRP": PmSpec("L1M.SS-RSRP", False, "dBm", 0.0),
    "L1M.SS-RSRQ": PmSpec("L1M.SS-RSRQ", False, "dB", 0.0),
    "L1M.SS-SINR": PmSpec("L1M.SS-SINR", False, "dB", 0.0),
}


@dataclass(slots=True)
class PmValue:
    gnb: str
    cell: str
    meas_type: str
    value: float | int
    suspect: bool


@dataclass(slots=True)
class PmPeriod:
    begin_unix_nano: int
    end_unix_nano: int
    values: list[PmValue] = field(default_factory=list)


@dataclass(slots=True)
class PmFile:
    name: str
    begin_unix_nano: int
    periods: list[PmPeriod] = field(default_factory=list)

    def __iter__(self) -> Iterator[tuple[PmPeriod, PmValue]]:
        for p in self.periods:
            for v in p.values:
                yield p, v


# Tags are made namespace-free once after parsing (vendors differ in namespace use), so
# these are plain C-level lookups.
def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return el.findall(name)


def _child(el: ET.Element, name: str) -> ET.Element | None:
    return el.find(name)


def _strip_namespaces(root: ET.Element) -> None:
    for el in root.iter():
        tag = el.tag
        if isinstance(tag, str) and tag[:1] == "{":
            el.tag = tag[tag.index("}") + 1:]


def _time_ns(text: str | None, what: str, name: str) -> int:
    if not text:
        raise PmFileError(name, f"{what} missing")
    try:
        t = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise PmFileError(name, f"{what} {text!r} is not an xs:dateTime") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)  # TS 32.435 requires an offset; assume UTC without one
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def _duration_s(text: str | None, name: str) -> float:
    m = _DURATION.match((text or "").strip())
    if not m or not any(m.groups()):
        raise PmFileError(name, f"granPeriod duration {text!r} is not an xs:duration")
    d, h, mi, s = m.groups()
    return int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


def _number(text: str, name: str, where: str) -> float | int | None:
    t = text.strip()
    if t in ("", "NIL", "nil", "-"):
        return None  # the measurement was not available in this period
    try:
        return int(t)
    except ValueError:
        pass
    try:
        v = float(t)
    except ValueError:
        raise PmFileError(name, f"{where}: value {t!r} is not a number") from None
    if not math.isfinite(v):
        raise PmFileError(name, f"{where}: value {t!r} is not finite")
    return v


def _rdns(dn: str) -> list[tuple[str, str]]:
    out = []
    for part in dn.split(","):
        k, sep, v = part.partition("=")
        if sep:
            out.append((k.strip(), v.strip()))
    return out


def _entity(obj_ldn: str, element_dn: str, name: str) -> tuple[str, str]:
    """(gnb, cell) from a measured object's LDN like
    'ManagedElement=gNB-1,GNBDUFunction=1,NRCellDU=17'."""
    rdns = _rdns(obj_ldn)
    cell = next((v for k, v in reversed(rdns) if k.startswith("NRCell")), None)
    if cell is None:
        cell = rdns[-1][1] if rdns else obj_ldn.strip()
    gnb = next((v for k, v in _rdns(element_dn) if k == "ManagedElement"), "")
    if not gnb:
        gnb = next((v for k, v in rdns if k == "ManagedElement"), "")
    if not gnb:
        gnb = element_dn.rsplit("=", 1)[-1].strip() if element_dn else ""
    if not cell:
        raise PmFileError(name, f"measObjLdn {obj_ldn!r} names no cell")
    return gnb or "unknown", cell


def parse_pm_bytes(data: bytes, name: str) -> PmFile:
    """Parse a measCollecFile; raise PmFileError naming `name` when it is not one."""
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data:
        raise PmFileError(name, "DTDs and entities are not allowed")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise PmFileError(name, f"not well-formed XML ({exc})") from None
    except (LookupError, ValueError) as exc:  # e.g. an unknown encoding in the declaration
        raise PmFileError(name, f"unreadable XML ({exc})") from None
    _strip_namespaces(root)
    if root.tag != "measCollecFile":
        raise PmFileError(name, f"root element is <{root.tag}>, not <measCollecFile>")
    header = _child(root, "fileHeader")
    if header is None:
        raise PmFileError(name, "no <fileHeader>")
    collec = _child(header, "measCollec")
    begin = _time_ns(collec.get("beginTime") if collec is not None else None,
                     "fileHeader/measCollec@beginTime", name)
    sender = _child(header, "fileSender")
    sender_dn = (sender.get("localDn") or "") if sender is not None else ""
    out = PmFile(name, begin)
    for md in _children(root, "measData"):
        me = _child(md, "managedElement")
        element_dn = (me.get("localDn") or "") if me is not None else ""
        element_dn = element_dn or sender_dn
        for mi in _children(md, "measInfo"):
            out.periods.append(_meas_info(mi, element_dn, name))
    return out


def _meas_info(mi: ET.Element, element_dn: str, name: str) -> PmPeriod:
    info_id = mi.get("measInfoId", "?")
    gp = _child(mi, "granPeriod")
    if gp is None:
        raise PmFileError(name, f"measInfo {info_id!r}: no <granPeriod>")
    end = _time_ns(gp.get("endTime"), f"measInfo {info_id!r} granPeriod@endTime", name)
    begin = end - int(_duration_s(gp.get("duration"), name) * 1e9)
    period = PmPeriod(begin, end)
    # measurement types: positional list or p-indexed elements
    types: dict[str, str] = {}
    mt = _child(mi, "measTypes")
    if mt is not None:
        for i, t in enumerate((mt.text or "").split(), start=1):
            types[str(i)] = t
    for el in _children(mi, "measType"):
        p = el.get("p")
        if p is None or not (el.text or "").strip():
            raise PmFileError(name, f"measInfo {info_id!r}: <measType> without p or name")
        types[p] = (el.text or "").strip()
    for mv in _children(mi, "measValue"):
        obj = mv.get("measObjLdn")
        if not obj:
            raise PmFileError(name, f"measInfo {info_id!r}: <measValue> without measObjLdn")
        gnb, cell = _entity(obj, element_dn, name)
        suspect_el = _child(mv, "suspect")
        suspect = suspect_el is not None and (suspect_el.text or "").strip() == "true"
        where = f"measInfo {info_id!r} measObjLdn {obj!r}"
        results: list[tuple[str, str]] = []
        mr = _child(mv, "measResults")
        if mr is not None:
            raw = (mr.text or "").split()
            if len(raw) != len(types):
                raise PmFileError(name, f"{where}: {len(raw)} results for {len(types)} "
                                        "measurement types")
            results.extend((str(i), r) for i, r in enumerate(raw, start=1))
        for r in _children(mv, "r"):
            p = r.get("p")
            if p is None or p not in types:
                raise PmFileError(name, f"{where}: <r p={p!r}> has no measType")
            results.append((p, r.text or ""))
        for p, text in results:
            meas = types[p]
            value = _number(text, name, f"{where} {meas}")
            if value is not None:
                period.values.append(PmValue(gnb, cell, meas, value, suspect))
    return period


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


# --- adapters -------------------------------------------------------------------------
@dataclass(slots=True)
class CellReading:
    """One cell at one moment, by TS 28.552 name (the names of PM_MEASUREMENTS).

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


class SimulatedCellAdapter(CellAdapter):
    """5G NR cells of one simulated site, from `collector simulate`'s model: its cell
    generator (diurnal load in the site's local time, per-subscriber DL speed calibrated to
    the country's figure, coverage, handovers), deterministic for a seed, read at wall-clock
    time. Lets a real `collector agent` stream simulated cells.

    The model is a fleet of `site + 1` sites of `country` with `cells` cells each (cells
    only); the readings are those of the last site (a real city). The DL speed calibration
    holds over that fleet's cells. A read returns the latest tick due, generating the ticks
    missed since the last read, or nothing when no new tick is due.
    """

    def __init__(self, seed: int = 20260401, country: str = "JP", site: int = 0,
                 cells: int = 12, interval_s: float = 30.0,
                 start_unix_s: float | None = None) -> None:
        from collector.agent.sources.simulated import SimulatedSite
        from collector.simulate.model import CELL_COUNTERS, CELL_GAUGES

        key = "agent.sources.cell.options"
        if isinstance(cells, bool) or not isinstance(cells, int) or cells < 1:
            raise ConfigError(f"simulated cell adapter: cells must be an integer >= 1, got "
                              f"{cells!r}", key=key)
        self.sim = SimulatedSite(key, seed=seed, country=country, site=site,
                                 interval_s=interval_s, start_unix_s=start_unix_s,
                                 cells_per_site=cells)
        m = self.sim.model
        rows = self.sim.rows(m.cells)
        self._c0 = [int(m.cells["c0"][i]) for i in rows]
        self._g0 = [int(m.cells["g0"][i]) for i in rows]
        self._labels = [dict(m.counters[c].labels) for c in self._c0]
        self._bits = [m.counters[c].bits for c in self._c0]
        self._counters = CELL_COUNTERS
        self._gauges = CELL_GAUGES

    async def read(self) -> Sequence[CellReading]:
        got = self.sim.due()
        if got is None:
            return []  # no new tick yet: never the same samples twice
        block, k = got
        t = int(block.t[self.sim.index, k])
        nc, ng = len(self._counters), len(self._gauges)
        out = []
        for labels, c0, g0, bits in zip(self._labels, self._c0, self._g0, self._bits,
                                        strict=True):
            out.append(CellReading(
                cell=labels["cell"], gnb=labels["gnb"],
                counters=dict(zip(self._counters, block.values[c0:c0 + nc, k].tolist(),
                                  strict=True)),
                gauges=dict(zip(self._gauges, block.gauges[g0:g0 + ng, k].tolist(),
                                strict=True)),
                counter_bits=bits, counter_start_unix_nano=int(block.start[c0, k]),
                time_unix_nano=t))
        return out


PM_XML = "pm_xml"
BUILTIN_ADAPTERS: dict[str, type[CellAdapter]] = {
    "simulated": SimulatedCellAdapter,
}


def make_adapter(spec: str, options: dict[str, Any]) -> CellAdapter:
    """'simulated' or 'package.module:Class' (a CellAdapter taking **options); the PM file
    reader (`pm_xml`) is built into CellSource."""
    return load_adapter("cell", spec, options, BUILTIN_ADAPTERS, CellAdapter,
                        f"{PM_XML}, simulated")


class CellSource(Source):
    name = "cell"

    def __init__(self, settings: CellSourceSettings, adapter: CellAdapter | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.interval_s = settings.interval_s
        self.priority = settings.priority
        self.dir = settings.pm_dir
        # None: PM files from pm_dir (the `pm_xml` adapter, configured by the pm_* keys)
        self.adapter = adapter
        if adapter is None and settings.adapter != PM_XML:
            self.adapter = make_adapter(settings.adapter, dict(settings.options))
        elif adapter is None and settings.options:
            raise ConfigError(f"the {PM_XML} adapter takes no options (it is configured by "
                              "pm_dir, pattern, settle_s, ...)", key="agent.sources.cell.options")
        self._reading_defs: dict[tuple[str, str, str, int, int], SeriesDef | None] = {}
        self._defs: dict[tuple[str, str, str, int], SeriesDef] = {}
        self.files_done = 0
        self.files_failed = 0
        self.unknown_measurements = 0
        self._warned_missing = False

    def _ready_files(self) -> list[Path]:
        if not self.dir.is_dir():
            if not self._warned_missing:
                log.warning("PM directory %s does not exist (yet): no cell data", self.dir)
                self._warned_missing = True
            return []
        self._warned_missing = False
        limit = time.time() - self.settings.settle_s
        pattern = self.settings.pattern
        found: list[tuple[float, str, Path]] = []
        for p in self.dir.iterdir():
            if not (p.match(pattern) or p.match(pattern + ".gz")):
                continue
            try:
                st = p.stat()
            except OSError:
                continue
            if st.st_mtime <= limit and p.is_file():
                found.append((st.st_mtime, p.name, p))
        found.sort()
        return [p for _, _, p in found[: self.settings.max_files_per_scan]]

    def _move(self, path: Path, sub: str) -> None:
        try:
            if sub == "done" and self.settings.after == "delete":
                path.unlink()
                return
            dest = self.dir / sub
            dest.mkdir(exist_ok=True)
            path.replace(dest / path.name)
        except OSError as exc:
            log.error("cannot move PM file %s to %s/: %s", path, sub, exc.strerror)

    def _check_times(self, pm: PmFile, now_unix_nano: int) -> None:
        ends = [p.end_unix_nano for p in pm.periods if p.values]
        if not ends:
            return
        oldest_ok = now_unix_nano - int(self.settings.max_age_s * 1e9)
        if max(ends) < oldest_ok:
            raise PmFileError(pm.name, f"every period ended more than {self.settings.max_age_s:.0f}"
                                       " s ago (agent.sources.cell.max_age_s)")
        if max(ends) > now_unix_nano + int(self.settings.max_future_s * 1e9):
            raise PmFileError(pm.name, "a period ends in the future (gNB clock ahead of the "
                                       "agent's by more than agent.sources.cell.max_future_s)")
        if min(ends) < oldest_ok:
            pm.periods = [p for p in pm.periods if p.end_unix_nano >= oldest_ok]
            log.warning("%s: periods older than max_age_s skipped", pm.name)

    async def collect(self, builder: BatchBuilder, now_unix_nano: int) -> None:
        if self.adapter is not None:
            self.add_readings(builder, await self.adapter.read(), now_unix_nano)
            return
        for path in self._ready_files():
            try:
                pm = read_pm_file(path)
                self._check_times(pm, now_unix_nano)
            except PmFileError as exc:
                log.error("%s (moved to failed/)", exc)
                self.stats.errors += 1
                self.files_failed += 1
                self._move(path, "failed")
                continue
            self.add_file(builder, pm)
            self.files_done += 1
            self._move(path, "done")

    def add_file(self, builder: BatchBuilder, pm: PmFile) -> None:
        """Turn one parsed file into period samples: counts as DELTA over [begin, end) (no
        running sum: a repeated or older file is the same or its own period, which the
        aggregator counts once), other values as period gauges."""
        for period, v in pm:
            spec = PM_MEASUREMENTS.get(v.meas_type)
            if spec is None:
                self.unknown_measurements += 1
                continue
            labels = {"cell": v.cell, "gnb": v.gnb}
            key = (spec.metric, v.gnb, v.cell, 1 if spec.counter else 0)
            d = self._defs.get(key)
            if d is None:
                d = self._defs[key] = (
                    delta_def(spec.metric, labels, unit=spec.unit, scale=spec.scale)
                    if spec.counter else gauge_def(spec.metric, labels, unit=spec.unit,
                                                   scale=spec.scale))
            if not spec.counter:
                builder.period_gauge(d, period.begin_unix_nano, period.end_unix_nano,
                                     float(v.value))
                continue
            if (isinstance(v.value, float) and not v.value.is_integer()) or not \
                    0 <= v.value < 1 << 64:
                log.warning("%s: counter %s of cell %s is %r, not an integer in 0..2^64-1: "
                            "skipped", pm.name, v.meas_type, v.cell, v.value)
                continue
            builder.delta(d, period.begin_unix_nano, period.end_unix_nano, int(v.value))

    def _reading_def(self, r: CellReading, meas: str, counter: bool) -> SeriesDef | None:
        key = (meas, r.gnb, r.cell, r.counter_bits if counter else 0,
               r.counter_start_unix_nano if counter else 0)
        if key in self._reading_defs:
            return self._reading_defs[key]
        if len(self._reading_defs) > 100_000:  # cells come and go; do not grow forever
            self._reading_defs.clear()
        spec = PM_MEASUREMENTS.get(meas)
        d: SeriesDef | None = None
        if spec is None or spec.counter != counter:
            log.warning("cell adapter: %s %r is not a known TS 28.552 %s: skipped",
                        "counter" if counter else "gauge", meas,
                        "counter" if counter else "gauge")
        elif counter and r.counter_bits not in (32, 64):
            log.error("cell %s: adapter declares %d-bit counters; only 32 or 64 exist on the "
                      "wire: counters skipped", r.cell, r.counter_bits)
        else:
            labels = {"cell": r.cell, "gnb": r.gnb}
            d = (counter_def(meas, labels, unit=spec.unit, bits=r.counter_bits,
                             start_time_unix_nano=r.counter_start_unix_nano) if counter
                 else gauge_def(meas, labels, unit=spec.unit))  # catalogue unit: scale 1
        self._reading_defs[key] = d
        return d

    def add_readings(self, builder: BatchBuilder, readings: Sequence[CellReading],
                     now_unix_nano: int) -> None:
        """Turn an adapter's readings into samples."""
        counter, gauge, isfinite = builder.counter, builder.gauge, math.isfinite
        for r in readings:
            t = r.time_unix_nano or now_unix_nano
            limit = 1 << r.counter_bits
            for meas, v in r.counters.items():
                d = self._reading_def(r, meas, True)
                if d is None:
                    self.unknown_measurements += 1
                elif isinstance(v, numbers.Integral) and 0 <= v < limit:
                    counter(d, t, int(v))
                else:  # the ingest would refuse the whole batch for it
                    self.stats.errors += 1
                    log.warning("cell %s: %s=%r is not an integer that fits %d bits: sample "
                                "skipped", r.cell, meas, v, r.counter_bits)
            for meas, g in r.gauges.items():
                d = self._reading_def(r, meas, False)
                if d is None:
                    self.unknown_measurements += 1
                elif isfinite(g):
                    gauge(d, t, float(g))

    async def close(self) -> None:
        if self.adapter is not None:
            await self.adapter.close()


def render_meas_collec(*, begin: dt.datetime, duration_s: int, element: str,
                       cells: dict[str, dict[str, float | int]], positional: bool = False,
                       info_id: str = "NRCell") -> bytes:
    """A TS 32.435 measCollecFile with one measInfo: `cells` maps a cell id to its
    measurement values. For tests, the benchmark and the simulator (what a gNB would write).
    `positional` picks the <measTypes>/<measResults> encoding instead of p-indexed elements.
    """
    from xml.sax.saxutils import quoteattr

    end = begin + dt.timedelta(seconds=duration_s)
    types = sorted({m for vals in cells.values() for m in vals})
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<measCollecFile xmlns="http://www.3gpp.org/ftp/specs/archive/32_series/32.435#measCollec">',
           f'<fileHeader fileFormatVersion="32.435 V10.0" vendorName="edge"><fileSender '
           f'localDn={quoteattr("ManagedElement=" + element)}/>'
           f'<measCollec beginTime="{begin.isoformat()}"/></fileHeader>',
           f'<measData><managedElement localDn={quoteattr("ManagedElement=" + element)}/>',
           f'<measInfo measInfoId={quoteattr(info_id)}><job jobId="1"/>'
           f'<granPeriod duration="PT{duration_s}S" endTime="{end.isoformat()}"/>'
           f'<repPeriod duration="PT{duration_s}S"/>']
    if positional:
        out.append(f"<measTypes>{' '.join(types)}</measTypes>")
    else:
        out.extend(f'<measType p="{i}">{t}</measType>' for i, t in enumerate(types, start=1))
    for cell, vals in cells.items():
        ldn = quoteattr(f"ManagedElement={element},GNBDUFunction=1,NRCellDU={cell}")
        out.append(f"<measValue measObjLdn={ldn}>")
        if positional:
            out.append("<measResults>" + " ".join(
                repr(vals[t]) if t in vals else "NIL" for t in types) + "</measResults>")
        else:
            out.extend(f'<r p="{i}">{vals[t]!r}</r>' for i, t in enumerate(types, start=1)
                       if t in vals)
        out.append("<suspect>false</suspect></measValue>")
    out.append(f'</measInfo></measData><fileFooter><measCollec endTime="{end.isoformat()}"/>'
               "</fileFooter></measCollecFile>")
    return "\n".join(out).encode()
