"""Test helpers for the agent: a scriptable in-process gRPC IngestService and small utilities.

`ScriptedIngest` is a real grpc.aio server speaking telemetry.v1 on a loopback port. It is
for unit tests of the sender's ack handling (which ack comes back is decided by a policy
function); the integration tests use the real ingest service and broker instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from collector.agent.batch import SiteInfo, counter_def, gauge_def
from collector.agent.config import AgentSettings
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from collector.proto.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

SITE = SiteInfo("jp-tokyo-01", "JP", "Kanto", "Asia/Tokyo")

Policy = Callable[[pb.Batch, int], pb.Ack | None]


def ok(batch: pb.Batch, attempt: int) -> pb.Ack:
    return pb.Ack(seq=batch.seq, code=pb.OK)


@dataclass
class ScriptedIngest(pb_grpc.IngestServiceServicer):
    """Acks every batch per `policy(batch, attempt)`; None means: no ack at all."""

    policy: Policy = ok
    received: list[pb.Batch] = field(default_factory=list)
    attempts: dict[int, int] = field(default_factory=dict)
    metadata: list[dict[str, str]] = field(default_factory=list)
    server: Any = None
    port: int = 0

    async def Stream(
        self,
        request_iterator: AsyncIterator[pb.Batch],  # type: ignore[override]
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.Ack]:
        self.metadata.append({k: v for k, v in context.invocation_metadata() or ()})
        async for batch in request_iterator:
            self.received.append(batch)
            n = self.attempts[batch.seq] = self.attempts.get(batch.seq, 0) + 1
            ack = self.policy(batch, n)
            if ack is not None:
                yield ack

    async def start(self) -> None:
        self.server = grpc.aio.server()
        pb_grpc.add_IngestServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None

    def seqs(self) -> list[int]:
        return [b.seq for b in self.received]


def site_section(site: SiteInfo = SITE) -> dict[str, str]:
    """The `agent.site` settings of `site`."""
    return {
        "site_id": site.site_id,
        "country": site.country,
        "region": site.region,
        "timezone": site.timezone,
    }


def agent_settings(spool_dir: Path, target: str, **over: Any) -> AgentSettings:
    """Plaintext loopback settings with fast backoff, for tests."""
    ingest = {
        "target": target,
        "plaintext": True,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.5,
        "connect_timeout_s": 2.0,
        **over.pop("ingest", {}),
    }
    spool = {"dir": str(spool_dir), **over.pop("spool", {})}
    return AgentSettings.model_validate(
        {
            "ingest": ingest,
            "spool": spool,
            "site": {"site_id": SITE.site_id, "country": "JP", "region": "Kanto", "timezone": "Asia/Tokyo"},
            "metrics_listen": "",
            **over,
        }
    )


def fill(builder: Any, t_ns: int, n: int = 3, value: int = 1) -> Any:
    """Add n link counter samples and one gauge."""
    for i in range(n):
        builder.counter(
            counter_def(
                "link_in_octets",
                {"link": f"et-{i}", "media": "optical"},
                unit="bytes",
                start_time_unix_nano=1,
            ),
            t_ns,
            value + i,
        )
    builder.gauge(gauge_def("link_oper_up", {"link": "et-0", "media": "optical"}, unit="bool"), t_ns, 1.0)
    return builder


# --- integration: real processes (tests/procs.py starts them) ----------------------


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def ingest_config(
    tmp: Path, certs: Any, bootstrap: str, topic: str, port: int, tokens: dict[str, str], **ingest: Any
) -> Path:
    tokens_file = write_yaml(tmp / "tokens.yaml", tokens)
    return write_yaml(
        tmp / "ingest.yaml",
        {
            "kafka": {"bootstrap_servers": bootstrap, "topic": topic},
            "ingest": {
                "listen": f"127.0.0.1:{port}",
                "metrics_listen": "127.0.0.1:0",
                "tls_cert": str(certs.server_cert),
                "tls_key": str(certs.server_key),
                "tokens_file": str(tokens_file),
                "grace_period_s": 1.0,
                **ingest,
            },
        },
    )


def agent_tls(certs: Any, target: str, token: str, **more: Any) -> dict[str, Any]:
    return {
        "target": target,
        "ca_file": str(certs.ca),
        "token": token,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.5,
        "connect_timeout_s": 2.0,
        "ack_timeout_s": 3.0,
        **more,
    }


@dataclass(frozen=True)
class TopicBatch:
    agent_id: str
    seq: int
    boot_id: str
    value: bytes
    key: bytes


async def topic_batches(bootstrap: str, topic: str, expect: int, within: float = 30.0) -> list[TopicBatch]:
    from tests.kafka_support import read_topic

    out = []
    for r in await read_topic(bootstrap, topic, expect, timeout_s=within):
        b = pb.Batch.FromString(r.value)
        out.append(TopicBatch(b.agent_id, b.seq, b.boot_id, r.value, r.key))
    return out


def spooled_seqs(spool_dir: Path) -> set[int]:
    """Seqs of complete records in the spool's segments, minus those journalled as done."""
    import struct
    import zlib

    from collector.agent.spool.records import scan

    done: list[tuple[int, int]] = []
    j = spool_dir / "acks.log"
    if j.exists():
        data = j.read_bytes()
        for pos in range(0, len(data) - 19, 20):
            lo, hi, crc = struct.unpack_from("<QQI", data, pos)
            if zlib.crc32(data[pos : pos + 16]) == crc:
                done.append((lo, hi))
    seqs = set()
    for seg in spool_dir.glob("*.seg"):
        for r in scan(seg.read_bytes()).records:
            if not any(lo <= r.seq <= hi for lo, hi in done):
                seqs.add(r.seq)
    return seqs


async def scrape(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    body = await reader.read()
    writer.close()
    return body.decode().split("\r\n\r\n", 1)[1]


def metric_value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def settled_topic(
    bootstrap: str, topic: str, *, at_least: int = 0, idle_s: float = 1.5, within: float = 30.0
) -> list[TopicBatch]:
    """Every batch in `topic`: reads until at least `at_least` and nothing new for idle_s."""
    import time

    from tests.kafka_support import topic_reader

    async with topic_reader(bootstrap, topic) as (c, tps):
        out: list[TopicBatch] = []
        end = time.monotonic() + within
        last_new = time.monotonic()
        while time.monotonic() < end:
            got = await c.getmany(*tps, timeout_ms=300, max_records=5000)
            n = sum(len(v) for v in got.values())
            for recs in got.values():
                for r in recs:
                    b = pb.Batch.FromString(r.value)
                    out.append(TopicBatch(b.agent_id, b.seq, b.boot_id, r.value, r.key))
            now = time.monotonic()
            if n:
                last_new = now
            elif len(out) >= at_least and now - last_new >= idle_s:
                break
        return out
