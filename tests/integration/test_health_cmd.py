"""`collector health ROLE`: the container/Kubernetes probe against real servers on loopback."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from collector.broker import EmbeddedBroker, free_port
from collector.config import load_settings
from collector.devcerts import DevCerts
from collector.exposition.http import MetricsServer
from collector.health_cmd import config_of_pid1, probe_http, probe_ingest, role_of_pid1
from collector.ingest.server import IngestServer
from tests.agent_support import ingest_config

ROOT = Path(__file__).resolve().parents[2]


async def test_ingest_probe_speaks_grpc_health_over_tls(
    tmp_path: Path, broker: EmbeddedBroker, topic: str, certs: DevCerts
) -> None:
    port = free_port()
    cfg = ingest_config(tmp_path, certs, broker.bootstrap, topic, port, {"tok-0123456789abcdef": "jp-1"})
    settings = load_settings(cfg)
    async with IngestServer(settings):
        # the CA is found beside the server certificate (ca.pem), the name from its SAN
        assert await probe_ingest(settings, deadline_s=5) is None
        p = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "collector",
            "--config",
            str(cfg),
            "health",
            "ingest",
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(p.communicate(), 60)
        assert p.returncode == 0, err
        wrong_ca = tmp_path / "other-ca.pem"
        wrong_ca.write_bytes(certs.client_cert.read_bytes())
        assert await probe_ingest(settings, deadline_s=5, ca=wrong_ca) is not None
    problem = await probe_ingest(settings, deadline_s=2)
    assert problem is not None
    assert "UNAVAILABLE" in problem


async def test_aggregate_probe_reads_healthz_and_reports_the_reason() -> None:
    state: dict[str, str | None] = {"problem": None}

    async def body() -> bytes:
        return b""

    server = MetricsServer("127.0.0.1", 0, body, lambda: state["problem"])
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.bound_port}/healthz"
        assert await asyncio.to_thread(probe_http, url, 5) is None
        state["problem"] = "consume loop failed: boom"
        got = await asyncio.to_thread(probe_http, url, 5)
        assert got is not None
        assert "503" in got
        assert "boom" in got
    finally:
        await server.stop()
    assert probe_http(url, 2) is not None  # nothing listens any more


async def test_agent_probe_asks_healthz_even_behind_basic_auth(tmp_path: Path, certs: DevCerts) -> None:
    """`collector health agent` against an agent endpoint with HTTPS and basic auth: /healthz
    is open, so the probe needs no password; a stopped endpoint is unhealthy (exit 1)."""
    import bcrypt
    from prometheus_client import CollectorRegistry

    from collector.exposition.http import serve_metrics

    web = tmp_path / "web.yml"
    h = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web.write_text(
        f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n"
        f"basic_auth_users:\n  prometheus: '{h}'\n"
    )
    server = await serve_metrics("agent", "127.0.0.1:0", web, CollectorRegistry())
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"agent:\n  metrics_listen: '127.0.0.1:{server.bound_port}'\n  metrics_web_config: {web}\n"
    )

    async def health() -> tuple[int | None, bytes]:
        p = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "collector",
            "--config",
            str(cfg),
            "health",
            "agent",
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(p.communicate(), 60)
        return p.returncode, err

    try:
        rc, err = await health()
        assert rc == 0, err
    finally:
        await server.stop()
    rc, err = await health()
    assert rc == 1
    assert b"unhealthy" in err


def test_role_comes_from_pid1_cmdline(tmp_path: Path) -> None:
    f = tmp_path / "cmdline"
    f.write_bytes(b"/opt/collector/bin/python\0/opt/collector/bin/collector\0aggregate\0")
    assert role_of_pid1(f) == "aggregate"
    assert config_of_pid1(f) is None
    f.write_bytes(b"/opt/collector/bin/collector\0--config\0/etc/collector/ingest.yaml\0ingest\0")
    assert (role_of_pid1(f), config_of_pid1(f)) == ("ingest", "/etc/collector/ingest.yaml")
    f.write_bytes(b"collector\0run\0--duration\0060\0")
    assert role_of_pid1(f) == "aggregate"
    f.write_bytes(b"collector\0simulate\0")
    assert role_of_pid1(f) == "simulate"
    f.write_bytes(b"/sbin/init\0")
    assert role_of_pid1(f) is None
    assert role_of_pid1(tmp_path / "missing") is None
