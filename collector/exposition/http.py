"""A small asyncio HTTP/1.1 server for GET /metrics (no framework dependency).

Each request is answered by `render()` (a callable returning the whole exposition body),
run in a worker thread so a large scrape does not stall the consumer loop; Polars releases
the GIL while it renders. One request per connection, then close: that is all a Prometheus
scraper needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from collector.exposition.render import CONTENT_TYPE

log = logging.getLogger(__name__)

Renderer = Callable[[], Awaitable[bytes]]


class MetricsServer:
    def __init__(self, host: str, port: int, render: Renderer) -> None:
        self.host = host
        self.port = port
        self._render = render
        self._server: asyncio.Server | None = None

    @property
    def bound_port(self) -> int:
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split()
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                await self._send(writer, 405, b"method not allowed\n", "text/plain")
                return
            path = parts[1].split("?", 1)[0]
            if path == "/metrics":
                body = await self._render()
                await self._send(writer, 200, body if parts[0] == "GET" else b"", CONTENT_TYPE,
                                 length=len(body))
            elif path in ("/", "/healthz"):
                await self._send(writer, 200, b"ok\n", "text/plain")
            else:
                await self._send(writer, 404, b"not found\n", "text/plain")
        except (ConnectionError, OSError) as exc:
            log.debug("metrics client went away: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str,
                    length: int | None = None) -> None:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        writer.write(body)
        await writer.drain()
