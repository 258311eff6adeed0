"""Test helpers for the aggregator: build batches with the protobuf classes, and compute
ground truth windows independently of the aggregator (plain Python integers)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collector.proto.telemetry.v1 import telemetry_pb2 as pb

if TYPE_CHECKING:
    from collector.config import Settings

NS = 1_000_000_000


@dataclass
class SeriesDef:
    metric: str
    labels: dict[str, str]
    kind: int = pb.COUNTER
    bits: int = 64
    start: int = 0
    scale: float = 0.0
    unit: str = "bytes"


def make_batch(
    *,
    agent: str,
    seq: int,
    site: str,
    country: str = "JP",
    region: str = "Kanto",
    boot: str = "boot-1",
    series: list[SeriesDef],
    counters: list[tuple[int, int, int]] = (),  # type: ignore[assignment]
    gauges: list[tuple[int, int, float]] = (),  # type: ignore[assignment]
) -> bytes:
    b = pb.Batch(
        agent_id=agent,
        seq=seq,
        boot_id=boot,
        created_unix_nano=0,
        site=pb.Site(site_id=site, country=country, region=region, timezone="UTC"),
    )
    for s in series:
        b.series.append(
            pb.Series(
                metric=s.metric,
                kind=s.kind,
                unit=s.unit,
                labels=[pb.Label(name=k, value=v) for k, v in s.labels.items()],
                counter_bits=s.bits if s.kind == pb.COUNTER else 0,
                start_time_unix_nano=s.start,
                scale=s.scale,
            )
        )
    if counters:
        b.counters.series_index.extend(i for i, _, _ in counters)
        b.counters.time_unix_nano.extend(t for _, t, _ in counters)
        b.counters.value.extend(v for _, _, v in counters)
    if gauges:
        b.gauges.series_index.extend(i for i, _, _ in gauges)
        b.gauges.time_unix_nano.extend(t for _, t, _ in gauges)
        b.gauges.value.extend(v for _, _, v in gauges)
    return b.SerializeToString()


@dataclass
class TruthCounter:
    """Reference counter math: the definition, in Python integers, one sample at a time."""

    bits: int = 64
    rate: float = 0.0  # plausible increase per second (the link's speed, or max_counter_rate); 0: no gap rule
    prev: tuple[int, int, object] | None = None  # (t, value, epoch)
    deltas: list[tuple[int, int, int]] = field(default_factory=list)  # (t, delta, dt)
    resets: int = 0
    ambiguous: int = 0

    def add(self, t: int, v: int, epoch: object) -> None:
        mod = 1 << self.bits
        if self.prev is not None:
            pt, pv, pe = self.prev
            if pe != epoch or v >= mod or pv >= mod:
                self.resets += 1
            elif self.rate and (t - pt) * self.rate > mod * NS:
                self.ambiguous += 1  # a wrap could hide in the interval: unknowable
            elif v >= pv:
                self.deltas.append((t, v - pv, t - pt))
            elif (v - pv) % mod < mod // 2 and (not self.rate or (v - pv) % mod * NS <= self.rate * (t - pt)):
                self.deltas.append((t, (v - pv) % mod, t - pt))
            else:
                self.resets += 1
        self.prev = (t, v, epoch)


def window_truth(
    deltas: list[tuple[int, int, int]], window_ns: int, pane_ns: int, ends: list[int]
) -> dict[int, tuple[int, int, int]]:
    """end -> (increase, dt, n) over deltas whose sample time lies in [end - window, end)."""
    out: dict[int, tuple[int, int, int]] = {}
    by_pane: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for t, d, dt in deltas:
        by_pane[t // pane_ns].append((d, dt))
    for end in ends:
        inc = dts = n = 0
        for p in range((end - window_ns) // pane_ns, end // pane_ns):
            for d, dt in by_pane.get(p, ()):
                inc += d
                dts += dt
                n += 1
        if n:
            out[end] = (inc, dts, n)
    return out


LINK0 = {"link": "et-0/0/0", "media": "optical"}
LINK1 = {"link": "xe-0/0/1", "media": "copper"}
FLEET_SERIES = [
    # 402 Tb/s optical link: a 64-bit octet counter starting close enough to 2^64 to wrap
    SeriesDef("link_in_octets", LINK0, bits=64),
    # a 10 GbE link's 32-bit counter moving 1e9 per second wraps every ~4 s; with its speed
    # (1.25e9 B/s) an interval over 3.4 s could hide a wrap (the fleet's gap and late batch)
    SeriesDef("link_out_octets", LINK1, bits=32),
    SeriesDef(
        "node_cpu_seconds_total", {"host": "h1", "cpu": "0", "mode": "idle"}, scale=0.01, unit="seconds"
    ),
    SeriesDef(
        "node_cpu_seconds_total", {"host": "h1", "cpu": "0", "mode": "user"}, scale=0.01, unit="seconds"
    ),
    SeriesDef("RRU.PrbTotDl", {"cell": "c1", "gnb": "g1"}, kind=pb.GAUGE, unit="ratio"),
    SeriesDef("link_speed_bytes", LINK0, kind=pb.GAUGE, unit="bytes_per_second"),
    SeriesDef("link_speed_bytes", LINK1, kind=pb.GAUGE, unit="bytes_per_second"),
]
# plausible rate per counter series of the fleet: its link's speed, else max_counter_rate
FLEET_RATES = [50_250_000_000_000.0, 1.25e9, 1e15, 1e15]
# per second; the 402 Tb/s counter stays just under its link's speed (plus up to 999 of jitter)
_STEP = [50_249_999_999_000, 1_000_000_000, 80, 20]
T0 = 1_764_000_000 * NS  # pane-aligned


def label_key(labels: dict[str, str]) -> str:
    from collector.aggregate.registry import log_labels

    return log_labels(labels)


@dataclass
class Fleet:
    """Batches of a few sites in the order they reach Kafka, with the samples that must count.

    The send order has duplicates (re-sent batches), a gap (a batch never sent), a swap
    (out of order within the lateness), a late batch (far beyond the lateness), and an agent
    restart (new boot_id, counters start over)."""

    records: list[tuple[str, bytes]]
    counted: dict[tuple[str, str, str], list[tuple[int, int | float, object]]]
    bits: dict[tuple[str, str, str], int]
    sent: int = 0
    rates: dict[tuple[str, str, str], float] = field(default_factory=dict)


def make_fleet(
    n_batches: int = 60,
    per_batch_s: int = 5,
    sites: tuple[tuple[str, str, str], ...] = (
        ("jp-tokyo-01", "JP", "Kanto"),
        ("us-nyc-01", "US", "us-east"),
    ),
    swap: tuple[int, ...] = (10,),
    late: tuple[int, ...] = (15,),
    gap: tuple[int, ...] = (20,),
    dup_every: int = 7,
    reset_at: int | None = 25,
    late_delay: int = 12,
) -> Fleet:
    counted: dict[tuple[str, str, str], list[tuple[int, int | float, object]]] = defaultdict(list)
    bits: dict[tuple[str, str, str], int] = {}
    rates: dict[tuple[str, str, str], float] = {}
    records: list[tuple[str, bytes]] = []
    for si, (site, country, region) in enumerate(sites):
        values = [(1 << 64) - 3 * 10**14 + si, 7 + si, 10**6, 10**5]
        boot = "boot-a"
        batches: list[bytes] = []
        included: list[list[tuple[tuple[str, str, str], int, int | float, object]]] = []
        for b in range(n_batches):
            if reset_at is not None and b == reset_at:
                boot = "boot-b"
                values = [5, 5, 5, 5]
            counters, gauges, inc = [], [], []
            for k in range(per_batch_s):
                i = b * per_batch_s + k
                t = T0 + i * NS + 1000 * si
                for c in range(4):
                    mod = 1 << FLEET_SERIES[c].bits
                    values[c] = (values[c] + _STEP[c] + (i * 7919 + c) % 1000) % mod
                    counters.append((c, t, values[c]))
                    key = (site, FLEET_SERIES[c].metric, label_key(FLEET_SERIES[c].labels))
                    bits[key] = FLEET_SERIES[c].bits
                    rates[key] = FLEET_RATES[c]
                    inc.append((key, t, values[c], boot))
                g = [float((i % 7) / 8), 50_250_000_000_000.0, 1.25e9]
                for c, val in enumerate(g, start=4):
                    gauges.append((c, t, val))
                    inc.append(
                        ((site, FLEET_SERIES[c].metric, label_key(FLEET_SERIES[c].labels)), t, val, None)
                    )
            batches.append(
                make_batch(
                    agent=f"agent-{site}",
                    seq=b + 1,
                    site=site,
                    country=country,
                    region=region,
                    boot=boot,
                    series=FLEET_SERIES,
                    counters=counters,
                    gauges=gauges,
                )
            )
            included.append(inc)
        order = [b for b in range(n_batches) if b not in gap]
        for k in swap:
            i = order.index(k)
            order[i], order[i + 1] = order[i + 1], order[i]
        for k in late:
            order.remove(k)
            order.insert(min(len(order), order.index(k + 1) + late_delay), k)
        sends: list[int] = []
        for pos, b in enumerate(order):
            sends.append(b)
            if dup_every and pos % dup_every == dup_every - 1 and pos >= 2:
                sends.append(order[pos - 2])
        for b in range(n_batches):
            if b in gap or b in late:
                continue
            for key, t, val, epoch in included[b]:
                counted[key].append((t, val, epoch))
        site_records = [(site, batches[b]) for b in sends]
        records.append(site_records)  # type: ignore[arg-type]
    # interleave the sites record by record (one partition holds both)
    merged: list[tuple[str, bytes]] = []
    for group in zip(*records, strict=False):
        merged.extend(group)  # type: ignore[arg-type]
    for k in counted:
        counted[k].sort(key=lambda x: x[0])
    return Fleet(merged, dict(counted), bits, rates=rates)


def truth_windows(
    fleet: Fleet, windows_s: tuple[int, ...], pane_s: int, upto_ns: int
) -> dict[tuple[str, str, str, int, int], tuple]:
    """(site, metric, labels, window_s, end_ns) -> exact aggregate the aggregator must publish.

    Counters: (increase, dt_ns, n). Gauges: (sum, count, min, max). Only windows ending at or
    before `upto_ns` and containing at least one countable value."""
    pane = pane_s * NS
    out: dict[tuple[str, str, str, int, int], tuple] = {}
    first = min(s[0][0] for s in fleet.counted.values())
    all_ends = list(range((first // pane + 1) * pane, upto_ns + 1, pane))
    # window j slides by the next shorter window (the shortest by itself)
    slides = {w: windows_s[max(0, j - 1)] * NS for j, w in enumerate(windows_s)}
    for key, samples in fleet.counted.items():
        if key in fleet.bits:
            tc = TruthCounter(bits=fleet.bits[key], rate=fleet.rates.get(key, 1e15))
            for t, v, e in samples:
                tc.add(t, int(v), e)
            for w in windows_s:
                ends = [e for e in all_ends if e % slides[w] == 0]
                for end, val in window_truth(tc.deltas, w * NS, pane, ends).items():
                    out[(*key, w, end)] = val
        else:
            for w in windows_s:
                for end in (e for e in all_ends if e % slides[w] == 0):
                    vals = [v for t, v, _ in samples if end - w * NS <= t < end]
                    if vals:
                        out[(*key, w, end)] = (sum(vals), len(vals), min(vals), max(vals))
    return out


def published(records: list[dict]) -> dict[tuple[str, str, str, int, int], tuple]:
    """window_records() rows -> the same shape as truth_windows(); a key published twice
    with different values fails (closed windows are final)."""
    out: dict[tuple[str, str, str, int, int], tuple] = {}
    for r in records:
        key = (r["site"], r["metric"], r["labels"], r["window_s"], r["end_ns"])
        if r["kind"] == "counter":
            if not r["n"]:
                continue
            val: tuple = (int(r["increase"]), r["dt_ns"], r["n"])
        else:
            val = (r["sum"], r["count"], r["min"], r["max"])
        if key in out:
            assert out[key] == val, f"window {key} published twice with different values"
        out[key] = val
    return out


def catalog_batches(
    site: str,
    country: str,
    region: str,
    *,
    n_batches: int = 8,
    per_batch_s: int = 10,
    nasty: bool = False,
    entities: int = 1,
) -> list[bytes]:
    """Batches carrying every catalogue metric (so every output family has rows)."""
    from collector.catalog import METRICS, Kind

    series: list[SeriesDef] = []
    for e in range(entities):
        for m in METRICS:
            labels = {}
            for n in m.labels:
                if n == "function":
                    continue  # set only on gNB-level objects; these are cells
                val = f"{n}{e}"
                if n == "mode":
                    val = "idle" if e % 2 == 0 else "user"
                if n == "le":  # a distribution's bin bound
                    val = ("-100", "-99.5", "+Inf")[e % 3]
                if nasty and n in ("link", "host", "cell"):
                    val = f'{n} "{e}" \\ back\nslash ü'
                labels[n] = val
            kind = pb.COUNTER if m.kind is Kind.COUNTER else pb.GAUGE
            series.append(
                SeriesDef(
                    m.name,
                    labels,
                    kind=kind,
                    unit=m.unit,
                    scale=0.01 if m.name == "node_cpu_seconds_total" else 0.0,
                )
            )
    out = []
    for b in range(n_batches):
        counters, gauges = [], []
        for k in range(per_batch_s):
            i = b * per_batch_s + k
            t = T0 + i * NS
            for j, s in enumerate(series):
                if s.kind == pb.COUNTER:
                    counters.append((j, t, 1000 + i * (j + 1) * 12345))
                else:
                    gauges.append((j, t, float((i + j) % 10) / 10 + (j % 3)))
        out.append(
            make_batch(
                agent=f"agent-{site}",
                seq=b + 1,
                site=site,
                country=country,
                region=region,
                series=series,
                counters=counters,
                gauges=gauges,
            )
        )
    return out


HEADERS = [("schema", b"telemetry.v1.Batch")]


async def produce(
    bootstrap: str, topic: str, records: list[tuple[str, bytes]], partition_of: dict[str, int]
) -> dict[int, int]:
    """Produce (site, value) records keyed by site to explicit partitions; returns the next
    offset per partition (from the produce acknowledgements, not from high watermarks)."""
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await p.start()
    ends: dict[int, int] = {}
    try:
        futs = [
            await p.send(topic, value, key=site.encode(), partition=partition_of[site], headers=HEADERS)
            for site, value in records
        ]
        for f in futs:
            md = await f
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    finally:
        await p.stop()
    return ends


def final_boundary(fleet: Fleet, lateness_s: int = 10, pane_s: int = 10) -> int:
    last = max(t for s in fleet.counted.values() for t, _, _ in s)
    return ((last - lateness_s * NS) // (pane_s * NS)) * pane_s * NS


async def http_request(
    port: int, line: str = "GET /metrics HTTP/1.1", timeout_s: float = 30
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 request on loopback (Connection: close): status, headers, body."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{line}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout_s)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def aggregator_settings(
    topic: str,
    dlq: str,
    kafka: dict[str, object] | None = None,
    broker: dict[str, object] | None = None,
    **agg: object,
) -> Settings:
    """Settings of an aggregator under test: its own group and state topic, /metrics on a free
    loopback port, a short session and checkpoint interval, no idle closes. `kafka` and
    `broker`: more keys of those sections."""
    from collector.config import load_settings

    sections: dict[str, Any] = {} if broker is None else {"broker": broker}
    return load_settings(
        kafka={"topic": topic, "dead_letter_topic": dlq, **(kafka or {})},
        aggregate={
            "metrics_listen": "127.0.0.1:0",
            "group_id": f"g-{topic}",
            "state_topic": f"{topic}.state",
            "idle_timeout_s": 3600.0,
            "checkpoint_interval_s": 0.5,
            "session_timeout_ms": 3000,
            "heartbeat_interval_ms": 500,
            **agg,
        },
        **sections,
    )
