"""Settings of the `agent` section (see collector/config.py for loading rules).

Every knob is a `Field(default, description=...)`: the description is the documentation
(`collector config --defaults` prints it, docs/agent.md explains the operations side).
Environment overrides nest with `__`, e.g. `COLLECTOR_AGENT__SPOOL__MAX_BYTES=1073741824`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from collector.settings_fields import ListenAddress, MetricsWebConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The wire contract's identifier rule (agent_id, site_id): checked here so a bad value is a
# config error at start, not a rejected batch later.
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}"
_ID_OR_EMPTY = rf"^(?:{ID_PATTERN})?$"


class SiteSettings(_Section):
    site_id: str = Field(
        "",
        pattern=_ID_OR_EMPTY,
        description="Stable site identifier, e.g. 'jp-tokyo-01'. Kafka "
        "records are keyed by it; the ingest checks it against the token.",
    )
    country: str = Field("", description="ISO 3166-1 alpha-2 country code, upper case ('JP', 'US').")
    region: str = Field("", description="Free-form region within the country, e.g. 'Kanto'.")
    timezone: str = Field("UTC", description="IANA time zone of the site, e.g. 'Asia/Tokyo'.")


class IngestTargetSettings(_Section):
    target: str = Field(
        "127.0.0.1:4317", description="HOST:PORT of the ingest service (or its load balancer)."
    )
    plaintext: bool = Field(
        False, description="Connect without TLS. Only for loopback tests; never in production."
    )
    ca_file: Path | None = Field(
        None,
        description="PEM CA bundle that signs the ingest server "
        "certificate; empty uses the system trust store.",
    )
    client_cert: Path | None = Field(None, description="PEM client certificate for mTLS (with client_key).")
    client_key: Path | None = Field(None, description="PEM private key of client_cert.")
    server_name: str = Field(
        "",
        description="TLS server name to verify instead of the host of "
        "`target` (e.g. when connecting by IP address).",
    )
    token: str = Field(
        "",
        description="Bearer token of this site, sent as metadata "
        "`authorization: Bearer <token>`. Prefer token_file.",
    )
    token_file: Path | None = Field(
        None, description="File holding the bearer token (first line); read at start-up. Overrides `token`."
    )
    window: int = Field(
        16,
        ge=1,
        le=1024,
        description="Batches sent on the stream and not yet "
        "acknowledged. Bigger hides more round-trip latency.",
    )
    connect_timeout_s: float = Field(
        10.0, gt=0, description="How long one connection attempt may take before it counts as failed."
    )
    admission_wait_s: float = Field(
        2.0,
        ge=0,
        description="How long a new stream waits for the ingest "
        "to say it took the stream (its initial metadata) before the first batch is "
        "written. A refused stream then ends with its own status and retry hint, not with "
        "a failed write; an ingest that says nothing before its first ack (releases before "
        "this setting) is written to once the wait is over. 0: write at once.",
    )
    ack_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A stream with batches in flight and no "
        "ack for this long is considered broken and reopened.",
    )
    backoff_initial_s: float = Field(
        0.5,
        gt=0,
        description="First retry delay cap after a failed "
        "stream or a retriable ack; doubles per consecutive failure "
        "(full jitter: the wait is uniform in [0, cap]).",
    )
    backoff_max_s: float = Field(30.0, gt=0, description="Upper bound of the retry delay cap.")
    max_batch_bytes: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        le=1024 * 1024 * 1024,
        description="Largest batch "
        "sent; keep it at or below the ingest's max_message_bytes. A "
        "bigger batch (too many series in one collection) is dropped "
        "and counted (reason too_large) instead of being retried "
        "forever. At most 1 GiB (gRPC's message limits are 32-bit).",
    )
    compression: Literal["none", "gzip"] = Field(
        "none",
        description="gRPC message "
        "compression on the stream. gzip sends ~10x "
        "fewer bytes (series tables repeat) for CPU on "
        "both ends; use it on metered or slow uplinks.",
    )
    keepalive_s: float = Field(
        30.0,
        ge=10,
        description="HTTP/2 keepalive ping interval; must not "
        "be below the ingest's min_client_ping_interval_s.",
    )


class SpoolSettings(_Section):
    dir: Path = Field(
        Path("/var/lib/collector-agent/spool"),
        description="Directory of the on-disk spool (segments, ack journal, persisted seq, rejected/).",
    )
    max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=64 * 1024,
        description="Upper bound of the "
        "segment files' total size. When a new batch does not fit, whole "
        "oldest segments of the lowest priority are dropped (reason "
        "spool_full).",
    )
    max_age_s: float = Field(
        2 * 86400.0,
        gt=0,
        description="Batches older than this are dropped "
        "unsent (reason max_age). Keep it below the ingest's "
        "max_past_age_s, which rejects older samples.",
    )
    segment_bytes: int = Field(
        4 * 1024 * 1024,
        ge=4096,
        description="A segment file is closed "
        "and a new one started past this size. Also the unit in which "
        "disk space is reclaimed when the spool is full.",
    )
    fsync: Literal["always", "interval", "never"] = Field(
        "interval",
        description="'always': "
        "fsync every batch before submit "
        "returns (survives power loss); "
        "'interval': at most every "
        "fsync_interval_s; 'never': leave it "
        "to the OS. A killed process loses "
        "nothing in any mode.",
    )
    fsync_interval_s: float = Field(1.0, gt=0, description="Flush period for fsync: interval.")
    compression: Literal["zlib", "none"] = Field(
        "zlib",
        description="Compress batches in the "
        "spool (zlib level 1). A batch repeats its "
        "series table, so this stores ~10x more hours "
        "of outage per byte for ~0.2 ms CPU per "
        "100-link batch. Batches are sent uncompressed "
        "(see ingest.compression).",
    )
    seq_block: int = Field(
        1024,
        ge=1,
        description="Sequence numbers reserved (and persisted "
        "with fsync) at a time. A crash skips at most this many; a seq is "
        "never reused.",
    )
    keep_rejected: int = Field(
        1000,
        ge=0,
        description="Rejected batches kept in rejected/ for inspection; the oldest are deleted beyond it.",
    )


class ServerSourceSettings(_Section):
    enabled: bool = Field(True, description="Collect this host's health (node_exporter names).")
    interval_s: float = Field(15.0, gt=0, description="Collection interval.")
    priority: int = Field(
        0,
        ge=0,
        le=9,
        description="Spool priority of these batches: when the "
        "spool is full, the lowest priority is dropped first.",
    )
    host: str = Field("", description="Value of the `host` label; empty uses the host name.")
    nic_exclude: list[str] = Field(["lo"], description="NIC names (fnmatch patterns) not reported.")
    fs_types: list[str] = Field(
        ["ext4", "xfs", "btrfs", "zfs", "vfat", "ext3", "f2fs"],
        description="File system types whose space is reported.",
    )
    disk_exclude: list[str] = Field(
        ["loop*", "ram*", "sr*", "dm-*"], description="Block devices (fnmatch patterns) not reported."
    )
    rapl: bool = Field(
        True,
        description="Send RAPL energy counters (host power) from "
        "/sys/class/powercap/intel-rapl:* when readable (energy_uj is root-only "
        "on kernels since 5.10; absent zones send nothing).",
    )
    rapl_max_watts: float = Field(
        1000.0,
        gt=0,
        description="Highest plausible power of one "
        "RAPL zone: a read gap in which this power could have wrapped "
        "the counter (max_energy_range_uj, ~262 kJ on most CPUs) "
        "starts it over instead of guessing how many wraps it hides. "
        "Keep interval_s x this well below the range.",
    )


class LinkSourceSettings(_Section):
    enabled: bool = Field(True, description="Collect link/optical telemetry.")
    interval_s: float = Field(10.0, gt=0, description="Collection interval.")
    priority: int = Field(1, ge=0, le=9, description="Spool priority of these batches.")
    adapter: str = Field(
        "linux",
        description="Where links are read: 'linux' (/sys/class/net), "
        "'snmp' (IF-MIB of SNMP v2c/v3 devices), 'gnmi' (OpenConfig over gNMI "
        "Subscribe), 'simulated' (one site's links of the simulator's model), "
        "'synthetic' (deterministic test links) or 'package.module:Class' "
        "implementing collector.agent.sources.link_adapters.LinkAdapter.",
    )
    include: list[str] = Field(["*"], description="Link names (fnmatch patterns) reported.")
    exclude: list[str] = Field(["lo"], description="Link names (fnmatch patterns) not reported.")
    media: dict[str, Literal["optical", "copper"]] = Field(
        {},
        description="Media per link name pattern; links without a match are 'copper' unless "
        "the adapter knows better.",
    )
    options: dict[str, Any] = Field(
        {},
        description="Adapter-specific options (snmp, gnmi: "
        "{targets: [...]}, see docs/agent.md; synthetic: {links: "
        "100, optical_every: 2}; simulated: {seed: 1, country: JP, "
        "site: 0, links: 8, interval_s: 10}).",
    )


class CellSourceSettings(_Section):
    enabled: bool = Field(
        False,
        description="Collect 5G NR cell KPIs (3GPP TS 28.552 names), "
        "by default from TS 32.435 PM XML files (measCollecFile) dropped "
        "into pm_dir by the gNB/OSS.",
    )
    interval_s: float = Field(30.0, gt=0, description="How often pm_dir is scanned (or the adapter read).")
    priority: int = Field(2, ge=0, le=9, description="Spool priority of these batches.")
    adapter: str = Field(
        "pm_xml",
        description="Where cells are read: 'pm_xml' (PM files in "
        "pm_dir, set by the keys below), 'simulated' (one site's cells of the "
        "simulator's model) or 'package.module:Class' implementing "
        "collector.agent.sources.cell_adapters.CellAdapter.",
    )
    options: dict[str, Any] = Field(
        {},
        description="Adapter-specific options (none for "
        "pm_xml; simulated: {seed: 1, country: JP, site: 0, "
        "cells: 12, interval_s: 30}).",
    )
    pm_dir: Path = Field(
        Path("/var/spool/collector-agent/pm"), description="Directory the PM files arrive in."
    )
    pattern: str = Field(
        "*.xml", description="File name pattern of PM files (also matches .gz when it ends in .gz)."
    )
    settle_s: float = Field(
        2.0,
        ge=0,
        description="Files modified less than this long ago are "
        "left for the next scan (the writer may not be done).",
    )
    after: Literal["move", "delete"] = Field(
        "move",
        description="What happens to a processed "
        "file: moved to pm_dir/done/ or deleted. Malformed "
        "files always go to pm_dir/failed/.",
    )
    max_files_per_scan: int = Field(200, ge=1, description="Bound on files read per scan.")
    max_age_s: float = Field(
        6 * 86400.0,
        gt=0,
        description="A file whose periods all ended "
        "longer ago than this goes to failed/ unsent (the ingest refuses "
        "samples older than its max_past_age_s, 7 days by default).",
    )
    max_future_s: float = Field(
        300.0,
        ge=0,
        description="A file with a period ending further "
        "in the future than this (a gNB clock ahead) goes to failed/ "
        "(the ingest refuses samples beyond its max_future_skew_s).",
    )
    sent_ledger: Path | None = Field(
        None,
        description="File remembering which PM values "
        "(object, period, measurements) are already in the spool, "
        "so a repeated file is counted and moved to done/ without "
        "being sent again, also after a restart; empty: "
        "<pm_dir>/.collector-pm-sent.",
    )


class SourcesSettings(_Section):
    server: ServerSourceSettings = Field(ServerSourceSettings(), description="Host health source.")
    link: LinkSourceSettings = Field(LinkSourceSettings(), description="Link/optical source.")
    cell: CellSourceSettings = Field(CellSourceSettings(), description="5G NR cell KPI source.")


class AgentSettings(_Section):
    agent_id: str = Field(
        "",
        pattern=_ID_OR_EMPTY,
        description="Stable identifier of this agent; empty uses "
        "'<site_id>-<host name>'. Never reuse one agent_id on two machines.",
    )
    site: SiteSettings = Field(SiteSettings(), description="The site this agent reports for.")
    ingest: IngestTargetSettings = Field(
        IngestTargetSettings(), description="Where and how batches are sent."
    )
    spool: SpoolSettings = Field(SpoolSettings(), description="The durable on-disk spool.")
    sources: SourcesSettings = Field(SourcesSettings(), description="What is collected.")
    metrics_listen: ListenAddress = Field(
        "127.0.0.1:9466",
        description="HOST:PORT of the agent's own "
        "/metrics and /healthz (an empty host, ':9466', is loopback); empty disables it "
        "(9466: not the aggregator's 9465, so both run on one host).",
    )
    metrics_web_config: MetricsWebConfig = None
    shutdown_grace_s: float = Field(
        5.0,
        ge=0,
        description="On shutdown, how long to keep "
        "sending so in-flight batches get acked. Unsent batches stay "
        "in the spool either way.",
    )

    @model_validator(mode="after")
    def _client_pair(self) -> AgentSettings:
        i = self.ingest
        if (i.client_cert is None) != (i.client_key is None):
            raise ValueError("ingest.client_cert and ingest.client_key go together (mTLS)")
        if i.backoff_max_s < i.backoff_initial_s:
            raise ValueError("ingest.backoff_max_s must be >= ingest.backoff_initial_s")
        return self
