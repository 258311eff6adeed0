"""Per-partition aggregation state: from accepted records to closed windows.

The middle of the aggregator. One `PartitionState` owns everything derived from one Kafka
partition (a partition holds whole sites, so nothing here is shared between partitions):

  record -> decode -> dedup (agent_id, seq) -> series ids -> late filter -> open buffer
  watermark passes a pane end -> sort by (series, time) -> exact counter deltas -> panes
  -> sliding windows (every window length built from the same panes) -> latest windows

Its parts live beside it, one job each: dedup.py (batches by agent and seq), registry.py
(sites, series ids, per-series arrays), watermark.py (the event-time index the watermark
is read from), counters.py (exact deltas, wraps, resets), panes.py (samples into panes),
grouping.py and windows.py (panes into windows), periods.py (PM counts and statistics),
ledger.py (what each site sent and what was counted), frames.py (frame layouts) and
checkpoint.py (the state as bytes).

Everything a published number depends on is a deterministic function of the partition's
record sequence, and the whole state round-trips through `snapshot()` / `restore()`.
The service checkpoints it to the state topic together with the next offset, so a restart
or a rebalance resumes from exactly the state the previous owner had.

Samples are buffered until the watermark (max event time - allowed lateness) passes their
pane, then processed once in event-time order: out-of-order batches inside the lateness
are counted exactly, and a closed window is final.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from collector import wire
from collector.aggregate import checkpoint
from collector.aggregate.config import AggregateSettings
from collector.aggregate.counters import counter_deltas
from collector.aggregate.decode import Decoder, Headers, RawRecord, Rec, check, decode, poll_columns
from collector.aggregate.dedup import Dedup
from collector.aggregate.frames import (
    COUNTER_PANE_SCHEMA,
    COUNTER_WIN_SCHEMA,
    GAUGE_PANE_SCHEMA,
    GAUGE_WIN_SCHEMA,
    NS,
    TOTALS_SCHEMA,
    counter_windows,
    empty,
    frame,
    period_increase,
)
from collector.aggregate.grouping import series_runs, sorted_by_series_time
from collector.aggregate.ledger import Site, SiteLedger, site_ledgers
from collector.aggregate.panes import counter_pane_rows, gauge_pane_rows
from collector.aggregate.periods import PeriodStore
from collector.aggregate.registry import (
    CAPPED,
    N_CODES,
    NO_SAMPLE,
    OK_COUNTER,
    OK_DELTA,
    OK_GAUGE,
    SPEED_METRIC,
    UNKNOWN,
    SeriesRegistry,
    Table,
    stable_hash,
    unpacked,
)
from collector.aggregate.watermark import NewestEventIndex
from collector.aggregate.windows import Tiers, roll_columns, tier_columns
from collector.errors import ProtocolError

# records add_prefix reads the general way (Decoder.read) before it tries the known path again
GENERAL_RUN = 64

# on_window(partition, window_s, counter_windows, gauge_windows): every closed window, one row
# per (series, end); frames labelled with `site`, `metric` (catalogue name) and `labels`
# ("k=v,k=v") besides `sid` and `end`.
WindowSink = Callable[[int, int, pl.DataFrame, pl.DataFrame], None]


def _refusal(value: bytes) -> ProtocolError:
    """The full parse's reason for a record the per-poll checks refused."""
    try:
        decode(value)
    except ProtocolError as exc:
        return exc
    return ProtocolError("columns")  # not reached: the full parse applies the same checks


def _replace_series(old: pl.DataFrame, newest: pl.DataFrame) -> pl.DataFrame:
    """`old` without the series `newest` has rows for, then `newest`:
    `pl.concat([old.filter(~pl.col("sid").is_in(newest["sid"].implode())), newest])`. Series
    ids are small dense integers, so membership is one NumPy mask; when `newest` covers
    every series of `old` (the usual case: every series reported) the result is `newest`."""
    if not len(old):
        return newest
    new_sid = newest["sid"].to_numpy()
    old_sid = old["sid"].to_numpy()
    mark = np.zeros(int(max(int(new_sid.max()), int(old_sid.max()))) + 1, bool)
    mark[new_sid] = True
    keep = ~mark[old_sid]
    if not keep.any():
        return newest
    return pl.concat([old.filter(pl.Series(keep)), newest])


def _appended(old: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """`pl.concat([old, rows])` (the same rows, layouts checked alike) without concat's
    per-call cost: `vstack` appends the chunks."""
    return old.vstack(rows) if len(old) else rows


def _panes_from(panes: pl.DataFrame, keep_from: int) -> pl.DataFrame:
    """`panes.filter(pl.col("pane") >= keep_from)` (rows in the same order), by one NumPy
    mask (nothing to select when every row or none stays; a slice when the rows are in
    pane order)."""
    if not len(panes):
        return panes
    pane = panes["pane"].to_numpy()
    if int(pane.min()) >= keep_from:
        return panes
    if int(pane.max()) < keep_from:
        return panes.clear()
    if bool((pane[1:] >= pane[:-1]).all()):  # rows in pane order (see panes.counter_pane_rows)
        return panes.slice(int(np.searchsorted(pane, keep_from)))
    return panes[np.flatnonzero(pane >= keep_from)]  # a row gather: cheaper than filter


@dataclass(frozen=True, slots=True)
class PartitionView:
    partition: int
    windows_s: tuple[int, ...]
    meta: pl.DataFrame
    latest_counters: dict[int, pl.DataFrame]
    latest_gauges: dict[int, pl.DataFrame]
    sites: tuple[SiteLedger, ...]
    # Newest period of every period series (collector/aggregate/periods.py), shaped like
    # latest_counters / latest_gauges plus `window` and `window_s` columns.
    newest_period_counters: pl.DataFrame | None = None
    newest_period_gauges: pl.DataFrame | None = None
    # Corrected cumulative counter totals (sid, hi, lo, created ns): see publish_totals.
    totals: pl.DataFrame | None = None


@dataclass(frozen=True, slots=True)
class CloseStats:
    samples: int  # samples processed by the close


class PartitionState:
    def __init__(self, partition: int, settings: AggregateSettings) -> None:
        self.partition = partition
        self.settings = settings
        self.pane_ns = settings.pane_s * NS
        self.windows_s = settings.windows_s
        self.tiers = Tiers.of(settings.windows_s, NS)  # see collector/aggregate/windows.py
        self.lateness_ns = int(settings.allowed_lateness_s * NS)
        self.ttl_ns = int(settings.stale_ttl_s * NS)
        self.on_window: WindowSink | None = None
        # Counts and statistics over periods (PM files): their own path, no watermark.
        self.periods = PeriodStore(int(settings.period_horizon_s * NS), self.ttl_ns)

        self.next_offset: int | None = None
        self.max_event_ns: int | None = None  # newest event time of the partition
        self.wm_ns: int | None = None  # watermark: monotonic, see _update_watermark
        self.closed_ns: int | None = None
        # an idle close decided and checkpointed but maybe not yet done (see advance())
        self.idle_close_ns: int | None = None
        self.site_idle_ns = int(settings.site_idle_s * NS)
        self.version = 0  # bumped whenever published windows change (checkpoint and render key)
        self.totals_gen = 0  # bumped when newly committed totals are published (render key)
        self.records = 0
        self.samples = 0
        self.renewed = 0  # series that came back after more than stale_ttl_s of silence

        self.registry = SeriesRegistry(settings.max_series_per_site)
        self.newest_events = NewestEventIndex()  # sites' max_event, for the watermark
        self.dedup = Dedup(settings.dedup_window)
        self.boot_hash: dict[str, int] = {}
        # the totals /metrics shows: those of the last committed checkpoint (see publish_totals)
        self.totals_published: pl.DataFrame = empty(TOTALS_SCHEMA)
        self._totals_pending: pl.DataFrame | None = None
        self._decoder = Decoder()

        # samples waiting for the watermark: counter (sid, t, value, epoch, bits) and gauge
        # (sid, t, value) column tuples, one per poll
        self.counter_buffer: list[tuple[np.ndarray, ...]] = []
        self.gauge_buffer: list[tuple[np.ndarray, ...]] = []
        # during a close: the counter rows the first tier is rolled from (see _counter_panes)
        self._first_tier_rows: pl.DataFrame | None = None
        self.counter_panes = [empty(COUNTER_PANE_SCHEMA) for _ in range(self.tiers.count)]
        self.gauge_panes = [empty(GAUGE_PANE_SCHEMA) for _ in range(self.tiers.count)]
        self.latest_counters = {w: empty(COUNTER_WIN_SCHEMA) for w in self.windows_s}
        self.latest_gauges = {w: empty(GAUGE_WIN_SCHEMA) for w in self.windows_s}

    @property
    def sites(self) -> list[Site]:
        return self.registry.sites

    # ------------------------------------------------------------------ ingest
    def add(self, offset: int, value: bytes | None, headers: Headers | None = None) -> int:
        """Process one record. Returns samples accepted; raises ProtocolError for the DLQ.

        The offset advances even for a record that raises: the caller dead-letters it.
        """
        accepted, errors = self.add_many([(offset, value, headers)])
        if errors:
            raise errors[0][1]
        return accepted

    def add_many(
        self, records: Sequence[tuple[int, bytes | None, Headers | None]]
    ) -> tuple[int, list[tuple[int, ProtocolError]]]:
        """Process one poll's records of this partition, in offset order.

        Returns the samples accepted and (position, error) of each record that is not a valid
        batch (the caller dead-letters it; the offset still advances past it). The result is
        exactly that of adding the records one by one: per record only Python scalars are
        touched (header, dedup, site, table, watermark); decoding checks, table lookups, the
        late filter and the ledger counts run once over the whole poll's samples.
        """
        accepted, errors, _ = self.add_prefix(records, None)
        return accepted, errors

    def add_prefix(
        self, records: Sequence[tuple[int, bytes | None, Headers | None]], max_samples: int | None
    ) -> tuple[int, list[tuple[int, ProtocolError]], int]:
        """`add_many` of the shortest prefix of `records` that holds `max_samples` samples
        (all of them when None or when they hold fewer; at least one record); returns also
        how many records that prefix has. The service closes between prefixes, so that one
        close never works on more samples than fit the CPU caches: poll grouping changes no
        result."""
        accepted = read = taken = 0
        errors: list[tuple[int, ProtocolError]] = []
        while taken < len(records) and (max_samples is None or read < max_samples):
            rest = records[taken:] if taken else records
            budget = None if max_samples is None else max_samples - read
            k, acc, got = self._add_known(rest, budget)
            if not k:
                # records the known path does not take (a layout or table seen first, a
                # refusal, ...): a run of them the general way, then the known path again
                acc, errs, k, got = self._add_read(rest[:GENERAL_RUN], budget)
                errors += [(taken + i, e) for i, e in errs] if taken else errs
            taken += k
            accepted += acc
            read += got
        return accepted, errors, taken

    def _add_known(self, records: Sequence[RawRecord], max_samples: int | None) -> tuple[int, int, int]:
        """add_prefix's usual case without a `Rec` per record: the longest prefix of `records`
        that `Decoder.read_known` reads (each laid out like its agent's previous record) whose
        samples pass `check`, whose sites are registered under the same names, whose boots
        are hashed and whose series tables are resolved already (the registry's table_cache).
        The same result as `_add_read` of that prefix; returns (records taken, samples
        accepted, samples read), (0, 0, 0) when the first record is not such a one."""
        got = self._decoder.read_known(records, max_samples)
        if got is None:
            return 0, 0, 0
        n = len(got.layouts)
        bad = got.first_bad()
        if bad >= 0:
            n = bad  # _add_read refuses it, with the full parse's reason
        site_index, sites, boot_hash = self.registry.site_index, self.sites, self.boot_hash
        cache = self.registry.table_cache
        verdict = self.dedup.verdict
        layouts, seqs = got.layouts, got.seqs
        site_l: list[int] = []
        keep_l: list[bool] = []
        off_l: list[int] = []
        boot_l: list[int] = []
        tables: list[Table] = []
        offsets: dict[int, int] = {}
        size = 0
        # Per layout (an agent's records of a poll share one, by id: the layouts stay alive
        # in `got`): its site index, boot hash and table. The registry does not change in
        # this loop, so one look per layout holds for each of its records.
        resolved: dict[int, tuple[int, int, Table]] = {}
        for j in range(n):
            lay = layouts[j]
            r = resolved.get(id(lay))
            if r is None:
                site_id, country, region = lay.names
                site_i = site_index.get(site_id)
                if site_i is None:
                    n = j
                    break
                site = sites[site_i]
                table = cache.get((site_i, lay.boot, lay.known[0]))
                boot = boot_hash.get(lay.boot)
                renamed = country and (site.country != country or site.region != region)
                if renamed or table is None or boot is None:
                    n = j  # (a site's new names, a table or boot seen first: _add_read's work)
                    break
                r = resolved[id(lay)] = (site_i, boot, table)
            site_i, boot, table = r
            site = sites[site_i]
            site_l.append(site_i)
            boot_l.append(boot)
            v = verdict(lay.agent, seqs[j], site_i, None)
            if v != "new":
                site.dropped[v] += got.nc[j] + got.ng[j]
                site.dup_batches += 1
                keep_l.append(False)
                off_l.append(0)
                continue
            site.batches += 1
            keep_l.append(True)
            off = offsets.get(id(table))
            if off is None:
                off = offsets[id(table)] = size
                tables.append(table)
                size += len(table.code)
            off_l.append(off)
        if n == 0:
            return 0, 0, 0
        self.next_offset = records[n - 1][0] + 1
        self.records += n
        self._decoder.fast += n
        nc, ng = got.nc[:n], got.ng[:n]
        n_c, n_g = sum(nc), sum(ng)
        cc, gc = got.counters.head(n_c), got.gauges.head(n_g)
        accepted = self._buffer_samples(site_l, keep_l, off_l, boot_l, tables, nc, ng, cc, gc, {})
        return n, accepted, n_c + n_g

    def _add_read(
        self, records: Sequence[RawRecord], max_samples: int | None
    ) -> tuple[int, list[tuple[int, ProtocolError]], int, int]:
        """add_prefix by way of `Decoder.read`, which reads every record whatever it holds;
        returns also the samples read."""
        errors: list[tuple[int, ProtocolError]] = []
        recs: list[Rec] = []
        where: list[int] = []
        read = self._decoder.read
        taken = len(records)
        budget = max_samples if max_samples is not None else -1
        samples = 0
        for i, (_, value, headers) in enumerate(records):
            try:
                r = read(value, headers)
                recs.append(r)
                where.append(i)
                samples += r.nc + r.ng
                if budget > 0:
                    budget -= r.nc + r.ng
                    if budget <= 0:
                        taken = i + 1
                        break
            except ProtocolError as exc:
                errors.append((i, exc))
        self.next_offset = records[taken - 1][0] + 1
        self.records += taken
        if not recs:
            return 0, errors, taken, samples
        cc, gc = poll_columns(recs)
        bad = check(recs, cc, gc)
        if bad:
            for j in bad:
                errors.append((where[j], _refusal(recs[j].value)))
            errors.sort(key=lambda e: e[0])
            gone = set(bad)
            recs = [r for j, r in enumerate(recs) if j not in gone]
            if not recs:
                return 0, errors, taken, samples
            cc, gc = poll_columns(recs)
        return self._ingest(recs, cc, gc), errors, taken, samples

    def _ingest(self, recs: list[Rec], cc: wire.Columns, gc: wire.Columns) -> int:
        n = len(recs)
        # per record, Python scalars only (lists; arrays are built once below)
        site_l = [0] * n
        keep_l = [False] * n
        off_l = [0] * n
        boot_l = [0] * n
        offsets: dict[int, int] = {}
        tables: list[Table] = []
        rec_table: list[Table | None] = [None] * n
        size = 0
        site_index, sites, boot_hash = self.registry.site_index, self.sites, self.boot_hash
        for j, r in enumerate(recs):
            site_i = site_index.get(r.site_id)
            if site_i is None or (
                r.country and (sites[site_i].country != r.country or sites[site_i].region != r.region)
            ):
                site_i = self.registry.site(r.site_id, r.country, r.region)
            site_l[j] = site_i
            site = sites[site_i]
            verdict = self.dedup.verdict(r.agent_id, r.seq, site_i, r.unissued)
            if verdict != "new":
                site.dropped[verdict] += r.n_samples
                site.dup_batches += 1
                continue
            site.batches += 1
            keep_l[j] = True
            table = rec_table[j] = self.registry.table(site_i, r)
            off = offsets.get(id(table))
            if off is None:
                off = offsets[id(table)] = size
                tables.append(table)
                size += len(table.code)
            off_l[j] = off
            boot = boot_hash.get(r.boot_id)
            if boot is None:
                if len(boot_hash) > 65536:
                    boot_hash.clear()
                boot = boot_hash[r.boot_id] = stable_hash("boot", r.boot_id)
            boot_l[j] = boot
        periodic = {
            j: (r, rt)
            for j, (r, rt) in enumerate(zip(recs, rec_table, strict=True))
            if rt is not None
            and (r.deltas is not wire.EMPTY_DELTAS or r.period_gauges is not wire.EMPTY_PERIOD_GAUGES)
            and (len(r.deltas) or len(r.period_gauges))
        }
        nc, ng = [r.nc for r in recs], [r.ng for r in recs]
        return self._buffer_samples(site_l, keep_l, off_l, boot_l, tables, nc, ng, cc, gc, periodic)

    def _buffer_samples(
        self,
        site_l: list[int],
        keep_l: list[bool],
        off_l: list[int],
        boot_l: list[int],
        tables: list[Table],
        nc: list[int],
        ng: list[int],
        cc: wire.Columns,
        gc: wire.Columns,
        periodic: dict[int, tuple[Rec, Table]],
    ) -> int:
        """The per-poll part of _ingest, once each record's site, dedup verdict (`keep_l`) and
        table (`tables`, `off_l`: where each record's table starts in their concatenation) are
        known: kinds and table lookups, the watermark record by record (and the period
        samples of the records in `periodic`, in their place), the late filter, the buffers
        and the ledger counts. Returns the samples accepted."""
        n = len(site_l)
        sites = self.sites
        site_of = np.array(site_l, np.int64)
        keep = np.array(keep_l, bool)
        tab_off = np.array(off_l, np.int64)
        boots = np.array(boot_l, np.int64)
        if not tables:
            return 0
        t_packed = np.concatenate([t.packed for t in tables])  # sid, bits and code per entry
        t_epoch = np.concatenate([t.epoch for t in tables])
        n_sites = len(self.sites)
        all_kept = bool(keep.all())
        tmax = np.full(n, NO_SAMPLE, np.int64)
        parts = []
        for is_counter, cols, counts in ((True, cc, nc), (False, gc, ng)):
            if not len(cols):
                continue
            cnt = np.array(counts, np.int64)
            # (a record's values are repeated for its samples rather than gathered by each
            # sample's record: np.repeat is several times cheaper than the gather)
            gi = cols.series_index.astype(np.int64) + np.repeat(tab_off, cnt)
            if not all_kept:  # a dropped record (a duplicate) has no table among the kept ones
                kept = np.repeat(keep, cnt)
                gi[~kept] = 0
            # each sample's series id, counter width and lookup code: one gather
            sid, bits, code = unpacked(t_packed[gi])
            if not all_kept:
                code = np.where(kept, code, -1)
            want = OK_COUNTER if is_counter else OK_GAUGE
            ok = code == want
            all_ok = bool(ok.all())
            if not all_ok:
                wrong = code >= 0
                wrong &= ~ok
                if wrong.any():
                    rec = np.repeat(np.arange(n), cnt)
                    counts_ = np.bincount(
                        site_of[rec[wrong]] * N_CODES + code[wrong], minlength=n_sites * N_CODES
                    ).reshape(n_sites, N_CODES)
                    for si in np.flatnonzero(counts_.any(axis=1)).tolist():
                        c = counts_[si]
                        d = self.sites[si].dropped
                        d["unknown_metric"] += int(c[UNKNOWN])
                        d["cardinality"] += int(c[CAPPED])
                        # a series of another kind (or a DELTA series) in these columns
                        d["rejected"] += int(c.sum() - c[UNKNOWN] - c[CAPPED])
            t = cols.time_unix_nano
            # newest accepted-kind sample per record (before the late filter), for the watermark;
            # a record's samples are contiguous, so one max over each record's run
            has = np.flatnonzero(cnt)
            runs = (np.cumsum(cnt) - cnt)[has]
            newest = np.maximum.reduceat(t if all_ok else np.where(ok, t, NO_SAMPLE), runs)
            tmax[has] = np.maximum(tmax[has], newest)
            parts.append((is_counter, cols, gi, sid, bits, ok, cnt))
        # Late means: behind the pane boundary the watermark had reached *before* the record
        # (or behind what is already closed). A function of the record sequence only, so it
        # does not depend on how records were grouped into polls or when panes were closed.
        cut_l = [NO_SAMPLE] * n
        closed0 = self.closed_ns
        pane = self.pane_ns
        tm = tmax.tolist()
        accepted = np.zeros(n_sites, np.int64)

        def late_cut() -> int:  # from the watermark as it is now
            closed = closed0
            if self.wm_ns is not None:
                wm_cut = (self.wm_ns // pane) * pane
                closed = wm_cut if closed is None or wm_cut > closed else closed
            return NO_SAMPLE if closed is None else closed

        cut_now = late_cut()  # computed again only when the watermark moves
        for j in np.flatnonzero(keep).tolist():
            cut_l[j] = cut_now
            if periodic and j in periodic:
                accepted[site_l[j]] += self._add_periods(*periodic[j], sites[site_l[j]])
            hi = tm[j]
            if hi != NO_SAMPLE:
                site_i = site_l[j]
                site = sites[site_i]
                moved = False  # the watermark depends only on these two
                if site.max_event is None or hi > site.max_event:
                    site.max_event = hi
                    self.newest_events.update(site_i, hi)
                    moved = True
                if self.max_event_ns is None or hi > self.max_event_ns:
                    self.max_event_ns = hi
                    moved = True
                if moved and self._update_watermark():
                    cut_now = late_cut()
        cut = np.array(cut_l, np.int64)
        late = np.zeros(n_sites, np.int64)
        for is_counter, cols, gi, sid, bits, ok, cnt in parts:
            t = cols.time_unix_nano
            fresh = ok & (t >= np.repeat(cut, cnt))
            if fresh.all():  # the usual case: every sample kept, no selection to copy
                accepted += np.bincount(site_of, weights=cnt, minlength=n_sites).astype(np.int64)
                g, tf, vf = gi, t, cols.value
                boot = np.repeat(boots, cnt) if is_counter else boots
            else:
                rec = np.repeat(np.arange(n), cnt)
                late += np.bincount(site_of[rec[ok & ~fresh]], minlength=n_sites)
                accepted += np.bincount(site_of[rec[fresh]], minlength=n_sites)
                g, tf, vf = gi[fresh], t[fresh], cols.value[fresh]
                sid, bits = sid[fresh], bits[fresh]
                boot = boots[rec[fresh]]
            if not len(g):
                continue
            if is_counter:
                self.counter_buffer.append((sid, tf, vf, t_epoch[g] ^ boot, bits))
            else:
                self.gauge_buffer.append((sid, tf, vf))
        for si in np.flatnonzero(accepted | late).tolist():
            self.sites[si].samples += int(accepted[si])
            self.sites[si].dropped["late"] += int(late[si])
        total = int(accepted.sum())
        self.samples += total
        return total

    def _add_periods(self, d: Rec, table: Table, site: Site) -> int:
        """Period samples go to the period store (collector/aggregate/periods.py), never
        through the watermark: a period is complete when it arrives, however late."""
        accepted = 0
        self.periods.note_clock(self.max_event_ns)
        for gauge, cols, want in ((False, d.deltas, OK_DELTA), (True, d.period_gauges, OK_GAUGE)):
            if not len(cols):
                continue
            code = table.code[cols.series_index]
            ok = code == want
            site.dropped["unknown_metric"] += int(np.count_nonzero(code == UNKNOWN))
            site.dropped["cardinality"] += int(np.count_nonzero(code == CAPPED))
            site.dropped["rejected"] += int(np.count_nonzero(~ok & (code != UNKNOWN) & (code != CAPPED)))
            verdict, rows = self.periods.add(
                table.sid[cols.series_index[ok]],
                cols.start_unix_nano[ok],
                cols.time_unix_nano[ok],
                cols.value[ok],
                gauge=gauge,
            )
            site.dropped["duplicate"] += verdict.duplicate
            site.dropped["too_old"] += verdict.too_old
            site.dropped["overlap"] += verdict.overlap
            accepted += verdict.accepted
            if self.on_window is not None and len(rows):
                self._emit_periods(rows, gauge)
        self.periods.expire()
        self.version += 1
        return accepted

    def _emit_periods(self, rows: pl.DataFrame, gauge: bool) -> None:
        """Accepted periods to the window log, each at its own period (window = its length)."""
        assert self.on_window is not None
        rows = rows.with_columns(window_s=(pl.col("end") - pl.col("start")) // NS)
        for (length,), part in rows.partition_by("window_s", as_dict=True).items():
            if gauge:
                g = part.select("sid", "end", sum="value", cnt=pl.lit(1, pl.UInt32), min="value", max="value")
                self.on_window(
                    self.partition, int(length), empty(COUNTER_WIN_SCHEMA), self.registry.labelled(g)
                )
            else:
                c = part.select("sid", "end", **period_increase())
                self.on_window(
                    self.partition, int(length), self.registry.labelled(c), empty(GAUGE_WIN_SCHEMA)
                )

    # ------------------------------------------------------------------ event time
    def _update_watermark(self) -> bool:
        """Watermark = oldest newest-event-time among the partition's active sites - lateness
        (True when it moved).

        Sites batch and deliver at their own pace (a batch may span 100 s of samples), so the
        partition only moves as fast as its slowest site - unless that site is more than
        `site_idle_s` behind the newest one (silent or far behind): then it stops holding
        windows open. Event time only, so it is a function of the record sequence; kept
        monotonic so nothing closed ever reopens.
        """
        assert self.max_event_ns is not None
        oldest = self.newest_events.min_at_least(self.max_event_ns - self.site_idle_ns)
        assert oldest is not None  # the newest site is always at or above the floor
        wm = oldest - self.lateness_ns
        if self.wm_ns is None or wm > self.wm_ns:
            self.wm_ns = wm
            return True
        return False

    def watermark_ns(self) -> int | None:
        return self.wm_ns

    def advance(self, idle_ns: int = 0, *, emit_all: bool | None = None) -> CloseStats | None:
        """Close every pane the watermark has passed. `idle_ns`: wall time without records
        beyond the idle timeout, by which event time is advanced (silent partitions).

        An idle close depends on the wall clock, not on the record sequence: a replay after a
        restart would not repeat it. The service therefore checkpoints `idle_target()` as
        `idle_close_ns` first and then calls `close_idle()`, which a restore repeats."""
        if self.max_event_ns is None or self.wm_ns is None:
            return None
        # A silent partition's event time flows with the wall clock from its newest sample,
        # and neither the lateness nor a lagging site holds its windows open.
        wm = self.max_event_ns + idle_ns if idle_ns > 0 else self.wm_ns
        return self._advance_to(wm, emit_all)

    def idle_target(self, idle_ns: int) -> int | None:
        """The pane boundary an idle close would reach, when it closes more than the
        watermark does; None otherwise."""
        if idle_ns <= 0 or self.max_event_ns is None or self.wm_ns is None:
            return None
        target = ((self.max_event_ns + idle_ns) // self.pane_ns) * self.pane_ns
        if target <= (self.wm_ns // self.pane_ns) * self.pane_ns:
            return None
        if self.closed_ns is not None and target <= self.closed_ns:
            return None
        return target

    def close_idle(self, target_ns: int, *, emit_all: bool | None = None) -> CloseStats | None:
        """Close up to `target_ns` (an idle close recorded in a checkpoint beforehand)."""
        self.idle_close_ns = None
        if self.max_event_ns is None or self.wm_ns is None:
            return None
        return self._advance_to(target_ns, emit_all)

    def _advance_to(self, wm: int, emit_all: bool | None) -> CloseStats | None:
        target = (wm // self.pane_ns) * self.pane_ns
        if self.closed_ns is None:
            first = self._oldest_buffered()
            if first is None:
                return None
            self.closed_ns = (first // self.pane_ns) * self.pane_ns
        if target <= self.closed_ns:
            return None
        return self._close(target, self.on_window is not None if emit_all is None else emit_all)

    def _oldest_buffered(self) -> int | None:
        ts = [int(c[1].min()) for c in (*self.counter_buffer, *self.gauge_buffer) if len(c[1])]
        return min(ts) if ts else None

    def _take_buffer(
        self, bufs: list[tuple[np.ndarray, ...]], upto: int
    ) -> tuple[list[tuple[np.ndarray, ...]], tuple[np.ndarray, ...] | None]:
        """Splits the buffer at `upto`: (what stays, the samples before it sorted by (series,
        time))."""
        if not bufs:
            return bufs, None
        cols = [np.concatenate(c) if len(bufs) > 1 else c[0] for c in zip(*bufs, strict=True)]
        due = cols[1] < upto
        if due.all():
            return [], sorted_by_series_time(cols)
        keep = tuple(c[~due] for c in cols)
        return ([keep] if len(keep[0]) else []), sorted_by_series_time(cols, np.flatnonzero(due))

    def _close(self, target: int, emit_all: bool) -> CloseStats:
        assert self.closed_ns is not None
        start = self.closed_ns
        self._first_tier_rows = None
        self.counter_buffer, cdue = self._take_buffer(self.counter_buffer, target)
        self.gauge_buffer, gdue = self._take_buffer(self.gauge_buffer, target)
        n = 0
        speeds: tuple[np.ndarray, ...] | None = None
        if gdue is not None and len(gdue[0]):
            n += len(gdue[0])
            gsid, gt, gv = gdue
            speeds = self._gauge_panes(gsid, gt, gv)
        if cdue is not None and len(cdue[0]):
            n += len(cdue[0])
            sid, t, v, epoch, bits = cdue
            # Without the window log only the newest windows are computed: of the new pane
            # rows, only those the newest windows read are kept (what _windows' prune keeps)
            from_pane = None if emit_all else self._keep_from(0, target, extra=1)
            self._counter_panes(sid, t, v, epoch, bits, speeds, from_pane)
        if speeds is not None:
            self.registry.note_link_speeds(speeds)
        self._windows(start, target, emit_all)
        self._prune(target)  # the next window of each tier ends after target
        self.closed_ns = target
        self.periods.note_clock(self.max_event_ns)
        self.periods.expire()
        self._expire(target - self.ttl_ns)
        self.version += 1
        return CloseStats(n)

    def _renew_returning(self, sid: np.ndarray, t: np.ndarray, starts: np.ndarray) -> None:
        """Samples sorted by (sid, t) are about to be processed. A series whose first one
        comes more than stale_ttl_s after its previous sample has been silent longer than the
        expiry: it starts a new life, as if it had expired (sample ledger from the new sample
        on, no counter carry, corrected total from 0 with a new created time, its old windows
        gone). Decided from the gap between two consecutive processed samples of the series,
        so it depends neither on the wall clock nor on poll grouping. `starts`: each series'
        first sample."""
        u = sid[starts]
        last = self.registry.last_sample[u]
        ren = u[(last != NO_SAMPLE) & (t[starts] - last > self.ttl_ns)]
        if not len(ren):
            return
        self.registry.start_new_lives(ren)
        self._forget(ren)
        self.renewed += len(ren)

    def _forget(self, ids: np.ndarray) -> None:
        """Drop the windows, panes and totals of these series ids."""
        gone = pl.Series(ids.astype(np.uint32)).implode()
        for w in self.windows_s:
            self.latest_counters[w] = self.latest_counters[w].filter(~pl.col("sid").is_in(gone))
            self.latest_gauges[w] = self.latest_gauges[w].filter(~pl.col("sid").is_in(gone))
        self.counter_panes = [f.filter(~pl.col("sid").is_in(gone)) for f in self.counter_panes]
        self.gauge_panes = [f.filter(~pl.col("sid").is_in(gone)) for f in self.gauge_panes]
        self.totals_published = self.totals_published.filter(~pl.col("sid").is_in(gone))
        if self._totals_pending is not None:
            self._totals_pending = self._totals_pending.filter(~pl.col("sid").is_in(gone))

    def _counter_panes(
        self,
        sid: np.ndarray,
        t: np.ndarray,
        v: np.ndarray,
        epoch: np.ndarray,
        bits: np.ndarray,
        speeds: tuple[np.ndarray, ...] | None = None,
        from_pane: int | None = None,
    ) -> None:
        """Counter panes of samples sorted by (series, time); `from_pane`: keep no rows of
        earlier panes (the tier above is rolled from this close's own partial sums)."""
        first, sstarts = series_runs(sid)
        self._renew_returning(sid, t, sstarts)
        d = counter_deltas(
            sid,
            t,
            v,
            epoch,
            bits,
            self.registry.carry,
            self.registry.plausible_rate(sid, t, speeds, sstarts, self.settings.max_counter_rate),
            first=first,
        )
        if d.ambiguous.any():
            per_site = np.bincount(self.registry.site_of[sid[d.ambiguous]], minlength=len(self.sites))
            for si in np.flatnonzero(per_site).tolist():
                self.sites[si].excluded["ambiguous_gap"] += int(per_site[si])
        per_tier = self.tiers.panes_per_window[1] if self.tiers.count > 1 else None
        rows, first_tier, totals = counter_pane_rows(
            sid, t // self.pane_ns, d, first, per_tier, from_pane, series_starts=sstarts
        )
        assert totals is not None
        self.registry.add_total_halves(sid[sstarts], *totals)  # = add_totals(sid, d.delta, sstarts)
        old = self.counter_panes[0]
        self.counter_panes[0] = _appended(old, rows)
        if first_tier is not None:
            self._first_tier_rows = _appended(old, first_tier)
        self.registry.note_processed(sid, t, sstarts)

    def totals_frame(self) -> pl.DataFrame:
        """sid, hi, lo, created (ns) of every live counter series that has a sample, complete
        up to the closed boundary."""
        return self.registry.totals_frame(self.closed_ns if self.closed_ns is not None else 0)

    def publish_totals(self) -> None:
        """The checkpoint taken last is committed: its totals become the published ones.

        Publishing only committed totals means a restarted or rebalanced owner, which starts
        from that checkpoint, never shows a smaller total than was shown before (no false
        counter reset in Prometheus); the price is up to one checkpoint interval of lag.
        """
        if self._totals_pending is not None:
            self.totals_published = self._totals_pending
            self._totals_pending = None
            self.totals_gen += 1

    def _gauge_panes(self, sid: np.ndarray, t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """Gauge panes of samples sorted by (series, time); returns the link speed samples
        among them (sid, t, bytes/s), sorted likewise, for the counters' gap rule (see
        SeriesRegistry.note_link_speeds)."""
        first, sstarts = series_runs(sid)
        self._renew_returning(sid, t, sstarts)
        speeds = None
        is_speed = self.registry.metric_of[sid] == SPEED_METRIC
        if is_speed.any():
            speeds = (sid[is_speed], t[is_speed], v[is_speed] * self.registry.scale[sid[is_speed]])
        frame = gauge_pane_rows(sid, t // self.pane_ns, v, first)
        self.gauge_panes[0] = _appended(self.gauge_panes[0], frame)
        self.registry.note_processed(sid, t, sstarts)
        return speeds

    def _windows(self, start: int, target: int, emit_all: bool) -> None:
        """Close the windows ending in (start, target].

        Each window length slides by its source tier's pane. Tier panes (tumbling windows
        of the tier below) are always computed the same way, before anything is pruned;
        then every closed window end (`emit_all`, for the window log) or just the newest.
        The published numbers are the same bits either way (see windows.roll_columns).
        """
        tiers = self.tiers
        for j in range(1, tiers.count):
            k = tiers.source[j]
            n, size = tiers.panes_per_window[j], tiers.pane_ns[k]
            lo, hi = start // size + 1, target // size
            # the top tier feeds only the newest windows: without the log, no ends the prune
            # after the close drops, but each series' newest (its newest window reads it)
            since = (
                (self._keep_from(j, target, extra=1) + 1) * n
                if not emit_all and j == tiers.count - 1
                else None
            )
            if hi >= lo:
                # tier 1 from this close's partial sums when it has them (see _counter_panes)
                rows = self._first_tier_rows if j == 1 and self._first_tier_rows is not None else None
                ct = roll_columns(
                    self.counter_panes[k] if rows is None else rows,
                    n,
                    lo,
                    hi,
                    size,
                    True,
                    tumbling=True,
                    since=since,
                )
                gt = roll_columns(self.gauge_panes[k], n, lo, hi, size, False, tumbling=True, since=since)
                self._add_tier(j, ct, gt)
        # (the rolls below read only the panes of the windows they compute, so nothing needs
        # pruning before them: _close prunes once, after)
        for j, w in enumerate(self.windows_s):
            k = self.tiers.source[j]
            size = self.tiers.pane_ns[k]
            n = self.tiers.panes_per_window[j]
            lo, hi = start // size + 1, target // size  # end indices in tier-k panes
            if hi < lo:
                continue
            # without the window log: each series' newest window only (the one the log's
            # newest-per-series filter below keeps)
            ccols = roll_columns(self.counter_panes[k], n, lo, hi, size, True, newest=not emit_all)
            gcols = roll_columns(self.gauge_panes[k], n, lo, hi, size, False, newest=not emit_all)
            cw = empty(COUNTER_WIN_SCHEMA) if ccols is None else counter_windows(ccols)
            gw = empty(GAUGE_WIN_SCHEMA) if gcols is None else frame(gcols, GAUGE_WIN_SCHEMA)
            for frame_, latest in ((cw, self.latest_counters), (gw, self.latest_gauges)):
                if len(frame_):
                    newest = (
                        frame_
                        if lo == hi or not emit_all
                        else frame_.filter(pl.col("end") == pl.col("end").max().over("sid"))
                    )
                    latest[w] = _replace_series(latest[w], newest)
            if self.on_window is not None and (len(cw) or len(gw)):
                self.on_window(self.partition, w, self.registry.labelled(cw), self.registry.labelled(gw))

    def _add_tier(self, k: int, cw: dict[str, np.ndarray] | None, gw: dict[str, np.ndarray] | None) -> None:
        """Closed windows of tier k - 1 (roll_columns) become tier k's panes."""
        size = self.tiers.pane_ns[k]
        if cw is not None:
            rows = frame(tier_columns(cw, size), COUNTER_PANE_SCHEMA)
            self.counter_panes[k] = _appended(self.counter_panes[k], rows)
        if gw is not None:
            rows = frame(tier_columns(gw, size), GAUGE_PANE_SCHEMA)
            self.gauge_panes[k] = _appended(self.gauge_panes[k], rows)

    def _keep_from(self, k: int, target: int, extra: int = 0) -> int:
        """The oldest pane of tier k a window ending after `target` needs (`extra`: that
        many more, for windows ending at `target` itself)."""
        return (target // self.tiers.pane_ns[k]) + 1 - self.tiers.keep[k] - extra

    def _prune(self, target: int, extra: int = 0) -> None:
        """Drop panes no window ending after `target` needs (`extra`: also keep that many
        more, for windows ending at `target` itself)."""
        for k in range(self.tiers.count):
            keep_from = self._keep_from(k, target, extra)
            self.counter_panes[k] = _panes_from(self.counter_panes[k], keep_from)
            self.gauge_panes[k] = _panes_from(self.gauge_panes[k], keep_from)

    # ------------------------------------------------------------------ expiry
    def _expire(self, before: int) -> None:
        """Series without a processed sample since `before` (and none waiting) expire: their
        ids are freed, their windows, panes and totals dropped."""
        stale = self.registry.stale(before)
        if not len(stale):
            return
        # A series with samples still in the open buffer is not stale.
        pending = (
            [c[0] for c in self.counter_buffer] + [g[0] for g in self.gauge_buffer] + [self.periods.sids()]
        )
        stale = np.setdiff1d(stale, np.concatenate(pending))
        if not len(stale):
            return
        self.registry.release(stale)
        self._forget(stale)

    def forget_restored(self, sids: list[int]) -> None:
        """Drop restored series whose metric left the catalogue (checkpoint.load only)."""
        self._forget(np.array(sids, np.int64))  # windows, panes, totals
        self.registry.drop_restored(sids)
        drop = np.array(sids, np.uint32)
        self.counter_buffer = [tuple(c[~np.isin(b[0], drop)] for c in b) for b in self.counter_buffer]
        self.gauge_buffer = [tuple(c[~np.isin(b[0], drop)] for c in b) for b in self.gauge_buffer]
        self.periods.forget(drop)

    # ------------------------------------------------------------------ views
    def view(self) -> PartitionView:
        """A consistent, immutable picture of what is published (safe to render in a thread)."""
        sites = site_ledgers(self.registry, self.dedup.agents.values(), self.ledger_end_ns())
        pc, pg = self.periods.latest()
        return PartitionView(
            self.partition,
            self.windows_s,
            self.registry.series_meta(),
            dict(self.latest_counters),
            dict(self.latest_gauges),
            sites,
            pc,
            pg,
            self.totals_published,
        )

    def ledger_end_ns(self) -> int | None:
        """Last event time (inclusive) the sample ledger expects samples up to.

        The pane boundary the partition has closed - everything before it is processed,
        nothing after it is - capped at the partition's newest event time, so a silent
        partition whose idle timeout closed its panes by the wall clock does not keep
        expecting samples. Without the idle timeout the closed boundary is the watermark
        rounded down to a pane after the last advance(), a function of the record sequence.
        """
        if self.closed_ns is None or self.max_event_ns is None:
            return None
        return min(self.closed_ns - 1, self.max_event_ns)

    def series_meta(self) -> pl.DataFrame:
        """sid -> site index, metric index and entity label values (live series only)."""
        return self.registry.series_meta()

    def live_series(self) -> int:
        return len(self.registry.series_key)

    def buffered_bytes(self) -> int:
        """Bytes of samples held until the watermark passes their pane."""
        return sum(sum(a.nbytes for a in c) for c in (*self.counter_buffer, *self.gauge_buffer))

    def state_bytes(self) -> int:
        """Approximate resident bytes of this state (arrays, frames, registry)."""
        n = self.registry.state_bytes()
        n += sum(int(f.estimated_size()) for f in (*self.counter_panes, *self.gauge_panes))
        n += sum(
            int(f.estimated_size()) for f in (*self.latest_counters.values(), *self.latest_gauges.values())
        )
        return n + self.buffered_bytes() + self.periods.state_bytes()

    # ------------------------------------------------------------------ checkpoint
    def snapshot(self) -> bytes:
        """Everything needed to continue exactly where this state is, as bytes (format:
        collector/aggregate/checkpoint.py). The totals it holds become the published ones
        once the service has committed it (publish_totals)."""
        self._totals_pending = self.totals_frame()
        return checkpoint.encode(self)

    @classmethod
    def restore(cls, data: bytes, settings: AggregateSettings) -> PartitionState:
        header, frames = checkpoint.read(data)
        st = cls(header["partition"], settings)
        checkpoint.load(st, header, frames)
        return st
