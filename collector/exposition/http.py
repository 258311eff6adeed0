"""The aggregator's HTTP endpoint: GET /metrics, and /healthz for probes (aiohttp).

`render()` (a coroutine returning the whole exposition body) answers each scrape; the
aggregator runs the Polars rendering in a worker thread so a large scrape does not stall
the consumer loop. `/healthz` is 200 while `healthy()` is true, else 503 with the reason,
so a Kubernetes liveness probe restarts a member whose consume loop died.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from collector.exposition.render import CONTENT_TYPE
from collector.exposition.webconfig import WebConfig
from collector.lifecycle import Component

log = logging.getLogger(__name__)

Renderer = Callable[[], Awaitable[bytes]]
Health = Callable[[], str | None]  # None: healthy; else why not


class MetricsServer(Component):
    """/metrics and /healthz on host:port (`async with`, or start()/stop())."""

    def __init__(
        self,
        host: str,
        port: int,
        render: Renderer,
        health: Health | None = None,
        web_config: WebConfig | None = None,
    ) -> None:
        self.host = host
        self.web = web_config  # TLS and basic auth (collector/exposition/webconfig.py), or None
        self.port = port
        self._render = render
        self._health = health or (lambda: None)
        self._runner: web.AppRunner | None = None

    @property
    def bound_port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            return 0
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(middlewares=[self._auth] if self.web is not None and self.web.users else [])
        app.router.add_get("/metrics", self._metrics)  # GET and HEAD
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/", self._healthz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(
                runner,
                self.host,
                self.port,
                ssl_context=self.web.ssl_context() if self.web is not None else None,
            ).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        assert self.web is not None
        if request.path == "/healthz":
            return await handler(request)  # liveness only (probes carry no password)
        header = request.headers.get("Authorization")
        # bcrypt costs ~0.1 s when a credential is new: off the event loop
        ok = await asyncio.to_thread(self.web.check, header) if header else self.web.check(None)
        if not ok:
            return web.Response(
                status=401,
                text="401 Unauthorized\n",
                headers={"WWW-Authenticate": 'Basic realm="metrics", charset="UTF-8"'},
            )
        return await handler(request)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self._render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, request: web.Request) -> web.Response:
        problem = self._health()
        if problem is None:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=f"{problem}\n")
