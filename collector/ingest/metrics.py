"""The ingest service's own metrics (prometheus_client, injected registry).

The unlabelled per-batch totals are plain integers on `IngestMetrics.totals`, read by a
collector at scrape time: a prometheus_client `Counter.inc()` takes a lock and costs
about as much as validating a small batch's columns, five times per batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

PREFIX = "collector_ingest_"


@dataclass(slots=True)
class Totals:
    """Monotonic per-batch totals, incremented in the hot path, exposed as counters."""

    batches_received: int = 0
    batches_accepted: int = 0
    samples_received: int = 0
    samples_accepted: int = 0
    received_bytes: int = 0


_TOTALS_HELP = {
    "batches_received": "Batches read from agent streams.",
    "batches_accepted": "Batches stored in Kafka and acknowledged OK.",
    "samples_received": "Samples in batches read from streams (valid batches).",
    "samples_accepted": "Samples in batches stored in Kafka.",
    "received_bytes": "Bytes of batches read from streams.",
}


class _TotalsCollector:
    def __init__(self, totals: Totals) -> None:
        self.totals = totals

    def collect(self) -> Iterator[Metric]:
        for name, text in _TOTALS_HELP.items():
            yield CounterMetricFamily(PREFIX + name, text, value=getattr(self.totals, name))

    def describe(self) -> Iterator[Metric]:
        for name, text in _TOTALS_HELP.items():
            yield CounterMetricFamily(PREFIX + name, text)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.totals = Totals()
        registry.register(_TotalsCollector(self.totals))
        self.batches_rejected = Counter(
            PREFIX + "batches_rejected",
            "Batches answered with a non-OK ack, by reason (the validation rule, decode, "
            "decompress, oversize, permission_denied, token_revoked, kafka_timeout, kafka_error, "
            "internal, cancelled).",
            ["reason"],
            registry=registry,
        )
        self.batches_repeated = Counter(
            PREFIX + "batches_repeated",
            "Batches whose seq was not above every earlier seq of the same stream (a resend); "
            "stored again (the aggregator drops the copy) and acked on their own.",
            registry=registry,
        )
        self.samples_rejected = Counter(
            PREFIX + "samples_rejected",
            "Samples in valid batches that Kafka did not take, by reason.",
            ["reason"],
            registry=registry,
        )
        self.produce_seconds = Histogram(
            PREFIX + "kafka_produce_seconds",
            "Time from send to the broker's acks=all answer, for acknowledged records.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.inflight_batches = Gauge(
            PREFIX + "inflight_batches", "Batches read and not yet acknowledged.", registry=registry
        )
        self.inflight_bytes = Gauge(
            PREFIX + "inflight_bytes", "Bytes of batches read and not yet acknowledged.", registry=registry
        )
        self.streams_open = Gauge(PREFIX + "streams_open", "Open agent streams.", registry=registry)
        self.streams = Counter(
            PREFIX + "streams",
            "Streams opened, by outcome: ok / unauthenticated_allowed were served, any other "
            "result is a refusal (see collector_ingest_streams_refused_total).",
            ["result"],
            registry=registry,
        )
        self.streams_refused = Counter(
            PREFIX + "streams_refused",
            "Streams ended before reading a batch, by reason: unauthenticated, too_many_streams "
            "(ingest.max_concurrent_streams), too_many_streams_site (ingest.max_streams_per_site), "
            "shutting_down.",
            ["reason"],
            registry=registry,
        )
        self.streams_ended = Counter(
            PREFIX + "streams_ended",
            "Served streams that ended, by reason: completed (client half-closed, all answered; "
            "the reference agent half-closes its idle streams before the idle timeout), "
            "cancelled (client cancelled or connection lost), idle_timeout (ended by the ingest), "
            "shutdown, internal, "
            "token_revoked (the stream's token left ingest.tokens_file). A message over twice "
            "ingest.max_message_bytes on the wire is refused by gRPC itself before the service "
            "reads it; the stream then ends as completed, or as cancelled when gRPC cancels the "
            "handler first (grpcio does not tell the service which).",
            ["reason"],
            registry=registry,
        )
        self.producer_rebuilds = Counter(
            PREFIX + "producer_rebuilds", "Kafka producers rebuilt after being wedged.", registry=registry
        )
        self.kafka_up = Gauge(PREFIX + "kafka_up", "1 when Kafka answers, else 0.", registry=registry)
        self.token_reloads = Counter(
            PREFIX + "token_reloads", "Token file reloads, by result.", ["result"], registry=registry
        )
