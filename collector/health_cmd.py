"""`collector health [ROLE]`: one probe for container healthchecks and Kubernetes exec probes.

    collector health ingest      # gRPC health (grpc.health.v1) of telemetry.v1.IngestService
    collector health aggregate   # GET /healthz of the aggregator (503 once its loop died)
    collector health agent       # GET /healthz of the agent (its HTTP endpoint answers)
    collector health             # the role of PID 1 (`collector <role>` in a container;
                                 # `run` is probed as its aggregator, simulate/broker pass)

Addresses come from the same settings as the role (its --config file - PID 1's when none
is given - and the COLLECTOR_* environment), with a wildcard listen address probed on
loopback. The ingest is probed over TLS unless `ingest.plaintext`: the CA is `--ca`, else
a `ca.crt` / `ca.pem` beside `ingest.tls_cert` (cert-manager and `collector run` both put
one there), and the name checked is `--server-name`, else the certificate's first DNS
name. Exit 0 = healthy, 1 = unhealthy (one line on stderr says why), 2 = cannot tell (config).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.error
import urllib.request
from pathlib import Path

from collector.address import join_host_port, parse_host_port
from collector.config import Settings, load_settings
from collector.errors import ConfigError
from collector.exposition import webconfig

ROLES = ("ingest", "aggregate", "agent")
SERVICE = "telemetry.v1.IngestService"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "role",
        nargs="?",
        choices=ROLES,
        help="what to probe (default: the role PID 1 runs, as in a container)",
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    parser.add_argument("--ca", type=Path, help="ingest: CA that signed its certificate")
    parser.add_argument("--server-name", help="ingest: TLS name to verify")


def pid1_argv(cmdline: Path = Path("/proc/1/cmdline")) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in cmdline.read_bytes().split(b"\0") if a]
    except OSError:
        return []


# commands PID 1 may run that have no probe of their own; `run` is probed as its aggregator
NO_PROBE = ("simulate", "broker")


def role_of_pid1(cmdline: Path = Path("/proc/1/cmdline")) -> str | None:
    for a in pid1_argv(cmdline):
        if a in ROLES or a in NO_PROBE:
            return a
        if a == "run":
            return "aggregate"
    return None


def config_of_pid1(cmdline: Path = Path("/proc/1/cmdline")) -> str | None:
    """The --config/-c file PID 1 was started with (so the probe reads the same settings)."""
    argv = pid1_argv(cmdline)
    for i, a in enumerate(argv):
        if a in ("--config", "-c") and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def _loopback(listen: str) -> tuple[str, int]:
    host, port = parse_host_port(listen, listen=True)
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return host, port


def _first_dns_name(cert: Path) -> str | None:
    from cryptography import x509

    c = x509.load_pem_x509_certificate(cert.read_bytes())
    try:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    names = san.get_values_for_type(x509.DNSName)
    return names[0] if names else None


async def probe_ingest(
    settings: Settings, *, deadline_s: float, ca: Path | None = None, server_name: str | None = None
) -> str | None:
    """None when the ingest's gRPC health says SERVING, else why not."""
    import grpc
    from grpc.aio import insecure_channel, secure_channel
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    cfg = settings.ingest
    host, port = _loopback(cfg.listen)
    target = join_host_port(host, port)
    if cfg.plaintext:
        channel = insecure_channel(target)
    else:
        if cfg.tls_cert is None:
            raise ConfigError("TLS ingest without a certificate", key="ingest.tls_cert")
        cert = Path(cfg.tls_cert)
        ca_file = ca or next(
            (p for p in (cert.parent / "ca.crt", cert.parent / "ca.pem") if p.is_file()), None
        )
        if ca_file is None:
            raise ConfigError(
                f"no CA to verify the ingest with: pass --ca (none beside {cert})", key="ingest.tls_cert"
            )
        name = server_name or _first_dns_name(cert) or host
        creds = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
        channel = secure_channel(target, creds, options=[("grpc.ssl_target_name_override", name)])
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=deadline_s)
        except grpc.aio.AioRpcError as exc:
            return f"ingest {target}: {exc.code().name} {exc.details()}"
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        return f"ingest {target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}"
    return None


def probe_http(url: str, timeout: float, *, auth_answers: bool = False) -> str | None:
    """None when `url` answers 200 (or 401 with `auth_answers`: an endpoint behind basic auth
    that answered is up; the probe has no password). HTTPS is not verified: the probe talks
    to its own container's process on loopback, to see that it answers."""
    import ssl

    ctx = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
            return None if r.status == 200 else f"{url}: HTTP {r.status}"
    except urllib.error.HTTPError as exc:
        if auth_answers and exc.code == 401:
            return None
        return f"{url}: HTTP {exc.code} {exc.read()[:200].decode(errors='replace').strip()}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {getattr(exc, 'reason', exc)}"


async def main(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    role = args.role or role_of_pid1()
    if role is None:
        print("collector health: no role given and PID 1 is not `collector <role>`", file=sys.stderr)
        return 2
    if role in NO_PROBE:
        return 0  # alive is all a container runtime can tell of these
    if not (args.config or args.sub_config) and (path := config_of_pid1()):
        settings = load_settings(path)
    if role == "ingest":
        problem = await probe_ingest(
            settings, deadline_s=args.timeout, ca=args.ca, server_name=args.server_name
        )
    else:
        listen = settings.aggregate.metrics_listen if role == "aggregate" else settings.agent.metrics_listen
        key = f"{role}.metrics_listen"
        if not listen:
            raise ConfigError("the HTTP endpoint is disabled: nothing to probe", key=key)
        host, port = _loopback(listen)
        web_path = (
            settings.aggregate.metrics_web_config
            if role == "aggregate"
            else settings.agent.metrics_web_config
        )
        web = webconfig.load(web_path, f"{role}.metrics_web_config")
        scheme = "https" if web is not None and web.tls else "http"
        problem = await asyncio.to_thread(
            probe_http,
            f"{scheme}://{join_host_port(host, port)}/healthz",  # open even with basic auth
            args.timeout,
        )
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0
