"""Every role's HTTP endpoint: GET /metrics, and /healthz for probes (aiohttp, on the event loop).

    agent / ingest / aggregate  --MetricsServer(host:port, web config)-->  Prometheus, probes

One server for all three roles, on the role's own event loop, so whatever /metrics reads
(pipeline stats, in-flight counts, the aggregated state) is read on the loop that changes it,
never from another thread. What /metrics serves is one of:

- a prometheus-client `CollectorRegistry` (agent, ingest): collected at each scrape on the
  loop (every collector reads its state there, into metric families that are values), then
  encoded in a worker thread, so a registry of many pipelines does not stall the loop for
  the text encoding (bench/scrape.py). As prometheus-client's own servers do, the format is
  negotiated with the scraper (`choose_encoder`: OpenMetrics for Prometheus, text 0.0.4
  otherwise), the body is gzipped when the scraper accepts it and `?name[]=` filters;
- a `render()` coroutine returning the whole body in the text format (aggregate: it reads its
  state on the loop and runs the Polars rendering in a worker thread, so a large scrape does
  not stall the consumer loop).

`/healthz` (and `/`) is 200 while `health()` returns None, else 503 with the reason, so a
Kubernetes liveness probe restarts a member whose work loop died. `web_config`
(collector/exposition/webconfig.py) adds TLS and basic auth to every path but /healthz
(liveness carries no secret and probes carry no password). Anything else is 404, other
methods 405.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from collector.address import parse_host_port
from collector.errors import ConfigError
from collector.exposition import webconfig
from collector.exposition.webconfig import WebConfig
from collector.lifecycle import Component

log = logging.getLogger(__name__)

Renderer = Callable[[], Awaitable[bytes]]  # the whole /metrics body, in the text format 0.0.4
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # of a Renderer's body
Health = Callable[[], str | None]  # None: healthy; else why not
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class MetricsServer(Component):
    """/metrics and /healthz on host:port (`async with`, or start()/stop())."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Renderer | CollectorRegistry,
        health: Health | None = None,
        web_config: WebConfig | None = None,
    ) -> None:
        self.host = host
        self.web = web_config  # TLS and basic auth (collector/exposition/webconfig.py), or None
        self.port = port
        self._metrics: Handler = (
            _collected(metrics) if isinstance(metrics, CollectorRegistry) else _rendered(metrics)
        )
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
                self.host,  # "" or "0.0.0.0": every interface
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

    async def _healthz(self, request: web.Request) -> web.Response:
        problem = self._health()
        if problem is None:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=f"{problem}\n")


class _Collected:
    """Metric families already collected (on the loop), as a collector to encode elsewhere."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _collected(registry: CollectorRegistry) -> Handler:
    async def metrics(request: web.Request) -> web.StreamResponse:
        encoder, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        families = list(registry.collect())  # here, on the loop: state is read where it changes
        names = request.query.getall("name[]", [])

        def encode() -> bytes:
            snapshot: Any = _Collected(families)
            if names:
                frozen = CollectorRegistry(auto_describe=True)  # names from the families
                frozen.register(snapshot)
                snapshot = frozen.restricted_registry(names)
            return encoder(snapshot)

        body = await asyncio.to_thread(encode)
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.enable_compression()  # when the scraper accepts it (Prometheus: gzip)
        return response

    return metrics


def _rendered(render: Renderer) -> Handler:
    async def metrics(request: web.Request) -> web.StreamResponse:
        body = await render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return metrics


async def serve_metrics(
    section: str,
    listen: str,
    web_config: Path | None,
    metrics: Renderer | CollectorRegistry,
    health: Health | None = None,
) -> MetricsServer:
    """A started MetricsServer for a role's `<section>.metrics_listen` and
    `<section>.metrics_web_config`; a bad web config file or a port that cannot be bound is a
    ConfigError naming the key."""
    host, port = parse_host_port(listen, listen=True)
    web_cfg = webconfig.load(web_config, f"{section}.metrics_web_config")
    server = MetricsServer(host, port, metrics, health, web_cfg)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(
            f"cannot serve /metrics on {listen}: {exc.strerror or exc}", key=f"{section}.metrics_listen"
        ) from exc
    return server
