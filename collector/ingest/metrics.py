"""The ingest service's own metrics (prometheus_client, injected registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "collector_ingest_"


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.batches_received = Counter(
            PREFIX + "batches_received", "Batches read from agent streams.", registry=registry)
        self.batches_accepted = Counter(
            PREFIX + "batches_accepted", "Batches stored in Kafka and acknowledged OK.",
            registry=registry)
        self.batches_rejected = Counter(
            PREFIX + "batches_rejected", "Batches answered with a non-OK ack, by reason.",
            ["reason"], registry=registry)
        self.samples_received = Counter(
            PREFIX + "samples_received", "Samples in batches read from streams (valid batches).",
            registry=registry)
        self.samples_accepted = Counter(
            PREFIX + "samples_accepted", "Samples in batches stored in Kafka.", registry=registry)
        self.samples_rejected = Counter(
            PREFIX + "samples_rejected", "Samples in valid batches that Kafka did not take, by reason.",
            ["reason"], registry=registry)
        self.received_bytes = Counter(
            PREFIX + "received_bytes", "Bytes of batches read from streams.", registry=registry)
        self.produce_seconds = Histogram(
            PREFIX + "kafka_produce_seconds",
            "Time from send to the broker's acks=all answer, for acknowledged records.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry)
        self.inflight_batches = Gauge(
            PREFIX + "inflight_batches", "Batches read and not yet acknowledged.", registry=registry)
        self.inflight_bytes = Gauge(
            PREFIX + "inflight_bytes", "Bytes of batches read and not yet acknowledged.",
            registry=registry)
        self.streams_open = Gauge(PREFIX + "streams_open", "Open agent streams.", registry=registry)
        self.streams = Counter(
            PREFIX + "streams", "Streams opened, by outcome of authentication.", ["result"],
            registry=registry)
        self.producer_rebuilds = Counter(
            PREFIX + "producer_rebuilds", "Kafka producers rebuilt after being wedged.",
            registry=registry)
        self.kafka_up = Gauge(PREFIX + "kafka_up", "1 when Kafka answers, else 0.", registry=registry)
        self.token_reloads = Counter(
            PREFIX + "token_reloads", "Token file reloads, by result.", ["result"], registry=registry)
