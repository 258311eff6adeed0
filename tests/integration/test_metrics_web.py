"""/metrics over HTTPS with basic auth (`*.metrics_web_config`, the exporter-toolkit web
config format): the one endpoint every role uses, in both its modes - a prometheus-client
registry (agent, ingest) and a render coroutine (aggregator) - over real TLS on loopback with
the dev CA."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry, Counter

from collector.devcerts import DevCerts, make_dev_certs
from collector.errors import ConfigError
from collector.exposition.http import MetricsServer
from collector.exposition.webconfig import WebConfig

PASSWORD = "s3cret-scrape-password"


def web_config(tmp: Path, certs: DevCerts | None, *, users: bool = True, mtls: bool = False) -> Path:
    lines = []
    if certs is not None:
        lines += [
            "tls_server_config:",
            f"  cert_file: {certs.server_cert}",
            f"  key_file: {certs.server_key}",
        ]
        if mtls:
            lines.append(f"  client_ca_file: {certs.ca}")
    if users:
        h = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        lines += ["basic_auth_users:", f"  prometheus: '{h}'"]
    p = tmp / "web.yml"
    p.write_text("\n".join(lines) + "\n")
    return p


def get(
    url: str,
    *,
    ca: Path | None = None,
    auth: tuple[str, str] | None = None,
    cert: tuple[Path, Path] | None = None,
) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    ctx = None
    if ca is not None:
        ctx = ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def aget(url: str, **kw: object) -> tuple[int, str]:
    return await asyncio.to_thread(get, url, **kw)  # type: ignore[arg-type]


def _registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("web_test_things", "things", registry=reg).inc(3)
    return reg


@pytest.fixture
def web_certs(tmp_path: Path) -> DevCerts:
    return make_dev_certs(tmp_path / "tls")


@contextlib.asynccontextmanager
async def both_servers(web: WebConfig) -> AsyncIterator[list[int]]:
    """Ports of a registry /metrics server (agent, ingest) and a rendered one (aggregator)."""

    async def render() -> bytes:
        return b"web_test_things_total 3.0\n"

    async with (
        MetricsServer("127.0.0.1", 0, _registry(), web_config=web) as registry_srv,
        MetricsServer("127.0.0.1", 0, render, web_config=web) as rendered_srv,
    ):
        yield [registry_srv.bound_port, rendered_srv.bound_port]


async def test_https_and_basic_auth_on_both_servers(tmp_path: Path, web_certs: DevCerts) -> None:
    web = WebConfig.load(web_config(tmp_path, web_certs), "ingest.metrics_web_config")
    async with both_servers(web) as ports:
        for port in ports:
            url = f"https://127.0.0.1:{port}/metrics"
            ok = {"ca": web_certs.ca, "auth": ("prometheus", PASSWORD)}
            status, body = await aget(url, **ok)
            assert status == 200
            assert "web_test_things_total 3.0" in body
            # again: the accepted credential is remembered, the answer is the same
            assert (await aget(url, **ok))[0] == 200
            assert (await aget(url, ca=web_certs.ca))[0] == 401
            assert (await aget(url, ca=web_certs.ca, auth=("prometheus", "wrong")))[0] == 401
            assert (await aget(url, ca=web_certs.ca, auth=("nobody", PASSWORD)))[0] == 401
            # plaintext HTTP to the TLS port gets no metrics
            with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
                await aget(f"http://127.0.0.1:{port}/metrics", auth=("prometheus", PASSWORD))
        # the server still answers after the plaintext attempt
        status, _ = await aget(
            f"https://127.0.0.1:{ports[0]}/metrics", ca=web_certs.ca, auth=("prometheus", PASSWORD)
        )
        assert status == 200


async def test_client_certificate_required_when_client_ca_is_set(tmp_path: Path, web_certs: DevCerts) -> None:
    web = WebConfig.load(web_config(tmp_path, web_certs, users=False, mtls=True), "agent.metrics_web_config")
    async with both_servers(web) as ports:
        for port in ports:
            url = f"https://127.0.0.1:{port}/metrics"
            with pytest.raises((urllib.error.URLError, ConnectionError, OSError, ssl.SSLError)):
                await aget(url, ca=web_certs.ca)
            status, _ = await aget(url, ca=web_certs.ca, cert=(web_certs.client_cert, web_certs.client_key))
            assert status == 200


def test_config_errors_name_the_key_and_the_file(tmp_path: Path, web_certs: DevCerts) -> None:
    p = tmp_path / "web.yml"
    p.write_text("basic_auth_users:\n  prometheus: plain-text-password\n")
    with pytest.raises(ConfigError) as err:
        WebConfig.load(p, "aggregate.metrics_web_config")
    msg = str(err.value)
    assert "aggregate.metrics_web_config" in msg
    assert str(p) in msg
    assert "plain-text-password" not in msg  # a secret never reaches the message
    p.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n")
    with pytest.raises(ConfigError, match="cannot load the certificate"):
        WebConfig.load(p, "aggregate.metrics_web_config")
    p.write_text("tls_config: {}\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        WebConfig.load(p, "aggregate.metrics_web_config")


async def test_healthz_stays_open_and_the_health_probe_speaks_https(
    tmp_path: Path, web_certs: DevCerts
) -> None:
    from collector.health_cmd import probe_http

    web = WebConfig.load(web_config(tmp_path, web_certs), "aggregate.metrics_web_config")
    async with both_servers(web) as (registry_port, rendered_port):
        # liveness carries no secret and probes carry no password: /healthz needs none
        for port in (registry_port, rendered_port):
            status, _ = await aget(f"https://127.0.0.1:{port}/healthz", ca=web_certs.ca)
            assert status == 200
            assert (await aget(f"https://127.0.0.1:{port}/metrics", ca=web_certs.ca))[0] == 401
            assert await asyncio.to_thread(probe_http, f"https://127.0.0.1:{port}/healthz", 10) is None
        # an agent's /metrics behind basic auth: a 401 answer means it is up
        url = f"https://127.0.0.1:{registry_port}/metrics"
        assert await asyncio.to_thread(probe_http, url, 10, auth_answers=True) is None
        assert "401" in (await asyncio.to_thread(probe_http, url, 10) or "")
