"""Every role's HTTP endpoint over loopback: /metrics with the exposition content type
(GET and HEAD) from a render coroutine (aggregator) or a registry (agent, ingest), /healthz
following the health callback, 404/405 for anything else."""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric

from collector.errors import ConfigError
from collector.exposition.http import CONTENT_TYPE, MetricsServer, serve_metrics
from tests.aggregate_support import http_request


async def test_metrics_healthz_and_errors() -> None:
    problem: list[str] = []
    scrapes = 0

    async def render() -> bytes:
        nonlocal scrapes
        scrapes += 1
        return b'# TYPE x gauge\nx{a="1"} 1.0\n'

    server = MetricsServer("127.0.0.1", 0, render, lambda: problem[0] if problem else None)
    await server.start()
    port = server.bound_port
    assert port > 0
    try:
        status, headers, body = await http_request(port, "GET /metrics HTTP/1.1")
        assert (status, headers["content-type"]) == (200, CONTENT_TYPE)
        assert body == b'# TYPE x gauge\nx{a="1"} 1.0\n'
        status, headers, body = await http_request(port, "HEAD /metrics HTTP/1.1")
        assert status == 200
        assert body == b""
        assert (await http_request(port, "GET /healthz HTTP/1.1"))[0] == 200
        problem.append("consume loop failed: RuntimeError('x')")
        status, _, body = await http_request(port, "GET /healthz HTTP/1.1")
        assert status == 503
        assert b"consume loop failed" in body
        assert (await http_request(port, "GET /nope HTTP/1.1"))[0] == 404
        assert (await http_request(port, "POST /metrics HTTP/1.1"))[0] == 405
        assert scrapes == 2
    finally:
        await server.stop()
    assert server.bound_port == 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_busy_port_is_an_error_and_releases_nothing_half_open() -> None:
    async def render() -> bytes:
        return b""

    first = MetricsServer("127.0.0.1", 0, render)
    await first.start()
    try:
        second = MetricsServer("127.0.0.1", first.bound_port, render)
        with pytest.raises(OSError):  # noqa: PT011 - errno differs by platform
            await second.start()
        assert second.bound_port == 0
    finally:
        await first.stop()


def _registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("things", "Things seen.", ["kind"], registry=reg).labels("a").inc(3)
    Gauge("level", "A level.", registry=reg).set(7)
    return reg


async def test_a_registry_is_served_as_prometheus_client_serves_it() -> None:
    """Agent and ingest: the format the scraper asks for, gzip when it accepts it, name[]
    filters, /healthz beside /metrics; 404 elsewhere (the old threaded server answered
    /metrics on any path)."""
    async with MetricsServer("127.0.0.1", 0, _registry()) as server:
        port = server.bound_port
        status, headers, body = await http_request(port, "GET /metrics HTTP/1.1")
        assert status == 200
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        assert b'things_total{kind="a"} 3.0' in body
        assert b"level 7.0" in body
        # Prometheus asks for OpenMetrics first
        status, headers, body = await http_request(
            port,
            "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,"
            "text/plain;version=0.0.4;q=0.5",
        )
        assert status == 200
        assert headers["content-type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")
        assert b'things_total{kind="a"} 3.0' in body
        status, headers, body = await http_request(port, "GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip")
        assert status == 200
        assert headers["content-encoding"] == "gzip"
        assert b"level 7.0" in gzip.decompress(body)
        status, _, body = await http_request(port, "GET /metrics?name[]=level HTTP/1.1")
        assert b"level 7.0" in body
        assert b"things_total" not in body
        assert (await http_request(port, "HEAD /metrics HTTP/1.1"))[0] == 200
        assert (await http_request(port, "GET /healthz HTTP/1.1"))[:3:2] == (200, b"ok\n")
        assert (await http_request(port, "GET /other HTTP/1.1"))[0] == 404
        assert (await http_request(port, "POST /metrics HTTP/1.1"))[0] == 405


async def test_serve_metrics_names_the_key_of_a_port_it_cannot_bind(tmp_path: Path) -> None:
    async with MetricsServer("127.0.0.1", 0, _registry()) as first:
        taken = f"127.0.0.1:{first.bound_port}"
        with pytest.raises(ConfigError, match="cannot serve /metrics on") as err:
            await serve_metrics("ingest", taken, None, _registry())
        assert err.value.key == "ingest.metrics_listen"
    bad = tmp_path / "web.yml"
    bad.write_text("tls_config: {}\n")
    with pytest.raises(ConfigError, match="unknown keys") as err:
        await serve_metrics("agent", "127.0.0.1:0", bad, _registry())
    assert err.value.key == "agent.metrics_web_config"
    assert str(bad) in str(err.value)
    # an IPv6 listen address is written in brackets and served without them
    server = await serve_metrics("aggregate", "[::1]:0", None, _registry())
    try:
        assert server.host == "::1"
        assert server.bound_port > 0
    finally:
        await server.stop()


async def test_a_registry_is_collected_on_the_event_loop() -> None:
    """Collectors read asyncio state (spools, in-flight counts): they run on the server's
    loop thread, never on the thread the text is encoded in."""
    seen: list[int] = []

    class Probe:
        def collect(self) -> Iterator[Metric]:
            seen.append(threading.get_ident())
            yield GaugeMetricFamily("probe_value", "A value read at scrape time.", value=len(seen))

    reg = CollectorRegistry()
    reg.register(Probe())
    async with MetricsServer("127.0.0.1", 0, reg) as server:
        for n in (1, 2, 3):
            status, _, body = await http_request(server.bound_port, "GET /metrics HTTP/1.1")
            assert status == 200
            assert f"probe_value {n}.0".encode() in body
    assert seen == [threading.get_ident()] * 3
