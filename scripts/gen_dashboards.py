"""Generate the Grafana dashboards in grafana/dashboards/ and their panel reference in
docs/dashboards.md (`make dashboards`).

Dashboards are code: this script builds them with grafana-foundation-sdk (the build for
Grafana 11.6, pinned in pyproject.toml) and writes one JSON file per dashboard. The JSON is
committed; `--check` fails when it differs from what this script produces (a test runs it),
the same way the protobuf code is checked.

Every query reads the recording rules of deploy/prometheus/rules/recording.yml or the
aggregator's series (docs/metrics.md). Series are in base units (bytes/s); panels that show
traffic multiply by 8 and use the bits/s unit, because people read link speeds in bits.
The datasource is the provisioned one (grafana/provisioning/datasources, uid
`edge-prometheus`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import (
    barchart,
    common,
    dashboard,
    heatmap,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as mc
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as mhm
from grafana_foundation_sdk.models import prometheus as mprom
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "grafana" / "dashboards"
DS = dm.DataSourceRef(type_val="prometheus", uid="edge-prometheus")
TAGS = ["edge-telemetry"]
# Series every site has (the aggregator's ledger): the variables' value source.
SITES = "collector_site_last_event_timestamp_seconds"
C = 'country=~"$country"'
CRS = 'country=~"$country", region=~"$region", site=~"$site"'
RATE = "$__rate_interval"
# Cell KPIs come from 3GPP PM files, one value per 15-min granularity period: the aggregator
# publishes them with window = the period's length (docs/agent.md, PM files).
PM = 'window="15m"'

GREEN, YELLOW, ORANGE, RED, BLUE = "green", "yellow", "orange", "red", "blue"


@dataclass(frozen=True)
class Q:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False
    heatmap: bool = False  # Prometheus histogram buckets, one series per `le`


@dataclass
class P:
    """One panel: what it shows, the question it answers, how it looks."""

    kind: str  # timeseries | stat | table | bar | heatmap
    title: str
    description: str
    queries: Sequence[Q]
    unit: str
    steps: Sequence[tuple[float | None, str]] = ((None, GREEN),)
    w: int = 12
    h: int = 8
    min: float | None = None
    max: float | None = None
    dashed: str | None = None  # regex of series names drawn as dashed reference lines
    log: bool = False
    stack: bool = False
    line_thresholds: bool = False
    transformations: list[dm.DataTransformerConfig] = field(default_factory=list)
    x_field: str | None = None


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in steps])
    )


def _target(q: Q, ref: str) -> prometheus.Dataquery:
    t = prometheus.Dataquery().expr(q.expr).ref_id(ref).datasource(DS)
    if q.legend:
        t = t.legend_format(q.legend)
    if q.instant:
        t = t.instant()
        if q.table:
            t = t.format(mprom.PromQueryFormat.TABLE)
    else:
        t = t.range()
        if q.heatmap:
            t = t.format(mprom.PromQueryFormat.HEATMAP)
    return t


def _legend(table_mode: bool = True) -> common.VizLegendOptions:
    lg = (
        common.VizLegendOptions()
        .show_legend(True)
        .placement(LegendPlacement.BOTTOM)
        .display_mode(LegendDisplayMode.TABLE if table_mode else LegendDisplayMode.LIST)
    )
    return lg.calcs(["mean", "max", "lastNotNull"]) if table_mode else lg


def build_panel(p: P) -> Any:
    b: Any
    if p.kind == "timeseries":
        b = timeseries.Panel().legend(_legend()).line_width(2).fill_opacity(8).span_nulls(False)
        if p.log:
            b = b.scale_distribution(common.ScaleDistributionConfig().type(mc.ScaleDistribution.LOG).log(10))
        if p.stack:
            b = b.stacking(common.StackingConfig().mode(mc.StackingMode.NORMAL))
        if p.line_thresholds:
            b = b.thresholds_style(
                common.GraphThresholdsStyleConfig().mode(mc.GraphThresholdsStyleMode.DASHED)
            )
        if p.dashed:
            b = b.override_by_regexp(
                p.dashed,
                [
                    dm.DynamicConfigValue(
                        id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
                    ),
                    dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
                    dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "text"}),
                ],
            )
    elif p.kind == "stat":
        b = (
            stat.Panel()
            .graph_mode(BigValueGraphMode.AREA)
            .color_mode(BigValueColorMode.VALUE)
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        )
    elif p.kind == "table":
        b = table.Panel().cell_height(mc.TableCellHeight.SM)
    elif p.kind == "bar":
        b = barchart.Panel().legend(_legend(False)).show_value(mc.VisibilityMode.NEVER)
        if p.x_field:
            b = b.x_field(p.x_field)
    elif p.kind == "heatmap":
        # buckets as they come (Grafana de-accumulates the cumulative `le` series)
        b = (
            heatmap.Panel()
            .calculate(False)
            .rows_frame(heatmap.RowsHeatmapOptions().layout(mc.HeatmapCellLayout.LE))
            .y_axis(heatmap.YAxisConfig().unit(p.unit))
            .color(
                heatmap.HeatmapColorOptions()
                .mode(mhm.HeatmapColorMode.SCHEME)
                .scheme("Oranges")
                .scale(mhm.HeatmapColorScale.EXPONENTIAL)
                .exponent(0.5)
            )
            .show_legend()
        )
    else:
        raise ValueError(p.kind)
    b = (
        b.title(p.title)
        .description(p.description)
        .datasource(DS)
        .unit(p.unit)
        .thresholds(_thresholds(p.steps))
        .span(p.w)
        .height(p.h)
    )
    if p.min is not None:
        b = b.min(p.min)
    if p.max is not None:
        b = b.max(p.max)
    for i, q in enumerate(p.queries):
        b = b.with_target(_target(q, chr(ord("A") + i)))
    for t in p.transformations:
        b = b.with_transformation(t)
    return b


def _var(name: str, label: str, query: str, description: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DS)
        .query(query)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
    )


def variables(*names: str) -> list[dashboard.QueryVariable]:
    all_ = {
        "country": _var(
            "country",
            "Country",
            f"label_values({SITES}, country)",
            "ISO 3166-1 country of the sites (JP, US; AE when simulated).",
        ),
        "region": _var(
            "region",
            "Region",
            f'label_values({SITES}{{country=~"$country"}}, region)',
            "Region of the sites in the chosen countries.",
        ),
        "site": _var(
            "site",
            "Site",
            f'label_values({SITES}{{country=~"$country", region=~"$region"}}, site)',
            "Edge site id (e.g. jp-tokyo-01) in the chosen countries and regions.",
        ),
    }
    return [all_[n] for n in names]


def build_dashboard(
    uid: str,
    title: str,
    description: str,
    rows: Sequence[tuple[str, Sequence[P]]],
    var_names: Sequence[str],
    links: bool = True,
) -> dict[str, Any]:
    d = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .timezone("browser")
        .refresh("30s")
        .time("now-6h", "now")
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
    )
    if links:
        d = d.link(
            dashboard.DashboardLink("Edge telemetry")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    for v in variables(*var_names):
        d = d.with_variable(v)
    for row_title, panels in rows:
        d = d.with_row(dashboard.Row(row_title))
        for p in panels:
            d = d.with_panel(build_panel(p))
    out: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    for i, panel in enumerate(out["panels"], start=1):  # stable ids, in layout order
        panel["id"] = i
    return out


# ---------------------------------------------------------------------------- dashboards
def overview() -> dict[str, Any]:
    ref = "country:edge_reference_user_throughput_bytes_per_second:article"
    rows = [
        (
            "Throughput",
            [
                P(
                    "timeseries",
                    "Link throughput by country",
                    "How much traffic do Japan's and the United States' edge links carry, per direction? "
                    "Sum of every link's 1 min throughput (country:edge_link_throughput_bytes_per_second:sum), "
                    "in bits per second.",
                    [
                        Q(
                            f"country:edge_link_throughput_bytes_per_second:sum{{{C}}} * 8",
                            "{{country}} {{direction}}",
                        )
                    ],
                    "bps",
                ),
                P(
                    "timeseries",
                    "5G cell throughput by country",
                    "How much user-plane traffic do the countries' 5G cells carry (PDCP SDU volume, DL and UL)?",
                    [
                        Q(
                            f"country:edge_cell_throughput_bytes_per_second:sum{{{C}}} * 8",
                            "{{country}} {{direction}}",
                        )
                    ],
                    "bps",
                ),
                P(
                    "stat",
                    "Share of observed link traffic",
                    "Which country carries more of the traffic we observe? Each country's share of the link "
                    "throughput of all countries (with one country missing, the other is 100%).",
                    [
                        Q(
                            f'country:edge_link_throughput_bytes_per_second:share{{{C}, direction="in"}}',
                            "{{country}} in",
                        )
                    ],
                    "percentunit",
                    w=6,
                    h=6,
                    min=0,
                    max=1,
                ),
                P(
                    "stat",
                    "Sites reporting",
                    "How many sites per country delivered an event in the last 5 minutes?",
                    [Q(f"country:collector_site_sites_reporting:count{{{C}}}", "{{country}}")],
                    "short",
                    steps=((None, RED), (1, GREEN)),
                    w=6,
                    h=6,
                ),
                P(
                    "table",
                    "Busiest links (utilisation)",
                    "Which ten links are closest to their nominal speed right now (1 min windows)?",
                    [
                        Q(
                            f'topk(10, edge_link_utilization_ratio{{{C}, window="1m"}})',
                            instant=True,
                            table=True,
                        )
                    ],
                    "percentunit",
                    steps=((None, GREEN), (0.7, YELLOW), (0.9, RED)),
                    w=12,
                    h=6,
                    transformations=[
                        dm.DataTransformerConfig(
                            id_val="organize",
                            options={
                                "excludeByName": {"Time": True, "__name__": True, "window": True},
                                "renameByName": {"Value": "utilisation"},
                            },
                        )
                    ],
                ),
            ],
        ),
        (
            "Consumer speed: the article's figures",
            [
                P(
                    "timeseries",
                    "Average speed per user (DL) vs the article",
                    "Are Japanese and US users getting the average consumer speeds of the source article "
                    "(Japan 217.11 Mb/s, United States 279.93 Mb/s, UAE 291.85 Mb/s, the fastest)? "
                    "Users-weighted mean of the cells' per-user DL throughput; dashed lines: the article.",
                    [
                        Q(
                            f'country:edge_cell_user_throughput_bytes_per_second:avg{{{C}, direction="dl"}} * 8',
                            "{{country}} measured",
                        ),
                        Q(f"{ref} * 8", "{{country}} article: {{reference}}"),
                    ],
                    "bps",
                    w=16,
                    dashed=".*article.*",
                ),
                P(
                    "stat",
                    "Speed vs the article's figure",
                    "How does each country's measured per-user DL speed compare with its figure in the article "
                    "(100% = the article's value)?",
                    [
                        Q(
                            f"country:edge_cell_user_throughput_bytes_per_second:ratio_reference{{{C}}}",
                            "{{country}}",
                        )
                    ],
                    "percentunit",
                    steps=((None, RED), (0.9, YELLOW), (1, GREEN)),
                    w=8,
                    h=4,
                ),
                P(
                    "stat",
                    "Japan / United States per-user speed",
                    "How fast is the average Japanese user relative to the average US user (the article: "
                    "217.11 / 279.93 = 78%)? Empty while either country has no data.",
                    [
                        Q(
                            'global:edge_cell_user_throughput_bytes_per_second:ratio_jp_us{direction="dl"}',
                            "JP / US",
                        )
                    ],
                    "percentunit",
                    w=8,
                    h=4,
                ),
            ],
        ),
        (
            "5G coverage and availability",
            [
                P(
                    "timeseries",
                    "5G coverage vs Japan's 98% target",
                    "Does 5G coverage reach Japan's 98% target, and how does the US compare? Mean coverage "
                    "ratio of the cells per country; dashed: the target.",
                    [
                        Q(f"country:edge_cell_coverage_ratio:avg{{{C}}}", "{{country}} coverage"),
                        Q("country:edge_reference_cell_coverage_ratio:target", "target: {{reference}}"),
                    ],
                    "percentunit",
                    steps=((None, RED), (0.95, YELLOW), (0.98, GREEN)),
                    dashed=".*target.*",
                    w=8,
                    line_thresholds=True,
                ),
                P(
                    "timeseries",
                    "5G cell availability",
                    "Are the countries' cells in service? Mean availability of the cells (1 = always available).",
                    [Q(f"country:edge_cell_availability_ratio:avg{{{C}}}", "{{country}}")],
                    "percentunit",
                    steps=((None, RED), (0.99, YELLOW), (0.999, GREEN)),
                    w=8,
                ),
                P(
                    "timeseries",
                    "RRC-connected users",
                    "How many users are connected to each country's 5G cells (mean RRC-connected users, summed)?",
                    [Q(f"country:edge_cell_connected_users:sum{{{C}}}", "{{country}}")],
                    "short",
                    w=8,
                ),
            ],
        ),
        (
            "Power",
            [
                P(
                    "timeseries",
                    "Site power by country",
                    "How much power do each country's edge sites draw? Sum of the sites' host power "
                    "(RAPL package and DRAM energy counters as watts, 1 min windows; "
                    "country:edge_site_power_watts:sum). Data-centre growth is measured in this unit: the "
                    "source article puts Japan's data-centre capacity at 2,320 MW, 3,660 MW by 2030. Hosts "
                    "without readable RAPL zones send nothing and are not in the sum.",
                    [Q(f"country:edge_site_power_watts:sum{{{C}}}", "{{country}}")],
                    "watt",
                    w=24,
                    min=0,
                ),
            ],
        ),
        (
            "Completeness and local time",
            [
                P(
                    "timeseries",
                    "Sample completeness by country",
                    "Is each country's data complete? Mean and worst site's share of expected samples that "
                    "arrived (below 95% pages the site's team).",
                    [
                        Q(
                            f"country:collector_site_samples_completeness_ratio:avg{{{C}}}",
                            "{{country}} mean",
                        ),
                        Q(
                            f"country:collector_site_samples_completeness_ratio:min{{{C}}}",
                            "{{country}} worst site",
                        ),
                    ],
                    "percentunit",
                    steps=((None, RED), (0.95, YELLOW), (0.99, GREEN)),
                    w=8,
                    max=1,
                    line_thresholds=True,
                ),
                P(
                    "bar",
                    "Cell traffic by local hour of day",
                    "Does traffic follow local time the same way in both countries? Each site's 5G traffic "
                    "in each hour of its own time zone over the last day, relative to its daily mean "
                    "(1 = average hour), averaged per country: Tokyo's 21:00 and New York's 21:00 share a bar.",
                    [
                        Q(
                            "avg by (country, local_hour) ("
                            f"avg_over_time(site:edge_cell_throughput_bytes_per_second:local_hour{{{C}}}[1d])"
                            " / on (site) group_left ()"
                            f" avg_over_time(site:edge_cell_throughput_bytes_per_second:sum{{{C}}}[1d]))",
                            instant=True,
                            table=True,
                        )
                    ],
                    "short",
                    w=16,
                    x_field="local_hour",
                    transformations=[
                        dm.DataTransformerConfig(
                            id_val="convertFieldType",
                            options={
                                "conversions": [{"targetField": "local_hour", "destinationType": "number"}]
                            },
                        ),
                        dm.DataTransformerConfig(
                            id_val="groupingToMatrix",
                            options={
                                "columnField": "country",
                                "rowField": "local_hour",
                                "valueField": "Value",
                            },
                        ),
                        dm.DataTransformerConfig(
                            id_val="organize", options={"renameByName": {"local_hour\\country": "local_hour"}}
                        ),
                        dm.DataTransformerConfig(
                            id_val="sortBy", options={"sort": [{"field": "local_hour"}]}
                        ),
                    ],
                ),
            ],
        ),
    ]
    return build_dashboard(
        "edge-jp-vs-us",
        "Japan vs United States",
        "Edge telemetry of Japanese and US sites side by side: traffic, per-user speed "
        "against the source article's figures, 5G coverage against Japan's 98% target, "
        "busiest links, site power, completeness and the local-time profile.",
        rows,
        ["country"],
    )


def site_detail() -> dict[str, Any]:
    w1 = 'window="1m"'
    rows = [
        (
            "Links",
            [
                P(
                    "timeseries",
                    "Link throughput",
                    "How much does each link of the selected sites carry, per direction (1 min windows)?",
                    [
                        Q(
                            f"edge_link_throughput_bytes_per_second{{{CRS}, {w1}}} * 8",
                            "{{site}} {{link}} {{direction}}",
                        )
                    ],
                    "bps",
                ),
                P(
                    "timeseries",
                    "Link utilisation",
                    "How full is each link: throughput / nominal speed (90% for 15 min alerts)?",
                    [Q(f"edge_link_utilization_ratio{{{CRS}, {w1}}}", "{{site}} {{link}} {{direction}}")],
                    "percentunit",
                    steps=((None, GREEN), (0.7, YELLOW), (0.9, RED)),
                    max=1,
                    line_thresholds=True,
                ),
                P(
                    "timeseries",
                    "Link operational state",
                    "Which links were down during the last minute (share of samples with the link up)?",
                    [Q(f'edge_link_oper_up_ratio{{{CRS}, {w1}, stat="min"}}', "{{site}} {{link}}")],
                    "percentunit",
                    steps=((None, RED), (1, GREEN)),
                    min=0,
                    max=1,
                ),
                P(
                    "timeseries",
                    "Link errors and discards",
                    "Are links losing packets (errors and discards per second, both directions)?",
                    [
                        Q(
                            f"edge_link_errors_per_second{{{CRS}, {w1}}}",
                            "{{site}} {{link}} errors {{direction}}",
                        ),
                        Q(
                            f"edge_link_discards_per_second{{{CRS}, {w1}}}",
                            "{{site}} {{link}} discards {{direction}}",
                        ),
                    ],
                    "pps",
                    steps=((None, GREEN), (1, YELLOW), (100, RED)),
                ),
            ],
        ),
        (
            "Optics",
            [
                P(
                    "timeseries",
                    "Record-class links vs the 402 Tb/s record",
                    "How close do the selected sites' record-class optical links (nominal speed above 8 Tb/s) "
                    "come to the 402 Tb/s over standard fiber record (NICT)? Dashed: the record and each link's "
                    "nominal speed.",
                    [
                        Q(
                            f'edge_link_throughput_bytes_per_second{{site=~"$site", {w1}}} * 8'
                            f' and on (site, link) (edge_link_speed_bytes_per_second{{site=~"$site", {w1}, stat="avg"}} > 1e12)',
                            "{{site}} {{link}} {{direction}}",
                        ),
                        Q(
                            f'edge_link_speed_bytes_per_second{{site=~"$site", {w1}, stat="avg"}} * 8 > 8e12',
                            "{{site}} {{link}} nominal speed",
                        ),
                        Q(
                            "global:edge_reference_link_throughput_bytes_per_second:record * 8",
                            "record: {{reference}}",
                        ),
                    ],
                    "bps",
                    dashed=".*(record|nominal).*",
                    w=24,
                ),
                P(
                    "timeseries",
                    "Optical receive power",
                    "Is light arriving at the optical ports (below -14 dBm for 10 min alerts)?",
                    [
                        Q(
                            f'edge_link_optical_rx_power_dbm{{{CRS}, {w1}, stat="avg"}}',
                            "{{site}} {{link}} rx",
                        ),
                        Q(
                            f'edge_link_optical_tx_power_dbm{{{CRS}, {w1}, stat="avg"}}',
                            "{{site}} {{link}} tx",
                        ),
                    ],
                    "dBm",
                    steps=((None, RED), (-14, YELLOW), (-10, GREEN)),
                    line_thresholds=True,
                    w=8,
                ),
                P(
                    "timeseries",
                    "Pre-FEC bit error ratio",
                    "How much margin does forward error correction have left (above 2e-4 for 10 min alerts)?",
                    [
                        Q(
                            f'edge_link_optical_prefec_ber_ratio{{{CRS}, {w1}, stat="max"}}',
                            "{{site}} {{link}}",
                        )
                    ],
                    "sci",
                    steps=((None, GREEN), (1e-5, YELLOW), (2e-4, RED)),
                    log=True,
                    line_thresholds=True,
                    w=8,
                ),
                P(
                    "timeseries",
                    "Optical signal-to-noise ratio",
                    "Is the optical signal clean (OSNR in dB, higher is better)?",
                    [Q(f'edge_link_optical_osnr_db{{{CRS}, {w1}, stat="min"}}', "{{site}} {{link}}")],
                    "dB",
                    steps=((None, RED), (15, YELLOW), (20, GREEN)),
                    w=8,
                ),
            ],
        ),
        (
            "5G cells",
            [
                P(
                    "timeseries",
                    "Cell throughput (DL)",
                    "How much DL traffic does each cell of the selected sites carry?",
                    [
                        Q(
                            f'edge_cell_throughput_bytes_per_second{{{CRS}, {PM}, direction="dl"}} * 8',
                            "{{site}} {{cell}}",
                        )
                    ],
                    "bps",
                    w=8,
                ),
                P(
                    "timeseries",
                    "PRB utilisation (DL)",
                    "How loaded is each cell's radio (DL PRB utilisation; 90% for 15 min alerts)?",
                    [
                        Q(
                            f'edge_cell_prb_utilization_ratio{{{CRS}, {PM}, stat="avg", direction="dl"}}',
                            "{{site}} {{cell}}",
                        )
                    ],
                    "percentunit",
                    steps=((None, GREEN), (0.7, YELLOW), (0.9, RED)),
                    max=1,
                    w=8,
                ),
                P(
                    "timeseries",
                    "Connected users per cell",
                    "How many users does each cell serve (mean RRC-connected users)?",
                    [Q(f'edge_cell_connected_users{{{CRS}, {PM}, stat="avg"}}', "{{site}} {{cell}} users")],
                    "short",
                    w=8,
                ),
                P(
                    "timeseries",
                    "Per-user DL speed vs the article",
                    "Are the selected sites' users getting their country's average consumer speed (dashed)?",
                    [
                        Q(
                            f'edge_cell_user_throughput_bytes_per_second{{{CRS}, {PM}, stat="avg", direction="dl"}} * 8',
                            "{{site}} {{cell}}",
                        ),
                        Q(
                            f"country:edge_reference_user_throughput_bytes_per_second:article{{{C}}} * 8",
                            "{{country}} article: {{reference}}",
                        ),
                    ],
                    "bps",
                    dashed=".*article.*",
                    w=12,
                ),
                P(
                    "timeseries",
                    "Radio quality (SINR)",
                    "Is the radio signal good (SS-SINR in dB, mean over the 15-min PM period)?",
                    [Q(f'edge_cell_ss_sinr_db{{{CRS}, {PM}, stat="avg"}}', "{{site}} {{cell}}")],
                    "dB",
                    steps=((None, RED), (0, YELLOW), (10, GREEN)),
                    w=12,
                ),
            ],
        ),
        (
            "Hosts",
            [
                P(
                    "timeseries",
                    "CPU utilisation",
                    "How busy are the sites' servers (share of CPU time not idle)?",
                    [Q(f"edge_host_cpu_utilization_ratio{{{CRS}, {w1}}}", "{{site}} {{host}}")],
                    "percentunit",
                    steps=((None, GREEN), (0.7, YELLOW), (0.9, RED)),
                    max=1,
                    w=8,
                ),
                P(
                    "timeseries",
                    "Memory used",
                    "How much memory do the servers use (1 - available / total)?",
                    [Q(f"edge_host_memory_used_ratio{{{CRS}, {w1}}}", "{{site}} {{host}}")],
                    "percentunit",
                    steps=((None, GREEN), (0.8, YELLOW), (0.95, RED)),
                    max=1,
                    w=8,
                ),
                P(
                    "timeseries",
                    "Host saturation",
                    "What is the most saturated resource at each site (max of CPU, memory, disk busy, filesystem)?",
                    [Q(f"site:edge_host_saturation_ratio:max{{{CRS}}}", "{{site}}")],
                    "percentunit",
                    steps=((None, GREEN), (0.8, YELLOW), (0.95, RED)),
                    max=1,
                    w=8,
                ),
                P(
                    "timeseries",
                    "Host network throughput",
                    "How much traffic do the servers' NICs move?",
                    [
                        Q(
                            f"edge_host_network_throughput_bytes_per_second{{{CRS}, {w1}}} * 8",
                            "{{site}} {{host}} {{device}} {{direction}}",
                        )
                    ],
                    "bps",
                ),
                P(
                    "timeseries",
                    "Disk throughput",
                    "How much do the servers read and write (bytes per second, per device)?",
                    [
                        Q(
                            f"edge_host_disk_throughput_bytes_per_second{{{CRS}, {w1}}}",
                            "{{site}} {{host}} {{device}} {{direction}}",
                        )
                    ],
                    "Bps",
                ),
            ],
        ),
    ]
    return build_dashboard(
        "edge-site-detail",
        "Site detail",
        "One or more edge sites in depth: every link, optic (with the 402 Tb/s record "
        "line), 5G cell and server. Choose country, region and site above.",
        rows,
        ["country", "region", "site"],
    )


def links_optics() -> dict[str, Any]:
    w1 = 'window="1m"'
    rows = [
        (
            "Links",
            [
                P(
                    "timeseries",
                    "Link throughput by region",
                    "Where in each country does link traffic flow (per region, inbound)?",
                    [
                        Q(
                            f'region:edge_link_throughput_bytes_per_second:sum{{{C}, region=~"$region", direction="in"}} * 8',
                            "{{country}} {{region}}",
                        )
                    ],
                    "bps",
                ),
                P(
                    "timeseries",
                    "Capacity-weighted link utilisation",
                    "How full are each country's links overall (traffic / nominal capacity of all links)?",
                    [
                        Q(
                            f"country:edge_link_utilization_ratio:weighted{{{C}}}",
                            "{{country}} {{direction}}",
                        ),
                        Q(
                            f"country:edge_link_utilization_ratio:max{{{C}}}",
                            "{{country}} busiest link {{direction}}",
                        ),
                    ],
                    "percentunit",
                    steps=((None, GREEN), (0.7, YELLOW), (0.9, RED)),
                    max=1,
                    line_thresholds=True,
                ),
                P(
                    "timeseries",
                    "Links down",
                    "How many links are down in each country right now (down in every sample of the last minute)?",
                    [
                        Q(
                            f'sum by (country) (edge_link_oper_up_ratio{{{C}, region=~"$region", {w1}, stat="max"}} == bool 0)',
                            "{{country}}",
                        )
                    ],
                    "short",
                    steps=((None, GREEN), (1, RED)),
                    w=8,
                ),
                P(
                    "timeseries",
                    "Link errors by country",
                    "Are links losing packets anywhere (errors per second, summed per country)?",
                    [
                        Q(
                            f'sum by (country) (edge_link_errors_per_second{{{C}, region=~"$region", {w1}}})',
                            "{{country}}",
                        )
                    ],
                    "pps",
                    steps=((None, GREEN), (1, YELLOW), (100, RED)),
                    w=8,
                ),
                P(
                    "table",
                    "Busiest links (throughput)",
                    "Which ten links carry the most traffic right now?",
                    [
                        Q(
                            f'topk(10, edge_link_throughput_bytes_per_second{{{C}, region=~"$region", {w1}}} * 8)',
                            instant=True,
                            table=True,
                        )
                    ],
                    "bps",
                    w=8,
                    transformations=[
                        dm.DataTransformerConfig(
                            id_val="organize",
                            options={
                                "excludeByName": {"Time": True, "window": True},
                                "renameByName": {"Value": "throughput"},
                            },
                        )
                    ],
                ),
            ],
        ),
        (
            "Optics",
            [
                P(
                    "timeseries",
                    "Weakest optical receive power per site",
                    "Which sites have optical ports close to losing light (lowest rx power of the site)?",
                    [
                        Q(
                            f'min by (site) (edge_link_optical_rx_power_dbm{{{C}, region=~"$region", {w1}, stat="min"}})',
                            "{{site}}",
                        )
                    ],
                    "dBm",
                    steps=((None, RED), (-14, YELLOW), (-10, GREEN)),
                    line_thresholds=True,
                    w=8,
                ),
                P(
                    "timeseries",
                    "Worst pre-FEC BER per site",
                    "Which sites' optics are close to the FEC limit (highest pre-FEC BER of the site)?",
                    [
                        Q(
                            f'max by (site) (edge_link_optical_prefec_ber_ratio{{{C}, region=~"$region", {w1}, stat="max"}})',
                            "{{site}}",
                        )
                    ],
                    "sci",
                    steps=((None, GREEN), (1e-5, YELLOW), (2e-4, RED)),
                    log=True,
                    line_thresholds=True,
                    w=8,
                ),
                P(
                    "timeseries",
                    "Lowest OSNR per site",
                    "Which sites' optical signals are noisiest (lowest OSNR of the site)?",
                    [
                        Q(
                            f'min by (site) (edge_link_optical_osnr_db{{{C}, region=~"$region", {w1}, stat="min"}})',
                            "{{site}}",
                        )
                    ],
                    "dB",
                    steps=((None, RED), (15, YELLOW), (20, GREEN)),
                    w=8,
                ),
            ],
        ),
    ]
    return build_dashboard(
        "edge-links-optics",
        "Links and optics",
        "Every network and optical link of the fleet by country and region: traffic, "
        "utilisation, links down, errors, and the optical health of each site.",
        rows,
        ["country", "region"],
    )


def cells() -> dict[str, Any]:
    rg = 'region=~"$region"'
    rsrp = f"edge_cell_ss_rsrp_report_dbm_bucket{{{C}, {rg}, {PM}}}"
    sinr = f"edge_cell_ss_sinr_report_db_bucket{{{C}, {rg}, {PM}}}"
    rows = [
        (
            "Traffic and users",
            [
                P(
                    "timeseries",
                    "Cell throughput by region",
                    "Where is 5G traffic carried (DL, per region)?",
                    [
                        Q(
                            f'region:edge_cell_throughput_bytes_per_second:sum{{{C}, {rg}, direction="dl"}} * 8',
                            "{{country}} {{region}}",
                        )
                    ],
                    "bps",
                ),
                P(
                    "timeseries",
                    "Per-user DL speed by region",
                    "Which regions give users the best speed, against their country's article figure (dashed)?",
                    [
                        Q(
                            f'region:edge_cell_user_throughput_bytes_per_second:avg{{{C}, {rg}, direction="dl"}} * 8',
                            "{{country}} {{region}}",
                        ),
                        Q(
                            f"country:edge_reference_user_throughput_bytes_per_second:article{{{C}}} * 8",
                            "{{country}} article: {{reference}}",
                        ),
                    ],
                    "bps",
                    dashed=".*article.*",
                ),
                P(
                    "timeseries",
                    "Connected users by region",
                    "How many users does each region serve (mean RRC-connected users, summed)?",
                    [Q(f"region:edge_cell_connected_users:sum{{{C}, {rg}}}", "{{country}} {{region}}")],
                    "short",
                    w=8,
                ),
                P(
                    "timeseries",
                    "PRB utilisation by region",
                    "How loaded are the regions' radios (mean DL PRB utilisation)?",
                    [
                        Q(
                            f'region:edge_cell_prb_utilization_ratio:avg{{{C}, {rg}, direction="dl"}}',
                            "{{country}} {{region}}",
                        ),
                        Q(
                            f'country:edge_cell_prb_utilization_ratio:max{{{C}, direction="dl"}}',
                            "{{country}} busiest cell",
                        ),
                    ],
                    "percentunit",
                    steps=((None, GREEN), (0.7, YELLOW), (0.9, RED)),
                    max=1,
                    w=8,
                ),
                P(
                    "table",
                    "Busiest cells (DL PRB)",
                    "Which ten cells are closest to running out of radio resources?",
                    [
                        Q(
                            f'topk(10, edge_cell_prb_utilization_ratio{{{C}, {rg}, {PM}, stat="avg", direction="dl"}})',
                            instant=True,
                            table=True,
                        )
                    ],
                    "percentunit",
                    steps=((None, GREEN), (0.7, YELLOW), (0.9, RED)),
                    w=8,
                    transformations=[
                        dm.DataTransformerConfig(
                            id_val="organize",
                            options={
                                "excludeByName": {
                                    "Time": True,
                                    "__name__": True,
                                    "window": True,
                                    "stat": True,
                                },
                                "renameByName": {"Value": "PRB DL"},
                            },
                        )
                    ],
                ),
            ],
        ),
        (
            "Service",
            [
                P(
                    "timeseries",
                    "Availability by region",
                    "Are the regions' cells in service (mean availability)?",
                    [Q(f"region:edge_cell_availability_ratio:avg{{{C}, {rg}}}", "{{country}} {{region}}")],
                    "percentunit",
                    steps=((None, RED), (0.99, YELLOW), (0.999, GREEN)),
                    w=8,
                ),
                P(
                    "timeseries",
                    "Coverage by region vs 98%",
                    "Which regions reach Japan's 98% 5G coverage target (dashed)?",
                    [
                        Q(f"region:edge_cell_coverage_ratio:avg{{{C}, {rg}}}", "{{country}} {{region}}"),
                        Q("country:edge_reference_cell_coverage_ratio:target", "target: {{reference}}"),
                    ],
                    "percentunit",
                    steps=((None, RED), (0.95, YELLOW), (0.98, GREEN)),
                    dashed=".*target.*",
                    w=8,
                ),
                P(
                    "timeseries",
                    "Handover success",
                    "Do handovers between cells succeed (succeeded / attempted, mean per country)?",
                    [Q(f"country:edge_cell_handover_success_ratio:avg{{{C}}}", "{{country}}")],
                    "percentunit",
                    steps=((None, RED), (0.95, YELLOW), (0.99, GREEN)),
                    max=1,
                    w=8,
                ),
                P(
                    "timeseries",
                    "Radio quality by region",
                    "How good is the radio signal (mean SS-RSRP in dBm)?",
                    [
                        Q(
                            f'avg by (country, region) (edge_cell_ss_rsrp_dbm{{{C}, {rg}, {PM}, stat="avg"}})',
                            "{{country}} {{region}}",
                        )
                    ],
                    "dBm",
                    steps=((None, RED), (-110, YELLOW), (-95, GREEN)),
                    w=24,
                ),
            ],
        ),
        (
            "Radio quality distribution",
            [
                P(
                    "heatmap",
                    "SS-RSRP reports",
                    "How are the UE SS-RSRP reports of the selected cells spread over the TS 38.133 "
                    "ranges, period by period (L1M.SS-RSRP.BinX of the PM files; brighter = more reports)?",
                    [Q(f"sum by (le) ({rsrp})", "{{le}}", heatmap=True)],
                    "dBm",
                    w=12,
                    h=9,
                ),
                P(
                    "timeseries",
                    "SS-RSRP quantiles by country",
                    "What signal do the median UE and the weakest 10% of UE reports see in each country "
                    "(histogram_quantile over the cells' SS-RSRP distributions)?",
                    [
                        Q(f"histogram_quantile(0.5, sum by (country, le) ({rsrp}))", "{{country}} median"),
                        Q(
                            f"histogram_quantile(0.1, sum by (country, le) ({rsrp}))",
                            "{{country}} weakest 10%",
                        ),
                    ],
                    "dBm",
                    steps=((None, RED), (-110, YELLOW), (-95, GREEN)),
                    w=6,
                    h=9,
                ),
                P(
                    "timeseries",
                    "SS-SINR median by country",
                    "How clean is the signal the median UE reports (SS-SINR distribution, L1M.SS-SINR.BinX)?",
                    [Q(f"histogram_quantile(0.5, sum by (country, le) ({sinr}))", "{{country}} median")],
                    "dB",
                    steps=((None, RED), (0, YELLOW), (10, GREEN)),
                    w=6,
                    h=9,
                ),
            ],
        ),
    ]
    return build_dashboard(
        "edge-5g-cells",
        "5G cells",
        "The 5G cells of the fleet by country and region: traffic, per-user speed "
        "against the article, users, PRB load, availability, coverage and radio quality "
        "(per 15-min PM period, with the UE report distributions).",
        rows,
        ["country", "region"],
    )


def pipeline() -> dict[str, Any]:
    rows = [
        (
            "Ingest",
            [
                P(
                    "timeseries",
                    "Ingest: batches accepted and rejected",
                    "Is the ingest storing what agents send, and what does it refuse (by reason)?",
                    [
                        Q("job:collector_ingest_batches_accepted:rate1m", "accepted"),
                        Q("job:collector_ingest_batches_rejected:rate5m", "rejected {{reason}}"),
                    ],
                    "ops",
                    steps=((None, GREEN),),
                ),
                P(
                    "timeseries",
                    "Kafka produce latency",
                    "How long does Kafka take to acknowledge a record (acks=all), median and p99?",
                    [
                        Q(
                            f"histogram_quantile(0.5, sum by (le) (rate(collector_ingest_kafka_produce_seconds_bucket[{RATE}])))",
                            "p50",
                        ),
                        Q("job:collector_ingest_kafka_produce_seconds:p99_5m", "p99"),
                    ],
                    "s",
                    steps=((None, GREEN), (0.5, YELLOW), (2, RED)),
                    line_thresholds=True,
                ),
                P(
                    "stat",
                    "Kafka reachable from the ingest",
                    "Can every ingest replica reach Kafka (1 = yes)?",
                    [Q("min(collector_ingest_kafka_up)", "kafka up")],
                    "bool_yes_no",
                    steps=((None, RED), (1, GREEN)),
                    w=6,
                    h=5,
                ),
                P(
                    "stat",
                    "Scrape targets up",
                    "Are all collector components being scraped (targets up / total)?",
                    [Q('sum by (job) (up{job=~"edge-.*"}) / count by (job) (up{job=~"edge-.*"})', "{{job}}")],
                    "percentunit",
                    steps=((None, RED), (1, GREEN)),
                    w=18,
                    h=5,
                ),
            ],
        ),
        (
            "Aggregator",
            [
                P(
                    "timeseries",
                    "Aggregator records and samples per second",
                    "Is the aggregator keeping up with the stream (records consumed, samples into windows)?",
                    [
                        Q("job:collector_aggregate_records:rate1m", "records/s"),
                        Q("job:collector_aggregate_samples:rate1m", "samples/s"),
                    ],
                    "cps",
                    w=8,
                ),
                P(
                    "timeseries",
                    "Event-time lag per partition",
                    "How far behind the wall clock is the newest event of each partition (the watermark lag)?",
                    [Q("collector_aggregate_event_time_lag_seconds", "partition {{partition}}")],
                    "s",
                    steps=((None, GREEN), (60, YELLOW), (300, RED)),
                    line_thresholds=True,
                    w=8,
                ),
                P(
                    "timeseries",
                    "Window close latency (p99)",
                    "How long after its end does a window close (what the dashboards' freshness costs)?",
                    [Q("job:collector_aggregate_window_close_latency_seconds:p99_5m", "p99")],
                    "s",
                    steps=((None, GREEN), (30, YELLOW), (120, RED)),
                    w=8,
                ),
            ],
        ),
        (
            "Completeness and drops",
            [
                P(
                    "timeseries",
                    "Sample completeness by site",
                    "Which sites deliver fewer samples than their series should produce?",
                    [Q(f"collector_site_samples_completeness_ratio{{{C}}}", "{{site}}")],
                    "percentunit",
                    steps=((None, RED), (0.95, YELLOW), (0.99, GREEN)),
                    max=1,
                    line_thresholds=True,
                ),
                P(
                    "timeseries",
                    "Dropped samples by reason",
                    "Why are samples not counted (late, duplicate, rejected, cardinality, ...), per country?",
                    [Q(f"country:collector_site_samples_dropped:rate5m{{{C}}}", "{{country}} {{reason}}")],
                    "cps",
                ),
                P(
                    "timeseries",
                    "Site silence",
                    "How long since each site's newest event (a site down alerts after 5 min)?",
                    [Q(f"site:collector_site_silence_seconds:min{{{C}}}", "{{site}}")],
                    "s",
                    steps=((None, GREEN), (60, YELLOW), (300, RED)),
                    line_thresholds=True,
                ),
            ],
        ),
        (
            "Agents",
            [
                P(
                    "timeseries",
                    "Agent spool size per site",
                    "How much undelivered data do the agents hold (spool bytes per site)?",
                    [Q(f"site:collector_agent_spool_bytes:sum{{{C}}}", "{{site}}")],
                    "bytes",
                    w=8,
                ),
                P(
                    "timeseries",
                    "Oldest undelivered batch per site",
                    "How far behind is delivery at each site (age of the oldest unacknowledged batch)?",
                    [Q(f"site:collector_agent_spool_oldest_unacked_age_seconds:max{{{C}}}", "{{site}}")],
                    "s",
                    steps=((None, GREEN), (120, YELLOW), (600, RED)),
                    line_thresholds=True,
                    w=8,
                ),
                P(
                    "timeseries",
                    "Agent batches dropped",
                    "Are agents losing data (batches dropped unsent, by reason)?",
                    [Q(f"site:collector_agent_batches_dropped:rate5m{{{C}}}", "{{site}} {{reason}}")],
                    "cps",
                    steps=((None, GREEN), (0.001, RED)),
                    w=8,
                ),
            ],
        ),
    ]
    return build_dashboard(
        "edge-pipeline",
        "Pipeline health",
        "The collector itself: ingest acceptance and rejections, Kafka latency, the "
        "aggregator's throughput, lag and window latency, completeness and drops, and "
        "the agents' spools.",
        rows,
        ["country"],
    )


DASHBOARDS = {
    "jp-vs-us.json": overview,
    "site-detail.json": site_detail,
    "links-optics.json": links_optics,
    "cells-5g.json": cells,
    "pipeline-health.json": pipeline,
}


DOC = ROOT / "docs" / "dashboards.md"
BEGIN, END = "<!-- panels:begin -->", "<!-- panels:end -->"


def render() -> dict[str, str]:
    return {name: json.dumps(make(), indent=2, sort_keys=True) + "\n" for name, make in DASHBOARDS.items()}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_doc(files: dict[str, str], current: str) -> str:
    """docs/dashboards.md with the generated per-panel section between the markers."""
    out = [BEGIN, "<!-- generated by scripts/gen_dashboards.py (make dashboards); do not edit -->", ""]
    for name, text in files.items():
        d = json.loads(text)
        panels = [p for p in d["panels"] if p["type"] != "row"]
        variables = ", ".join(f"`${v['name']}`" for v in d["templating"]["list"])
        out += [
            f"### {d['title']}",
            "",
            f"`grafana/dashboards/{name}`, uid `{d['uid']}`, {len(panels)} panels, variables {variables}. "
            f"{d['description']}",
            "",
            "| panel | the question it answers | unit | queries |",
            "|---|---|---|---|",
        ]
        for p in panels:
            queries = "<br>".join(f"`{_cell(t['expr'])}`" for t in p["targets"])
            out.append(
                f"| {_cell(p['title'])} | {_cell(p['description'])} | "
                f"{p['fieldConfig']['defaults']['unit']} | {queries} |"
            )
        out.append("")
    out.append(END)
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + "\n".join(out) + tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the committed JSON is stale")
    ap.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = ap.parse_args(argv)
    out: Path = args.out
    files = render()
    stale = [n for n, text in files.items() if not (out / n).is_file() or (out / n).read_text() != text]
    extra = sorted(p.name for p in out.glob("*.json") if p.name not in files)
    doc_now = DOC.read_text()
    doc = render_doc(files, doc_now)
    if args.check:
        if stale or extra:
            print(
                f"grafana/dashboards is stale (run `make dashboards`): changed {stale}, "
                f"not generated {extra}",
                file=sys.stderr,
            )
            return 1
        if doc != doc_now and out == OUT:
            print("docs/dashboards.md is stale (run `make dashboards`)", file=sys.stderr)
            return 1
        return 0
    if out == OUT and doc != doc_now:
        DOC.write_text(doc)
        print(f"wrote {DOC}")
    out.mkdir(parents=True, exist_ok=True)
    for n in stale:
        (out / n).write_text(files[n])
        print(f"wrote {out / n}")
    for n in extra:
        (out / n).unlink()
        print(f"removed {out / n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
