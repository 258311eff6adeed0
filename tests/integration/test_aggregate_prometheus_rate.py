"""A real Prometheus scraping the corrected cumulative counters at an interval that is not a
multiple of the window: rate() equals the generator's truth across 32-bit wraps, a 2^64 wrap
and an aggregator restart, and the counters never reset in Prometheus' eyes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer

from collector.aggregate.service import Aggregator
from collector.broker import EmbeddedBroker, free_port
from collector.config import load_settings
from tests.aggregate_support import HEADERS, NS, SeriesDef, make_batch
from tests.conftest import make_topic
from tests.waiting import eventually

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_S = 7  # not a multiple of the 10 s window
L32 = {"link": "xe-0/0/1", "media": "copper"}
L64 = {"link": "et-0/0/0", "media": "optical"}
SERIES = [
    SeriesDef("link_out_octets", L32, bits=32),
    SeriesDef("link_in_octets", L64, bits=64),
    SeriesDef("link_speed_bytes", L32, kind=2, unit="bytes_per_second"),
    SeriesDef("link_speed_bytes", L64, kind=2, unit="bytes_per_second"),
]
# the generator's truth: constant rates (bytes/s); the 32-bit counter wraps every ~3.6 s, the
# 64-bit one starts 1e15 below 2^64 and wraps after 20 s
RATE32, RATE64 = 1_200_000_000, 50_000_000_000_000
START64 = (1 << 64) - 10**15


def _batch(seq: int, t: int, k: int) -> bytes:
    return make_batch(
        agent="agent-rate",
        seq=seq,
        site="jp-rate-01",
        series=SERIES,
        counters=[(0, t, (k * RATE32) % (1 << 32)), (1, t, (START64 + k * RATE64) % (1 << 64))],
        gauges=[(2, t, 1.25e9), (3, t, 5.025e13)],
    )


def _query(port: int, q: str, at: float | None = None) -> list[dict]:
    args = {"query": q} if at is None else {"query": q, "time": f"{at:.3f}"}
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(args)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["data"]["result"]  # type: ignore[no-any-return]


async def _until(pred: Callable[[], float], limit_s: float, what: str) -> float:
    """The first true value of `pred` (a blocking Prometheus query, run in a thread)."""
    got = 0.0

    async def probe() -> bool:
        nonlocal got
        with contextlib.suppress(OSError, KeyError, ValueError):
            got = await asyncio.to_thread(pred)
        return bool(got)

    assert await eventually(probe, within=limit_s, step=0.5), f"timed out waiting for {what}"
    return got


async def test_prometheus_rate_over_corrected_counters_equals_truth(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = await make_topic(broker, 1)
    port = free_port()
    settings = load_settings(
        kafka={"topic": topic, "dead_letter_topic": topic + ".dlq"},
        aggregate={
            "metrics_listen": f"127.0.0.1:{port}",
            "group_id": f"g-{topic}",
            "state_topic": f"{topic}.state",
            "idle_timeout_s": 3600.0,
            "allowed_lateness_s": 1,
            "checkpoint_interval_s": 0.5,
            "ledger_refresh_s": 0.5,
            "session_timeout_ms": 3000,
            "heartbeat_interval_ms": 500,
        },
    )
    prom_port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        f"global: {{scrape_interval: {SCRAPE_S}s}}\nscrape_configs:\n"
        f"  - job_name: aggregate\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    t0 = (time.time_ns() // (10 * NS)) * 10 * NS  # pane-aligned, event time = wall clock
    sent = 0

    async def feed(upto: int) -> None:
        """One tick per second of wall clock (the data source is real time), up to tick `upto`."""
        nonlocal sent
        while sent < upto:
            t = t0 + sent * NS
            await producer.send_and_wait(topic, _batch(sent + 1, t, sent), key=b"jp-rate-01", headers=HEADERS)
            sent += 1
            # pacing the source to the wall clock (Prometheus scrapes in real time), not a wait
            await asyncio.sleep(max(0.0, (t0 + sent * NS - time.time_ns()) / NS))

    try:
        agg = Aggregator(settings, bootstrap=broker.bootstrap)
        await agg.start()
        try:
            await feed(32)
        finally:
            await agg.stop()  # a restart: the next member resumes from the committed checkpoint
        agg = Aggregator(settings, bootstrap=broker.bootstrap)
        await agg.start()
        try:
            await feed(82)

            # the newest boundary Prometheus has a total for
            def newest() -> float:
                r = _query(prom_port, "timestamp(edge_link_bytes_total)")
                return min(float(x["value"][1]) for x in r) if len(r) == 2 else 0.0

            # Totals are stamped with the pane boundary they are complete up to (every 10 s);
            # at T = t0 + 70 s a 31 s range holds the boundaries T-30 .. T, all after the restart
            # (at t0 + 32 s), and rate() is the exact slope (Prometheus extrapolates the 1 s to the
            # range start linearly).
            at = (t0 + 70 * NS) / NS
            last = await _until(lambda: newest() >= at + 10 and newest(), 60, "totals at t0+80s")
            rates = {}
            for direction, want in (("out", RATE32), ("in", RATE64)):
                q = f'rate(edge_link_bytes_total{{direction="{direction}"}}[31s])'
                (r,) = await asyncio.to_thread(_query, prom_port, q, at)
                rates[direction] = float(r["value"][1])
                assert abs(rates[direction] / want - 1) < 1e-6, (direction, rates[direction], want)
            # across the 2^64 wrap (t0 + 20 s), the 32-bit wraps and the restart: no reset seen
            resets = await asyncio.to_thread(_query, prom_port, "resets(edge_link_bytes_total[5m])", last)
            assert [float(r["value"][1]) for r in resets] == [0.0, 0.0]
            # every scraped total, over the whole run: never lower than the one before, and the
            # gain from the first to the last equals the truth, as exactly as float64 goes
            raw = await asyncio.to_thread(_query, prom_port, "edge_link_bytes_total[5m]", last)
            for r in raw:
                want = RATE32 if r["metric"]["direction"] == "out" else RATE64
                pts = [(float(ts), float(v)) for ts, v in r["values"]]
                assert len(pts) >= 5
                assert all(b[1] >= a[1] for a, b in itertools.pairwise(pts))
                (ts0, v0), (ts1, v1) = pts[0], pts[-1]
                assert abs((v1 - v0) / (want * (ts1 - ts0)) - 1) < 1e-9, (r["metric"], pts)
            print(
                f"Prometheus rate() vs truth (scrape {SCRAPE_S}s, window 10s): "
                f"out {rates['out']:.6g} vs {RATE32:.6g} B/s, in {rates['in']:.6g} vs {RATE64:.6g} B/s"
            )
        finally:
            await agg.stop()
    finally:
        await producer.stop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        log.close()
