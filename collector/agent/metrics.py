"""The agent's self-metrics: one prometheus_client Collector per registry.

Every AgentPipeline (one per agent identity; the simulator runs many in one process) adds
itself; at scrape time `collect()` reads each pipeline's `AgentStats`, so nothing is updated
per batch. Sources add their own collection timings through `SourceStats`.

`collect()` runs on the event loop the pipelines run on: the metrics endpoint
(collector/exposition/http.py) serves the registry there, so the spool's and the sender's
state is read where it changes, never from another thread.

This module knows pipelines only by the `StatsSource` protocol (agent_id, site, stats):
agent/pipeline.py imports it, not the other way round.
"""

from __future__ import annotations

import datetime as dt
import time
import weakref
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collector.agent.batch import SiteInfo

PREFIX = "collector_agent_"


@dataclass(frozen=True, slots=True)
class AgentStats:
    """A snapshot of one pipeline's counters (monotonic since start) and gauges."""

    sent: int  # batch writes on a stream; a resend counts again
    acked: int
    rejected: int
    dropped: dict[str, int] = field(default_factory=dict)  # by reason
    spool_bytes: int = 0
    spool_batches: int = 0
    oldest_unacked_age_s: float = 0.0
    in_flight: int = 0
    connected: bool = False
    retriable_acks: int = 0
    stream_failures: int = 0
    last_seq: int = 0
    spool_writable: bool = True
    rejects_pending: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class StatsSource(Protocol):
    """What the collector reads of a pipeline (collector/agent/pipeline.py's AgentPipeline)."""

    @property
    def agent_id(self) -> str: ...

    @property
    def site(self) -> SiteInfo: ...

    @property
    def stats(self) -> AgentStats: ...


@dataclass(slots=True)
class TargetStats:
    """Per device target of an adapter (an SNMP agent, a gNMI target)."""

    up: bool = False
    polls: int = 0  # successful polls (SNMP) or notifications received (gNMI)
    reconnects: int = 0  # streams re-opened after a failure (gNMI)
    errors: dict[str, int] = field(default_factory=dict)  # by reason

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1


@dataclass(slots=True)
class SourceStats:
    """Per source (server, link, cell): collections, samples, errors, time spent."""

    collections: int = 0
    samples: int = 0
    errors: int = 0
    seconds: float = 0.0
    # PM files (cell source, pm_xml): files by result, values by result, rejected by reason
    pm_files: dict[str, int] = field(default_factory=dict)
    pm_values: dict[str, int] = field(default_factory=dict)
    pm_rejected: dict[str, int] = field(default_factory=dict)
    targets: dict[str, TargetStats] = field(default_factory=dict)


class AgentCollector(Collector):
    """Pipelines and sources of one registry; read at scrape time, on their event loop."""

    def __init__(self) -> None:
        self._pipelines: dict[int, StatsSource] = {}
        self._sources: dict[tuple[str, str], SourceStats] = {}

    def add(self, p: StatsSource) -> None:
        self._pipelines[id(p)] = p

    def remove(self, p: StatsSource) -> None:
        self._pipelines.pop(id(p), None)

    def add_source(self, agent_id: str, source: str, stats: SourceStats) -> None:
        self._sources[(agent_id, source)] = stats

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        pipelines = list(self._pipelines.values())
        sources = list(self._sources.items())
        a = ["agent_id"]
        spool_bytes = GaugeMetricFamily(PREFIX + "spool_bytes", "Bytes of spool segment files.", labels=a)
        spool_batches = GaugeMetricFamily(
            PREFIX + "spool_batches", "Batches in the spool not yet acknowledged.", labels=a
        )
        oldest = GaugeMetricFamily(
            PREFIX + "spool_oldest_unacked_age_seconds",
            "Age of the oldest batch not yet acknowledged (0 if none).",
            labels=a,
        )
        inflight = GaugeMetricFamily(
            PREFIX + "batches_in_flight", "Batches sent and awaiting an ack.", labels=a
        )
        connected = GaugeMetricFamily(
            PREFIX + "stream_connected", "1 while a stream to the ingest service is open.", labels=a
        )
        sent = CounterMetricFamily(PREFIX + "batches_sent", "Batch sends (a resend counts again).", labels=a)
        acked = CounterMetricFamily(PREFIX + "batches_acked", "Batches acknowledged OK.", labels=a)
        rejected = CounterMetricFamily(
            PREFIX + "batches_rejected", "Batches refused by the ingest and moved aside.", labels=a
        )
        dropped = CounterMetricFamily(
            PREFIX + "batches_dropped",
            "Batches (or damaged spool regions) dropped unsent, by reason.",
            labels=[*a, "reason"],
        )
        retries = CounterMetricFamily(
            PREFIX + "send_retries", "Retriable acks and broken streams, by kind.", labels=[*a, "kind"]
        )
        writable = GaugeMetricFamily(
            PREFIX + "spool_writable",
            "0 after the last spool write or seq reservation failed (disk full, I/O error): "
            "new batches are being dropped (reason io_error); 1 after the last one worked.",
            labels=a,
        )
        reject_pending = GaugeMetricFamily(
            PREFIX + "rejected_unsaved_batches",
            "Rejected batches kept in the spool because rejected/ could not be written "
            "(retried by housekeeping).",
            labels=a,
        )
        last_seq = GaugeMetricFamily(
            PREFIX + "last_seq",
            "Last seq assigned (after a restart: the last one reserved before it).",
            labels=a,
        )
        for p in pipelines:
            st = p.stats
            lv = [p.agent_id]
            spool_bytes.add_metric(lv, st.spool_bytes)
            spool_batches.add_metric(lv, st.spool_batches)
            oldest.add_metric(lv, st.oldest_unacked_age_s)
            inflight.add_metric(lv, st.in_flight)
            connected.add_metric(lv, 1.0 if st.connected else 0.0)
            sent.add_metric(lv, st.sent)
            acked.add_metric(lv, st.acked)
            rejected.add_metric(lv, st.rejected)
            for reason, n in sorted(st.dropped.items()):
                dropped.add_metric([*lv, reason], n)
            retries.add_metric([*lv, "ack"], st.retriable_acks)
            retries.add_metric([*lv, "stream"], st.stream_failures)
            last_seq.add_metric(lv, st.last_seq)
            writable.add_metric(lv, 1.0 if st.spool_writable else 0.0)
            reject_pending.add_metric(lv, st.rejects_pending)
        yield from (
            spool_bytes,
            spool_batches,
            oldest,
            inflight,
            connected,
            sent,
            acked,
            rejected,
            dropped,
            retries,
            last_seq,
            writable,
            reject_pending,
        )
        yield from _site_families([(p.agent_id, p.site) for p in pipelines])
        s = ["agent_id", "source"]
        runs = CounterMetricFamily(PREFIX + "source_collections", "Collections run.", labels=s)
        samples = CounterMetricFamily(PREFIX + "source_samples", "Samples collected.", labels=s)
        errors = CounterMetricFamily(PREFIX + "source_errors", "Collections or files that failed.", labels=s)
        secs = CounterMetricFamily(PREFIX + "source_seconds", "Wall time spent collecting.", labels=s)
        for (agent_id, source), ss in sources:
            lv = [agent_id, source]
            runs.add_metric(lv, ss.collections)
            samples.add_metric(lv, ss.samples)
            errors.add_metric(lv, ss.errors)
            secs.add_metric(lv, ss.seconds)
        yield from (runs, samples, errors, secs)
        pm_files = CounterMetricFamily(
            PREFIX + "pm_files",
            "PM files read, by result: done (new periods), repeated (every "
            "value already sent before: moved to done/ unsent), older (before the newest period "
            "of its gNB; sent), failed (broken: moved to failed/).",
            labels=[*s, "result"],
        )
        pm_values = CounterMetricFamily(
            PREFIX + "pm_values",
            "PM file values by result: accepted (sent), nil (NIL: not "
            "available in the period), suspect (flagged suspect; also accepted), "
            "unknown_measurement (a measurement the agent does not accept), repeated (already "
            "sent in an earlier file: not sent again).",
            labels=[*s, "result"],
        )
        pm_rejected = CounterMetricFamily(
            PREFIX + "pm_values_rejected",
            "PM file values rejected, by reason (the file's "
            "other values go through; one log line per file names it).",
            labels=[*s, "reason"],
        )
        for (agent_id, source), ss in sources:
            for fam, table in (
                (pm_files, ss.pm_files),
                (pm_values, ss.pm_values),
                (pm_rejected, ss.pm_rejected),
            ):
                for k, n in sorted(table.items()):
                    fam.add_metric([agent_id, source, k], n)
        yield from (pm_files, pm_values, pm_rejected)
        t = [*s, "target"]
        t_up = GaugeMetricFamily(
            PREFIX + "target_up",
            "1 while the device target answers (last SNMP poll succeeded, gNMI stream open).",
            labels=t,
        )
        t_polls = CounterMetricFamily(
            PREFIX + "target_polls",
            "Successful SNMP polls or gNMI notifications received, per device target.",
            labels=t,
        )
        t_reconn = CounterMetricFamily(
            PREFIX + "target_reconnects",
            "gNMI streams re-opened after a failure, per device target.",
            labels=t,
        )
        t_err = CounterMetricFamily(
            PREFIX + "target_errors",
            "Failed polls / streams per device target, by reason.",
            labels=[*t, "reason"],
        )
        for (agent_id, source), ss in sources:
            for name, ts in list(ss.targets.items()):
                lv = [agent_id, source, name]
                t_up.add_metric(lv, 1.0 if ts.up else 0.0)
                t_polls.add_metric(lv, ts.polls)
                t_reconn.add_metric(lv, ts.reconnects)
                for reason, n in sorted(ts.errors.items()):
                    t_err.add_metric([*lv, reason], n)
        yield from (t_up, t_polls, t_reconn, t_err)


def _site_families(agents: list[tuple[str, SiteInfo]], now: float | None = None) -> Iterator[Metric]:
    """Where each agent is: an info metric (value 1) to join agent series to their site
    (`* on(agent_id) group_left(site, country, region)`), and the site's UTC offset now (from
    its IANA zone, so daylight saving time moves it), which local-time dashboards need."""
    lab = ["agent_id", "site", "country", "region", "timezone"]
    info = GaugeMetricFamily(PREFIX + "site_info", "Site of the agent (value 1).", labels=lab)
    offset = GaugeMetricFamily(
        PREFIX + "site_utc_offset_seconds", "UTC offset of the site's time zone at scrape time.", labels=lab
    )
    now = time.time() if now is None else now
    for agent_id, site in agents:
        lv = [agent_id, site.site_id, site.country, site.region, site.timezone]
        info.add_metric(lv, 1.0)
        if (off := _utc_offset_s(site.timezone, now)) is not None:
            offset.add_metric(lv, off)
    yield from (info, offset)


def _utc_offset_s(timezone: str, now: float) -> float | None:
    try:
        delta = dt.datetime.fromtimestamp(now, zoneinfo.ZoneInfo(timezone)).utcoffset()
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None  # the ingest refuses such a site anyway; no offset rather than a wrong one
    return delta.total_seconds() if delta is not None else None


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, AgentCollector] = weakref.WeakKeyDictionary()


def collector_for(registry: CollectorRegistry) -> AgentCollector:
    """The one AgentCollector registered in `registry` (created on first use)."""
    c = _collectors.get(registry)
    if c is None:
        c = _collectors[registry] = AgentCollector()
        registry.register(c)
    return c
