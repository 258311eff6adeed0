"""Hypothesis against the running service: random bytes, corrupt compressed data,
well-formed-but-wrong batches and structured mutations of valid batches (unknown fields at
every level, known field numbers with other wire types, truncation, flipped bytes, repeated
fields and seqs) never crash it; every batch read gets exactly one answer, a non-OK one with
a reason, and a good stream on the same server keeps being acked. COLLECTOR_FUZZ_CASES sets
the structured case count."""

from __future__ import annotations

import asyncio
import gzip
import os
import zlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector import wire
from collector.broker import EmbeddedBroker
from collector.errors import ProtocolError
from collector.ingest.server import IngestServer
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.conftest import make_topic
from tests.ingest_support import (
    LEVELS,
    channel,
    ingest_settings,
    make_batch,
    send_all,
    started,
    token_for,
    unknown_field,
    with_unknown,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")
SITE = "us-seattle-01"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plain_server(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[IngestServer]:
    # plaintext on loopback keeps 100+ short streams cheap; TLS is covered elsewhere
    s = await started(
        ingest_settings(
            tmp_path_factory.mktemp("fz"),
            None,
            broker.bootstrap,
            await make_topic(broker),
            max_series=100,
            max_samples=5000,
        )
    )
    yield s
    await s.stop()


_seq = iter(range(1, 10**9))


async def _probe(server: IngestServer, payload: bytes) -> pb.Ack:
    good = make_batch(SITE, next(_seq)).SerializeToString()
    async with channel(server.port, None) as ch:
        res = await send_all(ch, token_for(SITE), [payload, good], timeout_s=20)
    assert len(res.acks) == 2, res.acks
    assert res.acks[1].code == pb.OK  # the stream goes on after whatever came first
    return res.acks[0]


@FUZZ
@given(st.binary(max_size=2048))
async def test_random_bytes_never_crash_the_server(plain_server: IngestServer, data: bytes) -> None:
    ack = await _probe(plain_server, data)
    if ack.code != pb.OK:
        assert ack.reason


_text = st.text(max_size=80)
_u64 = st.integers(0, 2**64 - 1)
_series = st.builds(
    pb.Series,
    metric=_text,
    kind=st.sampled_from([0, 1, 2, 7]),
    unit=st.text(max_size=40),
    labels=st.lists(st.builds(pb.Label, name=_text, value=st.text(max_size=300)), max_size=20),
    counter_bits=st.sampled_from([0, 8, 32, 64, 2**32 - 1]),
    start_time_unix_nano=_u64,
    scale=st.floats(allow_nan=True, allow_infinity=True),
)
_cols = st.lists(st.integers(0, 2**32 - 1), max_size=30)
_batches = st.builds(
    pb.Batch,
    agent_id=_text,
    seq=_u64,
    boot_id=_text,
    site=st.builds(
        pb.Site,
        site_id=st.sampled_from([SITE, "", "us-dallas-01", "x y"]),
        country=st.sampled_from(["US", "JP", "XX", "", "us"]),
        region=_text,
        timezone=st.sampled_from(["America/Los_Angeles", "Nope/Nope", ""]),
    ),
    series=st.lists(_series, max_size=8),
    counters=st.builds(
        pb.CounterColumns,
        series_index=_cols,
        time_unix_nano=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=30),
        value=st.lists(_u64, max_size=30),
    ),
    gauges=st.builds(
        pb.GaugeColumns,
        series_index=_cols,
        time_unix_nano=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=30),
        value=st.lists(st.floats(), max_size=30),
    ),
)


@FUZZ
@given(_batches)
async def test_wrong_batches_get_a_reason_and_never_crash(
    plain_server: IngestServer, batch: pb.Batch
) -> None:
    ack = await _probe(plain_server, batch.SerializeToString())
    assert ack.code in (pb.OK, pb.INVALID_ARGUMENT, pb.PERMISSION_DENIED)
    if ack.code != pb.OK:
        assert ack.reason


@st.composite
def _compressed_lookalikes(draw: st.DrawFn) -> bytes:
    """What the service inflates itself: gzip/zlib headers before junk, and gzip/zlib of a
    valid batch with a byte flipped or cut off."""
    kind = draw(st.sampled_from(["gzip_junk", "zlib_junk", "gzip_damaged", "zlib_damaged"]))
    if kind.endswith("junk"):
        head = b"\x1f\x8b\x08" if kind == "gzip_junk" else b"\x78\x9c"
        return head + draw(st.binary(max_size=512))
    raw = make_batch(SITE, 7, series=draw(st.integers(1, 4)), points=2).SerializeToString()
    packed = bytearray(gzip.compress(raw) if kind == "gzip_damaged" else zlib.compress(raw))
    # positions drawn independently of the length (the batch's timestamps vary between runs)
    i = 2 + draw(st.integers(0, 2**20)) % (len(packed) - 2)
    if draw(st.booleans()):
        packed[i] ^= draw(st.integers(1, 255))
    else:
        del packed[i:]
    return bytes(packed)


@FUZZ
@given(_compressed_lookalikes())
async def test_corrupt_compressed_data_gets_one_answer_and_never_crashes(
    plain_server: IngestServer,
    data: bytes,
) -> None:
    ack = await _probe(plain_server, data)
    assert ack.code in (pb.OK, pb.INVALID_ARGUMENT, pb.PERMISSION_DENIED)
    if ack.code != pb.OK:
        assert ack.reason


# ---- structured mutations of valid batches: one answer per batch, whatever it holds --------

_levels = st.sampled_from(LEVELS)
_unknown = st.builds(
    unknown_field, st.integers(32, 2**29 - 1), st.sampled_from([0, 1, 2, 3, 5]), st.binary(max_size=64)
)


@st.composite
def _mutated(draw: st.DrawFn, seq: int) -> bytes:
    """A valid batch after 1..4 structured mutations (some keep it valid, some do not)."""
    b = make_batch(
        SITE, seq, agent_id="agent-mutant", series=draw(st.integers(1, 6)), points=draw(st.integers(1, 3))
    )
    raw = b.SerializeToString()
    for _ in range(draw(st.integers(1, 4))):
        op = draw(
            st.sampled_from(
                [
                    "unknown",
                    "unknown",
                    "known_number_other_type",
                    "truncate",
                    "flip",
                    "duplicate_field",
                    "seq",
                    "empty_sub",
                    "append_junk",
                ]
            )
        )
        if op == "unknown":
            level = draw(_levels)
            if _parses(raw) and _has(wire.parse_batch(raw), level):
                raw = with_unknown(wire.parse_batch(raw), level, draw(_unknown))
            else:
                raw += draw(_unknown)
        elif op == "known_number_other_type" and _parses(raw):
            level = draw(st.sampled_from(["counters", "gauges", "top", "site"]))
            number = draw(st.integers(1, 3 if level in ("counters", "gauges") else 10))
            raw = with_unknown(
                wire.parse_batch(raw), level, unknown_field(number, draw(st.sampled_from([0, 5])), b"\x07")
            )
        elif op == "truncate" and raw:
            raw = raw[: draw(st.integers(0, len(raw) - 1))]
        elif op == "flip" and raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw = raw[:i] + bytes([raw[i] ^ draw(st.integers(1, 255))]) + raw[i + 1 :]
        elif op == "duplicate_field" and _parses(raw):
            p = wire.parse_batch(raw)
            if p.series:
                raw += pb.Batch(
                    series=[p.series[draw(st.integers(0, len(p.series) - 1))]]
                ).SerializeToString()
        elif op == "seq":
            raw += pb.Batch(seq=draw(st.sampled_from([0, 1, seq - 1, seq, 2**64 - 1]))).SerializeToString()
        elif op == "empty_sub":
            raw += draw(st.sampled_from([b"\x1a\x00", b"\x3a\x00", b"\x42\x00", b"\x32\x00"]))
        elif op == "append_junk":
            raw += draw(st.binary(min_size=1, max_size=16))
    return raw


def _has(b: pb.Batch, level: str) -> bool:
    return (level not in ("series", "label") or bool(b.series)) and (
        level != "label" or bool(b.series[0].labels)
    )


def _parses(raw: bytes) -> bool:
    try:
        wire.parse_batch(raw)
    except ProtocolError:
        return False
    return True


def _answered(acks: list[pb.Ack]) -> int:
    return sum(a.seq_last - a.seq + 1 if a.code == pb.OK and a.seq_last > a.seq else 1 for a in acks)


MUTANT_CASES = int(os.environ.get("COLLECTOR_FUZZ_CASES", "300"))


@settings(
    max_examples=MUTANT_CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data())
async def test_structured_mutations_get_one_answer_each_and_a_good_stream_goes_on(
    plain_server: IngestServer,
    data: st.DataObject,
) -> None:
    base = 1000  # drawn data must not depend on state outside the example (replays)
    batches = [data.draw(_mutated(base + i)) for i in range(data.draw(st.integers(1, 4)))]
    good_site = "us-dallas-01"
    good = [make_batch(good_site, base + i).SerializeToString() for i in range(5)]
    async with channel(plain_server.port, None) as ch:
        mutant, ok = await asyncio.gather(
            send_all(ch, token_for(SITE), batches, timeout_s=30),
            send_all(ch, token_for(good_site), good, timeout_s=30),
        )
    assert _answered(mutant.acks) == len(batches), mutant.acks  # one answer per batch read
    for a in mutant.acks:
        assert a.code in (pb.OK, pb.INVALID_ARGUMENT, pb.PERMISSION_DENIED), a
        if a.code != pb.OK:
            assert a.reason
            assert a.seq_last in (0, a.seq)
    assert sorted(ok.ok_seqs()) == [base + i for i in range(5)]  # the good stream is untouched
    _CASES_RUN.append(len(batches))


_CASES_RUN: list[int] = []


async def test_server_alive_after_the_fuzzing(plain_server: IngestServer) -> None:
    # runs after the fuzz tests of this module (file order): the service still answers
    assert plain_server.registry.get_sample_value(
        "collector_ingest_batches_rejected_total", {"reason": "internal"}
    ) in (None, 0.0)
    seq = next(_seq)
    async with channel(plain_server.port, None) as ch:
        res = await send_all(ch, token_for(SITE), [make_batch(SITE, seq).SerializeToString()])
    assert res.ok_seqs() == [seq]
    if _CASES_RUN:
        print(f"structured fuzz: {len(_CASES_RUN)} cases, {sum(_CASES_RUN)} mutated batches")
