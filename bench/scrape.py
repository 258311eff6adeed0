"""The agent's /metrics endpoint: scrape time against its ceiling, and what a scrape costs the loop.

    python bench/scrape.py [--quick] [--pipelines 200] [--scrapes 100]

Starts `--pipelines` real AgentPipelines in this process (one registry, as `collector run`
and `collector simulate` host many agent identities; each with a spool holding a few
batches, its sender pointed at a closed loopback port with a long backoff so it stays idle)
and serves their registry the way `collector agent` does (`serve_metrics`, on the event
loop). Then, with the pipelines' loop also running a 1 ms ticker:

  1. ceiling: `generate_latest(registry)` called on the loop, nothing else (the collection
     and text encoding every endpoint has to do);
  2. the endpoint: `--scrapes` sequential `GET /metrics` over loopback HTTP from a client
     thread (a scraper is another process; here a thread, sharing this process's GIL);
     each body is checked to list every pipeline;
  3. the loop's lag during those scrapes: how late the 1 ms ticker woke (what a scrape
     costs the pipelines' own work).

Only ratios to the ceiling measured in the same run mean something on a shared machine.

Last line: RESULT scrape_ms=<median HTTP scrape> collect_ms=<median ceiling>
  scrape_vs_collect=<collect_ms / scrape_ms, 1.0 = no HTTP overhead> loop_lag_p99_ms=<p99
  ticker lateness while scraping> loop_lag_max_ms=<max> pipelines=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collector.agent.batch import SiteInfo  # noqa: E402
from collector.agent.pipeline import AgentPipeline  # noqa: E402
from collector.broker import free_port  # noqa: E402
from collector.exposition.http import serve_metrics  # noqa: E402
from tests.agent_support import agent_settings, fill  # noqa: E402

DEADLINE_S = 300.0  # the whole run, whatever the arguments


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(max(0.0, time.perf_counter() - t0 - 0.001))


async def run(pipelines: int, scrapes: int, tmp: Path) -> str:
    started = time.monotonic()
    reg = CollectorRegistry()
    closed = f"127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens: senders back off
    pipes = []
    for i in range(pipelines):
        s = agent_settings(tmp / f"a{i}", closed, ingest={"backoff_initial_s": 30.0, "backoff_max_s": 60.0})
        site = SiteInfo(f"jp-site-{i:04d}", "JP", "Kanto", "Asia/Tokyo")
        pipes.append(
            AgentPipeline(
                s,
                agent_id=f"jp-site-{i:04d}-a",
                site=site,
                boot_id="b",
                spool_dir=tmp / f"a{i}",
                registry=reg,
            )
        )
    for p in pipes:
        await p.start()
    try:
        for p in pipes:
            for _ in range(3):
                await p.submit(fill(p.new_builder(), time.time_ns()))
        server = await serve_metrics("agent", "127.0.0.1:0", None, reg)
        try:
            url = f"http://127.0.0.1:{server.bound_port}/metrics"
            generate_latest(reg)  # warm-up
            collect_s: list[float] = []
            for _ in range(scrapes):
                t0 = time.perf_counter()
                body = generate_latest(reg)
                collect_s.append(time.perf_counter() - t0)
                await asyncio.sleep(0)
            assert body.count(b"collector_agent_spool_batches{") == pipelines

            scrape_s: list[float] = []
            bad: list[str] = []

            def client() -> None:
                for _ in range(scrapes):
                    if time.monotonic() - started > DEADLINE_S:
                        return
                    t0 = time.perf_counter()
                    with urllib.request.urlopen(url, timeout=60) as r:
                        text = r.read()
                    scrape_s.append(time.perf_counter() - t0)
                    if text.count(b"collector_agent_spool_batches{") != pipelines:
                        bad.append(
                            f"a scrape listed {text.count(b'collector_agent_spool_batches{')} pipelines"
                        )

            lags: list[float] = []
            stop = asyncio.Event()
            tick = asyncio.create_task(_ticker(lags, stop))
            await asyncio.to_thread(client)
            stop.set()
            await tick
        finally:
            await server.stop()
    finally:
        for p in pipes:
            await p.stop(0)
    assert not bad, bad[:3]
    assert scrape_s, "no scrape finished before the deadline"
    scrape_ms = statistics.median(scrape_s) * 1000
    collect_ms = statistics.median(collect_s) * 1000
    print(
        f"{pipelines} pipelines, {len(scrape_s)} scrapes: HTTP scrape median {scrape_ms:.2f} ms "
        f"(p90 {_pct(scrape_s, 0.9) * 1000:.2f}), generate_latest on the loop median {collect_ms:.2f} ms; "
        f"loop ticker lateness while scraping p50 {_pct(lags, 0.5) * 1000:.2f} ms, "
        f"p99 {_pct(lags, 0.99) * 1000:.2f} ms, max {max(lags) * 1000:.2f} ms ({len(lags)} ticks)"
    )
    return (
        f"RESULT scrape_ms={scrape_ms:.2f} collect_ms={collect_ms:.2f} "
        f"scrape_vs_collect={collect_ms / scrape_ms:.3f} loop_lag_p99_ms={_pct(lags, 0.99) * 1000:.2f} "
        f"loop_lag_max_ms={max(lags) * 1000:.2f} pipelines={pipelines}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized: 50 pipelines, 30 scrapes")
    ap.add_argument("--pipelines", type=int, default=None)
    ap.add_argument("--scrapes", type=int, default=None)
    a = ap.parse_args()
    pipelines = a.pipelines or (50 if a.quick else 200)
    scrapes = a.scrapes or (30 if a.quick else 100)
    with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
        print(asyncio.run(run(pipelines, scrapes, Path(tmp))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
