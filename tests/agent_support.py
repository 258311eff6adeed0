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

    async def Stream(self, request_iterator: AsyncIterator[pb.Batch],  # type: ignore[override]
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Ack]:
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


def agent_settings(spool_dir: Path, target: str, **over: Any) -> AgentSettings:
    """Plaintext loopback settings with fast backoff, for tests."""
    ingest = {"target": target, "plaintext": True, "backoff_initial_s": 0.05,
              "backoff_max_s": 0.5, "connect_timeout_s": 2.0, **over.pop("ingest", {})}
    spool = {"dir": str(spool_dir), **over.pop("spool", {})}
    return AgentSettings.model_validate({"ingest": ingest, "spool": spool,
                                         "site": {"site_id": SITE.site_id, "country": "JP",
                                                  "region": "Kanto", "timezone": "Asia/Tokyo"},
                                         "metrics_listen": "", **over})


def fill(builder: Any, t_ns: int, n: int = 3, value: int = 1) -> Any:
    """Add n link counter samples and one gauge."""
    for i in range(n):
        builder.counter(counter_def("link_in_octets", {"link": f"et-{i}", "media": "optical"},
                                    unit="bytes", start_time_unix_nano=1), t_ns, value + i)
    builder.gauge(gauge_def("link_oper_up", {"link": "et-0", "media": "optical"}, unit="bool"),
                  t_ns, 1.0)
    return builder


async def eventually(pred: Callable[[], bool], within: float = 10.0, step: float = 0.02) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while loop.time() < end:
        if pred():
            return True
        await asyncio.sleep(step)
    return pred()
