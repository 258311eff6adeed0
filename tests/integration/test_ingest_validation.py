"""Every validation and auth rule: the right code and reason, and other streams go on.

One ingest service (TLS, real Tansu broker) serves the whole module. Each case sends
[good seq 1, bad seq 2, good seq 3] on one stream while a second stream of good batches
runs concurrently: the bad batch gets its code and reason, everything else is acked OK.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from collector.broker import EmbeddedBroker
from collector.devcerts import DevCerts
from collector.ingest.server import IngestServer
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.conftest import make_topic
from tests.ingest_support import (
    channel,
    ingest_settings,
    make_batch,
    send_all,
    started,
    token_for,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMITS = {
    "max_series": 50,
    "max_samples": 2000,
    "max_labels": 4,
    "max_future_skew_s": 300,
    "max_past_age_s": 3600,
}
SITE = "jp-tokyo-01"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[IngestServer]:
    topic = await make_topic(broker)
    s = await started(
        ingest_settings(tmp_path_factory.mktemp("ing"), certs, broker.bootstrap, topic, **LIMITS)
    )
    yield s
    await s.stop()


Mutator = Callable[[pb.Batch], pb.Batch | bytes]


def _set(**fields: object) -> Mutator:
    def f(b: pb.Batch) -> pb.Batch:
        for k, v in fields.items():
            setattr(b, k, v)
        return b

    return f


def _site(**fields: object) -> Mutator:
    def f(b: pb.Batch) -> pb.Batch:
        for k, v in fields.items():
            setattr(b.site, k, v)
        return b

    return f


def _series0(**fields: object) -> Mutator:
    def f(b: pb.Batch) -> pb.Batch:
        for k, v in fields.items():
            setattr(b.series[0], k, v)
        return b

    return f


def _label0(name: str | None = None, value: str | None = None) -> Mutator:
    def f(b: pb.Batch) -> pb.Batch:
        if name is not None:
            b.series[0].labels[0].name = name
        if value is not None:
            b.series[0].labels[0].value = value
        return b

    return f


def _many_series(b: pb.Batch) -> pb.Batch:
    return make_batch(SITE, b.seq, series=60, points=1)


def _many_samples(b: pb.Batch) -> pb.Batch:
    return make_batch(SITE, b.seq, series=10, points=201)


def _many_labels(b: pb.Batch) -> pb.Batch:
    for i in range(5):
        b.series[0].labels.add(name=f"extra{i}", value="x")
    return b


def _dup_label(b: pb.Batch) -> pb.Batch:
    b.series[0].labels.add(name=b.series[0].labels[0].name, value="again")
    return b


def _dup_series(b: pb.Batch) -> pb.Batch:
    b.series.append(b.series[0])
    return b


def _unequal(b: pb.Batch) -> pb.Batch:
    b.counters.value.append(1)
    return b


def _index_out_of_range(b: pb.Batch) -> pb.Batch:
    b.counters.series_index[0] = len(b.series) + 7
    return b


def _counter_on_gauge(b: pb.Batch) -> pb.Batch:
    gauge_idx = next(i for i, s in enumerate(b.series) if s.kind == pb.GAUGE)
    b.counters.series_index[0] = gauge_idx
    return b


def _time(delta_s: float) -> Mutator:
    def f(b: pb.Batch) -> pb.Batch:
        b.counters.time_unix_nano[0] = time.time_ns() + int(delta_s * 1e9)
        return b

    return f


def _gauge_nan(b: pb.Batch) -> pb.Batch:
    b.gauges.value[0] = math.nan
    return b


def _narrow_overflow(b: pb.Batch) -> pb.Batch:
    idx = b.counters.series_index[0]
    b.series[idx].counter_bits = 32
    b.counters.value[0] = 2**32
    return b


def _other_site(b: pb.Batch) -> pb.Batch:
    return make_batch("us-dallas-01", b.seq, agent_id=f"agent-{SITE}")


CASES: list[tuple[str, Mutator, str, str]] = [
    ("garbage", lambda b: b"\xff\xff\xff\xff garbage", "INVALID_ARGUMENT", "not a telemetry.v1.Batch"),
    ("agent_id_empty", _set(agent_id=""), "INVALID_ARGUMENT", "agent_id: required"),
    ("agent_id_chars", _set(agent_id="agent one"), "INVALID_ARGUMENT", "agent_id: invalid characters"),
    ("agent_id_long", _set(agent_id="a" * 65), "INVALID_ARGUMENT", "agent_id: longer than 64"),
    ("seq_zero", _set(seq=0), "INVALID_ARGUMENT", "seq: must be >= 1"),
    ("boot_id_empty", _set(boot_id=""), "INVALID_ARGUMENT", "boot_id: required"),
    ("site_missing", lambda b: (b.ClearField("site"), b)[1], "INVALID_ARGUMENT", "site: required"),
    ("country_unknown", _site(country="XX"), "INVALID_ARGUMENT", "not an ISO 3166-1 alpha-2"),
    ("country_lowercase", _site(country="jp"), "INVALID_ARGUMENT", "not an ISO 3166-1 alpha-2"),
    ("timezone", _site(timezone="Mars/Olympus"), "INVALID_ARGUMENT", "not an IANA time zone"),
    ("too_many_series", _many_series, "INVALID_ARGUMENT", "series: 60 entries, limit 50"),
    ("too_many_samples", _many_samples, "INVALID_ARGUMENT", "samples: 2010, limit 2000"),
    (
        "metric_chars",
        _series0(metric="link in octets"),
        "INVALID_ARGUMENT",
        "series[0].metric: invalid characters",
    ),
    ("metric_empty", _series0(metric=""), "INVALID_ARGUMENT", "series[0].metric: required"),
    ("metric_long", _series0(metric="m" * 129), "INVALID_ARGUMENT", "series[0].metric: longer than 128"),
    ("unit", _series0(unit="by tes"), "INVALID_ARGUMENT", "series[0].unit: invalid unit"),
    ("too_many_labels", _many_labels, "INVALID_ARGUMENT", "series[0].labels: 7 labels, limit 4"),
    ("label_name", _label0(name="1link"), "INVALID_ARGUMENT", "series[0].labels[0].name: invalid"),
    ("label_reserved", _label0(name="__name__"), "INVALID_ARGUMENT", "reserved"),
    ("label_duplicate", _dup_label, "INVALID_ARGUMENT", "duplicate label"),
    ("label_value_long", _label0(value="v" * 257), "INVALID_ARGUMENT", "value: longer than 256"),
    ("label_value_control", _label0(value="a\nb"), "INVALID_ARGUMENT", "value: control characters"),
    ("counter_bits", _series0(counter_bits=16), "INVALID_ARGUMENT", "counter_bits: 16, must be 32 or 64"),
    ("kind", _series0(kind=pb.METRIC_KIND_UNSPECIFIED), "INVALID_ARGUMENT", "kind: must be COUNTER"),
    ("scale", _series0(scale=-1.0), "INVALID_ARGUMENT", "scale: must be finite"),
    ("duplicate_series", _dup_series, "INVALID_ARGUMENT", "same metric and labels as series[0]"),
    ("columns_unequal", _unequal, "INVALID_ARGUMENT", "counters: columns of unequal length"),
    ("index_range", _index_out_of_range, "INVALID_ARGUMENT", "counters.series_index[0]: 17 out of range"),
    ("index_kind", _counter_on_gauge, "INVALID_ARGUMENT", "is not a counter"),
    ("too_old", _time(-7200), "INVALID_ARGUMENT", "older than max_past_age"),
    ("future", _time(+3600), "INVALID_ARGUMENT", "ahead of the collector clock"),
    ("gauge_nan", _gauge_nan, "INVALID_ARGUMENT", "gauges.value[0]: not a finite number"),
    ("narrow_counter", _narrow_overflow, "INVALID_ARGUMENT", "exceeds the declared 32-bit width"),
    ("other_site", _other_site, "PERMISSION_DENIED", "is not the token's site 'jp-tokyo-01'"),
]


@pytest.mark.parametrize(("mutate", "code", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_batch_gets_code_and_reason_and_streams_go_on(
    server: IngestServer, certs: DevCerts, mutate: Mutator, code: str, reason: str
) -> None:
    agent = f"agent-{SITE}"
    bad = mutate(make_batch(SITE, 2, agent_id=agent))
    bad_bytes = bad if isinstance(bad, bytes) else bad.SerializeToString()
    seqs = [1, 2, 3]
    stream = [
        make_batch(SITE, 1, agent_id=agent).SerializeToString(),
        bad_bytes,
        make_batch(SITE, 3, agent_id=agent).SerializeToString(),
    ]
    good = [make_batch("us-dallas-01", s).SerializeToString() for s in range(1, 21)]
    async with channel(server.port, certs) as ch:
        res, other = await asyncio.gather(
            send_all(ch, token_for(SITE), stream),
            send_all(ch, token_for("us-dallas-01"), good),
        )
    assert len(res.acks) == 3
    first, nack, last = res.acks
    assert (first.code, first.seq) == (pb.OK, seqs[0])
    assert pb.Code.Name(nack.code) == code
    assert reason in nack.reason
    assert nack.seq_last in (0, nack.seq)
    assert (last.code, last.seq) == (pb.OK, seqs[2])
    assert sorted(other.ok_seqs()) == list(range(1, 21))


async def test_missing_token_is_unauthenticated(server: IngestServer, certs: DevCerts) -> None:
    async with channel(server.port, certs) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await send_all(ch, None, [make_batch().SerializeToString()])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer" in (err.value.details() or "")


async def test_unknown_token_is_unauthenticated_and_good_stream_goes_on(
    server: IngestServer, certs: DevCerts
) -> None:
    async with channel(server.port, certs) as ch:
        bad, good = await asyncio.gather(
            send_all(ch, "not-a-token-0123456789", [make_batch().SerializeToString()]),
            send_all(
                ch,
                token_for("us-seattle-01"),
                [make_batch("us-seattle-01", s).SerializeToString() for s in range(1, 11)],
            ),
            return_exceptions=True,
        )
    assert isinstance(bad, grpc.aio.AioRpcError)
    assert bad.code() == grpc.StatusCode.UNAUTHENTICATED
    assert bad.details() == "unknown token"
    assert not isinstance(good, BaseException)
    assert sorted(good.ok_seqs()) == list(range(1, 11))


async def test_oversized_message_is_resource_exhausted(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    topic = await make_topic(broker)
    s = await started(ingest_settings(tmp_path, certs, broker.bootstrap, topic, max_message_bytes=4096))
    try:
        async with channel(s.port, certs) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await send_all(
                    ch, token_for(SITE), [make_batch(SITE, 1, series=40, points=20).SerializeToString()]
                )
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ok = await send_all(
                ch, token_for(SITE), [make_batch(SITE, 2, series=2, points=1).SerializeToString()]
            )
            assert ok.ok_seqs() == [2]
    finally:
        await s.stop()
