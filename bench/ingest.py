"""Ingest throughput against its ceilings, all measured in the same run.

    python bench/ingest.py [--quick]

Starts a Tansu broker, then measures, with the same client (this process) and TLS on
loopback:
  1. bare grpc.aio: a stream service that answers every message with an Ack and does
     nothing else (ceiling for the transport), 100-sample-sized messages;
  2. bare aiokafka: acks=all produce of 1000-sample batch records (ceiling for Kafka);
  3. the ingest service (`python -m collector ingest`, its own process) with 100- and
     1000-sample batches: parse, validate, produce, wait for acks=all, ack;
  4. bytes: the issue's reference site (50 links, rx and tx octet counters, one sample per
     series per batch) sends batches one at a time (as a site does every 10 s, so a produce
     batch holds about one record) through the same ingest; the record batches are then
     fetched raw from the broker (compressed, as stored) and divided by the counter values.
Servers run in their own processes, like in production; the machine's cores are shared
by the broker, the server and this client, so read the ratios, not the absolute numbers.
Kafka compression is kafka.compression_type (default zstd) or --kafka-compression; the bare
produce ceiling uses the same codec. --grpc-compression gzip makes every client (bare grpc
ceiling included) compress its messages, as agents with agent.ingest.compression: gzip do.

Last line: RESULT ingest_samples_per_s=<1000-sample batches> vs_bare_grpc_100=<ratio>
vs_bare_produce=<ratio> bytes_per_value=<Kafka bytes per counter value, reference site>
wire_bytes_per_value=<gRPC message bytes per value> wire_gzip_bytes_per_value=<same, gzip>
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import yaml
from aiokafka import AIOKafkaProducer
from grpc import aio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collector.broker import EmbeddedBroker, TopicSpec, free_port  # noqa: E402
from collector.config import KafkaSettings  # noqa: E402
from collector.devcerts import DevCerts, make_dev_certs  # noqa: E402
from collector.kafka import record_headers  # noqa: E402
from collector.proto.telemetry.v1 import telemetry_pb2 as pb  # noqa: E402
from tests.ingest_support import (  # noqa: E402
    SITES,
    TOKENS,
    link_site_batch,
    make_batch,
    stored_batches,
    token_for,
)

METHOD = "/telemetry.v1.IngestService/Stream"
STREAMS = 4
# the agent's agent.ingest.compression for every benchmark client (--grpc-compression)
GRPC_COMPRESSION = [grpc.Compression.NoCompression]


# ---- bare grpc.aio server (subprocess mode) ---------------------------------------------


async def _bare_server(port: int, cert: Path, key: Path) -> None:
    ack = pb.Ack(seq=1, seq_last=1, code=pb.OK).SerializeToString()

    async def stream(requests, context):  # type: ignore[no-untyped-def]
        async for _ in requests:
            yield ack

    server = aio.server(options=[("grpc.max_receive_message_length", 8 << 20)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "telemetry.v1.IngestService", {"Stream": grpc.stream_stream_rpc_method_handler(stream)}
            ),
        )
    )
    creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    server.add_secure_port(f"127.0.0.1:{port}", creds)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


# ---- client -------------------------------------------------------------------------------


async def _drive(
    port: int, certs: DevCerts, payloads: dict[str, list[bytes]], timeout_s: float
) -> tuple[float, int]:
    """Stream every site's payloads on its own stream; return (seconds, acked batches)."""
    creds = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
    acked = 0

    async def one(ch: aio.Channel, site: str, items: list[bytes]) -> None:
        nonlocal acked
        call = ch.stream_stream(METHOD, request_serializer=None, response_deserializer=pb.Ack.FromString)(
            metadata=(("authorization", f"Bearer {token_for(site)}"),)
        )

        async def writer() -> None:
            for p in items:
                await call.write(p)
            await call.done_writing()

        w = asyncio.create_task(writer())
        while (ack := await call.read()) is not aio.EOF:
            if ack.code != pb.OK:
                raise RuntimeError(f"nack: {pb.Code.Name(ack.code)} {ack.reason}")
            acked += max(ack.seq, ack.seq_last) - ack.seq + 1
        await w

    async with aio.secure_channel(
        f"127.0.0.1:{port}",
        creds,
        options=[("grpc.max_send_message_length", 8 << 20)],
        compression=GRPC_COMPRESSION[0],
    ) as ch:
        await ch.channel_ready()
        t0 = time.perf_counter()
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(one(ch, s, p) for s, p in payloads.items()))
        return time.perf_counter() - t0, acked


def _payloads(n_batches: int, series: int, points: int) -> dict[str, list[bytes]]:
    sites = list(SITES)[:STREAMS]
    per = n_batches // len(sites)
    base = time.time_ns() - 120 * 10**9
    out = {}
    for site in sites:
        proto = make_batch(site, 1, series=series, points=points, t0_ns=base)
        items = []
        for seq in range(1, per + 1):
            proto.seq = seq
            items.append(proto.SerializeToString())
        out[site] = items
    return out


def _wait_line(proc: subprocess.Popen[str], needle: str, timeout_s: float = 30) -> str:
    end = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if needle in line:
            return line
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
    raise RuntimeError(f"server did not print {needle!r}")


async def bench_bare_grpc(certs: DevCerts, payloads: dict[str, list[bytes]]) -> float:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--bare-server", str(port), str(certs.server_cert), str(certs.server_key)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_line(proc, "ready")
        secs, acked = await _drive(port, certs, payloads, 300)
        return acked / secs
    finally:
        proc.terminate()
        proc.wait(10)


async def bench_bare_produce(
    bootstrap: str, topic: str, payloads: dict[str, list[bytes]], compression: str | None
) -> float:
    p = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=2,
        max_batch_size=1 << 20,
        max_request_size=8 << 20,
        compression_type=compression,
    )
    await p.start()
    try:
        t0 = time.perf_counter()
        n = 0

        async def one(site: str, items: list[bytes]) -> None:
            nonlocal n
            futs = []
            for seq, value in enumerate(items, 1):
                futs.append(
                    await p.send(
                        topic, value=value, key=site.encode(), headers=record_headers(f"agent-{site}", seq)
                    )
                )
                if len(futs) >= 64:
                    await asyncio.gather(*futs)
                    n += len(futs)
                    futs = []
            await asyncio.gather(*futs)
            n += len(futs)

        await asyncio.gather(*(one(s, i) for s, i in payloads.items()))
        return n / (time.perf_counter() - t0)
    finally:
        await p.stop()


async def _one_at_a_time(port: int, certs: DevCerts, payloads: dict[str, list[bytes]]) -> int:
    """Each site writes its next batch only after the previous one was acked (window 1)."""
    creds = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
    acked = 0
    async with aio.secure_channel(f"127.0.0.1:{port}", creds, compression=GRPC_COMPRESSION[0]) as ch:

        async def one(site: str, items: list[bytes]) -> None:
            nonlocal acked
            call = ch.stream_stream(METHOD, request_serializer=None, response_deserializer=pb.Ack.FromString)(
                metadata=(("authorization", f"Bearer {token_for(site)}"),)
            )
            for p in items:
                await call.write(p)
                ack = await call.read()
                if ack is aio.EOF or ack.code != pb.OK:
                    raise RuntimeError(f"reference site: {ack}")
                acked += 1
            await call.done_writing()

        async with asyncio.timeout(300):
            await asyncio.gather(*(one(s, p) for s, p in payloads.items()))
    return acked


async def bench_ingest(
    certs: DevCerts,
    bootstrap: str,
    topic: str,
    work: Path,
    runs: list[tuple[str, dict[str, list[bytes]]]],
    compression: str | None,
    site50: tuple[str, dict[str, list[bytes]]] | None = None,
) -> dict[str, float]:
    port = free_port()
    cfg = work / "ingest.yaml"
    (work / "tokens.yaml").write_text(yaml.safe_dump(TOKENS))
    cfg.write_text(
        yaml.safe_dump(
            {
                "log_level": "WARNING",
                "kafka": {"bootstrap_servers": bootstrap, "topic": topic, "compression_type": compression},
                "ingest": {
                    "listen": f"127.0.0.1:{port}",
                    "metrics_listen": "",
                    "tls_cert": str(certs.server_cert),
                    "tls_key": str(certs.server_key),
                    "tokens_file": str(work / "tokens.yaml"),
                    "max_past_age_s": 86400,
                },
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "--config", str(cfg), "ingest"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    out = {}
    try:
        _wait_line(proc, "ingest ready")
        for name, payloads in runs:
            secs, acked = await _drive(port, certs, payloads, 600)
            expected = sum(len(v) for v in payloads.values())
            if acked != expected:
                raise RuntimeError(f"{name}: {acked} of {expected} acked")
            out[name] = acked / secs
        if site50 is not None:  # the reference site, into a topic of its own
            cfg.write_text(cfg.read_text().replace(f"topic: {topic}", f"topic: {site50[0]}"))
            proc.terminate()
            proc.wait(15)
            proc = subprocess.Popen(
                [sys.executable, "-m", "collector", "--config", str(cfg), "ingest"],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            _wait_line(proc, "ingest ready")
            out["site50_acked"] = await _one_at_a_time(port, certs, site50[1])
    finally:
        proc.terminate()
        proc.wait(15)
    return out


def _site50(batches_per_site: int) -> dict[str, list[bytes]]:
    t0 = time.time_ns() - 3600 * 10**9
    return {
        site: [link_site_batch(site, seq, t0 + seq * 10 * 10**9) for seq in range(1, batches_per_site + 1)]
        for site in list(SITES)[:STREAMS]
    }


async def main(quick: bool, rounds: int, compression: str | None) -> None:
    n100, n1000 = (2000, 800) if quick else (12_000, 4000)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    certs = make_dev_certs(work / "tls")
    p100 = _payloads(n100, series=10, points=10)
    p1000 = _payloads(n1000, series=100, points=10)
    size100 = len(next(iter(p100.values()))[0])
    size1000 = len(next(iter(p1000.values()))[0])
    site50 = _site50(25 if quick else 100)
    site50_values = sum(len(v) for v in site50.values()) * 100
    wire = sum(len(b) for v in site50.values() for b in v) / site50_values
    wire_gz = sum(len(gzip.compress(b, 6)) for v in site50.values() for b in v) / site50_values
    print(
        f"payloads: 100-sample batch {size100} B, 1000-sample batch {size1000} B, "
        f"{STREAMS} streams, cpus={os.cpu_count()}, {rounds} round(s), medians reported, "
        f"kafka compression {compression or 'none'}, grpc compression "
        f"{GRPC_COMPRESSION[0].name}"
    )
    grpc_r: list[float] = []
    produce_r: list[float] = []
    i100_r: list[float] = []
    i1000_r: list[float] = []
    stored = None
    async with EmbeddedBroker(
        topics=(
            TopicSpec("bench-bare", 4, 3_600_000),
            TopicSpec("bench-ingest", 4, 3_600_000),
            TopicSpec("bench-site50", 4, 3_600_000),
        )
    ) as broker:
        # Rounds alternate ceiling and subject so a noisy neighbour hits both alike.
        for r in range(rounds):
            grpc_r.append(await bench_bare_grpc(certs, p100))
            produce_r.append(await bench_bare_produce(broker.bootstrap, "bench-bare", p1000, compression))
            rates = await bench_ingest(
                certs,
                broker.bootstrap,
                "bench-ingest",
                work,
                [("b100", p100), ("b1000", p1000)],
                compression,
                ("bench-site50", site50) if r == 0 else None,
            )
            i100_r.append(rates["b100"])
            i1000_r.append(rates["b1000"])
            print(
                f"round {r + 1}: bare grpc {grpc_r[-1]:,.0f} msgs/s, bare produce "
                f"{produce_r[-1]:,.0f} records/s, ingest {i100_r[-1]:,.0f} b/s (100), "
                f"{i1000_r[-1]:,.0f} b/s (1000)",
                flush=True,
            )
        stored = await stored_batches(broker.bootstrap, "bench-site50")
    if stored.records != site50_values // 100:
        raise RuntimeError(f"reference site: {stored.records} records stored, {site50_values // 100} sent")
    kafka_bpv = stored.bytes / site50_values
    bare_grpc, bare_produce = statistics.median(grpc_r), statistics.median(produce_r)
    i100, i1000 = statistics.median(i100_r), statistics.median(i1000_r)
    print(f"bare grpc.aio:            {bare_grpc:12,.0f} msgs/s (100-sample-sized messages)")
    print(
        f"bare aiokafka produce:    {bare_produce:12,.0f} records/s "
        f"= {bare_produce * 1000:,.0f} samples/s (1000-sample records, acks=all)"
    )
    print(f"ingest, 100-sample:       {i100:12,.0f} batches/s = {i100 * 100:,.0f} samples/s")
    print(f"ingest, 1000-sample:      {i1000:12,.0f} batches/s = {i1000 * 1000:,.0f} samples/s")
    print(
        f"reference site (50 links x rx/tx octets, 1 sample/series/batch): "
        f"{stored.records} batches of {site50_values // stored.records} values in "
        f"{stored.batches} record batches ({dict(stored.codecs)}); Kafka {kafka_bpv:.1f} B/value, "
        f"wire {wire:.1f} B/value ({wire_gz:.1f} with gRPC gzip)"
    )
    print(
        "targets: >= 2,000,000 samples/s (1000-sample), >= 0.6 of bare grpc (100-sample), "
        "<= 16 Kafka bytes per counter value (reference site)"
    )
    print(
        f"RESULT ingest_samples_per_s={i1000 * 1000:.0f} vs_bare_grpc_100={i100 / bare_grpc:.3f} "
        f"vs_bare_produce={i1000 / bare_produce:.3f} bytes_per_value={kafka_bpv:.1f} "
        f"wire_bytes_per_value={wire:.1f} wire_gzip_bytes_per_value={wire_gz:.1f}"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--bare-server":
        asyncio.run(_bare_server(int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])))
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized run (seconds, one round)")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 1 quick, 3 full)")
    ap.add_argument(
        "--kafka-compression",
        default=KafkaSettings().compression_type or "none",
        choices=["none", "gzip", "snappy", "lz4", "zstd"],
        help="producer compression (default: kafka.compression_type's default)",
    )
    ap.add_argument(
        "--grpc-compression",
        default="none",
        choices=["none", "gzip"],
        help="gRPC message compression of the clients (agent.ingest.compression)",
    )
    a = ap.parse_args()
    if a.grpc_compression == "gzip":
        GRPC_COMPRESSION[0] = grpc.Compression.Gzip
    comp = None if a.kafka_compression == "none" else a.kafka_compression
    asyncio.run(main(a.quick, a.rounds or (1 if a.quick else 3), comp))
