"""gNMI target -> agent (gnmi adapter, spool, sender) -> ingest (TLS) -> Tansu -> aggregator:
the published link throughput, utilisation and optics are the ones the target's
notifications imply, exactly (integer counter deltas; counters above 2^53; a counter clear
with a new last-clear in the middle)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from collector.agent.config import AgentSettings, LinkSourceSettings
from collector.agent.pipeline import AgentPipeline
from collector.agent.sources import run_source
from collector.agent.sources.gnmi import GnmiLinkAdapter
from collector.agent.sources.link import LinkSource
from collector.aggregate.service import Aggregator
from collector.aggregate.window_log import window_records
from collector.broker import EmbeddedBroker
from collector.config import load_settings
from collector.devcerts import DevCerts
from tests.agent_support import SITE, agent_tls, site_section
from tests.aggregate_support import http_request
from tests.conftest import make_topic
from tests.gnmi_support import NS, Device, GnmiTarget
from tests.ingest_support import ingest_settings, started, token_for
from tests.waiting import eventually

PASSWORD = "e2e-gnmi-password"


async def test_gnmi_notifications_become_exact_published_link_metrics(
    broker: EmbeddedBroker, topic: str, certs: DevCerts, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("E2E_GNMI_PW", PASSWORD)
    dlq = await make_topic(broker, 1, prefix="dlq")
    # the device's timeline starts 20 minutes ago and runs 20x faster than the wall clock
    dev = Device(t0_ns=(time.time_ns() // (10 * NS) - 120) * 10 * NS, clear_at=60)
    target = GnmiTarget(
        dev, certs=certs, username="telemetry", password=PASSWORD, pace_s=0.05, max_samples=600
    )
    await target.start()
    ingest = await started(ingest_settings(tmp_path, certs, broker.bootstrap, topic))
    agent = AgentSettings.model_validate(
        {
            "site": site_section(),
            "ingest": agent_tls(
                certs, f"127.0.0.1:{ingest.port}", token_for(SITE.site_id), server_name="localhost"
            ),
            "spool": {"dir": str(tmp_path / "spool")},
            "metrics_listen": "",
        }
    )
    adapter = GnmiLinkAdapter(
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        targets=[
            {
                "name": "r1",
                "address": f"127.0.0.1:{target.port}",
                "ca_file": str(certs.ca),
                "server_name": "localhost",
                "username": "telemetry",
                "password_env": "E2E_GNMI_PW",
                "interval_s": 1.0,
                "components": {"och-1": "et-0/0/1"},
            }
        ],
    )
    source = LinkSource(LinkSourceSettings(interval_s=0.1), adapter=adapter)
    settings = load_settings(
        kafka={"topic": topic, "dead_letter_topic": dlq},
        aggregate={
            "metrics_listen": "127.0.0.1:0",
            "group_id": f"g-{topic}",
            "state_topic": f"{topic}.state",
            "windows_s": (10, 60),
            "allowed_lateness_s": 2.0,
            "idle_timeout_s": 3600.0,
            "checkpoint_interval_s": 1.0,
            "session_timeout_ms": 3000,
            "heartbeat_interval_ms": 500,
        },
    )
    rows: list[dict[str, Any]] = []
    stop = asyncio.Event()
    body = b""
    p1, p2 = dev.ports
    try:
        async with (
            Aggregator(
                settings,
                bootstrap=broker.bootstrap,
                registry=CollectorRegistry(),
                on_window=lambda p, w, c, g: rows.extend(window_records(p, w, c, g)),
            ) as agg,
            AgentPipeline(
                agent,
                agent_id="agent-gnmi-e2e",
                site=SITE,
                boot_id=uuid.uuid4().hex,
                spool_dir=tmp_path / "spool",
                token=token_for(SITE.site_id),
            ) as pipeline,
        ):
            task = asyncio.create_task(run_source(source, pipeline, stop))

            def closed(metric: str, window_s: int, after_ns: int) -> bool:
                return any(
                    r["metric"] == metric
                    and r["window_s"] == window_s
                    and r["end_ns"] > after_ns
                    and r["kind"] == "counter"
                    and r["n"]
                    for r in rows
                )

            # windows on both sides of the counter clear have closed
            assert await eventually(lambda: closed("link_in_octets", 60, dev.time(150)), within=120), (
                f"closed so far: {len(rows)} rows"
            )
            status, _, body = await http_request(agg.metrics_port)
            assert status == 200
            stop.set()
            await task
    finally:
        await source.close()
        await ingest.stop()
        await target.stop()

    # every closed window of the counters: increase * 1e9 == rate * elapsed ns, as integers
    octets = [r for r in rows if r["metric"] == "link_in_octets" and r["kind"] == "counter" and r["n"]]
    assert len(octets) >= 10
    resets = 0
    for r in octets:
        rate = p1.rate if '"r1:et-0/0/1"' in r["labels"] or "r1:et-0/0/1" in r["labels"] else p2.rate
        assert int(r["increase"]) * NS == rate * r["dt_ns"], r
        resets += r["resets"]
    assert resets >= 2  # the clear was seen as a reset on both links, not a wrap or a spike
    assert not any(r["wraps"] for r in octets)

    # what Prometheus would scrape
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}

    def value(name: str, link: str, **labels: str) -> float:
        vals = [
            s.value
            for s in fams[name].samples
            if s.labels.get("link") == f"r1:{link}" and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(vals) == 1, (name, link, labels, vals)
        return vals[0]

    assert value("edge_link_throughput_bytes_per_second", "et-0/0/1", direction="in", window="10s") == p1.rate
    assert value("edge_link_throughput_bytes_per_second", "et-0/0/2", direction="in", window="1m") == p2.rate
    assert value("edge_link_utilization_ratio", "et-0/0/1", direction="in", window="10s") == p1.rate / (
        100e9 / 8
    )
    assert value("edge_link_utilization_ratio", "et-0/0/2", direction="in", window="10s") == p2.rate / (
        10e9 / 8
    )
    for name, want in (
        ("edge_link_optical_rx_power_dbm", -3.1),
        ("edge_link_optical_tx_power_dbm", 1.0),
        ("edge_link_optical_osnr_db", 31.5),
        ("edge_link_optical_prefec_ber_ratio", 1.5e-9),
    ):
        for stat in ("min", "max"):  # exact; the avg is a float mean of equal values
            assert value(name, "et-0/0/1", window="10s", stat=stat) == want, name
    assert value("edge_link_optical_laser_bias_amperes", "et-0/0/1", window="10s", stat="max") == 7.0 / 1000
