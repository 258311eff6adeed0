"""Kafka clients and records: the one place aiokafka client arguments are built.

Every component that talks to Kafka takes its arguments from here: the ingest service's
producer (collector/ingest/producer.py), the aggregator's consumers, producer and admin
client (collector/aggregate/service.py), the simulator's direct mode and `collector run`'s
topic set-up. `client_kwargs` holds what every client needs to reach the cluster (bootstrap
servers, client id, request timeout, security protocol, TLS context, SASL credentials) and
`producer_kwargs` adds the produce settings of a batch writer. Also here: the headers every
batch record carries (`record_headers`), which the aggregator checks.
"""

from __future__ import annotations

from typing import Any

from collector.config import KafkaSettings
from collector.wire import SCHEMA

SCHEMA_HEADER = SCHEMA.encode()  # value of a record's "schema" header


def client_kwargs(k: KafkaSettings, bootstrap: str) -> dict[str, Any]:
    """Arguments every aiokafka client takes (producer, consumer, admin client) to reach the
    cluster named by `bootstrap` with the settings' client id, timeout and security."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": k.client_id,
        "request_timeout_ms": k.request_timeout_ms,
        "security_protocol": k.security_protocol,
    }
    if k.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        kwargs["ssl_context"] = create_ssl_context(
            cafile=str(k.ssl_cafile) if k.ssl_cafile else None,
            certfile=str(k.ssl_certfile) if k.ssl_certfile else None,
            keyfile=str(k.ssl_keyfile) if k.ssl_keyfile else None,
        )
    if k.sasl_mechanism:
        kwargs.update(
            sasl_mechanism=k.sasl_mechanism,
            sasl_plain_username=k.sasl_username,
            sasl_plain_password=k.sasl_password,
        )
    return kwargs


def producer_kwargs(k: KafkaSettings, bootstrap: str) -> dict[str, Any]:
    """aiokafka producer arguments of a batch writer (the ingest service, the simulator's
    direct mode): `client_kwargs` plus acks=all and the settings' produce options."""
    return client_kwargs(k, bootstrap) | {
        "acks": "all",
        "enable_idempotence": k.enable_idempotence,
        "linger_ms": k.linger_ms,
        "max_batch_size": k.max_batch_size,
        "max_request_size": k.max_request_size,
        "compression_type": k.compression_type,
    }


def record_headers(agent_id: str, seq: int) -> list[tuple[str, bytes]]:
    """The headers of a batch record: its schema, agent and seq (what the ingest writes)."""
    return [("schema", SCHEMA_HEADER), ("agent_id", agent_id.encode()), ("seq", str(seq).encode())]
