"""Settings of the `aggregate` section (see collector/config.py for loading rules).

Every field's description is its documentation: `collector config --defaults` prints it and
docs/aggregator.md explains how the knobs interact.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from collector.settings_fields import ListenAddress, MetricsWebConfig


class AggregateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: str = Field(
        "edge-collector-aggregate",
        description="Kafka consumer group of the aggregators; members split the topic's partitions.",
    )
    state_topic: str = Field(
        "telemetry.v1.aggregate-state",
        description=(
            "Topic holding checkpoints of per-partition aggregator state (carry values, open panes, "
            "dedup memory). Created with as many partitions as the telemetry topic when missing."
        ),
    )
    state_replication_factor: int | None = Field(
        None,
        ge=1,
        description=(
            "Replication factor of the state topic when the aggregator creates it (an existing "
            "topic is left as it is). Default: 3, or the number of brokers when the cluster "
            "has fewer (1 on the embedded broker). Checkpoints on one broker are lost with it: "
            "a restart then replays from the oldest retained record."
        ),
    )
    windows_s: tuple[int, ...] = Field(
        (10, 60, 300),
        description=(
            "Sliding event-time window lengths in seconds, each a multiple of the next shorter one. "
            "The shortest is the pane and slides by itself; every longer window is built from the "
            "next shorter one's partial aggregates and slides by that length (default: 10 s and "
            "1 min slide by 10 s, 5 min slides by 1 min)."
        ),
    )
    allowed_lateness_s: float = Field(
        10.0,
        ge=0,
        description=(
            "Watermark = the oldest newest-event-time among the partition's active sites minus "
            "this. A sample whose event time is before the watermark rounded down to a pane (or "
            "what is already closed) when its record is read is late: dropped and counted. A "
            "window [start, end) closes once the watermark passes its end."
        ),
    )
    site_idle_s: float = Field(
        300.0,
        gt=0,
        description=(
            "A partition's windows close as its slowest site's event time advances (agents batch "
            "and deliver at their own pace). A site whose newest event time is more than this "
            "behind the partition's newest (silent, or replaying a backlog) stops holding them "
            "open; its older samples then count as late."
        ),
    )
    period_horizon_s: float = Field(
        21_600.0,
        gt=0,
        description=(
            "Period samples (PM file counts and statistics over [start, end), which bypass the "
            "watermark): a period that ended more than this before the newest period of the same "
            "series is dropped as `too_old`; newer ones are counted once at their own period "
            "(repeats dropped as `duplicate`). Memory: one row per series and period inside it."
        ),
    )
    idle_timeout_s: float = Field(
        30.0,
        gt=0,
        description=(
            "A partition that delivers no record for this long (wall clock) lets its event time "
            "advance with the wall clock, so windows of silent sites close and stale series expire."
        ),
    )
    stale_ttl_s: float = Field(
        600.0,
        gt=0,
        description=(
            "A series with no sample for this long (event time of its partition) disappears from "
            "/metrics and from state."
        ),
    )
    max_counter_rate: float = Field(
        1e15,
        gt=0,
        description=(
            "Largest plausible increase per second of any counter (default 1e15: 8 Pb/s of "
            "octets, 20x the 402 Tb/s record link). A decrease is read as a wrap only when the "
            "wrapped distance fits under this rate over the sample interval; otherwise it is a "
            "reset, never a spike."
        ),
    )
    max_series_per_site: int = Field(
        20_000,
        ge=1,
        description="Cardinality cap: new series of a site beyond this are dropped and counted.",
    )
    dedup_window: int = Field(
        65_536,
        ge=64,
        description=(
            "Per agent, how many seqs below the highest seen are remembered for duplicate "
            "detection. A batch older than that is dropped as too old to be told apart from a "
            "duplicate (counted as `dedup_expired`)."
        ),
    )
    max_poll_records: int = Field(
        2000,
        ge=1,
        description="Records fetched and processed together (one micro-batch) per poll.",
    )
    max_close_samples: int = Field(
        250_000,
        ge=1,
        description=(
            "Samples one close works on at most: a poll holding more (e.g. 2000 records of 1000 "
            "samples after a backlog) is added and closed in steps of about this many, so a "
            "close's arrays stay in the CPU caches (docs/aggregator.md, Performance). Results do "
            "not depend on it."
        ),
    )
    close_interval_s: float = Field(
        0.25,
        ge=0,
        description=(
            "A partition that is behind (its high watermark past its next offset: a backlog, "
            "e.g. after a restart) closes its passed panes once per max_close_samples samples "
            "or once per close_interval_s of wall time, whichever comes first, instead of after "
            "every poll: a close's per-series work is shared by more samples. Caught up, it "
            "closes after every poll. Results do not depend on it."
        ),
    )
    poll_timeout_ms: int = Field(200, ge=1, description="Longest wait of one poll for new records.")
    checkpoint_interval_s: float = Field(
        5.0,
        gt=0,
        description=(
            "How often partition state is checkpointed to the state topic and offsets committed. "
            "A restart replays at most this much (deterministically). The first round comes this "
            "long after the member first owns partitions (not right after a group join)."
        ),
    )
    checkpoint_max_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description=(
            "Longest share of the consume loop's time spent writing checkpoints: after a round "
            "that took T seconds (serialising every changed partition, the state-topic writes "
            "and the commits), the next starts no sooner than T / this after it, and never "
            "sooner than checkpoint_interval_s. Bounds checkpoint cost for large states (a "
            "restart then replays more: up to the stretched interval); the interval in use is "
            "collector_aggregate_checkpoint_interval_seconds."
        ),
    )
    checkpoint_chunk_bytes: int = Field(
        512 * 1024,
        ge=16 * 1024,
        description="Checkpoints larger than this are split into several state-topic records.",
    )
    metrics_listen: ListenAddress = Field(
        "127.0.0.1:9465",
        description=(
            "HOST:PORT of the /metrics and /healthz endpoint (port 0 picks a free port); empty "
            "disables it. Default ports never overlap: ingest gRPC 4317, ingest /metrics 9464, "
            "aggregate /metrics 9465, agent /metrics 9466."
        ),
    )
    metrics_web_config: MetricsWebConfig = None
    window_log: Path | None = Field(
        None,
        description=(
            "Append every closed window (all lengths, per series) to this file as JSON lines: "
            "an audit trail of published values. Off by default; costs one row per series, "
            "window and pane."
        ),
    )
    ledger_refresh_s: float = Field(
        5.0,
        gt=0,
        description=(
            "/metrics is rendered once per closed-window generation, committed checkpoint and "
            "this period: the per-site ledger and the aggregator's own metrics (which change with "
            "every record) are at most this old; scrapes in between get the cached body."
        ),
    )
    window_end_timestamps: bool = Field(
        False,
        description=(
            "Stamp every window sample on /metrics with its window's end (event time) as the "
            "sample timestamp, so a reader knows exactly which window a value is. Costs no "
            "series (collector_site_window_end_timestamp_seconds gives the same per site "
            "always); off by default because Prometheus drops timestamped samples older than "
            "its head block (backfills) and never marks them stale."
        ),
    )
    total_timestamps: bool = Field(
        True,
        description=(
            "Stamp the corrected cumulative counters (*_total) with the event time they are "
            "complete up to (the closed pane boundary), so rate()/increase() are exact in event "
            "time at any scrape interval instead of seeing steps of one pane. Off: the scrape "
            "time is used."
        ),
    )
    heap_retain_mb: int = Field(
        256,
        ge=0,
        description=(
            "glibc only: keep up to this many MiB of freed heap for reuse instead of returning "
            "it to the kernel after every window close (a close allocates and frees many "
            "multi-megabyte NumPy arrays; re-faulting them costs several times the arithmetic). "
            "Resident memory stays up to this much above what is in use. 0 = glibc's defaults."
        ),
    )
    stop_grace_s: float = Field(
        10.0,
        ge=0,
        description="On stop: how long to wait for the final checkpoint before giving up.",
    )
    session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description="Consumer group session timeout; a dead member's partitions move after this.",
    )
    heartbeat_interval_ms: int = Field(1_000, ge=100, description="Consumer group heartbeat interval.")

    @field_validator("windows_s")
    @classmethod
    def _windows(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("at least one window")
        w = tuple(sorted(set(v)))
        if w[0] <= 0:
            raise ValueError("windows must be positive")
        for a, b in itertools.pairwise(w):
            if b % a:
                raise ValueError(f"window {b} s is not a multiple of the next shorter one ({a} s)")
        return w

    @model_validator(mode="after")
    def _heartbeat(self) -> AggregateSettings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be at most a third of session_timeout_ms")
        return self

    @property
    def pane_s(self) -> int:
        return self.windows_s[0]
