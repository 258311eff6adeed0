"""Aggregator benchmark: throughput against a bare Kafka consumer, state size, /metrics render.

Loads N batches (1000 samples each) of a synthetic fleet into an embedded Tansu broker, then
measures in the same run:
  (a) a bare aiokafka consumer reading the same records (the ceiling),
  (b) consume + decode only (parse, packed columns -> NumPy),
  (c) the full Aggregator service (decode, dedup, exact counter math, 3 windows, checkpoints),
and renders /metrics for ~100k series: vectorised Polars rendering against a plain
prometheus-client `Gauge.labels().set()` + `generate_latest` exposition of the same series
(and a custom Collector yielding GaugeMetricFamily, for reference).

    .venv/bin/python bench/aggregate.py [--batches 3000] [--series-exposed 100000]

Figures are ratios to ceilings measured in the same run; the last line is
RESULT aggregate_samples_per_s=<n> vs_bare_consumer=<ratio> state_bytes_per_series=<n>
metrics_speedup=<ratio>
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily

from collector.aggregate.decode import decode
from collector.aggregate.outputs import FAMILIES, build_frames
from collector.aggregate.service import Aggregator
from collector.aggregate.state import PartitionState
from collector.broker import EmbeddedBroker, TopicSpec
from collector.config import load_settings
from collector.exposition.render import FamilyText, render
from collector.proto.telemetry.v1 import telemetry_pb2 as pb

NS = 1_000_000_000
T0 = 1_764_000_000 * NS
SAMPLES_PER_BATCH = 1000


def _packed(field: int, arr: np.ndarray) -> bytes:
    raw = arr.tobytes()
    out = bytearray([(field << 3) | 2])
    n = len(raw)
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + raw


def _len_field(field: int, payload: bytes) -> bytes:
    return _packed(field, np.frombuffer(payload, np.uint8))


def site_header(site: int, n_links: int) -> tuple[pb.Batch, int, int]:
    """A site's series table: per link in/out octets and in packets (64-bit counters), speed."""
    country = "JP" if site % 2 == 0 else "US"
    b = pb.Batch(agent_id=f"agent-{site}", boot_id="boot-1",
                 site=pb.Site(site_id=f"{country.lower()}-site-{site:03d}", country=country,
                              region="Kanto" if country == "JP" else "us-east", timezone="UTC"))
    n_counters = 0
    for i in range(n_links):
        for m in ("link_in_octets", "link_out_octets", "link_in_packets"):
            b.series.append(pb.Series(metric=m, kind=pb.COUNTER, unit="bytes", counter_bits=64,
                                      labels=[pb.Label(name="link", value=f"et-0/0/{i}"),
                                              pb.Label(name="media", value="optical")]))
            n_counters += 1
    for i in range(n_links):
        b.series.append(pb.Series(metric="link_speed_bytes", kind=pb.GAUGE, unit="bytes_per_second",
                                  labels=[pb.Label(name="link", value=f"et-0/0/{i}"),
                                          pb.Label(name="media", value="optical")]))
    return b, n_counters, n_links


def make_records(n_batches: int, n_sites: int, n_links: int,
                 interval_s: int = 1) -> list[tuple[bytes, bytes]]:
    """(key, value) records; every batch is exactly SAMPLES_PER_BATCH samples."""
    headers = [site_header(s, n_links) for s in range(n_sites)]
    per_ts = 4 * n_links
    steps = SAMPLES_PER_BATCH // per_ts
    assert steps * per_ts == SAMPLES_PER_BATCH, "n_links must divide the batch evenly"
    values = [np.arange(3 * n_links, dtype=np.uint64) * np.uint64(10**12) for _ in range(n_sites)]
    rate = np.uint64(50_250_000_000_000)  # 402 Tb/s in bytes/s
    out = []
    for b in range(n_batches):
        s = b % n_sites
        seq = b // n_sites + 1
        head, nc, ng = headers[s]
        head.seq = seq
        head.created_unix_nano = T0
        base = head.SerializeToString()
        t0 = T0 + (seq - 1) * steps * interval_s * NS
        c_idx = np.tile(np.arange(nc, dtype=np.uint32), steps)
        c_t = np.repeat(t0 + np.arange(steps, dtype=np.int64) * interval_s * NS, nc)
        inc = np.repeat(np.arange(1, steps + 1, dtype=np.uint64), nc).reshape(steps, nc) * rate
        c_v = (values[s][None, :] + inc).ravel()
        values[s] = values[s] + rate * np.uint64(steps)
        g_idx = np.tile(np.arange(nc, nc + ng, dtype=np.uint32), steps)
        g_t = np.repeat(t0 + np.arange(steps, dtype=np.int64) * interval_s * NS, ng)
        g_v = np.full(steps * ng, 50_250_000_000_000.0)
        cc = _packed(1, c_idx) + _packed(2, c_t) + _packed(3, c_v)
        gc = _packed(1, g_idx) + _packed(2, g_t) + _packed(3, g_v)
        value = base + _len_field(7, cc) + _len_field(8, gc)
        out.append((head.site.site_id.encode(), value))
    return out


async def load(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                         max_batch_size=4 * 1024 * 1024, max_request_size=16 * 1024 * 1024)
    await p.start()
    try:
        futs = [await p.send(topic, v, key=k, headers=[("schema", b"telemetry.v1.Batch")])
                for k, v in records]
        await asyncio.gather(*futs)
    finally:
        await p.stop()


async def bare(bootstrap: str, topic: str, n: int, decode_too: bool) -> tuple[float, float, int]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                         max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic) or await c._client._wait_on_metadata(topic) or set()
        parts = c.partitions_for_topic(topic) or set()
        c.assign([TopicPartition(topic, p) for p in parts])
        got = samples = 0
        w0, c0 = time.perf_counter(), time.process_time()
        while got < n:
            batch = await c.getmany(timeout_ms=1000, max_records=2000)
            for recs in batch.values():
                got += len(recs)
                if decode_too:
                    for r in recs:
                        d = decode(r.value, dict(r.headers))
                        samples += d.n_samples
        return time.perf_counter() - w0, time.process_time() - c0, samples
    finally:
        await c.stop()


async def full(bootstrap: str, topic: str, n_records: int, n_samples: int) -> dict[str, float]:
    settings = load_settings(kafka={"topic": topic, "dead_letter_topic": topic + ".dlq"},
                             aggregate={"metrics_listen": "", "group_id": f"bench-{topic}",
                                        "state_topic": f"{topic}.state", "checkpoint_interval_s": 5.0,
                                        "max_poll_records": 2000})
    agg = Aggregator(settings, bootstrap=bootstrap, registry=CollectorRegistry())
    await agg.start()
    try:
        w0 = c0 = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = sum(st.records for st in agg.states.values())
            if w0 is None and agg.states:
                w0, c0 = time.perf_counter(), time.process_time()
            if done >= n_records:
                break
            await asyncio.sleep(0.005)
        assert w0 is not None
        assert c0 is not None
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        accepted = sum(st.samples for st in agg.states.values())
        series = sum(st.live_series() for st in agg.states.values())
        state = sum(st.state_bytes() for st in agg.states.values())
        buffered = sum(st.buffered_bytes() for st in agg.states.values())
        return {"wall": wall, "cpu": cpu, "accepted": accepted, "series": series, "state": state,
                "buffered": buffered}
    finally:
        await agg.stop()


def exposition_bench(n_series: int) -> dict[str, float]:
    """~n_series exposed lines from real Polars state vs prometheus-client baselines."""
    n_links = 1000  # per site; each link: in+out throughput + packets x 3 windows = 9 lines
    sites = max(1, -(-n_series // (n_links * 6)))  # 6 lines per link are closed at the end
    st = PartitionState(0, load_settings().aggregate)
    for s in range(sites):
        head, nc, _ = site_header(s, n_links)
        for seq in range(1, 4):
            b = pb.Batch()
            b.CopyFrom(head)
            b.seq = seq
            t = T0 + seq * 15 * NS
            b.counters.series_index.extend(range(nc))
            b.counters.time_unix_nano.extend([t] * nc)
            b.counters.value.extend([seq * 10**9 + i for i in range(nc)])
            st.add(seq, b.SerializeToString())
    st.advance(idle_ns=60 * NS)  # close everything: as if the partition went quiet
    fams = tuple(FamilyText(f.name, f.type, f.help, f.labels) for f in FAMILIES)
    view = st.view()
    t0 = time.perf_counter()
    body = render(fams, build_frames([view]))
    vec = time.perf_counter() - t0
    frames = build_frames([view])
    lines = sum(len(f) for f in frames.values())
    # Baseline: the same series through Gauge.labels().set() + generate_latest.
    reg = CollectorRegistry()
    t0 = time.perf_counter()
    for f in FAMILIES:
        fr = frames.get(f.name)
        if fr is None or f.type != "gauge":
            continue
        g = Gauge(f.name, f.help, list(f.labels), registry=reg)
        for row in fr.iter_rows():
            g.labels(*row[:-1]).set(row[-1])
    generate_latest(reg)
    gauge = time.perf_counter() - t0
    # Reference: a custom Collector (MetricFamily per scrape) through generate_latest.
    reg2 = CollectorRegistry()

    class _C:
        def collect(self):  # type: ignore[no-untyped-def]
            for f in FAMILIES:
                fr = frames.get(f.name)
                if fr is None or f.type != "gauge":
                    continue
                g = GaugeMetricFamily(f.name, f.help, labels=list(f.labels))
                for row in fr.iter_rows():
                    g.add_metric(list(row[:-1]), row[-1])
                yield g

    reg2.register(_C())  # type: ignore[arg-type]
    t0 = time.perf_counter()
    generate_latest(reg2)
    custom = time.perf_counter() - t0
    return {"lines": lines, "vectorised": vec, "gauge": gauge, "custom": custom, "bytes": len(body)}


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=3000)
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument("--links", type=int, default=25, help="links per site (4 series each)")
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--interval-s", type=int, default=10,
                    help="sampling interval of every series (the simulator default is 10 s)")
    ap.add_argument("--series-exposed", type=int, default=100_000)
    args = ap.parse_args()

    t = time.perf_counter()
    records = make_records(args.batches, args.sites, args.links, args.interval_s)
    n_samples = args.batches * SAMPLES_PER_BATCH
    print(f"fleet: {args.batches} batches x {SAMPLES_PER_BATCH} samples, {args.sites} sites x "
          f"{4 * args.links} series sampled every {args.interval_s}s, "
          f"{sum(len(v) for _, v in records) / 1e6:.1f} MB "
          f"(built in {time.perf_counter() - t:.1f}s)", flush=True)
    topic = "bench.telemetry"
    async with EmbeddedBroker(topics=(TopicSpec(topic, args.partitions, 86_400_000),
                                      TopicSpec(topic + ".dlq", 1, 86_400_000))) as broker:
        t = time.perf_counter()
        await load(broker.bootstrap, topic, records)
        print(f"loaded into the broker in {time.perf_counter() - t:.1f}s", flush=True)
        del records
        a_wall, a_cpu, _ = await bare(broker.bootstrap, topic, args.batches, decode_too=False)
        b_wall, b_cpu, b_samples = await bare(broker.bootstrap, topic, args.batches, decode_too=True)
        assert b_samples == n_samples
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        c = await full(broker.bootstrap, topic, args.batches, n_samples)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    a_rate, b_rate, c_rate = n_samples / a_wall, n_samples / b_wall, n_samples / c["wall"]
    c_core = n_samples / c["cpu"]
    print(f"(a) bare consumer     : {a_rate:>12,.0f} samples/s wall ({a_wall:.2f}s, cpu {a_cpu:.2f}s)")
    print(f"(b) consume + decode  : {b_rate:>12,.0f} samples/s wall ({b_wall:.2f}s, cpu {b_cpu:.2f}s)"
          f"  = {b_rate / a_rate:.2f} x (a)")
    print(f"(c) full aggregator   : {c_rate:>12,.0f} samples/s wall ({c['wall']:.2f}s, cpu {c['cpu']:.2f}s)"
          f"  = {c_rate / a_rate:.2f} x (a), {c_rate / b_rate:.2f} x (b)")
    print(f"    per core (cpu time): {c_core:>12,.0f} samples/s   target >= 2,000,000")
    print(f"    accepted {int(c['accepted']):,} samples, {int(c['series']):,} active series, "
          f"state {c['state'] / max(1, c['series']):,.0f} B/series (target <= 1024; of which "
          f"{c['buffered'] / max(1, c['series']):,.0f} B samples held for the allowed lateness), "
          f"peak RSS {rss1 / 1024:.0f} MB (before (c): {rss0 / 1024:.0f} MB)")
    e = exposition_bench(args.series_exposed)
    speedup = e["gauge"] / e["vectorised"]
    print(f"/metrics with {int(e['lines']):,} series ({e['bytes'] / 1e6:.1f} MB): vectorised "
          f"{e['vectorised'] * 1000:.0f} ms, custom Collector {e['custom'] * 1000:.0f} ms, "
          f"Gauge.labels().set() {e['gauge'] * 1000:.0f} ms -> {speedup:.1f}x (target >= 5x)")
    print(f"RESULT aggregate_samples_per_s={c_core:.0f} vs_bare_consumer={c_rate / a_rate:.2f} "
          f"state_bytes_per_series={c['state'] / max(1, c['series']):.0f} metrics_speedup={speedup:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
