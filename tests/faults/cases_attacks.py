"""Cases 8-11 of the fault suite: what a misbehaving client or an attacker sends, against the
real processes of the harness (ingest, aggregator and agents started as the CLI starts them),
while the stack's own agents keep streaming; the one checker then proves their data intact.
See docs/reliability.md.

The misbehaving client is this test process: raw gRPC streams over TLS (tests/ingest_support's
helpers), and a librdkafka producer planting records straight into the telemetry topic.
Its batches use sites the stack does not run (`Stack.foreign_sites`), so the checker leaves
their windows out and knows their seqs were never in an agent's ledger.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families

from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.agent_support import write_yaml
from tests.faults.harness import Stack, https_get, read_window_logs, scaled
from tests.ingest_support import (
    LEVELS,
    RETRIABLE,
    TOKENS,
    channel,
    covered,
    make_batch,
    send_all,
    stream_call,
    token_for,
    unknown_field,
    with_unknown,
)
from tests.waiting import eventually

WINDOW = 32
MB = 1 << 20
OSAKA, SEATTLE = "jp-osaka-01", "us-seattle-01"  # not run by the 1 JP + 1 US stacks


def _code(exc: BaseException) -> str:
    return exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__


async def _one_batch(
    ch: aio.Channel, token: str | None, raw: bytes | None, within: float = 20.0
) -> tuple[str, float]:
    """Open a stream, send one batch: the code the server answered it with (the ack's code,
    or the stream's status when it ended first) and how long that took. raw=None: send
    nothing, read the answer to the stream itself (a stream refused at open: a write racing
    the server's close can fail in the client's gRPC core as INTERNAL, hiding the status)."""
    t0 = time.monotonic()
    call = stream_call(ch, token)
    try:
        async with asyncio.timeout(within):  # the bound: a hang fails the case
            if raw is not None:
                await call.write(raw)
            ack = await call.read()
            code = "EOF" if ack is aio.EOF else pb.Code.Name(ack.code)
    except grpc.aio.AioRpcError as exc:
        code = _code(exc)
    finally:
        call.cancel()
    return code, time.monotonic() - t0


async def _rss_peak(proc: Any, stop: asyncio.Event, out: list[int]) -> None:
    while not stop.is_set():
        out.append(proc.rss_bytes())
        await asyncio.sleep(0.25)


# ------------------------------------------------------------------ case 8


async def case8_slow_client_idle_streams_and_huge_messages(tmp_path: Path) -> None:
    """A client that stops reading acks, 1,000 idle streams and 5 MiB / 9 MiB messages cost
    the ingest bounded memory and get refused with a status; the stack's agents go on."""
    idle_sites = [f"jp-idle-{i:02d}" for i in range(40)]
    async with Stack(
        tmp_path,
        ingest={"max_concurrent_streams": 200, "max_streams_per_site": 8, "stream_idle_timeout_s": 120.0},
        aggregate={"site_idle_s": 10.0},
    ) as s:
        s.tokens.update({f"token-{site}-0123456789": site for site in idle_sites})
        s.foreign_agents |= {"agent-" + OSAKA}
        s.foreign_sites |= {OSAKA}
        ing = await s.start_ingest()
        await s.start_aggregator()
        await s.start_agents()
        assert await s.wait_acked(10)
        assert s.certs is not None
        rss0 = ing.rss_bytes()
        peak: list[int] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(_rss_peak(ing, stop, peak))

        # (a) a client that writes and never reads an ack, for 60 s (quick: 15 s)
        stall_s = scaled(15.0, 60.0)
        acked_before = s.acked_total()
        written = blocked = 0
        async with channel(s.ingest_port, s.certs) as ch:
            call = stream_call(ch, token_for(OSAKA))
            end = time.monotonic() + stall_s
            seq = 0
            while time.monotonic() < end and seq < 100_000:
                seq += 1
                raw = make_batch(OSAKA, seq, series=100, points=10).SerializeToString()
                try:
                    # the first write also opens the connection (TLS) and the stream: on a
                    # loaded machine that alone took over a second (written=0, blocked=1)
                    async with asyncio.timeout(30.0 if seq == 1 else 2.0):
                        await call.write(raw)
                    written += 1
                except TimeoutError:
                    # HTTP/2 flow control holds the writer: the server stopped reading (its
                    # unread acks filled the window); the stall goes on without writes
                    blocked += 1
                    break
            await asyncio.sleep(max(0.0, end - time.monotonic()))  # the stall goes on, bounded
            acked_during = s.acked_total() - acked_before
            call.cancel()
        stall_peak = max(peak) - rss0

        # (b) 1,000 concurrent streams that send nothing, over 10 connections
        chans = [channel(s.ingest_port, s.certs) for _ in range(10)]
        calls = []
        codes: dict[str, int] = {}
        try:
            for i in range(1000):
                calls.append(stream_call(chans[i % 10], token_for(idle_sites[i % len(idle_sites)])))

            async def outcome(c: Any) -> str:
                try:
                    async with asyncio.timeout(scaled(8.0, 20.0)):
                        r = await c.read()
                    return "EOF" if r is aio.EOF else "ack"
                except TimeoutError:
                    return "open"
                except grpc.aio.AioRpcError as exc:
                    return _code(exc)

            for o in await asyncio.gather(*(outcome(c) for c in calls)):
                codes[o] = codes.get(o, 0) + 1
            idle_acked = s.acked_total()
            assert await s.wait_acked(idle_acked, within=30), "agents stalled by the idle streams"
        finally:
            for c in calls:
                c.cancel()
            for c in chans:
                await c.close()
        idle_peak = max(peak) - rss0

        # (c) a 5 MiB message (over max_message_bytes: answered, the stream goes on) and a
        # 9 MiB one (over twice the limit: gRPC ends the stream with RESOURCE_EXHAUSTED)
        big: dict[str, str] = {}
        async with channel(s.ingest_port, s.certs) as ch:
            for name, size in (("5MiB", 5 * MB), ("9MiB", 9 * MB)):
                b = make_batch(OSAKA, 200_000 + size // MB, series=2, points=1)
                raw = with_unknown(b, "top", unknown_field(4000, 2, bytes(size)))
                code, _ = await _one_batch(ch, token_for(OSAKA), raw, within=60)
                big[name] = code
        stop.set()
        await sampler
        big_peak = max(peak) - rss0
        assert ing.alive(), "the ingest died"
        await s.drain()
        await s.wait_published()
        rep = await s.check()
    print(
        "case8",
        rep.summary(),
        f"stall: written={written} blocked={blocked} "
        f"acked_by_agents_meanwhile={acked_during} ingest_rss_growth_mb={stall_peak / MB:.1f}; "
        f"idle streams: {codes} rss_growth_mb={idle_peak / MB:.1f}; big: {big} "
        f"rss_growth_mb={big_peak / MB:.1f}",
    )
    assert written > 0
    assert acked_during > 0, "the other agents were not acked while a client stalled"
    assert stall_peak <= 50 * MB, f"a stalled client cost the ingest {stall_peak / MB:.0f} MB"
    # the global limit (200) and the per-site one (8 x 40 sites = 320) leave at most 200 open
    assert codes.get("open", 0) <= 200, codes
    assert codes.get("RESOURCE_EXHAUSTED", 0) >= 800, codes
    assert set(codes) <= {"open", "RESOURCE_EXHAUSTED"}, codes
    assert big == {"5MiB": "INVALID_ARGUMENT", "9MiB": "RESOURCE_EXHAUSTED"}, big
    assert big_peak <= 150 * MB, f"huge messages cost the ingest {big_peak / MB:.0f} MB"
    rep.assert_ok(max_duplicates=2 * WINDOW)


# ------------------------------------------------------------------ case 9


def _valid(rnd: random.Random, seq: int, site: str, agent: str) -> pb.Batch:
    b = make_batch(
        site,
        seq,
        agent_id=agent,
        series=rnd.randint(1, 6),
        points=rnd.randint(1, 3),
        t0_ns=time.time_ns() - 2 * 10**9,
    )
    return b


_HOSTILE = [
    'a"b',
    "new\nline",
    "back\\slash",
    "\x00nul",
    "\x1b[31mred",
    "ü😀",
    "x" * 300,
    '{__name__="up"}',
    "",
    " ",
    "\u202e",
]


def grpc_malformed(rnd: random.Random, i: int, site: str, agent: str) -> bytes:
    """The i-th malformed input (10 kinds in turn): random bytes, truncated protobuf, unknown
    fields (legal), wrong column lengths, hostile label values, huge numbers, timestamps far
    past and future, an out-of-range series index, missing required fields, a flipped byte."""
    seq = i + 1
    kind = i % 10
    if kind == 0:
        return rnd.randbytes(rnd.randint(1, 512))
    b = _valid(rnd, seq, site, agent)
    raw = b.SerializeToString()
    if kind == 1:
        return raw[: rnd.randint(0, len(raw) - 1)]
    if kind == 2:
        return with_unknown(b, rnd.choice(LEVELS[:6]), unknown_field(rnd.randint(32, 2**20), 2, b"?"))
    if kind == 3:
        b.counters.time_unix_nano.append(time.time_ns())  # one more time than values
        return b.SerializeToString()
    if kind == 4:
        b.series[0].labels[0].value = rnd.choice(_HOSTILE)
        return b.SerializeToString()
    if kind == 5:
        if len(b.counters.value):
            b.counters.value[0] = 2**64 - 1
        if len(b.gauges.value):
            b.gauges.value[0] = rnd.choice([1e308, -1e308, math.nan, math.inf, -math.inf])
        return b.SerializeToString()
    if kind == 6:
        t = rnd.choice([0, 1, 10**9, 2**63 - 1, time.time_ns() + 10**15, time.time_ns() - 10**18])
        if len(b.counters.time_unix_nano):
            b.counters.time_unix_nano[0] = t
        else:
            b.gauges.time_unix_nano[0] = t
        return b.SerializeToString()
    if kind == 7:
        if len(b.counters.series_index):
            b.counters.series_index[0] = 10_000
        else:
            b.gauges.series_index[0] = 10_000
        return b.SerializeToString()
    if kind == 8:
        which = rnd.choice(["agent_id", "seq", "site"])
        b.ClearField(which)
        return b.SerializeToString()
    j = rnd.randrange(len(raw))
    return raw[:j] + bytes([raw[j] ^ rnd.randint(1, 255)]) + raw[j + 1 :]


def kafka_malformed(rnd: random.Random, i: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The i-th record planted in the telemetry topic, each invalid for the aggregator (and
    each marked `planted` so the checker does not count it as an agent's batch)."""
    kind = i % 8
    headers = [("planted", b"1"), ("schema", b"telemetry.v1.Batch")]
    if kind == 0:
        v = b"\xff" + rnd.randbytes(rnd.randint(0, 300))  # field 31, wire type 7: never parses
        return v, headers
    b = make_batch(OSAKA, 500_000 + i, agent_id="planted-osaka", series=3, points=2)
    if kind == 1:
        raw = b.SerializeToString()
        return raw[: len(raw) - rnd.randint(1, 8)], headers  # cut inside the last field
    if kind == 2:
        return b.SerializeToString(), [("planted", b"1"), ("schema", b"telemetry.v0.Nope")]
    if kind == 3:
        return b"", headers
    if kind == 4:
        b.counters.value.append(1)  # column lengths disagree
    elif kind == 5:
        b.counters.series_index[0] = 999  # series index out of range
    elif kind == 6:
        b.gauges.value[0] = math.nan  # a non-finite gauge
    else:
        b.counters.time_unix_nano[0] = -5  # before 1970
    return b.SerializeToString(), headers


def _families_sum(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


async def case9_ten_thousand_malformed_inputs(tmp_path: Path) -> None:
    n = 10_000
    rnd = random.Random(9)
    # (default site_idle_s: the fuzz's accepted batches may be up to ingest.max_future_skew_s
    # ahead; a shorter site_idle_s would let them make the other sites' samples late)
    async with Stack(tmp_path) as s:
        s.foreign_agents |= {"fuzz-osaka", "planted-osaka", "agent-" + OSAKA}
        s.foreign_sites |= {OSAKA}
        ing = await s.start_ingest()
        agg = await s.start_aggregator()
        await s.start_agents()
        assert await s.wait_acked(10)
        assert s.certs is not None
        # through gRPC: 10 streams of 1,000; every input read gets one answer
        inputs = [grpc_malformed(rnd, i, OSAKA, "fuzz-osaka") for i in range(n)]
        by_code: dict[str, int] = {}
        answered = 0
        async with channel(s.ingest_port, s.certs) as ch:
            for k in range(0, n, 1000):
                chunk = inputs[k : k + 1000]
                res = await send_all(ch, token_for(OSAKA), chunk, timeout_s=scaled(180, 300))
                for a in res.acks:
                    span = a.seq_last - a.seq + 1 if a.code == pb.OK and a.seq_last > a.seq else 1
                    answered += span
                    by_code[pb.Code.Name(a.code)] = by_code.get(pb.Code.Name(a.code), 0) + span
                    assert a.code == pb.OK or a.reason, f"a non-OK answer without a reason: {a}"
                assert sum(1 for _ in res.acks) > 0
        assert ing.alive(), "the ingest crashed"
        # planted in Kafka: every record dead-lettered and counted
        planted = [kafka_malformed(rnd, i) for i in range(n)]
        await asyncio.to_thread(_plant, s.broker.bootstrap, s.topic, planted)
        port = int(agg.match["port"])  # type: ignore[index]
        deadline = time.monotonic() + scaled(120, 300)
        while True:
            text = await s.scrape_aggregator(port)
            dead = s.value(text, "collector_aggregate_dead_letter_records_total") or 0
            if dead >= n or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        decode_errors = _families_sum(text, "collector_aggregate_decode_errors_total")
        # hostile label values that were legal are on /metrics now: still a valid exposition
        families = len(list(text_string_to_metric_families(text)))
        dlq = await asyncio.to_thread(_dlq_sources, s.broker.bootstrap, s.topic + ".dlq", n)
        assert agg.alive(), "the aggregator crashed"
        await s.drain()
        await s.wait_published()
        rep = await s.check()
    print(
        "case9",
        rep.summary(),
        f"grpc: sent={n} answered={answered} by_code={by_code}; "
        f"kafka: planted={n} dead_lettered={dead:.0f} decode_errors={decode_errors:.0f} "
        f"dlq_distinct_sources={len(dlq)} metric_families={families}",
    )
    assert answered == n, f"{n} inputs, {answered} answers"
    assert set(by_code) <= {"OK", "INVALID_ARGUMENT", "PERMISSION_DENIED"}, by_code
    assert by_code.get("INVALID_ARGUMENT", 0) >= n * 6 // 10, by_code
    assert dead == n, f"{n} planted, {dead} dead-lettered"
    assert decode_errors == n
    assert len(dlq) == n, f"{len(dlq)} distinct planted records in the dead-letter topic"
    rep.assert_ok(max_duplicates=2 * WINDOW)


def _plant(bootstrap: str, topic: str, records: list[tuple[bytes, list[tuple[str, bytes]]]]) -> None:
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "broker.address.family": "v4",
            "log_level": 3,
            "linger.ms": 20,
            "enable.idempotence": False,
            "acks": "all",
        }
    )
    failed: list[str] = []
    for i, (v, h) in enumerate(records):
        while True:
            try:
                p.produce(
                    topic,
                    value=v,
                    key=b"planted-%d" % i,
                    headers=h,
                    on_delivery=lambda err, _m: failed.append(str(err)) if err else None,
                )
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(60)
    assert left == 0, f"{left} planted records not delivered"
    assert not failed, failed[:3]


def _dlq_sources(bootstrap: str, topic: str, at_least: int) -> set[bytes]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"faults-dlq-{os.getpid()}-{time.time_ns()}",
            "enable.auto.commit": False,
            "broker.address.family": "v4",
            "log_level": 3,
        }
    )
    try:
        md = c.list_topics(topic, timeout=20)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
        seen: set[bytes] = set()
        end = time.monotonic() + 60
        idle_since = time.monotonic()
        while time.monotonic() < end:
            msgs = c.consume(num_messages=2000, timeout=0.5)
            for m in msgs:
                if m.error() is None and any(k == "planted" for k, _ in (m.headers() or ())):
                    seen.add(dict(m.headers() or ()).get("dlq_source", b""))
            if msgs:
                idle_since = time.monotonic()
            elif len(seen) >= at_least or time.monotonic() - idle_since > 5:
                break
        return seen
    finally:
        c.close()


# ------------------------------------------------------------------ case 10

ATTACKS = 20


async def case10_security(tmp_path: Path) -> None:
    sasl = "sasl-password-do-not-log-7f3a"
    wrong = "wrong-token-abcdefghijklmnop"
    async with Stack(tmp_path, aggregate={"site_idle_s": 10.0}) as s:
        assert s.certs is not None
        web = s.secure_metrics()
        s.ingest_over["client_ca"] = str(s.certs.ca)  # mTLS required
        s.agent_over["ingest"] = {
            "client_cert": str(s.certs.client_cert),
            "client_key": str(s.certs.client_key),
        }
        s.kafka_over["sasl_password"] = sasl  # configured, never to be shown
        s.foreign_agents |= {"attacker-" + SEATTLE}
        s.foreign_sites |= {SEATTLE}
        ing = await s.start_ingest()
        agg = await s.start_aggregator()
        await s.start_agents()
        assert await s.wait_acked(10)
        good = make_batch("jp-tokyo-01", 1, agent_id="attacker-tokyo").SerializeToString()
        results: dict[str, list[tuple[str, float]]] = {}

        async def attempt(name: str, ch_factory: Any, token: str | None, raw: bytes) -> None:
            for _ in range(scaled(ATTACKS, 10 * ATTACKS)):
                async with ch_factory() as ch:
                    results.setdefault(name, []).append(await _one_batch(ch, token, raw))

        port = s.ingest_port
        certs = s.certs
        await attempt("no_client_cert", lambda: channel(port, certs), token_for("jp-tokyo-01"), good)
        refused0 = (
            await s.ingest_metric("collector_ingest_streams_refused_total", reason="unauthenticated") or 0
        )
        await attempt("wrong_token", lambda: channel(port, certs, client_cert=True), wrong, None)
        refused = (
            await s.ingest_metric("collector_ingest_streams_refused_total", reason="unauthenticated") or 0
        ) - refused0
        # a valid token of another site (osaka) for a batch of jp-tokyo-01
        await attempt(
            "other_sites_token", lambda: channel(port, certs, client_cert=True), token_for(OSAKA), good
        )
        await attempt(
            "plaintext", lambda: aio.insecure_channel(f"127.0.0.1:{port}"), token_for("jp-tokyo-01"), good
        )

        # a token removed from the tokens file while its stream is open
        revoked_after: list[float] = []
        for r in range(scaled(3, 10)):
            token = f"revocable-{r}-0123456789abcdef"
            s.tokens[token] = SEATTLE
            write_yaml(s.tokens_file, s.tokens)
            os.utime(s.tokens_file, ns=(time.time_ns(), time.time_ns() + (2 * r + 1) * 10**9))
            async with channel(port, certs, client_cert=True) as ch:
                seq = 1000 * r
                call = None
                async with asyncio.timeout(20):
                    while call is None:  # the ingest re-reads the file at most every second
                        seq += 1
                        c = stream_call(ch, token)
                        try:
                            await c.write(
                                make_batch(
                                    SEATTLE, seq, agent_id="attacker-" + SEATTLE, series=2, points=1
                                ).SerializeToString()
                            )
                            ack = await c.read()
                            if ack is not aio.EOF and ack.code == pb.OK:
                                call = c
                                break
                        except grpc.aio.AioRpcError:
                            pass
                        c.cancel()
                        await asyncio.sleep(0.3)
                del s.tokens[token]
                write_yaml(s.tokens_file, s.tokens)
                os.utime(s.tokens_file, ns=(time.time_ns(), time.time_ns() + (2 * r + 2) * 10**9))
                t0 = time.monotonic()
                status = ""
                async with asyncio.timeout(20):  # the bound
                    while True:
                        seq += 1
                        try:
                            await call.write(
                                make_batch(
                                    SEATTLE, seq, agent_id="attacker-" + SEATTLE, series=2, points=1
                                ).SerializeToString()
                            )
                            ack = await call.read()
                        except grpc.aio.AioRpcError as exc:
                            status = _code(exc)
                            break
                        if ack is aio.EOF:
                            status = "EOF"
                            break
                        if ack.code == pb.UNAUTHENTICATED:
                            try:
                                await call.read()
                            except grpc.aio.AioRpcError as exc:
                                status = _code(exc)
                            break
                        await asyncio.sleep(0.2)
                revoked_after.append(time.monotonic() - t0)
                results.setdefault("revoked_on_open_stream", []).append((status, revoked_after[-1]))

        # /metrics of every process: HTTPS with basic auth only
        ports = {"ingest": int(ing.match["metrics"]), "aggregator": int(agg.match["port"])}  # type: ignore[index]
        for a in s.agents:
            ports[a.agent_id] = a.metrics_port
        web_results: dict[str, tuple[int, int, int, bool]] = {}
        bodies = []
        for name, p in ports.items():
            ok, body = await asyncio.to_thread(https_get, p, web)
            none, _ = await asyncio.to_thread(https_get, p, web, user="")
            bad, _ = await asyncio.to_thread(https_get, p, web, password="not-the-password")
            web_results[name] = (ok, none, bad, await asyncio.to_thread(_plain_http_gets_metrics, p))
            bodies.append(body)
        # secrets: in no log line of any process and in no /metrics body
        secrets = [
            *TOKENS,
            wrong,
            web.password,
            sasl,
            *(f"revocable-{r}-0123456789abcdef" for r in range(scaled(3, 10))),
        ]
        logs = {p.name: p.read_text(errors="replace") for p in tmp_path.rglob("*.log")}
        leaks = [
            (where, sec[:12])
            for sec in secrets
            for where, text in [*logs.items(), *(("metrics", b) for b in bodies)]
            if sec in text
        ]
        await s.drain()
        await s.wait_published()
        rep = await s.check()
    summary = {
        k: (sorted({c for c, _ in v}), len(v), round(max(t for _, t in v), 2)) for k, v in results.items()
    }
    print(
        "case10",
        rep.summary(),
        f"attacks (codes, count, max_s): {summary}; metrics "
        f"(auth, none, wrong, plaintext_served): {web_results}; logs_scanned={len(logs)} "
        f"leaks={leaks} wrong_token_refusals_counted={refused:.0f}",
    )
    want = {
        "no_client_cert": "UNAVAILABLE",
        "wrong_token": "UNAUTHENTICATED",
        "other_sites_token": "PERMISSION_DENIED",
        "plaintext": "UNAVAILABLE",
        "revoked_on_open_stream": "UNAUTHENTICATED",
    }
    for name, code in want.items():
        got = {c for c, _ in results[name]}
        assert got == {code}, f"{name}: answered {got}, expected only {code}"
    for name, (ok, none, bad, plain) in web_results.items():
        assert (ok, none, bad, plain) == (200, 401, 401, False), (name, ok, none, bad, plain)
    assert refused == len(results["wrong_token"]), f"ingest counted {refused} refusals"
    assert not leaks, f"secrets found: {leaks}"
    assert len(logs) >= 4
    rep.assert_ok(max_duplicates=2 * WINDOW)


def _plain_http_gets_metrics(port: int) -> bool:
    """True when plaintext HTTP to a TLS port gets a /metrics answer (it must not)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            data = b""
            while len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    return b"collector_" in data


# ------------------------------------------------------------------ case 11


async def case11_cardinality_attack(tmp_path: Path) -> None:
    """One site sends 100k new label values: capped at the per-site budget and counted,
    /metrics still renders (its time reported), memory bounded, the series gone after the TTL."""
    budget = 2_000
    values = 100_000
    ttl = 15.0
    async with Stack(
        tmp_path, aggregate={"max_series_per_site": budget, "stale_ttl_s": ttl, "site_idle_s": 10.0}
    ) as s:
        # The flood's ten 10k-series batches reach Kafka at once. On a machine loaded by the
        # parallel suite the broker took more than the harness's 5 s produce deadline for them
        # (land gate, twice: 3 timed out, the producer was rebuilt, 1 of 10 stored). The case
        # is about cardinality, not produce latency: a roomier deadline, the same assertions.
        s.kafka_over["produce_timeout_s"] = 60.0
        s.foreign_agents |= {"attacker-" + OSAKA}
        s.foreign_sites |= {OSAKA}
        await s.start_ingest()
        agg = await s.start_aggregator()
        await s.start_agents()
        assert await s.wait_acked(10)
        assert s.certs is not None
        port = int(agg.match["port"])  # type: ignore[index]
        rss0 = agg.rss_bytes()
        per_batch = 10_000
        acks: list[int] = []
        async with channel(s.ingest_port, s.certs) as ch:
            # each batch is built (and stamped) just before it is written: built all at once,
            # the first ones were older than the stack's 6 s lateness by the time they were
            # stored on a loaded machine, and arrived late (none published)
            acks = await _send_until_answered(
                ch, token_for(OSAKA), lambda k: _label_flood(k, per_batch), values // per_batch
            )
        render_s: list[float] = []
        deadline = time.monotonic() + 120
        while True:
            t0 = time.monotonic()
            text = await s.scrape_aggregator(port)
            render_s.append(time.monotonic() - t0)
            capped = (
                s.value(text, "collector_site_samples_dropped_total", site=OSAKA, reason="cardinality") or 0
            )
            if capped >= values - budget or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)

        # the accepted series' windows close after the lateness and are published (the window
        # log has every publication); /metrics shows them until they expire, a span a scrape
        # that takes seconds on a loaded machine can miss, so publication is read from the log
        def published_flood_links() -> set[str]:
            return {
                m.group(0)
                for row in read_window_logs(s.window_logs)
                if row.get("site") == OSAKA
                and (m := re.search(r"flood-[0-9]+-[0-9]+", json.dumps(row.get("labels"))))
            }

        published = await eventually(published_flood_links, within=120, step=1.0) or set()
        osaka_links: set[str] = set()
        deadline = time.monotonic() + 30
        while not osaka_links and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            t0 = time.monotonic()
            text = await s.scrape_aggregator(port)
            render_s.append(time.monotonic() - t0)
            osaka_links = {
                m.group(1)
                for line in text.splitlines()
                if line.startswith("edge_")
                and f'site="{OSAKA}"' in line
                and (m := re.search(r'link="(flood-[^"]*)"', line))
            }
        osaka_series = len(osaka_links)
        for _ in range(5):
            t0 = time.monotonic()
            text = await s.scrape_aggregator(port)
            render_s.append(time.monotonic() - t0)
        rss_growth = agg.rss_bytes() - rss0
        # the attack stopped: its series expire after stale_ttl_s of event time
        t0 = time.monotonic()
        gone_after = None
        while time.monotonic() - t0 < ttl + 90:
            text = await s.scrape_aggregator(port)
            if not any(f'site="{OSAKA}"' in line for line in text.splitlines() if line.startswith("edge_")):
                gone_after = time.monotonic() - t0
                break
            await asyncio.sleep(1.0)
        await s.drain()
        await s.wait_published()
        rep = await s.check()
    print(
        "case11",
        rep.summary(),
        f"label_values={values} budget={budget} accepted_acks="
        f"{acks.count(pb.OK)}/{len(acks)} dropped_cardinality={capped:.0f} "
        f"published_flood_series={len(published)} osaka_series_on_metrics={osaka_series} "
        f"render_s_max={max(render_s):.3f} "
        f"render_s_median={sorted(render_s)[len(render_s) // 2]:.3f} aggregator_rss_growth_mb="
        f"{rss_growth / MB:.1f} gone_after_s={gone_after}",
    )
    assert acks.count(pb.OK) == len(acks) == values // per_batch  # valid batches: stored
    assert capped == values - budget, f"{capped} samples dropped for cardinality"
    assert 0 < len(published) <= budget, f"{len(published)} flood series published"
    assert gone_after is not None, "the attacker's series did not vanish after the TTL"
    assert rss_growth < 300 * MB, f"the attack grew the aggregator by {rss_growth / MB:.0f} MB"
    rep.assert_ok(max_duplicates=2 * WINDOW)


async def _send_until_answered(
    ch: aio.Channel, token: str, build: Callable[[int], bytes], n: int, rounds: int = 5
) -> list[int]:
    """Each of `n` batches' final answer code, in order; batch i is `build(i)`, built when it
    is first written. A batch answered with a retriable code (a produce that missed its
    deadline on a loaded machine: RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED) is sent
    again after the ack's retry_after_ms, as the contract tells a client to (at most `rounds`
    times); the rest keep their first answer."""
    codes: dict[int, int] = {}
    raws: dict[int, bytes] = {}
    todo = list(range(n))

    def payloads(indexes: list[int]) -> Iterator[bytes]:
        for i in indexes:
            if i not in raws:
                raws[i] = build(i)
            yield raws[i]

    for _ in range(rounds):
        res = await send_all(ch, token, payloads(todo), timeout_s=120)
        answers = [a for a in res.acks for _seq in (covered(a) if a.code == pb.OK else range(1))]
        assert len(answers) == len(todo), (len(answers), len(todo))
        retry_ms = 0
        for i, a in zip(todo, answers, strict=True):
            codes[i] = a.code
            if a.code in RETRIABLE:
                retry_ms = max(retry_ms, a.retry_after_ms)
        todo = [i for i in todo if codes[i] in RETRIABLE]
        if not todo:
            break
        await asyncio.sleep(retry_ms / 1000)  # the contract's pause before a resend, not a wait
    return [codes[i] for i in range(n)]


def _label_flood(k: int, n: int) -> bytes:
    """One batch of `n` gauge series of OSAKA, each a new label value (one sample each)."""
    from collector.agent.batch import BatchBuilder, gauge_def
    from tests.ingest_support import SITES

    b = BatchBuilder("attacker-" + OSAKA, SITES[OSAKA], "boot-flood")
    t = time.time_ns() - 10**9
    for i in range(n):
        b.gauge(
            gauge_def(
                "link_optical_rx_power_dbm", {"link": f"flood-{k}-{i}", "media": "optical"}, unit="dBm"
            ),
            t,
            -3.0,
        )
    return b.build_bytes(k + 1, time.time_ns())
