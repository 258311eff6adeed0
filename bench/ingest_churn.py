"""Ingest memory under stream churn: does RSS reach a plateau?

    python bench/ingest_churn.py [--quick] [--cycles 20] [--streams 1000]

Starts a Tansu broker and the ingest service (`python -m collector ingest`, its own process,
TLS, one token per site), then runs `--cycles` cycles of: open `--streams` streams (each of
its own site, spread over 10 connections), send one batch on each, wait for every ack, close
them all. After each cycle (and a short settle) it reads the ingest process's RSS.

RSS that stops growing (second-half peak ~ first-half peak, slope ~0) is retention:
allocator arenas and gRPC buffers sized for 1000 concurrent TLS streams, reused by the next
cycle. Growth that continues with cycles is a leak. The service also reports its own count
of open streams and in-flight batches, which must be back to 0 after each cycle.

Measured 2026-12-01 (2 cores, busy): RSS after each of 20 cycles between 90 and 118 MiB,
slope -0.03 MiB/cycle, the same band as the code before the contract hardening (89 to 115
MiB). The service in-process under tracemalloc: Python-traced memory after each cycle stays
at 1.0-1.1 MiB and the GC object count at ~69,000 over 10 cycles, so the retained RSS is
native (gRPC core, TLS, malloc arenas), released in part every few cycles: retention, not a
leak.

Last line: RESULT rss_start_mb=<before the first cycle> rss_first_mb=<after cycle 1>
rss_last_mb=<after the last> rss_max_first_half_mb rss_max_second_half_mb
slope_mb_per_cycle=<least-squares slope over the cycles> plateau_ratio=<second-half peak /
first-half peak; ~1 means a plateau, a leak shows as a ratio well above 1 and a slope>
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import psutil
import yaml
from grpc import aio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collector.agent.batch import BatchBuilder, SiteInfo, counter_def  # noqa: E402
from collector.broker import EmbeddedBroker, TopicSpec, free_port  # noqa: E402
from collector.devcerts import DevCerts, make_dev_certs  # noqa: E402
from collector.proto.telemetry.v1 import telemetry_pb2 as pb  # noqa: E402

METHOD = "/telemetry.v1.IngestService/Stream"
CONNECTIONS = 10


def _site(i: int) -> str:
    return f"jp-churn-{i:04d}"


def _token(i: int) -> str:
    return f"churn-token-{i:04d}-0123456789"


def _batch(i: int, seq: int) -> bytes:
    b = BatchBuilder(f"agent-{_site(i)}", SiteInfo(_site(i), "JP", "Kanto", "Asia/Tokyo"), "boot-1")
    t = time.time_ns() - 10**9
    for link in range(4):
        b.counter(
            counter_def("link_in_octets", {"link": f"et-0/0/{link}"}, unit="bytes"), t, seq * 1000 + link
        )
    return b.build_bytes(seq, time.time_ns())


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


async def _cycle(channels: list[aio.Channel], streams: int, cycle: int, timeout_s: float) -> int:
    acked = 0

    async def one(i: int) -> None:
        nonlocal acked
        ch = channels[i % len(channels)]
        call = ch.stream_stream(METHOD, request_serializer=None, response_deserializer=pb.Ack.FromString)(
            metadata=(("authorization", f"Bearer {_token(i)}"),)
        )
        await call.write(_batch(i, cycle))
        ack = await call.read()
        if ack is aio.EOF or ack.code != pb.OK:
            raise RuntimeError(f"stream {i}: {ack}")
        await call.done_writing()
        if await call.read() is not aio.EOF:
            raise RuntimeError(f"stream {i}: more than one ack")
        acked += 1

    async with asyncio.timeout(timeout_s):
        await asyncio.gather(*(one(i) for i in range(streams)))
    return acked


async def main(cycles: int, streams: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-churn-"))
    certs: DevCerts = make_dev_certs(work / "tls")
    (work / "tokens.yaml").write_text(yaml.safe_dump({_token(i): _site(i) for i in range(streams)}))
    port, mport = free_port(), free_port()
    async with EmbeddedBroker(topics=(TopicSpec("bench-churn", 4, 3_600_000),)) as broker:
        cfg = work / "ingest.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "log_level": "WARNING",
                    "kafka": {"bootstrap_servers": broker.bootstrap, "topic": "bench-churn"},
                    "ingest": {
                        "listen": f"127.0.0.1:{port}",
                        "metrics_listen": f"127.0.0.1:{mport}",
                        "tls_cert": str(certs.server_cert),
                        "tls_key": str(certs.server_key),
                        "tokens_file": str(work / "tokens.yaml"),
                        "max_concurrent_streams": streams + 100,
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
        try:
            assert proc.stdout is not None
            end = time.monotonic() + 60
            while "ingest ready" not in proc.stdout.readline():
                if proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("ingest did not start")
            ps = psutil.Process(proc.pid)
            creds = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
            channels = [aio.secure_channel(f"127.0.0.1:{port}", creds) for _ in range(CONNECTIONS)]
            try:
                for ch in channels:
                    await ch.channel_ready()
                rss = [ps.memory_info().rss / 2**20]
                print(
                    f"cpus={os.cpu_count()} streams/cycle={streams} cycles={cycles} "
                    f"connections={CONNECTIONS}; RSS before: {rss[0]:.1f} MiB",
                    flush=True,
                )
                for c in range(1, cycles + 1):
                    t0 = time.perf_counter()
                    n = await _cycle(channels, streams, c, timeout_s=300)
                    await asyncio.sleep(0.5)  # let the server finish closing the streams
                    rss.append(ps.memory_info().rss / 2**20)
                    open_ = _metric(mport, "collector_ingest_streams_open")
                    inflight = _metric(mport, "collector_ingest_inflight_batches")
                    print(
                        f"cycle {c:2d}: {n} streams acked in {time.perf_counter() - t0:.1f}s, "
                        f"RSS {rss[-1]:.1f} MiB, streams_open={open_:.0f} "
                        f"inflight={inflight:.0f}",
                        flush=True,
                    )
                    if open_ != 0 or inflight != 0:
                        raise RuntimeError("streams or batches left behind after a cycle")
            finally:
                for ch in channels:
                    await ch.close()
        finally:
            proc.terminate()
            proc.wait(15)
    after = rss[1:]  # RSS after each cycle
    half = len(after) // 2
    n = len(after)
    xbar, ybar = (n - 1) / 2, sum(after) / n
    slope = sum((i - xbar) * (y - ybar) for i, y in enumerate(after)) / max(
        sum((i - xbar) ** 2 for i in range(n)), 1e-9
    )
    first_max, second_max = max(after[:half] or after), max(after[half:])
    print(
        f"RSS after each cycle: min {min(after):.1f}, max {max(after):.1f} MiB; first half max "
        f"{first_max:.1f}, second half max {second_max:.1f}; least-squares slope "
        f"{slope:+.2f} MiB/cycle"
    )
    print(
        f"RESULT rss_start_mb={rss[0]:.1f} rss_first_mb={after[0]:.1f} rss_last_mb={after[-1]:.1f} "
        f"rss_max_first_half_mb={first_max:.1f} rss_max_second_half_mb={second_max:.1f} "
        f"slope_mb_per_cycle={slope:.2f} plateau_ratio={second_max / first_max:.3f}"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized: 6 cycles of 300 streams")
    ap.add_argument("--cycles", type=int, default=None)
    ap.add_argument("--streams", type=int, default=None)
    a = ap.parse_args()
    asyncio.run(main(a.cycles or (6 if a.quick else 20), a.streams or (300 if a.quick else 1000)))
