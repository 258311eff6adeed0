"""gRPC per-message compression at the ingest: every compressed message is one batch
answered and counted, whether it decompresses, inflates past the limit, or is corrupt.

gRPC's own decompression would end the whole stream on such a message before the service
sees it (uncounted); the service inflates itself (collector/ingest/compression.py). Real
gRPC with TLS on loopback and a real Tansu broker; the corrupt payloads are sent by an
HTTP/2 frame-level client (tests/grpc_wire.py), since grpcio's client only ever compresses
correctly.
"""

from __future__ import annotations

import asyncio
import gzip
import random
import zlib
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from collector.broker import EmbeddedBroker
from collector.devcerts import DevCerts
from collector.ingest import compression
from collector.ingest.server import INFLATE_IN_THREAD_BYTES, IngestServer
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.conftest import make_topic
from tests.grpc_wire import h2_stream
from tests.ingest_support import (
    ingest_settings,
    make_batch,
    read_topic,
    send_all,
    started,
    token_for,
    unknown_field,
)

A = "jp-tokyo-01"


def _value(s: IngestServer, name: str, **labels: str) -> float:
    return s.registry.get_sample_value(name, labels) or 0.0


def _bad_crc(data: bytes) -> bytes:
    """A gzip member whose CRC-32 trailer does not match its data."""
    return data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:]


async def test_corrupt_compressed_batches_are_answered_and_counted_and_the_stream_goes_on(
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
) -> None:
    topic = await make_topic(broker)
    s = await started(ingest_settings(tmp_path, certs, broker.bootstrap, topic))
    b = {i: make_batch(A, i).SerializeToString() for i in range(1, 7)}
    messages = [
        (True, gzip.compress(b[1])),  # good, compressed
        (True, _bad_crc(gzip.compress(b[2]))),  # corrupt: CRC mismatch
        (True, gzip.compress(b[3])[:-12]),  # corrupt: truncated
        (False, b[4]),  # good, uncompressed on the same stream
        (True, b"\x1f\x8b\x08\x00" + bytes(range(200))),  # corrupt: a gzip header and junk
        (True, gzip.compress(b[6])),  # good
    ]
    try:
        res = await asyncio.to_thread(h2_stream, s.port, certs.ca.read_bytes(), token_for(A), messages)
        assert res.status == grpc.StatusCode.OK.value[0], (res.status, res.message)
        assert res.reset is None
        assert [(a.seq, pb.Code.Name(a.code)) for a in res.acks] == [
            (1, "OK"),
            (0, "INVALID_ARGUMENT"),
            (0, "INVALID_ARGUMENT"),
            (4, "OK"),
            (0, "INVALID_ARGUMENT"),
            (6, "OK"),
        ]
        assert all("not valid gzip data" in a.reason for a in res.acks if a.code != pb.OK)
        assert _value(s, "collector_ingest_batches_rejected_total", reason="decompress") == 3
        assert _value(s, "collector_ingest_streams_ended_total", reason="completed") == 1
        assert _value(s, "collector_ingest_streams_ended_total", reason="cancelled") == 0
        # Kafka holds the good batches exactly, as uncompressed batch bytes
        records = await read_topic(broker.bootstrap, topic, expect=3)
        assert sorted(r.value for r in records) == sorted([b[1], b[4], b[6]])
    finally:
        await s.stop()


async def test_a_corrupt_deflate_batch_is_counted_and_a_batch_that_only_looks_like_zlib_is_stored(
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
) -> None:
    topic = await make_topic(broker)
    s = await started(ingest_settings(tmp_path, certs, broker.bootstrap, topic))
    good = make_batch(A, 1).SerializeToString()
    # A legal batch may start with bytes that form a zlib header: field 15 (unknown here) as
    # a varint of 1 is 78 01, and (0x78 << 8 | 0x01) % 31 == 0.
    zlib_like = unknown_field(15, 0, b"\x01") + make_batch(A, 3).SerializeToString()
    assert zlib_like[:2] == b"\x78\x01"
    messages = [
        (True, zlib.compress(good)),
        (True, b"\x78\x9c" + bytes(range(64))),  # corrupt deflate, not a Batch either
        (False, zlib_like),
    ]
    try:
        res = await asyncio.to_thread(
            h2_stream, s.port, certs.ca.read_bytes(), token_for(A), messages, encoding="deflate"
        )
        assert res.status == grpc.StatusCode.OK.value[0], (res.status, res.message)
        assert [(a.seq, pb.Code.Name(a.code)) for a in res.acks] == [
            (1, "OK"),
            (0, "INVALID_ARGUMENT"),
            (3, "OK"),
        ]
        assert "not valid deflate data" in res.acks[1].reason
        assert _value(s, "collector_ingest_batches_rejected_total", reason="decompress") == 1
        records = await read_topic(broker.bootstrap, topic, expect=2)
        assert sorted(r.value for r in records) == sorted([good, zlib_like])
    finally:
        await s.stop()


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
async def test_a_compressed_batch_is_limited_by_its_decompressed_size_and_answered(
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
    compression: grpc.Compression,
) -> None:
    topic = await make_topic(broker)
    s = await started(ingest_settings(tmp_path, certs, broker.bootstrap, topic, max_message_bytes=8192))
    raw = make_batch(A, 2, series=2, points=1).SerializeToString()
    bomb = raw + unknown_field(1023, 2, bytes(8 << 20))  # 8 MiB of zeros: ~8 KiB compressed
    mid = make_batch(A, 3, series=2, points=1).SerializeToString() + unknown_field(
        1023, 2, bytes(8192)
    )  # just past 8 KiB inflated
    assert len(gzip.compress(bomb)) < 16384  # below the transport limit (twice 8 KiB)
    ok = [make_batch(A, i).SerializeToString() for i in (1, 4)]
    try:
        async with aio.secure_channel(
            f"127.0.0.1:{s.port}",
            grpc.ssl_channel_credentials(certs.ca.read_bytes()),
            compression=compression,
        ) as ch:
            res = await send_all(ch, token_for(A), [ok[0], bomb, mid, ok[1]])
        assert [(a.seq, pb.Code.Name(a.code)) for a in res.acks] == [
            (1, "OK"),
            (2, "INVALID_ARGUMENT"),
            (3, "INVALID_ARGUMENT"),
            (4, "OK"),
        ]
        for a in res.acks[1:3]:
            assert "batch inflates past ingest.max_message_bytes (8192)" in a.reason
        assert _value(s, "collector_ingest_batches_rejected_total", reason="oversize") == 2
        assert _value(s, "collector_ingest_streams_ended_total", reason="completed") == 1
        records = await read_topic(broker.bootstrap, topic, expect=2)
        assert sorted(r.value for r in records) == sorted(ok)
    finally:
        await s.stop()


async def test_a_large_compressed_batch_is_inflated_off_the_loop_and_stored_exactly(
    broker: EmbeddedBroker,
    certs: DevCerts,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    off_loop: list[int] = []
    to_thread = asyncio.to_thread

    async def counting(fn: Any, *args: Any) -> Any:
        if fn is compression.inflate:
            off_loop.append(len(args[0]))
        return await to_thread(fn, *args)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    topic = await make_topic(broker)
    s = await started(ingest_settings(tmp_path, certs, broker.bootstrap, topic))
    # half incompressible padding: gzip shrinks the message (so gRPC's client does compress
    # it) and it stays above the worker-thread threshold
    big = make_batch(A, 1).SerializeToString() + unknown_field(
        1023, 2, random.randbytes(150_000) + bytes(300_000)
    )
    assert INFLATE_IN_THREAD_BYTES < len(gzip.compress(big)) < len(big) // 2
    small = make_batch(A, 2).SerializeToString()
    try:
        async with aio.secure_channel(
            f"127.0.0.1:{s.port}",
            grpc.ssl_channel_credentials(certs.ca.read_bytes()),
            compression=grpc.Compression.Gzip,
        ) as ch:
            res = await send_all(ch, token_for(A), [big, small])
        assert res.ok_seqs() == [1, 2]
        assert len(off_loop) == 1  # the big one only
        assert off_loop[0] > INFLATE_IN_THREAD_BYTES
        records = await read_topic(broker.bootstrap, topic, expect=2)
        assert sorted(r.value for r in records) == sorted([big, small])
    finally:
        await s.stop()
