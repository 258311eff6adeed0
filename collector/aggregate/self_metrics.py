"""The aggregator's own metrics (`collector_aggregate_*`): consumption, closes, checkpoints.

Registered on the registry the service is given (never the global one) and rendered at the
head of every /metrics body, taken at the same moment as the aggregated state
(collector/aggregate/service.py). docs/metrics.md is generated from here and outputs.py.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_CLOSE_BUCKETS = (0.5, 1, 2.5, 5, 10, 15, 20, 30, 60, 120, 300, 900)


class SelfMetrics:
    """The aggregator's own metrics, on the injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "collector_aggregate_"
        self.records = Counter(p + "records", "Kafka records consumed.", ["partition"], registry=registry)
        self.samples = Counter(p + "samples", "Samples accepted into windows.", registry=registry)
        self.decode_errors = Counter(
            p + "decode_errors",
            "Records that are not a valid batch, by reason.",
            ["reason"],
            registry=registry,
        )
        self.consumer_errors = Counter(
            p + "consumer_errors",
            "Kafka errors of the consume loop, each retried after a backoff, by reason: "
            "corrupt_batch (a fetched record batch failed its CRC32C; it is fetched again and "
            "nothing of it is processed), connection, other.",
            ["reason"],
            registry=registry,
        )
        for reason in ("corrupt_batch", "connection", "other"):  # 0 from the start
            self.consumer_errors.labels(reason)
        self.dead_letters = Counter(
            p + "dead_letter_records", "Records copied to the dead-letter topic.", registry=registry
        )
        self.dead_letter_failures = Counter(
            p + "dead_letter_failures",
            "Dead-letter records not written after every retry (skipped; decode errors stay counted).",
            registry=registry,
        )
        self.lag = Gauge(
            p + "consumer_lag_records",
            "Records between the consumed position and the partition's high watermark, "
            "when the broker reports one.",
            ["partition"],
            registry=registry,
        )
        self.event_lag = Gauge(
            p + "event_time_lag_seconds",
            "Wall clock minus the newest event time seen in the partition.",
            ["partition"],
            registry=registry,
        )
        self.watermark = Gauge(
            p + "watermark_seconds",
            "Event-time watermark of the partition (Unix seconds).",
            ["partition"],
            registry=registry,
        )
        self.close_latency = Histogram(
            p + "window_close_latency_seconds",
            "Wall time between a window's end and its close.",
            buckets=_CLOSE_BUCKETS,
            registry=registry,
        )
        self.close_duration = Histogram(
            p + "window_close_duration_seconds",
            "Processing time of one close step (all windows).",
            registry=registry,
        )
        self.checkpoints = Counter(p + "checkpoints", "Partition checkpoints written.", registry=registry)
        self.checkpoint_errors = Counter(
            p + "checkpoint_errors", "Checkpoints that failed.", registry=registry
        )
        self.checkpoint_bytes = Gauge(
            p + "checkpoint_bytes", "Size of the last checkpoint.", ["partition"], registry=registry
        )
        self.checkpoint_interval = Gauge(
            p + "checkpoint_interval_seconds",
            "Interval between checkpoint rounds in use: checkpoint_interval_s, "
            "stretched so that rounds take at most checkpoint_max_share of "
            "the loop's time.",
            registry=registry,
        )
        self.restores = Counter(p + "restores", "Partitions restored from a checkpoint.", registry=registry)
        self.rebalances = Counter(p + "rebalances", "Partition assignments received.", registry=registry)
        self.partitions = Gauge(p + "partitions_assigned", "Partitions this member owns.", registry=registry)
        self.partitions_paused = Gauge(
            p + "partitions_paused",
            "Assigned partitions whose checkpoint could not be restored "
            "yet: paused (nothing consumed) and retried.",
            registry=registry,
        )
        self.series = Gauge(p + "series", "Active series in state.", registry=registry)
        self.state_bytes = Gauge(
            p + "state_bytes", "Approximate bytes of aggregation state.", registry=registry
        )
        self.render_seconds = Histogram(
            p + "render_seconds", "Time to render the aggregated /metrics.", registry=registry
        )
