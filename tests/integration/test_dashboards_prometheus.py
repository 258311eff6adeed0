"""The dashboards and rules against a real Prometheus scraping a short simulated run of the
whole pipeline (Tansu broker, ingest over TLS, aggregator, a fleet of real agent streams):

* every query of every dashboard panel, with its template variables substituted, returns
  data, for Japan and for the United States separately when the query filters by country
  (the country power panel, fed by the simulator's RAPL counters, also within the model's
  range);
* every recording rule of deploy/prometheus/rules/recording.yml produces series;
* the simulated silent site makes EdgeSiteDown pending/firing while every other site stays
  quiet.

Short intervals keep it within the suite's budget: 1 s sampling and scraping, the fleet
replaying the last 15-30 minutes at 60x before it runs in real time, and the site-down
alert's durations scaled from minutes to seconds (its expression is otherwise the deployed
one). The cells reach their agents as TS 32.435 PM files with 15-min periods, as from a gNB
(the cell panels and rules read window="15m"); the replay starts on a period boundary so at
least one whole period (with its L1M distributions) is published.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from collector.aggregate.service import Aggregator
from collector.broker import EmbeddedBroker, TopicSpec
from collector.config import load_settings
from collector.devcerts import DevCerts
from collector.exposition.http import MetricsServer
from collector.ingest.server import IngestServer
from collector.monitoring import PROMETHEUS_DIR, LocalPrometheus, find_binary, prometheus_config
from collector.simulate.fleet import FleetRunner, site_tokens, write_tokens_file
from collector.simulate.geo import city_for
from tests.conftest import make_topic
from tests.waiting import eventually_in_thread

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
VARS = re.compile(r"\$(country|region|site)\b")
PM_PERIOD_S = 900  # simulated PM granularity: the 15-min period of the cell panels
SILENT_AFTER_S = 10  # wall seconds after the fleet caught up with now


def _panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard title, panel title, expr) of every panel target."""
    out = []
    for f in DASHBOARDS:
        d = json.loads(f.read_text())
        for p in d["panels"]:
            for t in p.get("targets", []):
                out.append((d["title"], p["title"], t["expr"]))
    return out


def _substitute(expr: str, country: str = ".*") -> str:
    expr = expr.replace("$__rate_interval", "1m").replace("$country", country)
    return VARS.sub(".*", expr)  # "All" (allValue .*) for region and site


def _scaled_alert_rules(tmp: Path) -> Path:
    """alerts.yml with the site alerts' minutes turned into seconds (same expressions)."""
    text = (PROMETHEUS_DIR / "rules" / "alerts.yml").read_text()
    rules = yaml.safe_load(text)
    changed = 0
    for g in rules["groups"]:
        for r in g["rules"]:
            if r.get("alert") in ("EdgeSiteDown", "EdgeSitePathDown"):
                expr = r["expr"]
                new = expr.replace("> 300)", "> 30)").replace("[5m]", "[20s]")
                assert new != expr
                r["expr"], r["for"] = new, "5s"
                changed += 1
    assert changed == 2
    out = tmp / "alerts-scaled.yml"
    out.write_text(yaml.safe_dump(rules, sort_keys=False))
    return out


async def test_dashboards_and_rules_on_a_real_prometheus(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    binary = find_binary("prometheus")
    assert binary, "prometheus missing: make setup-test installs Debian's prometheus package"
    topic = await make_topic(broker, partitions=3, prefix="dash")
    await broker.create_topics([TopicSpec(topic + ".dlq", 1, 3_600_000)])
    # replay from a period boundary at least one whole period (and 30 s) before now
    now_s = time.time_ns() // 10**9
    start_s = (now_s - PM_PERIOD_S - 30) // PM_PERIOD_S * PM_PERIOD_S
    backfill_s = now_s - start_s
    sim = {
        "sites_per_country": 2,
        "links_per_site": 4,
        "cells_per_site": 3,
        "hosts_per_site": 1,
        "cpus_per_host": 2,
        "interval_s": 1.0,
        "acceleration": 60.0,
        "batch_ticks": 5,
        "silent_after_s": backfill_s + SILENT_AFTER_S,
        "pm_files": True,
        "pm_granularity_s": PM_PERIOD_S,
    }
    settings = load_settings(
        kafka={"bootstrap_servers": broker.bootstrap, "topic": topic, "dead_letter_topic": topic + ".dlq"},
        ingest={
            "listen": "127.0.0.1:0",
            "metrics_listen": "127.0.0.1:0",
            "tls_cert": str(certs.server_cert),
            "tls_key": str(certs.server_key),
        },
        aggregate={
            "metrics_listen": "127.0.0.1:0",
            "group_id": topic,
            "state_topic": topic + ".state",
            "site_idle_s": 10.0,
        },
        simulate=sim,
    )
    tokens = site_tokens(settings.simulate)
    settings = settings.model_copy(
        update={
            "ingest": settings.ingest.model_copy(
                update={"tokens_file": write_tokens_file(tmp_path / "tokens.yaml", tokens)}
            )
        }
    )
    silent = city_for("US", 1)[1]  # the simulator silences the fleet's last site
    sites = set(tokens)
    assert silent in sites
    start_ns = start_s * 10**9
    reg = CollectorRegistry()

    async def agents_metrics() -> bytes:
        return generate_latest(reg)

    agents_http = MetricsServer("127.0.0.1", 0, agents_metrics)
    await agents_http.start()
    try:
        await _run(
            binary, settings, broker, certs, tmp_path, tokens, start_ns, reg, agents_http, silent, sites
        )
    finally:
        await agents_http.stop()


async def _run(
    binary: str,
    settings: Any,
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
    tokens: dict[str, str],
    start_ns: int,
    reg: CollectorRegistry,
    agents_http: MetricsServer,
    silent: str,
    sites: set[str],
) -> None:
    async with (
        IngestServer(settings, bootstrap=broker.bootstrap) as ingest,
        Aggregator(settings, bootstrap=broker.bootstrap) as agg,
        FleetRunner(
            settings,
            target=f"127.0.0.1:{ingest.port}",
            tokens=tokens,
            ca_file=certs.ca,
            work_dir=tmp_path / "spools",
            start_ns=start_ns,
            registry=reg,
        ),
    ):
        cfg = prometheus_config(
            {
                "aggregate": [f"127.0.0.1:{agg.metrics_port}"],
                "ingest": [f"127.0.0.1:{ingest.metrics_port}"],
                "agents": [f"127.0.0.1:{agents_http.bound_port}"],
            },
            tmp_path / "prom",
            scrape_interval="1s",
            rule_files=[PROMETHEUS_DIR / "rules" / "recording.yml", _scaled_alert_rules(tmp_path)],
        )
        async with LocalPrometheus(binary, cfg, tmp_path / "prom") as prom:

            def q(expr: str) -> list[dict[str, Any]]:
                return prom.query(expr)

            # -- every recording rule produces series
            records = [
                r["record"]
                for g in yaml.safe_load((PROMETHEUS_DIR / "rules" / "recording.yml").read_text())["groups"]
                for r in g["rules"]
            ]
            missing: list[str] = list(records)

            def recorded() -> bool:
                missing[:] = [r for r in missing if not q(r)]
                return not missing

            t0 = time.monotonic()
            assert await eventually_in_thread(recorded, within=150, step=2), f"no series: {missing}"
            t_rules = time.monotonic() - t0

            # -- every panel query has data (for JP and for the US where it filters by country)
            queries = _panel_queries()
            empty: list[str] = []
            both = 0

            def panels_have_data() -> bool:
                nonlocal both
                empty.clear()
                both = 0
                for dash, panel, expr in queries:
                    if "$country" in expr:
                        ok = [bool(q(_substitute(expr, c))) for c in ("JP", "US")]
                        both += all(ok)
                        empty.extend(
                            f"{dash} / {panel} [{c}]: {expr}"
                            for c, o in zip(("JP", "US"), ok, strict=True)
                            if not o
                        )
                    elif not q(_substitute(expr)):
                        empty.append(f"{dash} / {panel}: {expr}")
                return not empty

            assert await eventually_in_thread(panels_have_data, within=90, step=3), "\n".join(empty)
            by_country = sum("$country" in e for _, _, e in queries)
            assert both == by_country
            t_panels = time.monotonic() - t0
            # -- the country power panel: each country's sites' RAPL power, in the model's range
            # (per host 60-100 W idle plus ~25 W per busy CPU; 2 sites of 1 host with 2 CPUs)
            power = [e for d, p, e in queries if p == "Site power by country"]
            assert power == ['country:edge_site_power_watts:sum{country=~"$country"}']
            for c in ("JP", "US"):
                got = q(_substitute(power[0], c))
                assert [r["metric"]["country"] for r in got] == [c]
                assert 2 * 60 <= float(got[0]["value"][1]) <= 2 * (100 + 2 * 25 * 1.05), got
            print(f"rules after {t_rules:.0f}s, panels after {t_panels:.0f}s")
            print(
                f"RESULT panel_queries={len(queries)} with_data={len(queries)} "
                f"country_queries_with_data_for_jp_and_us={both}"
            )

            # -- the silent site alerts; no other site does
            def site_alerts() -> dict[str, str]:
                return {
                    a["labels"]["site"]: a["state"]
                    for a in prom.api("alerts")["alerts"]
                    if a["labels"]["alertname"] in ("EdgeSiteDown", "EdgeSitePathDown")
                }

            assert await eventually_in_thread(lambda: silent in site_alerts(), within=120, step=1), (
                site_alerts()
            )
            alerts = site_alerts()
            assert alerts[silent] in ("pending", "firing")
            assert set(alerts) == {silent}, alerts
            down = [a for a in prom.api("alerts")["alerts"] if a["labels"].get("site") == silent]
            assert {a["labels"]["alertname"] for a in down} >= {"EdgeSiteDown"}
            assert down[0]["labels"]["country"] == "US"
            assert down[0]["labels"]["severity"] == "critical"
            # the other sites are fresh: their silence is far below the threshold
            fresh = {
                r["metric"]["site"]: float(r["value"][1])
                for r in q("site:collector_site_silence_seconds:min")
            }
            assert set(fresh) == sites
            assert all(v < 30 for s, v in fresh.items() if s != silent), fresh
