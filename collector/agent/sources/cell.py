"""Cell source: 5G NR cell KPIs (3GPP TS 28.552 names) from an adapter.

PM XML files (TS 32.435 `measCollecFile`, the default adapter `pm_xml`): a gNB or its OSS
drops one XML file per granularity period (typically 15 min) into a directory; this source
reads new files, turns the measurements it knows (see PM_MEASUREMENTS) into samples at the
period's end time, and moves each file to done/ (or deletes it). A malformed file is moved
to failed/ with an error that names it; it never stops the agent. A file whose (object,
period) groups were all spooled before (a re-export, a copy) is recognised by the sent-ledger
(collector/agent/sources/pm_ledger.py), counted as `repeated` and moved to done/ unsent.

Both encodings of TS 32.435 are read: `<measTypes>a b</measTypes>` + `<measResults>1 2
</measResults>` and `<measType p="1">a</measType>` + `<r p="1">1</r>`. PM counters in these
files are per-period values (the volume *within* the period): they travel as DELTA samples
over the period [begin, end) (telemetry.v1 DeltaColumns), never summed into a fake running
counter; the other values as period gauges (PeriodGaugeColumns). Both bypass the
aggregator's watermark (collector/aggregate/periods.py), so a file arriving minutes after its
period is not late. Values keep their raw unit and a `Series.scale` that turns them into the
catalogue unit (percent -> ratio 0.01, kbit/s -> bytes/s 125, Mbit -> bytes 125000).

Where cells are read from is an adapter (`agent.sources.cell.adapter`): `pm_xml` (default)
is the PM file reader above; any other adapter (collector/agent/sources/cell_adapters.py: the
`CellAdapter` interface, `CellReading`, and how one is chosen) hands over `CellReading`s,
which this source turns into counters and gauges (`add_readings`).
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Sequence
from pathlib import Path

from collector.agent.batch import BatchBuilder, SeriesDef, counter_def, delta_def, gauge_def
from collector.agent.config import CellSourceSettings
from collector.agent.sources import Source
from collector.agent.sources.cell_adapters import PM_XML, CellAdapter, CellReading, make_adapter
from collector.agent.sources.pm_ledger import DEFAULT_NAME, SentLedger, fingerprint
from collector.agent.sources.pm_parser import (
    MEASUREMENTS,
    REASONS,
    PmFile,
    PmFileError,
    PmObject,
    PmValue,
    read_pm_file,
)
from collector.errors import ConfigError

log = logging.getLogger(__name__)

# Estimated wire bytes of one period sample and of one series table entry (for splitting a
# backlog of files across batches under agent.ingest.max_batch_bytes).
SAMPLE_BYTES = 36
SERIES_BYTES = 200


class CellSource(Source):
    name = "cell"

    def __init__(
        self,
        settings: CellSourceSettings,
        adapter: CellAdapter | None = None,
        *,
        max_batch_bytes: int = 4 * 1024 * 1024,
    ) -> None:
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
            raise ConfigError(
                f"the {PM_XML} adapter takes no options (it is configured by pm_dir, pattern, settle_s, ...)",
                key="agent.sources.cell.options",
            )
        self._reading_defs: dict[tuple[str, str, str, int, int], SeriesDef | None] = {}
        self._defs: dict[tuple[str, tuple[tuple[str, str], ...], bool], SeriesDef] = {}
        self.max_batch_bytes = max_batch_bytes
        # The file being sent (maybe across several batches), how far, and its value groups'
        # fingerprints (pm_ledger.py); files whose samples are in the current batch, moved once
        # it is in the spool (committed()) after their fingerprints are in the ledger.
        self._current: tuple[Path, PmFile, int, dict[int, int]] | None = None
        self._pending: list[tuple[Path, str, dict[int, int]]] = []
        self._uncommitted = False
        self.ledger = SentLedger(settings.sent_ledger or settings.pm_dir / DEFAULT_NAME)
        # newest period end and recent period ends seen per gNB (repeated/older files)
        self._seen: dict[str, set[int]] = {}
        self.stats.pm_files = dict.fromkeys(("done", "repeated", "older", "failed"), 0)
        self.stats.pm_values = dict.fromkeys(
            ("accepted", "nil", "suspect", "unknown_measurement", "repeated"), 0
        )
        self.stats.pm_rejected = dict.fromkeys(REASONS, 0)
        self._warned_missing = False

    @property
    def files_done(self) -> int:
        return sum(self.stats.pm_files[r] for r in ("done", "repeated", "older"))

    @property
    def files_failed(self) -> int:
        return self.stats.pm_files["failed"]

    @property
    def unknown_measurements(self) -> int:
        return self.stats.pm_values["unknown_measurement"]

    def _ready_files(self) -> list[Path]:
        if not self.dir.is_dir():
            if not self._warned_missing:
                log.warning("PM directory %s does not exist (yet): no cell data", self.dir)
                self._warned_missing = True
            return []
        self._warned_missing = False
        limit = time.time() - self.settings.settle_s
        pattern = self.settings.pattern
        busy = {p for p, _, _ in self._pending}
        if self._current is not None:
            busy.add(self._current[0])
        if self.ledger.path is not None:  # never read the sent-ledger as a PM file (pattern "*")
            busy |= {self.ledger.path, self.ledger.path.with_name(self.ledger.path.name + ".tmp")}
        found: list[tuple[float, str, Path]] = []
        for p in self.dir.iterdir():
            if p in busy or not (p.match(pattern) or p.match(pattern + ".gz")):
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
        """Values of periods older than max_age_s or ending beyond max_future_s are rejected;
        a file with nothing else is broken."""
        if not pm.values:
            return
        oldest_ok = now_unix_nano - int(self.settings.max_age_s * 1e9)
        newest_ok = now_unix_nano + int(self.settings.max_future_s * 1e9)
        keep: list[PmValue] = []
        for v in pm.values:
            if v.end_unix_nano < oldest_ok:
                pm.reject(
                    "too_old",
                    f"period ending {v.end_unix_nano // 10**9} (agent.sources."
                    f"cell.max_age_s = {self.settings.max_age_s:.0f})",
                )
            elif v.end_unix_nano > newest_ok:
                pm.reject(
                    "in_future",
                    "a period ends in the future (gNB clock ahead by more "
                    "than agent.sources.cell.max_future_s)",
                )
            else:
                keep.append(v)
        if not keep:
            raise PmFileError(
                pm.name,
                "every period is older than agent.sources.cell.max_age_s "
                "or ends in the future: " + pm.summary(),
            )
        pm.values = keep

    def _oldest_ok_ns(self, now_unix_nano: int) -> int:
        return now_unix_nano - int(self.settings.max_age_s * 1e9)

    def _known(self, key: int) -> bool:
        """Already spooled (the ledger) or in a file of the batch being built."""
        if key in self.ledger:
            return True
        if self._current is not None and key in self._current[3]:
            return True
        return any(key in keys for _, _, keys in self._pending)

    def _drop_sent(self, pm: PmFile) -> tuple[dict[int, int], int]:
        """Take out the values of (object, period) groups already spooled; returns the
        fingerprints of the file's groups and how many values were taken out."""
        groups: dict[tuple[PmObject, int, int], list[PmValue]] = {}
        for v in pm.values:
            groups.setdefault((v.obj, v.begin_unix_nano, v.end_unix_nano), []).append(v)
        keys: dict[int, int] = {}
        keep: list[PmValue] = []
        dropped = 0
        for (obj, begin, end), vals in groups.items():
            key = fingerprint(obj.gnb, obj.cell, obj.function, begin, end, (v.name for v in vals))
            if self._known(key):
                dropped += len(vals)
                continue
            keys[key] = end
            keep.extend(vals)
        if dropped:
            pm.values = keep
        return keys, dropped

    def _classify(self, pm: PmFile, repeated: bool) -> str:
        """repeated (every value already spooled: not sent again), older (periods before the
        newest read from its gNB; sent, the aggregator counts it at its own period) or done."""
        ends = {e for _, e in pm.periods}
        if repeated:
            return "repeated"
        if not ends:
            return "done"
        seen = self._seen.setdefault(pm.element, set())
        result = "older" if seen and max(ends) < max(seen) else "done"
        seen |= ends
        if len(seen) > 4096:  # bounded: keep the newest ends
            self._seen[pm.element] = set(sorted(seen)[-2048:])
        return result

    def _open_next(self, now_unix_nano: int, files: list[Path]) -> bool:
        while files:
            path = files.pop(0)
            try:
                pm = read_pm_file(path)
                self._check_times(pm, now_unix_nano)
            except PmFileError as exc:
                log.error("%s (moved to failed/)", exc)
                self.stats.errors += 1
                self.stats.pm_files["failed"] += 1
                self._move(path, "failed")
                continue
            st = self.stats
            for reason, n in pm.rejected.items():
                st.pm_rejected[reason] = st.pm_rejected.get(reason, 0) + n
            st.pm_values["nil"] += pm.nil
            st.pm_values["suspect"] += pm.suspect
            st.pm_values["unknown_measurement"] += sum(pm.unknown.values())
            self.ledger.load(self._oldest_ok_ns(now_unix_nano))
            had = len(pm.values)
            keys, sent_before = self._drop_sent(pm)
            st.pm_values["repeated"] += sent_before
            result = self._classify(pm, repeated=bool(had) and not pm.values)
            st.pm_files[result] += 1
            summary = pm.summary()
            if sent_before:
                summary = "; ".join(
                    x for x in (f"{sent_before} values already sent before (not sent again)", summary) if x
                )
            if pm.rejected:
                log.warning("PM file %s: %s", path, summary)
            elif summary or result != "done":
                log.info(
                    "PM file %s: %s%s",
                    path,
                    f"{result} file; " if result != "done" else "",
                    summary or f"{len(pm.values)} values",
                )
            if result == "repeated":
                self._pending.append((path, "done", keys))  # nothing to send: done/ at commit
                continue
            self._current = (path, pm, 0, keys)
            return True
        return False

    async def collect(self, builder: BatchBuilder, now_unix_nano: int) -> None:
        if self.adapter is not None:
            self.add_readings(builder, await self.adapter.read(), now_unix_nano)
            return
        if self._uncommitted:
            # The last batch never reached the spool: its files are read again (the
            # aggregator counts each period once, so nothing is counted twice).
            self._pending.clear()
            self._current = None
        self._uncommitted = True
        budget = self.max_batch_bytes // 2  # the estimate below is conservative; half is margin
        files = self._ready_files()
        self.backlog = False
        while True:
            if self._current is None and not self._open_next(now_unix_nano, files):
                break
            assert self._current is not None
            path, pm, pos, keys = self._current
            room = budget - len(builder) * SAMPLE_BYTES - builder.series_count * SERIES_BYTES
            take = max(0, room // (SAMPLE_BYTES + SERIES_BYTES))  # as if each a new series
            if take == 0 and len(builder):
                self.backlog = True
                break
            take = max(take, 1)
            self.add_values(builder, pm.values[pos : pos + take])
            pos += take
            if pos < len(pm.values):
                self._current = (path, pm, pos, keys)
                self.backlog = True
                break
            self._pending.append((path, "done", keys))
            self._current = None
        self.backlog = self.backlog or bool(files)

    def committed(self) -> None:
        """The batch of the last collect() is in the spool: the fingerprints of its finished
        files go to the ledger (fsynced), then the files move to done/."""
        self._uncommitted = False
        if self._pending:
            sent: dict[int, int] = {}
            for _, _, keys in self._pending:
                sent.update(keys)
            self.ledger.add(sent, self._oldest_ok_ns(time.time_ns()))
        for path, sub, _ in self._pending:
            self._move(path, sub)
        self._pending.clear()

    def add_file(self, builder: BatchBuilder, pm: PmFile) -> None:
        """Turn one parsed file into samples (all at once; collect() splits large ones)."""
        self.add_values(builder, pm.values)

    def add_values(self, builder: BatchBuilder, values: Sequence[PmValue]) -> None:
        """Period samples: counts as DELTA over [begin, end) (no running sum: a repeated or
        older file is the same or its own period, which the aggregator counts once), the
        other values as period gauges."""
        defs = self._defs
        for v in values:
            spec = v.spec
            labels = tuple(sorted(v.labels().items()))
            key = (spec.metric, labels, spec.counter)
            d = defs.get(key)
            if d is None:
                if len(defs) > 100_000:  # cells come and go; do not grow forever
                    defs.clear()
                d = defs[key] = (
                    delta_def(spec.metric, labels, unit=spec.unit, scale=spec.scale)
                    if spec.counter
                    else gauge_def(spec.metric, labels, unit=spec.unit, scale=spec.scale)
                )
            if spec.counter:
                builder.delta(d, v.begin_unix_nano, v.end_unix_nano, int(v.value))
            else:
                builder.period_gauge(d, v.begin_unix_nano, v.end_unix_nano, float(v.value))
        self.stats.pm_values["accepted"] += len(values)

    def _reading_def(self, r: CellReading, meas: str, counter: bool) -> SeriesDef | None:
        key = (
            meas,
            r.gnb,
            r.cell,
            r.counter_bits if counter else 0,
            r.counter_start_unix_nano if counter else 0,
        )
        if key in self._reading_defs:
            return self._reading_defs[key]
        if len(self._reading_defs) > 100_000:  # cells come and go; do not grow forever
            self._reading_defs.clear()
        spec = MEASUREMENTS.get(meas)
        d: SeriesDef | None = None
        if spec is None or spec.counter != counter:
            log.warning(
                "cell adapter: %s %r is not a known TS 28.552 %s: skipped",
                "counter" if counter else "gauge",
                meas,
                "counter" if counter else "gauge",
            )
        elif counter and r.counter_bits not in (32, 64):
            log.error(
                "cell %s: adapter declares %d-bit counters; only 32 or 64 exist on the "
                "wire: counters skipped",
                r.cell,
                r.counter_bits,
            )
        else:
            labels = {"cell": r.cell, "gnb": r.gnb}
            d = (
                counter_def(
                    meas,
                    labels,
                    unit=spec.unit,
                    bits=r.counter_bits,
                    start_time_unix_nano=r.counter_start_unix_nano,
                )
                if counter
                else gauge_def(meas, labels, unit=spec.unit)
            )  # catalogue unit: scale 1
        self._reading_defs[key] = d
        return d

    def add_readings(
        self, builder: BatchBuilder, readings: Sequence[CellReading], now_unix_nano: int
    ) -> None:
        """Turn an adapter's readings into samples."""
        counter, gauge, isfinite = builder.counter, builder.gauge, math.isfinite
        for r in readings:
            t = r.time_unix_nano or now_unix_nano
            limit = 1 << r.counter_bits
            for meas, v in r.counters.items():
                d = self._reading_def(r, meas, True)
                if d is None:
                    self.stats.pm_values["unknown_measurement"] += 1
                elif isinstance(v, numbers.Integral) and 0 <= v < limit:
                    counter(d, t, int(v))
                else:  # the ingest would refuse the whole batch for it
                    self.stats.errors += 1
                    log.warning(
                        "cell %s: %s=%r is not an integer that fits %d bits: sample skipped",
                        r.cell,
                        meas,
                        v,
                        r.counter_bits,
                    )
            for meas, g in r.gauges.items():
                d = self._reading_def(r, meas, False)
                if d is None:
                    self.stats.pm_values["unknown_measurement"] += 1
                elif isfinite(g):
                    gauge(d, t, float(g))

    async def close(self) -> None:
        if self.adapter is not None:
            await self.adapter.close()
