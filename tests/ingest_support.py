"""Helpers for ingest tests: batch factories, a TLS client, a server factory, Kafka read-back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from aiokafka import TopicPartition
from grpc import aio

from collector.agent.batch import BatchBuilder, SiteInfo, counter_def, gauge_def
from collector.config import Settings, load_settings
from collector.devcerts import DevCerts
from collector.ingest.server import IngestServer
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.kafka_support import read_topic as read_topic  # re-exported for older imports

METHOD = "/telemetry.v1.IngestService/Stream"
SITES = {
    "jp-tokyo-01": SiteInfo("jp-tokyo-01", "JP", "Kanto", "Asia/Tokyo"),
    "jp-osaka-01": SiteInfo("jp-osaka-01", "JP", "Kansai", "Asia/Tokyo"),
    "us-dallas-01": SiteInfo("us-dallas-01", "US", "us-south", "America/Chicago"),
    "us-seattle-01": SiteInfo("us-seattle-01", "US", "us-west", "America/Los_Angeles"),
}
TOKENS = {f"token-{site}-0123456789": site for site in SITES}


def token_for(site: str) -> str:
    return f"token-{site}-0123456789"


def make_batch(
    site: str = "jp-tokyo-01",
    seq: int = 1,
    *,
    agent_id: str | None = None,
    series: int = 10,
    points: int = 10,
    t0_ns: int | None = None,
) -> pb.Batch:
    """A valid batch: `series` link counters/gauges with `points` samples each."""
    info = SITES[site]
    b = BatchBuilder(agent_id or f"agent-{site}", info, "boot-1")
    t0 = t0_ns if t0_ns is not None else time.time_ns() - 60 * 10**9
    for p in range(points):
        ts = t0 + p * 10**9
        for s in range(series):
            labels = {"link": f"et-0/0/{s}", "media": "optical"}
            if s % 2 == 0:
                b.counter(
                    counter_def("link_in_octets", labels, unit="bytes"), ts, seq * 10**12 + p * 10**9 + s
                )
            else:
                b.gauge(gauge_def("link_optical_rx_power_dbm", labels, unit="dBm"), ts, -3.5)
    return b.build(seq, time.time_ns())


def write_tokens(path: Path, tokens: dict[str, str] | None = None) -> Path:
    path.write_text(yaml.safe_dump(tokens or TOKENS))
    return path


def ingest_settings(
    tmp: Path,
    certs: DevCerts | None,
    bootstrap: str,
    topic: str,
    kafka: dict[str, Any] | None = None,
    **ingest: Any,
) -> Settings:
    """Ingest settings for a loopback test: TLS with `certs` (plaintext without), the test
    tokens, `ingest` keys over these and `kafka` keys over bootstrap and topic."""
    ing: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "tokens_file": str(write_tokens(tmp / "tokens.yaml")),
    }
    if certs is None:
        ing["plaintext"] = True
    else:
        ing.update(tls_cert=str(certs.server_cert), tls_key=str(certs.server_key))
    ing.update(ingest)
    return load_settings(kafka={"bootstrap_servers": bootstrap, "topic": topic, **(kafka or {})}, ingest=ing)


def channel(port: int, certs: DevCerts | None, *, client_cert: bool = False) -> aio.Channel:
    target = f"127.0.0.1:{port}"
    if certs is None:
        return aio.insecure_channel(target)
    creds = grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),
        private_key=certs.client_key.read_bytes() if client_cert else None,
        certificate_chain=certs.client_cert.read_bytes() if client_cert else None,
    )
    return aio.secure_channel(target, creds)


def stream_call(ch: aio.Channel, token: str | None) -> aio.StreamStreamCall:
    md = (("authorization", f"Bearer {token}"),) if token else None
    method = ch.stream_stream(METHOD, request_serializer=lambda b: b, response_deserializer=pb.Ack.FromString)
    return method(metadata=md)


def covered(ack: pb.Ack) -> range:
    return range(ack.seq, max(ack.seq, ack.seq_last) + 1)


@dataclass
class StreamResult:
    acks: list[pb.Ack] = field(default_factory=list)

    def ok_seqs(self) -> list[int]:
        return [s for a in self.acks if a.code == pb.OK for s in covered(a)]

    def by_seq(self) -> dict[int, pb.Ack]:
        return {s: a for a in self.acks for s in covered(a)}


async def send_all(
    ch: aio.Channel, token: str | None, payloads: Iterable[bytes], timeout_s: float = 60.0
) -> StreamResult:
    """Write every payload on one stream, half-close, collect every ack."""
    call = stream_call(ch, token)
    result = StreamResult()

    async def reader() -> None:
        async for ack in call:
            result.acks.append(ack)

    rtask = asyncio.create_task(reader())
    try:
        async with asyncio.timeout(timeout_s):
            # The ingest sends its initial metadata once it admits the stream: a refused one
            # is over by then, and its status is read rather than raced by a write (which
            # fails in the client as INTERNAL "Failed execute_batch", the status lost).
            await call.initial_metadata()
            if not call.done():
                for p in payloads:
                    await call.write(p)
                await call.done_writing()
            await rtask
    finally:
        if not rtask.done():
            call.cancel()
        # the reader holds the RPC's real status: surface it rather than a write error
        await asyncio.wait((rtask,), timeout=5)
        if rtask.done() and not rtask.cancelled() and rtask.exception() is not None:
            raise rtask.exception()  # type: ignore[misc]
    return result


async def started(settings: Settings) -> IngestServer:
    s = IngestServer(settings)
    await s.start()
    return s


async def aiter_list(xs: Iterable[Any]) -> AsyncIterator[Any]:
    for x in xs:
        yield x


RETRIABLE = {pb.UNAVAILABLE, pb.DEADLINE_EXCEEDED, pb.RESOURCE_EXHAUSTED}


@dataclass
class MiniAgent:
    """A minimal agent for fault tests: a window of in-flight batches, retry on nacks and
    on broken streams, record when each seq was acked. (The real agent is collector.agent.)"""

    port: int
    certs: DevCerts | None
    site: str
    agent_id: str
    total: int
    window: int = 32
    rate_per_s: float = 200.0
    acked_at: dict[int, float] = field(default_factory=dict)
    nacks: dict[int, int] = field(default_factory=dict)
    payload: dict[int, bytes] = field(default_factory=dict)
    reconnects: int = 0

    def batch(self, seq: int) -> bytes:
        if seq not in self.payload:
            self.payload[seq] = make_batch(
                self.site, seq, agent_id=self.agent_id, series=6, points=4
            ).SerializeToString()
        return self.payload[seq]

    async def _read_acks(
        self, call: aio.StreamStreamCall, inflight: dict[int, None], todo: list[int]
    ) -> None:
        while (ack := await call.read()) is not aio.EOF:
            for s in covered(ack):
                inflight.pop(s, None)
                if ack.code == pb.OK:
                    self.acked_at.setdefault(s, time.monotonic())
                else:
                    self.nacks[s] = ack.code
                    if ack.code in RETRIABLE:
                        todo.append(s)

    async def run(self, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        next_seq = 1
        todo: list[int] = []  # seqs to (re)send, in order
        while len(self.acked_at) < self.total and time.monotonic() < end:
            inflight: dict[int, None] = {}
            try:
                async with channel(self.port, self.certs) as ch:
                    call = stream_call(ch, token_for(self.site))

                    rtask = asyncio.create_task(self._read_acks(call, inflight, todo))
                    while len(self.acked_at) < self.total and time.monotonic() < end:
                        if rtask.done():
                            rtask.result()
                            break
                        if len(inflight) >= self.window:
                            await asyncio.sleep(0.01)
                            continue
                        if todo:
                            todo.sort()
                            seq = todo.pop(0)
                        elif next_seq <= self.total:
                            seq, next_seq = next_seq, next_seq + 1
                        else:
                            await asyncio.sleep(0.02)
                            continue
                        inflight[seq] = None
                        async with asyncio.timeout(max(0.1, end - time.monotonic())):
                            await call.write(self.batch(seq))
                        await asyncio.sleep(1 / self.rate_per_s)
                    call.cancel()
                    rtask.cancel()
            except (grpc.aio.AioRpcError, TimeoutError, asyncio.CancelledError):
                pass
            # whatever was in flight on a broken stream is resent
            todo.extend(s for s in inflight if s not in self.acked_at)
            if len(self.acked_at) < self.total:
                self.reconnects += 1
                await asyncio.sleep(0.2)


# ---- unknown fields (forward compatibility) ---------------------------------------------

LEVELS = ("top", "site", "series", "label", "counters", "gauges", "deltas", "period_gauges")


def unknown_field(number: int, wire_type: int, payload: bytes = b"x") -> bytes:
    """Encoded bytes of one field `number` that telemetry.v1 does not define."""
    from collector.wire import encode_varint as v

    key = v(number << 3 | wire_type)
    if wire_type == 0:
        return key + v(int.from_bytes(payload[:8] or b"\x01", "little"))
    if wire_type == 1:
        return key + (payload + bytes(8))[:8]
    if wire_type == 5:
        return key + (payload + bytes(4))[:4]
    if wire_type == 3:  # a group holding one length-delimited field
        return key + v(1 << 3 | 2) + v(len(payload)) + payload + v(number << 3 | 4)
    return key + v(len(payload)) + payload


def with_unknown(batch: pb.Batch, level: str, extra: bytes) -> bytes:
    """`batch` serialised with `extra` (raw field bytes) appended to the message at `level`."""
    b = pb.Batch()
    b.CopyFrom(batch)
    target = {
        "top": lambda: b,
        "site": lambda: b.site,
        "series": lambda: b.series[0],
        "label": lambda: b.series[0].labels[0],
        "counters": lambda: b.counters,
        "gauges": lambda: b.gauges,
        "deltas": lambda: b.deltas,
        "period_gauges": lambda: b.period_gauges,
    }[level]()
    target.MergeFromString(extra)  # the runtime keeps it as an unknown field
    return b.SerializeToString()


# ---- what Kafka stores: raw record batches as the broker returns them ----------------------

CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


@dataclass
class StoredBatches:
    """Record batches of a topic exactly as a Fetch returns them (compressed, on-disk form)."""

    bytes: int = 0
    batches: int = 0
    records: int = 0
    codecs: dict[str, int] = field(default_factory=dict)


async def stored_batches(bootstrap: str, topic: str, timeout_s: float = 30.0) -> StoredBatches:
    """Fetch every record batch of `topic` with a raw FetchRequest and measure it.

    The consumer API hands out decompressed records; this reads the batches themselves, so
    the size is what the broker keeps and serves, and the codec is the one it stored.
    """
    import struct

    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.fetch import FetchRequest

    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    out = StoredBatches()
    try:
        await client.force_metadata_update()
        parts = sorted(client.cluster.partitions_for_topic(topic) or ())
        for p in parts:
            leader = client.cluster.leader_for_partition(TopicPartition(topic, p))
            offset = 0
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                req = FetchRequest(100, 1, 64 << 20, 0, [(topic, [(p, offset, 64 << 20)])])
                resp = await client.send(leader, req)
                data = bytes(resp.topics[0][1][0][-1] or b"")
                if not data:
                    break
                pos = 0
                while pos + 61 <= len(data):
                    base, length = struct.unpack_from(">qi", data, pos)
                    if pos + 12 + length > len(data):
                        break  # a partial batch at the end of the response
                    attributes = struct.unpack_from(">h", data, pos + 21)[0]
                    last_delta = struct.unpack_from(">i", data, pos + 23)[0]
                    n = struct.unpack_from(">i", data, pos + 57)[0]
                    codec = CODECS.get(attributes & 7, str(attributes & 7))
                    out.codecs[codec] = out.codecs.get(codec, 0) + 1
                    out.bytes += 12 + length
                    out.batches += 1
                    out.records += n
                    offset = base + last_delta + 1
                    pos += 12 + length
                if pos == 0:
                    break
    finally:
        await client.close()
    return out


def link_site_batch(site: str, seq: int, t_ns: int, *, links: int = 50, agent_id: str | None = None) -> bytes:
    """The issue's reference site: `links` links with two octet counters each (rx and tx
    bytes), one sample per series, as the link source sends every collection interval.
    Counters move at per-link rates of 1 MB/s .. 10 GB/s from a 1e14 base."""
    import random

    info = SITES.get(site) or SiteInfo(site, "JP", "Kanto", "Asia/Tokyo")
    b = BatchBuilder(agent_id or f"agent-{site}", info, "boot-3f2a9c")
    rnd = random.Random(site)
    start = 1_764_000_000 * 10**9
    for link in range(links):
        labels = {"link": f"et-0/0/{link}", "media": "optical" if link % 2 else "copper"}
        for metric in ("link_in_octets", "link_out_octets"):
            rate = rnd.randint(10**6, 10**10)
            b.counter(
                counter_def(metric, labels, unit="bytes", start_time_unix_nano=start),
                t_ns,
                10**14 + rate * 10 * seq + rnd.randint(0, 10**6),
            )
    return b.build_bytes(seq, t_ns)
