"""Hypothesis against the running service: random bytes and well-formed-but-wrong batches
never crash it; each gets a non-OK ack with a reason, and good batches keep being acked."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.broker import EmbeddedBroker
from collector.ingest.server import IngestServer
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.conftest import make_topic
from tests.ingest_support import channel, ingest_settings, make_batch, send_all, started, token_for

pytestmark = pytest.mark.asyncio(loop_scope="module")
SITE = "us-seattle-01"
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plain_server(broker: EmbeddedBroker,
                       tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[IngestServer]:
    # plaintext on loopback keeps 100+ short streams cheap; TLS is covered elsewhere
    s = await started(ingest_settings(tmp_path_factory.mktemp("fz"), None, broker.bootstrap,
                                      await make_topic(broker), max_series=100, max_samples=5000))
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
    pb.Series, metric=_text, kind=st.sampled_from([0, 1, 2, 7]), unit=st.text(max_size=40),
    labels=st.lists(st.builds(pb.Label, name=_text, value=st.text(max_size=300)), max_size=20),
    counter_bits=st.sampled_from([0, 8, 32, 64, 2**32 - 1]),
    start_time_unix_nano=_u64, scale=st.floats(allow_nan=True, allow_infinity=True),
)
_cols = st.lists(st.integers(0, 2**32 - 1), max_size=30)
_batches = st.builds(
    pb.Batch, agent_id=_text, seq=_u64, boot_id=_text,
    site=st.builds(pb.Site, site_id=st.sampled_from([SITE, "", "us-dallas-01", "x y"]),
                   country=st.sampled_from(["US", "JP", "XX", "", "us"]), region=_text,
                   timezone=st.sampled_from(["America/Los_Angeles", "Nope/Nope", ""])),
    series=st.lists(_series, max_size=8),
    counters=st.builds(pb.CounterColumns, series_index=_cols,
                       time_unix_nano=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=30),
                       value=st.lists(_u64, max_size=30)),
    gauges=st.builds(pb.GaugeColumns, series_index=_cols,
                     time_unix_nano=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=30),
                     value=st.lists(st.floats(), max_size=30)),
)


@FUZZ
@given(_batches)
async def test_wrong_batches_get_a_reason_and_never_crash(plain_server: IngestServer,
                                                          batch: pb.Batch) -> None:
    ack = await _probe(plain_server, batch.SerializeToString())
    assert ack.code in (pb.OK, pb.INVALID_ARGUMENT, pb.PERMISSION_DENIED)
    if ack.code != pb.OK:
        assert ack.reason
