"""The aggregator's HTTP endpoint over loopback: /metrics with the exposition content type
(GET and HEAD), /healthz following the health callback, 404/405 for anything else."""

from __future__ import annotations

import asyncio

import pytest

from collector.exposition.http import MetricsServer
from collector.exposition.render import CONTENT_TYPE


async def _request(port: int, line: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{line}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


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
        status, headers, body = await _request(port, "GET /metrics HTTP/1.1")
        assert (status, headers["content-type"]) == (200, CONTENT_TYPE)
        assert body == b'# TYPE x gauge\nx{a="1"} 1.0\n'
        status, headers, body = await _request(port, "HEAD /metrics HTTP/1.1")
        assert status == 200
        assert body == b""
        assert (await _request(port, "GET /healthz HTTP/1.1"))[0] == 200
        problem.append("consume loop failed: RuntimeError('x')")
        status, _, body = await _request(port, "GET /healthz HTTP/1.1")
        assert status == 503
        assert b"consume loop failed" in body
        assert (await _request(port, "GET /nope HTTP/1.1"))[0] == 404
        assert (await _request(port, "POST /metrics HTTP/1.1"))[0] == 405
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
