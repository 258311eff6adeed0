"""Aggregator benchmark: throughput against a bare Kafka consumer, state size, /metrics render.

For each batch size (`--samples-per-batch`, default both 100 and 1000) loads the same number
of link counter samples of a synthetic fleet into an embedded Tansu broker, then measures in
the same run:
  (a) a bare aiokafka consumer reading the same records (the ceiling),
  (b) consume + decode only (parse, packed columns -> NumPy),
  (c) the full Aggregator service (decode, dedup, exact counter math, 3 windows, checkpoints),
and renders /metrics for ~100k series: vectorised Polars rendering against a plain
prometheus-client `Gauge.labels().set()` + `generate_latest` exposition of the same series
(and a custom Collector yielding GaugeMetricFamily, for reference).

    .venv/bin/python bench/aggregate.py [--samples 2000000] [--samples-per-batch 100 1000] [--rounds 5]
        [--compression none zstd]

A 100-sample batch is what a real site agent sends per interval: 50 links x 2 octet counters
(one timestamp); a 1000-sample batch is ten such ticks. Figures are ratios to ceilings
measured in the same run; the last line is
RESULT aggregate_samples_per_s=<1000-sample, per core> vs_decode_1000=<ratio>
vs_decode_100=<ratio> values_per_cpu_s_100=<n> state_bytes_per_series=<n> metrics_speedup=<ratio>

Records are written as the ingest writes them (its producer settings and record headers).
RESULT is measured on uncompressed record batches (the workload the targets were set on); an
`ALSO compression=zstd` line before it gives the same figures with the ingest's default zstd
batches, where consuming is cheaper (the CPU figures rise, the (c)/(b) ratios fall).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily

from collector import kafka_crc, wire
from collector.aggregate.decode import Decoder, check, poll_columns
from collector.aggregate.heap import retain_freed_heap
from collector.aggregate.outputs import FAMILIES, build_frames
from collector.aggregate.service import Aggregator
from collector.aggregate.state import GENERAL_RUN, PartitionState
from collector.broker import EmbeddedBroker, TopicSpec
from collector.config import load_settings
from collector.exposition.render import FamilyText, render
from collector.kafka import producer_kwargs, record_headers
from collector.proto.telemetry.v1 import telemetry_pb2 as pb

NS = 1_000_000_000
T0 = 1_764_000_000 * NS


def site_header(site: int, n_links: int) -> tuple[pb.Batch, int, int]:
    """A site's series table: per link in/out octets and in packets (64-bit counters), speed."""
    country = "JP" if site % 2 == 0 else "US"
    b = pb.Batch(
        agent_id=f"agent-{site}",
        boot_id="boot-1",
        site=pb.Site(
            site_id=f"{country.lower()}-site-{site:03d}",
            country=country,
            region="Kanto" if country == "JP" else "us-east",
            timezone="UTC",
        ),
    )
    n_counters = 0
    for i in range(n_links):
        for m in ("link_in_octets", "link_out_octets", "link_in_packets"):
            b.series.append(
                pb.Series(
                    metric=m,
                    kind=pb.COUNTER,
                    unit="bytes",
                    counter_bits=64,
                    labels=[
                        pb.Label(name="link", value=f"et-0/0/{i}"),
                        pb.Label(name="media", value="optical"),
                    ],
                )
            )
            n_counters += 1
    for i in range(n_links):
        b.series.append(
            pb.Series(
                metric="link_speed_bytes",
                kind=pb.GAUGE,
                unit="bytes_per_second",
                labels=[pb.Label(name="link", value=f"et-0/0/{i}"), pb.Label(name="media", value="optical")],
            )
        )
    return b, n_counters, n_links


def link_table(site: int, n_links: int) -> pb.Batch:
    """A site agent's series table: per link in/out octets (64-bit counters)."""
    country = "JP" if site % 2 == 0 else "US"
    b = pb.Batch(
        agent_id=f"agent-{site}",
        boot_id="boot-1",
        site=pb.Site(
            site_id=f"{country.lower()}-site-{site:03d}",
            country=country,
            region="Kanto" if country == "JP" else "us-east",
            timezone="UTC",
        ),
    )
    for i in range(n_links):
        for m in ("link_in_octets", "link_out_octets"):
            b.series.append(
                pb.Series(
                    metric=m,
                    kind=pb.COUNTER,
                    unit="bytes",
                    counter_bits=64,
                    labels=[
                        pb.Label(name="link", value=f"et-0/0/{i}"),
                        pb.Label(name="media", value="optical"),
                    ],
                )
            )
    return b


LINKS_PER_SITE = 50  # 100 counter series per site: one tick of a site = one 100-sample batch


def make_records(
    n_batches: int, n_sites: int, samples_per_batch: int, interval_s: int = 10
) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(key, value, headers) records, round-robin over sites (headers as the ingest writes
    them); each batch holds samples_per_batch / 100
    consecutive ticks of its site's 100 counters (402 Tb/s links, exact uint64)."""
    nc = 2 * LINKS_PER_SITE
    steps = samples_per_batch // nc
    assert steps * nc == samples_per_batch, f"samples per batch must be a multiple of {nc}"
    headers = [link_table(s, LINKS_PER_SITE) for s in range(n_sites)]
    values = [np.arange(nc, dtype=np.uint64) * np.uint64(10**12) for _ in range(n_sites)]
    rate = np.uint64(50_250_000_000_000 * interval_s)  # 402 Tb/s in bytes per interval
    c_idx = np.tile(np.arange(nc, dtype=np.uint32), steps)
    inc = np.repeat(np.arange(1, steps + 1, dtype=np.uint64), nc).reshape(steps, nc) * rate
    out = []
    for b in range(n_batches):
        s = b % n_sites
        seq = b // n_sites + 1
        head = headers[s]
        head.seq = seq
        head.created_unix_nano = T0
        base = head.SerializeToString()
        t0 = T0 + (seq - 1) * steps * interval_s * NS
        c_t = np.repeat(t0 + np.arange(steps, dtype=np.int64) * interval_s * NS, nc)
        c_v = (values[s][None, :] + inc).ravel()
        values[s] = values[s] + rate * np.uint64(steps)
        cc = wire.encode_columns(c_idx, c_t, c_v, gauge=False)
        value = base + wire.BATCH.counters.len_delimited(cc)
        out.append((head.site.site_id.encode(), value, record_headers(head.agent_id, seq)))
    return out


async def load(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]], compression: str
) -> None:
    """Write the records as the ingest writes them: its producer settings (compression,
    linger, batch size; `compression` overrides the setting, "none" for none) and its
    record headers (schema, agent_id, seq)."""
    kafka = load_settings(kafka={"compression_type": None if compression == "none" else compression}).kafka
    p = AIOKafkaProducer(**producer_kwargs(kafka, bootstrap))
    await p.start()
    try:
        futs = []
        for k, v, h in records:
            futs.append(await p.send(topic, v, key=k, headers=h))
        await asyncio.gather(*futs)
    finally:
        await p.stop()


async def bare(bootstrap: str, topic: str, n: int, decode_too: bool) -> tuple[float, float, int]:
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await c.start()
    try:
        parts = c.partitions_for_topic(topic) or await c._client._wait_on_metadata(topic) or set()
        parts = c.partitions_for_topic(topic) or set()
        c.assign([TopicPartition(topic, p) for p in parts])
        got = samples = 0
        dec = Decoder()
        w0, c0 = time.perf_counter(), time.process_time()
        while got < n:
            batch = await c.getmany(timeout_ms=1000, max_records=2000)
            for recs in batch.values():
                got += len(recs)
                if decode_too:
                    samples += decoded(dec, [(r.offset, r.value, r.headers) for r in recs])
        return time.perf_counter() - w0, time.process_time() - c0, samples
    finally:
        await c.stop()


def decoded(dec: Decoder, rows: list[tuple[int, bytes, list[tuple[str, bytes]]]]) -> int:
    """The aggregator's own decoding of a poll (PartitionState.add_prefix's split): records
    laid out like their agent's previous one without a Rec each (read_known), runs of the
    others record by record (read); per-sample checks per poll. Returns the samples."""
    samples = pos = 0
    while pos < len(rows):
        got = dec.read_known(rows[pos:] if pos else rows)
        if got is not None:
            assert got.first_bad() < 0
            samples += len(got.counters) + len(got.gauges)
            pos += len(got.layouts)
            continue
        rs = [dec.read(v, h) for _, v, h in rows[pos : pos + GENERAL_RUN]]
        cc, gc = poll_columns(rs)
        assert not check(rs, cc, gc)
        samples += len(cc) + len(gc)
        pos += len(rs)
    return samples


class TimedAggregator(Aggregator):
    """The aggregator, noting when it was first assigned a partition and when it had processed
    the last record: the timed stage (c) runs from the first (restore, seek, every record) to
    the end of the poll that brought the last one (its close included). A bench loop
    noticing the first state a few ms late could miss a poll that held every record, and one
    noticing the end would add up to its polling interval (5 ms, 1-2 % of a 0.3 s stage)."""

    started: tuple[float, float, float] | None = None  # wall, CPU, render CPU at the time
    finished: tuple[float, float, float] | None = None  # the same, after the last record
    records_due = 0  # records of the stage: finished is noted once this many are processed

    async def _adopt(self, tp: TopicPartition) -> None:
        if self.started is None:
            self.started = (time.perf_counter(), time.process_time(), self.render_cpu_s)
        await super()._adopt(tp)

    def _process(self, batch: dict[TopicPartition, list]) -> tuple[list, dict[int, int]]:
        out = super()._process(batch)
        if self.finished is None and sum(st.records for st in self.states.values()) >= self.records_due:
            self.finished = (time.perf_counter(), time.process_time(), self.render_cpu_s)
        return out


async def full(
    bootstrap: str, topic: str, n_records: int, n_samples: int, scrape_every_s: float = 2.0, run: int = 0
) -> dict[str, float]:
    # a group and state topic of its own per run: every run reads the whole topic from scratch
    settings = load_settings(
        kafka={"topic": topic, "dead_letter_topic": topic + ".dlq"},
        aggregate={
            "metrics_listen": "",
            "group_id": f"bench-{topic}-{run}",
            "state_topic": f"{topic}.state{run}",
            "checkpoint_interval_s": 5.0,
            "max_poll_records": 2000,
        },
    )
    agg = TimedAggregator(settings, bootstrap=bootstrap, registry=CollectorRegistry())
    agg.records_due = n_records
    await agg.start()
    scrapes = 0
    scrape_s = 0.0
    last_body = b""
    try:
        deadline = time.monotonic() + 600
        next_scrape = time.monotonic() + 0.5  # the first once windows have closed, then every 2 s
        while time.monotonic() < deadline:
            if agg.finished is not None:
                break
            if scrape_every_s and time.monotonic() >= next_scrape:
                # a Prometheus scraping while the aggregator ingests (same process, same CPU)
                t = time.perf_counter()
                last_body = await agg.render_metrics()
                scrape_s += time.perf_counter() - t
                scrapes += 1
                next_scrape = time.monotonic() + scrape_every_s
            await asyncio.sleep(0.005)
        assert agg.started is not None
        assert agg.finished is not None
        (w0, c0, r0), (w1, c1, r1) = agg.started, agg.finished
        wall, cpu = w1 - w0, c1 - c0
        accepted = sum(st.samples for st in agg.states.values())
        series = sum(st.live_series() for st in agg.states.values())
        state = sum(st.state_bytes() for st in agg.states.values())
        buffered = sum(st.buffered_bytes() for st in agg.states.values())
        renders = agg.metrics.render_seconds.collect()[0].samples
        r_count = next(x.value for x in renders if x.name.endswith("_count"))
        r_sum = next(x.value for x in renders if x.name.endswith("_sum"))
        lines = sum(1 for ln in last_body.splitlines() if ln and not ln.startswith(b"#"))
        return {
            "wall": wall,
            "cpu": cpu,
            "accepted": accepted,
            "series": series,
            "state": state,
            "buffered": buffered,
            "scrapes": scrapes,
            "renders": r_count,
            "scrape_ms": 1000 * scrape_s / max(1, scrapes),
            "render_ms": 1000 * r_sum / max(1, r_count),
            "scrape_series": lines,
            "render_cpu": r1 - r0,
        }
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
    st.snapshot()  # a committed checkpoint: the corrected totals are published too
    st.publish_totals()
    view = st.view()
    t0 = time.perf_counter()
    body = render(fams, build_frames([view]))
    vec = time.perf_counter() - t0
    stamped = render(fams, build_frames([view], timestamps=True, total_timestamps=True))
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
    site_end = len(frames.get("collector_site_window_end_timestamp_seconds", ()))
    return {
        "lines": lines,
        "vectorised": vec,
        "gauge": gauge,
        "custom": custom,
        "bytes": len(body),
        "stamped_bytes": len(stamped),
        "site_end_series": site_end,
    }


async def measure(bootstrap: str, topic: str, spb: int, n_batches: int, rounds: int) -> dict[str, float]:
    """`rounds` rounds of (a), (b), (c) over the records of `topic` (n_batches of spb samples
    each); the medians over the rounds of each round's own ratios (each a function of one
    round, whose stages ran back to back: the shared machine drifts less within a round)."""
    got = [await measure_round(bootstrap, topic, spb, n_batches, i) for i in range(rounds)]
    med = {k: statistics.median(r[k] for r in got) for k in got[0]}
    if rounds > 1:
        ratios = ", ".join(f"{r['vs_decode']:.2f}" for r in got)
        cpus = ", ".join(f"{r['per_cpu'] / 1e6:.2f} M" for r in got)
        print(
            f"=== {spb}-sample batches, median of {rounds} rounds: (c)/(b) {med['vs_decode']:.2f} "
            f"(rounds: {ratios}), {med['per_cpu']:,.0f} counter values per CPU-second (rounds: {cpus})"
        )
    return med


async def measure_round(bootstrap: str, topic: str, spb: int, n_batches: int, run: int) -> dict[str, float]:
    """(a), (b), (c) once, back to back."""
    n_samples = n_batches * spb
    a_wall, a_cpu, _ = await bare(bootstrap, topic, n_batches, decode_too=False)
    b_wall, b_cpu, b_samples = await bare(bootstrap, topic, n_batches, decode_too=True)
    assert b_samples == n_samples
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c = await full(bootstrap, topic, n_batches, n_samples, run=run)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    a_rate, b_rate, c_rate = n_samples / a_wall, n_samples / b_wall, n_samples / c["wall"]
    print(f"--- {n_batches:,} batches x {spb} samples ({n_samples:,} counter values), round {run + 1}")
    print(f"(a) bare consumer     : {a_rate:>12,.0f} samples/s wall ({a_wall:.2f}s, cpu {a_cpu:.2f}s)")
    print(
        f"(b) consume + decode  : {b_rate:>12,.0f} samples/s wall ({b_wall:.2f}s, cpu {b_cpu:.2f}s)"
        f"  = {b_rate / a_rate:.2f} x (a)"
    )
    print(
        f"(c) full aggregator   : {c_rate:>12,.0f} samples/s wall ({c['wall']:.2f}s, cpu {c['cpu']:.2f}s)"
        f"  = {c_rate / a_rate:.2f} x (a), {c_rate / b_rate:.2f} x (b)"
    )
    ingest_cpu = c["cpu"] - c.get("render_cpu", 0.0)
    print(
        f"    {n_batches / c['wall']:,.0f} batches/s; per core (cpu time): "
        f"{n_samples / ingest_cpu:,.0f} counter values per CPU-second of ingestion "
        f"({n_samples / c['cpu']:,.0f} with the /metrics renders' {c.get('render_cpu', 0.0):.2f} s)"
    )
    print(
        f"    accepted {int(c['accepted']):,} samples, {int(c['series']):,} active series, "
        f"state {c['state'] / max(1, c['series']):,.0f} B/series (of which "
        f"{c['buffered'] / max(1, c['series']):,.0f} B samples held for the allowed lateness), "
        f"peak RSS {rss1 / 1024:.0f} MB (before (c): {rss0 / 1024:.0f} MB)"
    )
    if c.get("scrapes"):
        print(
            f"    /metrics while ingesting: {int(c['scrapes'])} scrapes, {int(c['renders'])} renders, "
            f"mean {c['scrape_ms']:.1f} ms per scrape, render {c['render_ms']:.1f} ms each "
            f"({1000 * c['render_cpu'] / max(1, c['renders']):.1f} ms CPU) "
            f"({int(c['scrape_series'])} series per body)"
        )
    return {
        "vs_decode": c_rate / b_rate,
        "vs_bare": c_rate / a_rate,
        "per_cpu": n_samples / ingest_cpu,
        "state_per_series": c["state"] / max(1, c["series"]),
    }


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--samples",
        type=int,
        default=2_000_000,
        help="counter values per batch size (the same workload at every size)",
    )
    ap.add_argument(
        "--samples-per-batch",
        type=int,
        nargs="+",
        default=[100, 1000],
        help="batch sizes to measure, each a multiple of 100 (one site tick)",
    )
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument(
        "--compression",
        choices=("none", "zstd", "lz4", "snappy", "gzip"),
        nargs="+",
        default=["none", load_settings().kafka.compression_type or "none"],
        help="record batch compressions of the loaded topic, each measured in turn: RESULT is "
        "the first's (uncompressed by default, the workload the targets were set on), an "
        "`ALSO` line with the same keys each other's (default: also the ingest's "
        "kafka.compression_type, zstd, which makes consuming cheaper)",
    )
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument(
        "--interval-s",
        type=int,
        default=10,
        help="sampling interval of every series (the simulator default is 10 s)",
    )
    ap.add_argument("--series-exposed", type=int, default=100_000)
    ap.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds of (a), (b), (c) per batch size; the RESULT ratios are their medians",
    )
    args = ap.parse_args()

    # the aggregator's own heap setting (Aggregator.start applies it too), for every stage alike
    heap = retain_freed_heap(load_settings().aggregate.heap_retain_mb)
    print("heap: freed memory kept for reuse (aggregate.heap_retain_mb):", "yes" if heap else "no")
    # and its record batch CRC checks (in hardware; Aggregator.start installs them too)
    print(
        "record batch CRCs checked in hardware (collector/kafka_crc.py):",
        "yes" if kafka_crc.install() else "no",
    )
    sizes = sorted(set(args.samples_per_batch))
    compressions = list(dict.fromkeys(args.compression))
    topics = {(c, spb): f"bench.telemetry.{c}.{spb}" for c in compressions for spb in sizes}
    results: dict[tuple[str, int], dict[str, float]] = {}
    async with EmbeddedBroker(
        topics=(
            *(TopicSpec(t, args.partitions, 86_400_000) for t in topics.values()),
            *(TopicSpec(t + ".dlq", 1, 86_400_000) for t in topics.values()),
        )
    ) as broker:
        for c in compressions:
            for spb in sizes:
                n_batches = args.samples // spb
                t = time.perf_counter()
                records = make_records(n_batches, args.sites, spb, args.interval_s)
                print(
                    f"fleet: {n_batches:,} batches x {spb} samples, {args.sites} sites x "
                    f"{2 * LINKS_PER_SITE} counters sampled every {args.interval_s}s, "
                    f"{sum(len(v) for _, v, _ in records) / 1e6:.1f} MB "
                    f"(built in {time.perf_counter() - t:.1f}s), written as the ingest writes them "
                    f"({c} record batches)",
                    flush=True,
                )
                t = time.perf_counter()
                await load(broker.bootstrap, topics[c, spb], records, c)
                print(f"loaded into the broker in {time.perf_counter() - t:.1f}s", flush=True)
                del records
                results[c, spb] = await measure(broker.bootstrap, topics[c, spb], spb, n_batches, args.rounds)
    e = exposition_bench(args.series_exposed)
    speedup = e["gauge"] / e["vectorised"]
    print(
        f"/metrics with {int(e['lines']):,} series ({e['bytes'] / 1e6:.1f} MB): vectorised "
        f"{e['vectorised'] * 1000:.0f} ms, custom Collector {e['custom'] * 1000:.0f} ms, "
        f"Gauge.labels().set() {e['gauge'] * 1000:.0f} ms -> {speedup:.1f}x (target >= 5x)"
    )
    print(
        f"window end: collector_site_window_end_timestamp_seconds adds {int(e['site_end_series'])} series "
        f"({100 * e['site_end_series'] / e['lines']:.2f}% of the body's); window_end_timestamps + "
        f"total_timestamps add no series and {100 * (e['stamped_bytes'] / e['bytes'] - 1):.1f}% bytes"
    )
    print("targets: vs_decode_1000 >= 0.5, vs_decode_100 >= 0.35, values_per_cpu_s_100 >= 2,000,000")

    def figures(c: str) -> str:
        big = results.get((c, 1000), results[c, sizes[-1]])
        small = results.get((c, 100), results[c, sizes[0]])
        return (
            f"aggregate_samples_per_s={big['per_cpu']:.0f} vs_decode_1000={big['vs_decode']:.2f} "
            f"vs_decode_100={small['vs_decode']:.2f} values_per_cpu_s_100={small['per_cpu']:.0f} "
            f"state_bytes_per_series={big['state_per_series']:.0f} metrics_speedup={speedup:.1f}"
        )

    for c in compressions[1:]:
        print(f"ALSO compression={c} {figures(c)}")
    print(f"RESULT {figures(compressions[0])}")  # compression=compressions[0]
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
