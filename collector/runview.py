"""What `collector run` shows: a live Japan-vs-US view on a terminal, status lines elsewhere.

`Monitor.sample()` takes one `Snapshot` of the running pipeline: the stage counters from
the components' own registries (agents, ingest, Kafka produced/consumed, aggregator) and
the per-country figures from the aggregator's /metrics body - exactly what Prometheus
scrapes, parsed with prometheus-client's own parser, so the view never disagrees with the
dashboards. `LiveView` draws snapshots with rich (tables, bars against the reference
figures, sparklines of the last minute); `PlainView` prints the same facts as log lines
every 10 s for CI and pipes. Both print the final summary.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from collector.aggregate.outputs import window_label
from collector.exposition.histogram import histogram_quantile
from collector.simulate.config import REFERENCE_SPEED_MBPS

if TYPE_CHECKING:
    from collector.aggregate.service import Aggregator
    from collector.ingest.server import IngestServer
    from collector.simulate.fleet import FleetRunner

COVERAGE_TARGET = 0.98  # Japan's 5G coverage target (source article)
COUNTRY_NAMES = {"JP": "Japan", "US": "United States", "AE": "UAE"}
HISTORY = 60  # samples kept for sparklines (one per second)
RATE_SPAN_S = 5.0  # stage rates are averages over this span
SPARK = "▁▂▃▄▅▆▇█"

# aggregator families the view reads (everything else in the body is skipped unparsed)
_FAMILIES = (
    "edge_site_link_throughput_bytes_per_second",
    "edge_site_cell_throughput_bytes_per_second",
    "edge_cell_user_throughput_bytes_per_second",
    "edge_cell_coverage_ratio",
    "edge_cell_availability_ratio",
    "edge_cell_ss_rsrp_report_dbm_bucket",
    "collector_site_completeness_ratio",
    "collector_site_samples_completeness_ratio",
    "collector_site_samples_received_total",
    "collector_site_samples_dropped_total",
    "collector_site_series",
)


@dataclass(slots=True)
class CountryStats:
    """One country's figures from the aggregator's latest closed windows."""

    sites: int = 0
    link_in: float = 0.0  # bytes/s, summed over sites
    link_out: float = 0.0
    cell_dl: float = 0.0
    cell_ul: float = 0.0
    user_dl_mbps: float | None = None  # mean over cells of the per-user DL average
    coverage: float | None = None  # mean over cells
    availability: float | None = None
    rsrp_median_dbm: float | None = None  # median UE SS-RSRP report over the country's cells
    completeness: float | None = None  # batches, mean over sites
    completeness_min: float | None = None
    samples_completeness: float | None = None  # samples, mean over sites
    samples: float = 0.0  # samples accepted into windows (counter)
    dropped: dict[str, float] = field(default_factory=dict)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def country_stats(
    body: str, countries: Iterable[str], rate_window: str, ratio_window: str, cell_window: str | None = None
) -> dict[str, CountryStats]:
    """Per-country figures from an aggregator /metrics body (Prometheus text format).
    `cell_window`: the window of the cell figures when they come from PM files (= the
    granularity period, simulate.pm_files)."""
    cell_rate = cell_window or rate_window
    cell_ratio = cell_window or ratio_window
    lines = [ln for ln in body.splitlines() if ln.startswith(_FAMILIES)]
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    rsrp: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))  # country, le
    out = {c: CountryStats() for c in countries}
    for fam in text_string_to_metric_families("\n".join(lines) + "\n"):
        for s in fam.samples:
            lb = s.labels
            c = lb.get("country", "")
            st = out.get(c)
            if st is None:
                continue
            name, v, w = s.name, float(s.value), lb.get("window")
            a = acc[c]
            if name == "edge_site_link_throughput_bytes_per_second" and w == rate_window:
                if lb.get("direction") == "in":
                    st.link_in += v
                elif lb.get("direction") == "out":
                    st.link_out += v
            elif name == "edge_site_cell_throughput_bytes_per_second" and w == cell_rate:
                if lb.get("direction") == "dl":
                    st.cell_dl += v
                elif lb.get("direction") == "ul":
                    st.cell_ul += v
            elif (
                name == "edge_cell_user_throughput_bytes_per_second"
                and w == cell_ratio
                and lb.get("direction") == "dl"
                and lb.get("stat") == "avg"
            ):
                a["user"].append(v * 8 / 1e6)
            elif name == "edge_cell_coverage_ratio" and w == cell_ratio and lb.get("stat") == "avg":
                a["coverage"].append(v)
            elif name == "edge_cell_availability_ratio" and w == cell_ratio and lb.get("stat") == "avg":
                a["availability"].append(v)
            elif name == "edge_cell_ss_rsrp_report_dbm_bucket" and w == cell_ratio:
                rsrp[c][float(lb.get("le", "nan"))] += v  # sum by (country, le)
            elif name == "collector_site_completeness_ratio":
                a["completeness"].append(v)
            elif name == "collector_site_samples_completeness_ratio":
                a["samples_completeness"].append(v)
            elif name == "collector_site_samples_received_total":
                st.samples += v
            elif name == "collector_site_samples_dropped_total":
                r = lb.get("reason", "?")
                st.dropped[r] = st.dropped.get(r, 0.0) + v
            elif name == "collector_site_series" and v > 0:
                st.sites += 1
    for c, a in acc.items():
        st = out[c]
        st.user_dl_mbps = _mean(a["user"])
        st.coverage = _mean(a["coverage"])
        st.availability = _mean(a["availability"])
        st.completeness = _mean(a["completeness"])
        st.completeness_min = min(a["completeness"]) if a["completeness"] else None
        st.samples_completeness = _mean(a["samples_completeness"])
    for c, buckets in rsrp.items():
        out[c].rsrp_median_dbm = histogram_quantile(0.5, list(buckets.items()))
    return out


def _registry_values(reg: CollectorRegistry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> label set -> value, for a small registry."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for fam in reg.collect():
        for s in fam.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = float(s.value)
    return out


def _by_label(values: dict[tuple[tuple[str, str], ...], float], label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for lbs, v in values.items():
        key = dict(lbs).get(label, "")
        out[key] = out.get(key, 0.0) + v
    return out


@dataclass(slots=True)
class Snapshot:
    """The pipeline at one instant: cumulative stage counters plus per-country figures."""

    t: float  # monotonic seconds
    agents_samples: float = 0.0  # samples handed to the agents' spools
    agents_acked: float = 0.0  # batches acknowledged to the agents
    agents_spooled: float = 0.0  # batches in the spools, not acknowledged yet
    agents_connected: int = 0
    agents_total: int = 0
    ingest_samples: float = 0.0  # samples in batches read by the ingest
    kafka_samples: float = 0.0  # samples the ingest stored in Kafka (acks=all)
    kafka_records: float = 0.0  # records produced
    consumed_records: float = 0.0  # records the aggregator consumed
    aggregated_samples: float = 0.0  # samples accepted into windows
    series: float = 0.0
    windows_closed_to: float | None = None  # event time (Unix s) up to which windows are closed
    dropped: dict[str, float] = field(default_factory=dict)  # "stage:reason" -> count
    countries: dict[str, CountryStats] = field(default_factory=dict)


STAGES = (
    ("agents", "agents_samples"),
    ("ingest", "ingest_samples"),
    ("Kafka", "kafka_samples"),
    ("aggregator", "aggregated_samples"),
)


class Monitor:
    """Samples the running components into Snapshots; remembers rates for the sparklines."""

    def __init__(
        self,
        *,
        ingest: IngestServer,
        aggregator: Aggregator,
        fleet: FleetRunner,
        agents: CollectorRegistry,
        countries: Sequence[str],
    ) -> None:
        self.ingest = ingest
        self.aggregator = aggregator
        self.fleet = fleet
        self.agents = agents
        self.countries = tuple(countries)
        ws = aggregator.cfg.windows_s
        self.rate_window = window_label(ws[0])
        self.ratio_window = window_label(ws[1] if len(ws) > 1 else ws[0])
        sim = fleet.settings.simulate
        self.cell_window = window_label(sim.pm_granularity_s) if sim.pm_files else None
        self.history: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=HISTORY))
        self.rates: dict[str, float] = {}
        self._recent: deque[Snapshot] = deque()

    async def sample(self) -> Snapshot:
        snap = Snapshot(t=time.monotonic())
        snap.agents_samples = float(self.fleet.samples)
        av = _registry_values(self.agents)
        snap.agents_acked = sum(av.get("collector_agent_batches_acked_total", {}).values())
        snap.agents_spooled = sum(av.get("collector_agent_spool_batches", {}).values())
        conn = av.get("collector_agent_stream_connected", {})
        snap.agents_total = len(conn)
        snap.agents_connected = sum(1 for v in conn.values() if v > 0)
        for reason, n in _by_label(av.get("collector_agent_batches_dropped_total", {}), "reason").items():
            snap.dropped[f"agent:{reason} (batches)"] = n
        iv = _registry_values(self.ingest.registry)
        one = lambda name: sum(iv.get(name, {}).values())  # noqa: E731
        snap.ingest_samples = one("collector_ingest_samples_received_total")
        snap.kafka_samples = one("collector_ingest_samples_accepted_total")
        snap.kafka_records = one("collector_ingest_batches_accepted_total")
        for reason, n in _by_label(iv.get("collector_ingest_batches_rejected_total", {}), "reason").items():
            snap.dropped[f"ingest:{reason} (batches)"] = n
        gv = _registry_values(self.aggregator.registry)
        snap.consumed_records = sum(gv.get("collector_aggregate_records_total", {}).values())
        snap.aggregated_samples = sum(gv.get("collector_aggregate_samples_total", {}).values())
        body = (await self.aggregator.render_metrics()).decode()
        snap.series = sum(
            _registry_values(self.aggregator.registry).get("collector_aggregate_series", {}).values()
        )
        closed = [
            c for st in self.aggregator.states.values() if (c := getattr(st, "closed_ns", None)) is not None
        ]
        snap.windows_closed_to = min(closed) / 1e9 if closed else None
        snap.countries = country_stats(
            body, self.countries, self.rate_window, self.ratio_window, self.cell_window
        )
        for st in snap.countries.values():
            for reason, n in st.dropped.items():
                key = f"aggregator:{reason}"
                snap.dropped[key] = snap.dropped.get(key, 0.0) + n
        self._rates(snap)
        return snap

    def _rates(self, snap: Snapshot) -> None:
        # Agents deliver about one batch a second each: a rate over the last RATE_SPAN_S
        # seconds, not between two samples, or the stages would flicker between 0 and 2x.
        self._recent.append(snap)
        while len(self._recent) > 2 and snap.t - self._recent[1].t >= RATE_SPAN_S:
            self._recent.popleft()
        prev = self._recent[0]
        if prev is snap or snap.t <= prev.t:
            return
        dt = snap.t - prev.t
        for stage, attr in STAGES:
            r = max(0.0, (getattr(snap, attr) - getattr(prev, attr)) / dt)
            self.rates[stage] = r
            self.history[stage].append(r)
        for c, st in snap.countries.items():
            self.history[f"{c}:links"].append(st.link_in + st.link_out)
            self.history[f"{c}:cells"].append(st.cell_dl + st.cell_ul)


# ------------------------------------------------------------------ formatting


def si(value: float | None, unit: str, digits: int = 1) -> str:
    """12_300_000 'b/s' -> '12.3 Mb/s'."""
    if value is None:
        return "-"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}f} {prefix}{unit}"
    return f"{value:.{digits}f} {unit}"


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f}%"


def sparkline(values: Iterable[float], width: int = 30) -> str:
    """The last `width` values as block characters, 0 .. their maximum (a rate's noise is
    not magnified into a staircase)."""
    vs = list(values)[-width:]
    if not vs:
        return ""
    hi = max(vs)
    if hi <= 0:
        return SPARK[0] * len(vs)
    return "".join(SPARK[min(len(SPARK) - 1, max(0, int(v / hi * len(SPARK))))] for v in vs)


def bar(value: float | None, full: float, width: int = 16) -> str:
    """A horizontal bar of value/full (capped at 1.25 x full), in eighths."""
    if value is None or full <= 0:
        return ""
    cells = max(0.0, min(1.25, value / full)) * width
    whole = int(cells)
    rest = int((cells - whole) * 8)
    return "█" * whole + ("▏▎▍▌▋▊▉"[rest - 1] if rest else "")


def log_line(record: logging.LogRecord) -> str:
    return (
        f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname} "
        f"{record.name}: {record.getMessage()}"
    )[:160]


def _ts(unix_s: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(unix_s)) if unix_s else "none yet"


@dataclass
class RunInfo:
    countries: tuple[str, ...]
    duration_s: float | None
    workdir: Path
    links: list[tuple[str, str]]
    fleet: str
    embedded: bool = True


def banner(info: RunInfo) -> str:
    until = f" (or after {info.duration_s:g}s)" if info.duration_s else ""
    rows = [f"  {k:<19} {v}" for k, v in [*info.links, ("simulated fleet", info.fleet)]]
    return "\n".join(["", f"edge telemetry pipeline running - Ctrl-C to stop{until}", *rows, ""])


def country_lines(snap: Snapshot) -> list[str]:
    out = []
    for c, st in snap.countries.items():
        ref = REFERENCE_SPEED_MBPS.get(c)
        out.append(
            f"  {c}: {st.sites} sites; links {si(st.link_in * 8, 'b/s')} in / "
            f"{si(st.link_out * 8, 'b/s')} out; cells {si(st.cell_dl * 8, 'b/s')} DL / "
            f"{si(st.cell_ul * 8, 'b/s')} UL; per-user DL "
            f"{'-' if st.user_dl_mbps is None else f'{st.user_dl_mbps:.2f}'} Mb/s"
            f"{f' (ref {ref:.2f})' if ref else ''}; 5G coverage {pct(st.coverage)} "
            f"(target {COVERAGE_TARGET:.0%}), availability {pct(st.availability, 2)}, "
            f"SS-RSRP median {'-' if st.rsrp_median_dbm is None else f'{st.rsrp_median_dbm:.1f}'}"
            " dBm; "
            f"completeness {pct(st.completeness, 2)} batches, "
            f"{pct(st.samples_completeness, 2)} samples"
        )
    return out


def stage_line(snap: Snapshot, rates: dict[str, float], elapsed: float) -> str:
    per_stage = ", ".join(
        f"{name} {rates.get(name, 0.0):,.0f}/s ({getattr(snap, attr):,.0f})" for name, attr in STAGES
    )
    return (
        f"[{elapsed:6.0f}s] samples/s (total): {per_stage}; Kafka records "
        f"{snap.kafka_records:,.0f} produced / {snap.consumed_records:,.0f} consumed; "
        f"windows closed to {_ts(snap.windows_closed_to)}"
    )


def dropped_line(snap: Snapshot) -> str:
    items = [f"{k} {v:,.0f}" for k, v in sorted(snap.dropped.items()) if v]
    return "  dropped: " + (", ".join(items) if items else "none")


def summary_text(info: RunInfo, snap: Snapshot | None, elapsed: float) -> str:
    lines = ["", f"run summary ({elapsed:,.0f} s)"]
    if snap is not None:
        lines.append(
            "  samples through each stage: "
            + ", ".join(f"{name} {getattr(snap, attr):,.0f}" for name, attr in STAGES)
        )
        lines.append(
            f"  Kafka records: {snap.kafka_records:,.0f} produced, "
            f"{snap.consumed_records:,.0f} consumed; agent batches acked "
            f"{snap.agents_acked:,.0f}"
        )
        lines += country_lines(snap)
        lines.append(dropped_line(snap))
    w = info.workdir
    lines.append(
        f"  files: {w} (tokens.yaml, tls/, agents/ spools, collector.log"
        f"{', tansu.log' if info.embedded else ''})"
    )
    if info.embedded:
        lines.append(
            "  the embedded broker kept Kafka's topics and the aggregator's checkpoints "
            "in memory: they are gone now; the agents' spools are on disk"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ views


class View(Protocol):
    def __enter__(self) -> Self: ...
    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def update(self, snap: Snapshot, rates: dict[str, float] | None = None) -> None: ...
    def note_log(self, record: logging.LogRecord) -> None: ...
    def summary(self, snap: Snapshot | None, elapsed: float) -> str: ...


class PlainView:
    """Status lines every `every_s` seconds (CI, pipes, --no-live)."""

    def __init__(self, info: RunInfo, *, every_s: float = 10.0, monitor: Monitor | None = None) -> None:
        self.info = info
        self.every_s = every_s
        self.monitor = monitor
        self._t0 = time.monotonic()
        self._next = self._t0 + every_s

    def __enter__(self) -> Self:
        print(banner(self.info), flush=True)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def update(self, snap: Snapshot, rates: dict[str, float] | None = None) -> None:
        if snap.t < self._next:
            return
        self._next += self.every_s * max(1, int((snap.t - self._next) // self.every_s) + 1)
        r = rates if rates is not None else (self.monitor.rates if self.monitor else {})
        print(
            "\n".join([stage_line(snap, r, snap.t - self._t0), *country_lines(snap), dropped_line(snap)]),
            flush=True,
        )

    def note_log(self, record: logging.LogRecord) -> None:
        return None

    def summary(self, snap: Snapshot | None, elapsed: float) -> str:
        return summary_text(self.info, snap, elapsed)


class LiveView:
    """The rich live view (a terminal): countries side by side, stages, drops, warnings."""

    def __init__(
        self,
        info: RunInfo,
        *,
        monitor: Monitor | None = None,
        console: Any = None,
        warnings: deque[str] | None = None,
    ) -> None:
        from rich.console import Console

        self.info = info
        self.monitor = monitor
        self.console = console or Console()
        self._live: Any = None
        self._t0 = time.monotonic()
        self._warnings: deque[str] = warnings if warnings is not None else deque(maxlen=4)

    def __enter__(self) -> Self:
        from rich.live import Live

        self._live = Live(
            self._render(None),
            console=self.console,
            refresh_per_second=2,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.__exit__(et, e, tb)

    def note_log(self, record: logging.LogRecord) -> None:
        self._warnings.append(log_line(record))

    def update(self, snap: Snapshot, rates: dict[str, float] | None = None) -> None:
        if self._live is not None:
            self._live.update(self._render(snap, rates), refresh=True)

    def summary(self, snap: Snapshot | None, elapsed: float) -> str:
        return summary_text(self.info, snap, elapsed)

    def render(self, snap: Snapshot | None, rates: dict[str, float] | None = None) -> Any:
        return self._render(snap, rates)

    def _render(self, snap: Snapshot | None, rates: dict[str, float] | None = None) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        hist = self.monitor.history if self.monitor else {}
        r = rates if rates is not None else (self.monitor.rates if self.monitor else {})
        elapsed = time.monotonic() - self._t0
        until = f", stops after {self.info.duration_s:g}s" if self.info.duration_s else ""
        head = Text.assemble(
            ("edge telemetry collector", "bold"),
            f"  running {elapsed:,.0f}s{until} - Ctrl-C to stop (twice to force)",
        )
        links = Table.grid(padding=(0, 2))
        links.add_column(style="dim")
        links.add_column()
        for k, v in self.info.links:
            links.add_row(k, v)
        links.add_row("fleet", self.info.fleet)
        parts: list[Any] = [head, links]
        if snap is None:
            parts.append(Text("starting ...", style="dim"))
            return Group(*parts)

        ct = Table(
            title="Japan vs United States" if set(self.info.countries) >= {"JP", "US"} else "countries",
            title_justify="left",
            expand=False,
        )
        ct.add_column("")
        for c in self.info.countries:
            ct.add_column(f"{COUNTRY_NAMES.get(c, c)} ({c})", min_width=24)
        stats = [snap.countries.get(c, CountryStats()) for c in self.info.countries]

        def row(label: str, cells: list[Any]) -> None:
            ct.add_row(label, *cells)

        row("sites reporting", [str(s.sites) for s in stats])
        row("links in/out", [f"{si(s.link_in * 8, 'b/s')} / {si(s.link_out * 8, 'b/s')}" for s in stats])
        row("", [Text(sparkline(hist.get(f"{c}:links", ())), style="cyan") for c in self.info.countries])
        row("cells DL/UL", [f"{si(s.cell_dl * 8, 'b/s')} / {si(s.cell_ul * 8, 'b/s')}" for s in stats])
        row("", [Text(sparkline(hist.get(f"{c}:cells", ())), style="magenta") for c in self.info.countries])
        speed = []
        for c, s in zip(self.info.countries, stats, strict=True):
            ref = REFERENCE_SPEED_MBPS.get(c, 0.0)
            mbps = s.user_dl_mbps
            t = Text(f"{'-' if mbps is None else f'{mbps:.2f}'} Mb/s (ref {ref:.2f})\n")
            t.append(bar(mbps, max(REFERENCE_SPEED_MBPS.values()), 20), style="green")
            speed.append(t)
        row("per-user DL", speed)
        cov = []
        for s in stats:
            ok = s.coverage is not None and s.coverage >= COVERAGE_TARGET
            t = Text(f"{pct(s.coverage)} (target {COVERAGE_TARGET:.0%})\n")
            t.append(bar(s.coverage, 1.0, 20), style="green" if ok else "yellow")
            cov.append(t)
        row("5G coverage", cov)
        row("availability", [pct(s.availability, 2) for s in stats])
        row(
            "SS-RSRP median",
            ["-" if s.rsrp_median_dbm is None else f"{s.rsrp_median_dbm:.1f} dBm" for s in stats],
        )
        row(
            "complete b/s",
            [
                Text(
                    f"{pct(s.completeness, 2)} / {pct(s.samples_completeness, 2)}",
                    style="green" if (s.completeness or 0) >= 0.999 else "yellow",
                )
                for s in stats
            ],
        )

        stages = Table(title="pipeline (samples/s)", title_justify="left")
        stages.add_column("stage")
        stages.add_column("rate", justify="right")
        stages.add_column("total", justify="right")
        stages.add_column("last minute")
        for name, attr in STAGES:
            stages.add_row(
                name,
                f"{r.get(name, 0.0):,.0f}",
                f"{getattr(snap, attr):,.0f}",
                Text(sparkline(hist.get(name, ())), style="cyan"),
            )
        facts = Text(
            f"agents connected {snap.agents_connected}/{snap.agents_total}, "
            f"spooled batches {snap.agents_spooled:,.0f}; Kafka records "
            f"{snap.kafka_records:,.0f} produced / {snap.consumed_records:,.0f} consumed; "
            f"series {snap.series:,.0f}; windows closed to {_ts(snap.windows_closed_to)}",
            style="dim",
        )
        drops = [f"{k} {v:,.0f}" for k, v in sorted(snap.dropped.items()) if v]
        dropped = Text(
            "dropped: " + (", ".join(drops) if drops else "none"), style="yellow" if drops else "dim"
        )
        parts += [ct, stages, facts, dropped]
        if self._warnings:
            parts.append(
                Text(
                    "recent warnings (all logs: "
                    f"{self.info.workdir / 'collector.log'}):\n" + "\n".join(self._warnings),
                    style="red",
                )
            )
        return Group(*parts)
