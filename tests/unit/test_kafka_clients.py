"""The one Kafka client factory (collector/kafka.py): what every aiokafka client gets.

The real connections (mutual TLS through a TLS proxy in front of Tansu) are checked in
tests/integration/test_kafka_clients.py; these check the arguments themselves, including
SASL, which the test broker does not speak.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from collector import kafka
from collector.aggregate.decode import Decoder
from collector.config import KafkaSettings
from collector.devcerts import make_dev_certs
from collector.errors import ProtocolError
from tests.aggregate_support import SeriesDef, make_batch

CONNECTION = {"bootstrap_servers", "client_id", "request_timeout_ms", "security_protocol"}


def test_plaintext_clients_get_the_connection_settings_only() -> None:
    k = KafkaSettings(client_id="edge-test", request_timeout_ms=7000)
    kw = kafka.client_kwargs(k, "127.0.0.1:9092")
    assert kw == {
        "bootstrap_servers": "127.0.0.1:9092",
        "client_id": "edge-test",
        "request_timeout_ms": 7000,
        "security_protocol": "PLAINTEXT",
    }


def test_producer_arguments_are_the_client_ones_plus_acks_all_and_the_produce_settings() -> None:
    k = KafkaSettings(linger_ms=3, max_batch_size=65536, compression_type="lz4", enable_idempotence=True)
    client = kafka.client_kwargs(k, "127.0.0.1:9092")
    producer = kafka.producer_kwargs(k, "127.0.0.1:9092")
    assert {key: producer[key] for key in client} == client
    assert producer["acks"] == "all"
    assert (producer["linger_ms"], producer["max_batch_size"], producer["compression_type"]) == (
        3,
        65536,
        "lz4",
    )
    assert producer["enable_idempotence"] is True
    assert producer["max_request_size"] == k.max_request_size


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
async def test_tls_settings_become_a_verifying_context_every_client_accepts(
    protocol: str, tmp_path: Path
) -> None:
    certs = make_dev_certs(tmp_path)
    sasl = {"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "edge", "sasl_password": "pw-not-logged"}
    k = KafkaSettings(
        security_protocol=protocol,  # type: ignore[arg-type]
        ssl_cafile=certs.ca,
        ssl_certfile=certs.client_cert,
        ssl_keyfile=certs.client_key,
        **(sasl if protocol == "SASL_SSL" else {}),  # type: ignore[arg-type]
    )
    kw = kafka.client_kwargs(k, "127.0.0.1:9093")
    ctx = kw["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.get_ca_certs(), "the CA bundle is loaded"
    if protocol == "SASL_SSL":
        assert (kw["sasl_mechanism"], kw["sasl_plain_username"], kw["sasl_plain_password"]) == (
            "SCRAM-SHA-512",
            "edge",
            "pw-not-logged",
        )
    else:
        assert not {key for key in kw if key.startswith("sasl")}
    # every client type takes them (aiokafka checks the security arguments when built)
    producer = AIOKafkaProducer(**kafka.producer_kwargs(k, "127.0.0.1:9093"))
    consumer = AIOKafkaConsumer(**kw, group_id="g")
    admin = AIOKafkaAdminClient(**kw)
    await producer.stop()
    await consumer.stop()
    await admin.close()


async def test_sasl_without_tls_has_no_tls_context() -> None:
    k = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p"
    )
    kw = kafka.client_kwargs(k, "127.0.0.1:9092")
    assert "ssl_context" not in kw
    assert kw["sasl_mechanism"] == "PLAIN"
    await AIOKafkaConsumer(**kw).stop()


def test_record_headers_are_what_the_aggregator_accepts() -> None:
    value = make_batch(
        agent="agent-7",
        seq=12,
        site="jp-tokyo-01",
        series=[SeriesDef("link_in_octets", {"link": "a"})],
        counters=[(0, 10**18, 5)],
    )
    headers = kafka.record_headers("agent-7", 12)
    assert headers == [("schema", b"telemetry.v1.Batch"), ("agent_id", b"agent-7"), ("seq", b"12")]
    assert Decoder().read(value, headers).seq == 12
    with pytest.raises(ProtocolError, match="schema"):
        Decoder().read(value, [("schema", b"telemetry.v2.Batch"), *headers[1:]])
