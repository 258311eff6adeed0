"""The aggregator's HTTP endpoint over loopback: /metrics with the exposition content type
(GET and HEAD), /healthz following the health callback, 404/405 for anything else."""

from __future__ import annotations

import asyncio

import pytest

from collector.exposition.http import MetricsServer
from collector.exposition.render import CONTENT_TYPE
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
