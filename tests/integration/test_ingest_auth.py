"""Authentication, TLS/mTLS, token hot reload, health, reflection and shutdown."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from collector.broker import EmbeddedBroker
from collector.devcerts import DevCerts
from collector.errors import ConfigError
from collector.ingest.server import IngestServer
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.conftest import make_topic
from tests.ingest_support import (
    TOKENS,
    channel,
    ingest_settings,
    make_batch,
    send_all,
    started,
    stream_call,
    token_for,
    write_tokens,
)


async def test_a_stream_learns_admission_before_its_first_write(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    """The ingest sends its initial metadata once it takes a stream: a client that waits for it
    before writing reads each refusal's own status and trailers, never a write error. The
    metadata states the stream's idle timeout."""
    s = await started(
        ingest_settings(
            tmp_path,
            certs,
            broker.bootstrap,
            await make_topic(broker),
            max_streams_per_site=1,
            stream_idle_timeout_s=42.5,
        )
    )
    try:
        async with channel(s.port, certs) as ch:
            taken = stream_call(ch, token_for("jp-tokyo-01"))
            md = await asyncio.wait_for(taken.initial_metadata(), 30)  # nothing written yet
            assert not taken.done()
            assert dict(md or ()).get("stream-idle-timeout-ms") == "42500"
            for token, code in (
                (None, grpc.StatusCode.UNAUTHENTICATED),
                ("not-a-token-0123456789", grpc.StatusCode.UNAUTHENTICATED),
                (token_for("jp-tokyo-01"), grpc.StatusCode.RESOURCE_EXHAUSTED),  # its one slot
            ):
                call = stream_call(ch, token)
                await asyncio.wait_for(call.initial_metadata(), 30)
                assert call.done()
                assert await call.code() == code
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    assert dict(await call.trailing_metadata() or ()).get("retry-after-ms")
            await taken.done_writing()
            assert await taken.code() == grpc.StatusCode.OK
    finally:
        await s.stop()


async def test_token_file_is_hot_reloaded(broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path) -> None:
    s = await started(ingest_settings(tmp_path, certs, broker.bootstrap, await make_topic(broker)))
    assert s.tokens is not None
    s.tokens.check_interval_s = 0.0
    new_token = "rotated-token-abcdefghijkl"
    try:
        async with channel(s.port, certs) as ch:
            with pytest.raises(grpc.aio.AioRpcError):
                await send_all(ch, new_token, [make_batch().SerializeToString()])
            tokens_file = Path(s.cfg.tokens_file or "")
            write_tokens(tokens_file, {new_token: "jp-tokyo-01"})
            os.utime(tokens_file, ns=(time.time_ns(), time.time_ns() + 10**9))
            res = await send_all(ch, new_token, [make_batch().SerializeToString()])
            assert res.ok_seqs() == [1]
            with pytest.raises(grpc.aio.AioRpcError) as err:  # the old token is gone
                await send_all(ch, token_for("jp-tokyo-01"), [make_batch().SerializeToString()])
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # a broken file keeps the previous tokens
            tokens_file.write_text("{not: [valid")
            os.utime(tokens_file, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
            res = await send_all(ch, new_token, [make_batch(seq=2).SerializeToString()])
            assert res.ok_seqs() == [2]
            assert s.tokens.reloads_failed == 1
    finally:
        await s.stop()


async def test_a_token_removed_from_the_file_ends_its_open_streams(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    s = await started(ingest_settings(tmp_path, certs, broker.bootstrap, await make_topic(broker)))
    assert s.tokens is not None
    s.tokens.check_interval_s = 0.0
    site = "jp-tokyo-01"
    try:
        async with channel(s.port, certs) as ch:
            call = stream_call(ch, token_for(site))
            await call.write(make_batch(site, 1).SerializeToString())
            assert (await call.read()).code == pb.OK  # open and served
            other = stream_call(ch, token_for("us-dallas-01"))  # another site's stream
            await other.write(make_batch("us-dallas-01", 1).SerializeToString())
            assert (await other.read()).code == pb.OK
            tokens_file = Path(s.cfg.tokens_file or "")
            write_tokens(tokens_file, {t: x for t, x in TOKENS.items() if x != site})
            os.utime(tokens_file, ns=(time.time_ns(), time.time_ns() + 10**9))
            await call.write(make_batch(site, 2).SerializeToString())
            ack = await call.read()
            assert ack.code == pb.UNAUTHENTICATED
            assert "revoked" in ack.reason
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert dict(err.value.trailing_metadata() or ()).get("stream-end-reason") == "token_revoked"
            # the other site's open stream goes on
            await other.write(make_batch("us-dallas-01", 2).SerializeToString())
            assert (await other.read()).code == pb.OK
            await other.done_writing()
        assert (
            s.registry.get_sample_value(
                "collector_ingest_batches_rejected_total", {"reason": "token_revoked"}
            )
            == 1
        )
        assert (
            s.registry.get_sample_value("collector_ingest_streams_ended_total", {"reason": "token_revoked"})
            == 1
        )
    finally:
        await s.stop()


async def test_mtls_requires_a_client_certificate(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    s = await started(
        ingest_settings(tmp_path, certs, broker.bootstrap, await make_topic(broker), client_ca=str(certs.ca))
    )
    try:
        async with channel(s.port, certs, client_cert=False) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await send_all(ch, token_for("jp-tokyo-01"), [make_batch().SerializeToString()], timeout_s=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        async with channel(s.port, certs, client_cert=True) as ch:
            res = await send_all(ch, token_for("jp-tokyo-01"), [make_batch().SerializeToString()])
            assert res.ok_seqs() == [1]
    finally:
        await s.stop()


async def test_plaintext_client_cannot_talk_to_tls_server(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    s = await started(ingest_settings(tmp_path, certs, broker.bootstrap, await make_topic(broker)))
    try:
        async with channel(s.port, None) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await send_all(ch, token_for("jp-tokyo-01"), [make_batch().SerializeToString()], timeout_s=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await s.stop()


def test_tls_is_required_unless_plaintext_is_explicit(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = ingest_settings(tmp_path, None, broker.bootstrap, "t", plaintext=False)
    with pytest.raises(ConfigError, match=r"ingest\.tls_cert"):
        asyncio.run(IngestServer(settings).start())


def test_tokens_file_is_required_unless_unauthenticated_is_explicit(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    settings = ingest_settings(tmp_path, certs, broker.bootstrap, "t", tokens_file=None)
    with pytest.raises(ConfigError, match=r"ingest\.tokens_file"):
        asyncio.run(IngestServer(settings).start())


async def test_health_reflection_metrics_and_graceful_stop(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    s = await started(ingest_settings(tmp_path, certs, broker.bootstrap, await make_topic(broker)))
    try:
        async with channel(s.port, certs) as ch:
            hc = health_pb2_grpc.HealthStub(ch)
            resp = await hc.Check(health_pb2.HealthCheckRequest(service="telemetry.v1.IngestService"))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            call = refl.ServerReflectionInfo()
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            answer = await call.read()
            await call.done_writing()
            names = {svc.name for svc in answer.list_services_response.service}
            assert "telemetry.v1.IngestService" in names
            res = await send_all(
                ch,
                token_for("us-dallas-01"),
                [make_batch("us-dallas-01", i).SerializeToString() for i in (1, 2, 3)],
            )
            assert res.ok_seqs() == [1, 2, 3]
        body = await asyncio.to_thread(_http_get, s.metrics_port)
        assert "collector_ingest_batches_accepted_total 3.0" in body
        assert "collector_ingest_kafka_produce_seconds_count 3.0" in body
        assert "collector_ingest_streams_open 0.0" in body
    finally:
        await s.stop()
    assert s.metrics_port
    with pytest.raises(OSError, match="refused"):
        _http_get(s.metrics_port)


async def test_shutdown_answers_in_flight_then_closes_streams(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    s = await started(ingest_settings(tmp_path, certs, broker.bootstrap, await make_topic(broker)))
    async with channel(s.port, certs) as ch:
        from tests.ingest_support import stream_call

        call = stream_call(ch, token_for("jp-osaka-01"))
        for i in range(1, 6):
            await call.write(make_batch("jp-osaka-01", i).SerializeToString())
        acks: list[pb.Ack] = []
        while sum(len(range(a.seq, a.seq_last + 1)) for a in acks) < 5:
            acks.append(await call.read())
        await s.stop()  # the client never half-closes: the server ends the stream
        with pytest.raises(grpc.aio.AioRpcError) as err:  # nothing more to read: a status
            await call.read()
        # UNAVAILABLE, not OK: the client did not finish, it must reconnect elsewhere
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (err.value.details() or "")
        assert dict(err.value.trailing_metadata() or ()).get("stream-end-reason") == "shutdown"
    assert [a.code for a in acks] == [pb.OK] * len(acks)


def _http_get(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


async def test_streams_beyond_the_limit_get_resource_exhausted(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    s = await started(
        ingest_settings(tmp_path, certs, broker.bootstrap, await make_topic(broker), max_concurrent_streams=2)
    )
    from tests.ingest_support import stream_call

    try:
        async with channel(s.port, certs) as ch:
            open_calls = [stream_call(ch, token_for("jp-tokyo-01")) for _ in range(2)]
            for i, call in enumerate(open_calls, 1):  # two streams open and working
                await call.write(make_batch(seq=i).SerializeToString())
                assert (await call.read()).code == pb.OK
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await send_all(
                    ch, token_for("jp-tokyo-01"), [make_batch(seq=9).SerializeToString()], timeout_s=10
                )
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            for call in open_calls:
                await call.done_writing()
                assert await call.code() == grpc.StatusCode.OK
            res = await send_all(ch, token_for("jp-tokyo-01"), [make_batch(seq=10).SerializeToString()])
            assert res.ok_seqs() == [10]  # capacity is back once streams end
    finally:
        await s.stop()


def test_cli_config_error_names_key_and_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "ingest.yaml"
    cfg.write_text("ingest:\n  max_inflight_total: -3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "collector", "--config", str(cfg), "ingest"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "ingest.max_inflight_total" in proc.stderr
    assert str(cfg) in proc.stderr


async def test_ports_in_use_are_config_errors_naming_the_key(
    broker: EmbeddedBroker, certs: DevCerts, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        addr = f"127.0.0.1:{busy.getsockname()[1]}"
        for key in ("listen", "metrics_listen"):
            settings = ingest_settings(tmp_path, certs, broker.bootstrap, "t", **{key: addr})
            with pytest.raises(ConfigError, match=rf"ingest\.{key}"):
                await IngestServer(settings).start()
