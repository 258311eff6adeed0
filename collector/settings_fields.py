"""Settings field types that several sections share, declared once.

`ListenAddress` is every `HOST:PORT` a service listens on (`ingest.listen`, and
`ingest/agent/aggregate.metrics_listen`), checked by the one parser of collector/address.py;
`MetricsWebConfig` is the `metrics_web_config` of every role's /metrics endpoint
(collector/exposition/webconfig.py reads the file). Sections import these instead of
re-declaring the field, so the three roles cannot drift apart in validation or description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from collector.address import parse_host_port


def _listen(v: str) -> str:
    if v:  # empty: the endpoint is disabled (metrics_listen)
        parse_host_port(v, listen=True)
    return v


ListenAddress = Annotated[str, AfterValidator(_listen)]

MetricsWebConfig = Annotated[
    Path | None,
    Field(
        description=(
            "YAML file in the Prometheus exporter-toolkit web config format (tls_server_config: "
            "cert_file, key_file, optional client_ca_file; basic_auth_users: user -> bcrypt hash) "
            "to serve /metrics over HTTPS and/or with basic auth (/healthz is served over the same "
            "TLS but without auth: liveness probes carry no password); unset: plain HTTP, no auth. "
            "See docs/deploy.md."
        )
    ),
]
