"""Capacity check: a large simulated fleet straight into Kafka, through the aggregator.

    python bench/capacity.py [--sites-per-country 500] [--ticks 60] [--partitions 6]

The figures docs/scaling.md builds its capacity model from, measured in one run on this
machine, stage by stage (each stage alone, so one stage's CPU is not billed to another):

  1. the simulator writes `ticks` sampling intervals of the whole fleet into an embedded
     Tansu broker (fast-forward, acks=all): samples, records and bytes per sample;
  2. one aggregator member consumes all of it (every partition): CPU seconds per million
     samples (this process, all threads), the broker's CPU while serving it, state bytes
     per series, and the resident memory it added;
  3. the aggregator's /metrics for that state: exposed samples per site, body bytes and
     render time (median of 3), i.e. what one Prometheus scrape of it costs.

Then the model's prediction for this fleet (from the per-core aggregator rate given with
--model-rate, default the figure of bench/aggregate.py in README.md) is set against the
measured aggregation time. The fleet shape is the simulator's default site (8 links, 12
cells, 2 hosts). Last line:
RESULT sites=<n> series=<n> samples=<n> agg_cpu_s_per_msample=<x> bytes_per_sample=<x>
       exposed_per_site=<n> render_s=<x> state_bytes_per_series=<x> agg_samples_per_s=<x>
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collector.aggregate.service import Aggregator  # noqa: E402
from collector.broker import EmbeddedBroker, TopicSpec  # noqa: E402
from collector.config import load_settings  # noqa: E402
from collector.simulate.fleet import FleetRunner  # noqa: E402


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system + getattr(t, "children_user", 0) + getattr(t, "children_system", 0))


async def run(args: argparse.Namespace) -> dict[str, float]:
    topic = f"capacity-{uuid.uuid4().hex[:6]}"
    me = psutil.Process(os.getpid())
    async with EmbeddedBroker(
        topics=(TopicSpec(topic, args.partitions, 3_600_000), TopicSpec(topic + ".dlq", 1, 3_600_000))
    ) as broker:
        tansu = psutil.Process(broker.pid)
        settings = load_settings(
            None,
            kafka={
                "bootstrap_servers": broker.bootstrap,
                "topic": topic,
                "dead_letter_topic": topic + ".dlq",
                "produce_timeout_s": args.produce_timeout,
            },
            simulate={
                "sites_per_country": args.sites_per_country,
                "acceleration": 0,
                "interval_s": 10.0,
                "silent_after_s": 0,
            },
            aggregate={
                "metrics_listen": "",
                "group_id": topic,
                "state_topic": topic + ".state",
                "max_poll_records": 4000,
                "checkpoint_interval_s": args.checkpoint_interval,
            },
        )
        # 1. produce
        runner = FleetRunner(
            settings,
            bootstrap=broker.bootstrap,
            work_dir=Path("/tmp"),
            duration_s=args.ticks * settings.simulate.interval_s,
            drain_timeout_s=300,
        )
        nbytes = 0
        encode = runner.sim.encode

        def counting(b: object) -> bytes:
            nonlocal nbytes
            v = encode(b)  # type: ignore[arg-type]
            nbytes += len(v)
            return v

        runner.sim.encode = counting  # type: ignore[method-assign]
        sites = runner.sim.model.n_sites
        series_sent = runner.sim.model.nc + runner.sim.model.ng
        c0, b0, t0 = _cpu(me), _cpu(tansu), time.perf_counter()
        await runner.start()
        await runner.wait()
        await runner.stop()
        produce_s = time.perf_counter() - t0
        produce_cpu, produce_broker = _cpu(me) - c0, _cpu(tansu) - b0
        records, samples = runner.records, runner.samples
        print(
            f"fleet: {sites:,} sites, {series_sent:,} series, {args.ticks} ticks of "
            f"{settings.simulate.interval_s:g}s -> {records:,} records, {samples:,} samples, "
            f"{nbytes / samples:.2f} bytes/sample in Kafka"
        )
        print(
            f"produce: {produce_s:.1f}s wall, simulator {produce_cpu:.1f} CPU-s, "
            f"broker {produce_broker:.1f} CPU-s ({samples / produce_s:,.0f} samples/s)"
        )
        del runner
        # 2. aggregate
        rss0 = me.memory_info().rss
        c0, b0, t0 = _cpu(me), _cpu(tansu), time.perf_counter()
        async with Aggregator(settings, bootstrap=broker.bootstrap) as agg:
            deadline = time.monotonic() + args.timeout
            consumed = 0.0
            while time.monotonic() < deadline:
                consumed = sum(
                    s.value
                    for m in agg.registry.collect()
                    if m.name == "collector_aggregate_records"
                    for s in m.samples
                    if s.name.endswith("_total")
                )
                if consumed >= records or agg.failed.is_set():
                    break
                await asyncio.sleep(0.2)
            agg_s = time.perf_counter() - t0
            agg_cpu, agg_broker = _cpu(me) - c0, _cpu(tansu) - b0
            accepted = agg.registry.get_sample_value("collector_aggregate_samples_total") or 0.0
            await asyncio.sleep(args.settle)  # let the last windows close (idle timeout)
            rss = me.memory_info().rss - rss0
            # 3. exposition
            times, body = [], b""
            for _ in range(3):
                agg._render_cache = None  # the cost of a scrape after a window close
                r0 = time.perf_counter()
                body = await agg.render_metrics()
                times.append(time.perf_counter() - r0)
            series = agg.registry.get_sample_value("collector_aggregate_series") or 0.0
            ckpts = agg.registry.get_sample_value("collector_aggregate_checkpoints_total") or 0.0
            ckpt_err = agg.registry.get_sample_value("collector_aggregate_checkpoint_errors_total") or 0.0
            state = agg.registry.get_sample_value("collector_aggregate_state_bytes") or 0.0
        if consumed < records:
            raise SystemExit(f"aggregator consumed {consumed:,.0f} of {records:,} records in {args.timeout}s")
        exposed = sum(1 for ln in body.split(b"\n") if ln and not ln.startswith(b"#"))
        dropped: dict[str, float] = {}
        for m in re.finditer(
            rb'collector_site_samples_dropped_total\{[^}]*reason="(\w+)"[^}]*\} (\S+)', body
        ):
            dropped[m.group(1).decode()] = dropped.get(m.group(1).decode(), 0.0) + float(m.group(2))
        render = statistics.median(times)
        print(
            f"aggregate: {agg_s:.1f}s wall, {agg_cpu:.1f} CPU-s ({agg_cpu / agg_s:.2f} cores), "
            f"{accepted:,.0f} samples accepted = {accepted / agg_cpu:,.0f} samples per CPU-s; "
            f"broker {agg_broker:.1f} CPU-s serving the fetches"
        )
        print(
            "samples not accepted, by reason: "
            + (", ".join(f"{k} {v:,.0f}" for k, v in sorted(dropped.items())) or "none")
            + f" (sent {samples:,}, accepted {accepted:,.0f})"
        )
        print(
            f"checkpoints: {ckpts:,.0f} written, {ckpt_err:,.0f} missed their deadline; a round "
            f"writes the whole state of each changed partition, ~{state / 2**20:,.0f} MiB "
            f"(= {state / args.checkpoint_interval / 2**20:,.1f} MiB/s at every "
            f"{args.checkpoint_interval:g}s)"
        )
        print(
            f"state: {series:,.0f} series, {state / max(series, 1):,.0f} B/series "
            f"(resident memory +{rss / 2**20:,.0f} MiB)"
        )
        print(
            f"/metrics: {exposed:,} samples ({exposed / sites:,.0f} per site), "
            f"{len(body) / 2**20:,.1f} MiB, rendered in {render:.2f}s (median of 3)"
        )
        prom = await prometheus_cost(body, args.prom_scrapes) if args.prom_scrapes else {}
        predicted = accepted / args.model_rate
        print(
            f"model check: {accepted:,.0f} samples at the modelled {args.model_rate:,.0f} "
            f"samples per CPU-s = {predicted:.1f} CPU-s predicted, {agg_cpu:.1f} measured "
            f"(ratio {agg_cpu / predicted:.2f})"
        )
        return {
            "sites": sites,
            "series": series,
            "samples": accepted,
            "agg_cpu_s_per_msample": agg_cpu / accepted * 1e6,
            "bytes_per_sample": nbytes / samples,
            "exposed_per_site": exposed / sites,
            "render_s": render,
            "state_bytes_per_series": state / max(series, 1),
            "agg_samples_per_s": accepted / agg_cpu,
            "broker_cpu_s_per_msample": (produce_broker + agg_broker) / samples * 1e6,
            "sim_cpu_s_per_msample": produce_cpu / samples * 1e6,
            "model_ratio": agg_cpu / predicted,
            "checkpoint_errors": ckpt_err,
            **prom,
        }


async def prometheus_cost(body: bytes, scrapes: int) -> dict[str, float]:
    """A real Prometheus scraping this /metrics body every 10 s: memory per head series and
    CPU per scraped sample, from its own process metrics over `scrapes` scrapes (after the
    first, which creates the series). The head is minutes old: a 2 h head holds more."""
    import shutil
    import subprocess
    import tempfile

    from aiohttp import web

    from collector.broker import free_port

    binary = shutil.which("prometheus")
    if binary is None:
        print("prometheus: not installed, skipped")
        return {}

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    target = runner.addresses[0][1]
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "prometheus.yml"
        cfg.write_text(
            f"global: {{scrape_interval: 10s, scrape_timeout: 9s}}\n"
            f"scrape_configs:\n  - job_name: agg\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target}']\n"
        )
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={d}/data",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            import urllib.request

            def own(name: str) -> float:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    for ln in r.read().decode().splitlines():
                        if ln.startswith(name + " ") or ln.startswith(name + "{"):
                            return float(ln.rsplit(" ", 1)[1])
                return 0.0

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    own("up")
                    break
                except OSError:
                    await asyncio.sleep(0.5)
            await asyncio.sleep(12)  # the first scrape creates the series
            c0 = await asyncio.to_thread(own, "process_cpu_seconds_total")
            await asyncio.sleep(10 * scrapes)
            c1 = await asyncio.to_thread(own, "process_cpu_seconds_total")
            series = await asyncio.to_thread(own, "prometheus_tsdb_head_series")
            rss = await asyncio.to_thread(own, "process_resident_memory_bytes")
        finally:
            proc.terminate()
            proc.wait(30)
    await runner.cleanup()
    scraped = scrapes * sum(1 for ln in body.split(b"\n") if ln and not ln.startswith(b"#"))
    per_sample = (c1 - c0) / max(scraped, 1)
    print(
        f"Prometheus {binary}: {series:,.0f} head series, {rss / 2**20:,.0f} MiB resident "
        f"({rss / max(series, 1):,.0f} B per series), {per_sample * 1e6:.2f} CPU-s per million "
        f"scraped samples ({scraped:,} samples in {scrapes} scrapes, 10 s apart)"
    )
    return {"prom_bytes_per_series": rss / max(series, 1), "prom_cpu_s_per_msample": per_sample * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sites-per-country", type=int, default=500)
    ap.add_argument("--ticks", type=int, default=60)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--timeout", type=float, default=1200.0)
    ap.add_argument(
        "--checkpoint-interval",
        type=float,
        default=5.0,
        help="aggregate.checkpoint_interval_s (default: the product default)",
    )
    ap.add_argument(
        "--produce-timeout",
        type=float,
        default=10.0,
        help="kafka.produce_timeout_s, also the checkpoint deadline",
    )
    ap.add_argument(
        "--prom-scrapes",
        type=int,
        default=0,
        help="also measure a real Prometheus scraping the body this many times",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds to wait after consuming before the /metrics measurement",
    )
    ap.add_argument(
        "--model-rate",
        type=float,
        default=2_300_000.0,
        help="aggregator samples per CPU-second the model assumes",
    )
    ap.add_argument("--quick", action="store_true", help="50 sites per country, 30 ticks")
    args = ap.parse_args()
    if args.quick:
        args.sites_per_country, args.ticks = 50, 30
    r = asyncio.run(run(args))
    print("RESULT " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
