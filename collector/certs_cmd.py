"""`collector dev-certs [DIR]`: throw-away TLS material for a demo deployment (compose).

Writes ca.pem, server.pem/server.key (for the given DNS names plus localhost and the
loopback addresses) and client.pem/client.key into DIR, readable only by the owner except
the certificates. Never for production: docs/deploy.md says how to use real certificates.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from collector.config import Settings
from collector.devcerts import make_dev_certs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory",
        type=Path,
        nargs="?",
        default=Path("dev-certs"),
        help="where to write the PEM files (default ./dev-certs)",
    )
    parser.add_argument(
        "--dns",
        action="append",
        default=[],
        metavar="NAME",
        help="DNS name of the server certificate (repeatable)",
    )
    parser.add_argument(
        "--if-missing", action="store_true", help="do nothing when DIR already holds a ca.pem"
    )


async def main(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    d: Path = args.directory
    if args.if_missing and (d / "ca.pem").is_file():
        print(f"dev certificates already in {d}", flush=True)
        return 0
    certs = make_dev_certs(d, dns_names=tuple(args.dns))
    for p in (certs.ca, certs.server_cert, certs.client_cert):
        p.chmod(0o644)
    print(
        f"dev certificates in {d}: CA {certs.ca.name}, server {certs.server_cert.name} "
        f"({', '.join([*args.dns, 'localhost'])})",
        flush=True,
    )
    return 0
