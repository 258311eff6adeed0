"""End to end: the simulated fleet through agents -> ingest -> broker -> aggregator -> /metrics,
every stage its own process on this machine, against the stages' own ceilings measured in
the same run.

    python bench/e2e.py [--quick]

1. Ceilings, measured now: bench/ingest.py (bare grpc.aio, bare aiokafka acks=all produce)
   and bench/aggregate.py (bare consumer, consume + decode), each as a subprocess; their
   printed figures are read back.
2. Throughput: Tansu, `collector ingest` (TLS), `collector aggregate` and `--generators`
   (default 3) separate `collector simulate --mode agents --fast-forward` processes, each
   the sites of its countries (JP, US, AE: every site a real agent pipeline with its spool,
   streaming over gRPC), so the load is not bounded by one Python process: sustained
   samples/s = samples the aggregator accepted per wall second over the
   steady part of the run (collector_aggregate_samples_total, scraped). CPU share of each
   process from /proc (psutil) over the same interval.
3. Latency, paced in real time (acceleration 1): for every closed window, the wall time it
   first appears in the aggregator's window log (the same moment it is in the state that
   /metrics renders) minus the window's close time (end + allowed lateness):
   `visible_after_close`; p50/p99 over all windows. Target p99 <= 2 s.

Read the ratios, not the absolute numbers: the machine's cores are shared by the broker,
the ingest, the aggregator, the simulated agents and (in step 1) the benchmark clients.

Last line: RESULT e2e_samples_per_s=<n> p99_visible_after_close_s=<x> e2e_vs_slowest_stage=<ratio>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collector.broker import EmbeddedBroker, TopicSpec, free_port  # noqa: E402
from collector.devcerts import make_dev_certs  # noqa: E402

LATENESS_S = 2.0
WINDOWS = [2, 10]


def ceilings(quick: bool) -> dict[str, float]:
    """samples/s of each stage alone, from the stage benchmarks run now."""
    out: dict[str, float] = {}
    ing = subprocess.run(
        [sys.executable, "bench/ingest.py", "--quick"],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=900,
        check=True,
    ).stdout
    m = re.search(r"bare grpc\.aio:\s+([\d,]+) msgs/s", ing)
    assert m, ing
    out["bare_grpc"] = float(m[1].replace(",", "")) * 100  # 100-sample messages
    m = re.search(r"bare aiokafka produce:.*= ([\d,]+) samples/s", ing)
    assert m, ing
    out["bare_produce"] = float(m[1].replace(",", ""))
    agg = subprocess.run(
        [
            sys.executable,
            "bench/aggregate.py",
            "--samples",
            "200000" if quick else "1000000",
            "--samples-per-batch",
            "100",
        ],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=900,
        check=True,
    ).stdout
    m = re.search(r"\(b\) consume \+ decode\s+:\s+([\d,]+) samples/s", agg)
    assert m, agg
    out["consume_decode"] = float(m[1].replace(",", ""))
    return out


class Proc:
    def __init__(self, name: str, argv: list[str], log: Path, ready: str | None) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.ready = re.compile(ready) if ready else None
        self.p: asyncio.subprocess.Process | None = None
        self.match: re.Match[str] | None = None

    async def start(self) -> Proc:
        with self.log.open("ab") as log:
            self.p = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "collector",
                *self.argv,
                cwd=str(ROOT),
                stderr=log,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        assert self.p.stdout is not None
        if self.ready is None:  # nothing to wait for (the simulator logs to stderr only)
            asyncio.get_running_loop().create_task(self._drain())
            return self
        async with asyncio.timeout(60):
            while True:
                line = (await self.p.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
                if m := self.ready.search(line):
                    self.match = m
                    break
        asyncio.get_running_loop().create_task(self._drain())
        return self

    async def _drain(self) -> None:
        assert self.p is not None
        assert self.p.stdout is not None
        while await self.p.stdout.readline():
            pass

    def cpu(self) -> float:
        assert self.p is not None
        try:
            pr = psutil.Process(self.p.pid)
            t = pr.cpu_times()
            return t.user + t.system
        except psutil.NoSuchProcess:
            return 0.0

    async def stop(self) -> None:
        if self.p is not None and self.p.returncode is None:
            self.p.terminate()
            try:
                await asyncio.wait_for(self.p.wait(), 20)
            except TimeoutError:
                self.p.kill()
                await self.p.wait()


async def scrape_value(port: int, name: str) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    await writer.drain()
    body = (await reader.read()).decode()
    writer.close()
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def shards(countries: tuple[str, ...], generators: int) -> list[tuple[str, ...]]:
    """The fleet's countries split over `generators` simulator processes (one country each at
    most: a process simulates whole countries, so sites and tokens never overlap)."""
    n = max(1, min(generators, len(countries)))
    return [countries[k::n] for k in range(n)]


async def pipeline(
    work: Path,
    *,
    acceleration: float,
    duration_s: float,
    sites: int,
    window_log: Path | None,
    countries: tuple[str, ...] = ("JP", "US"),
    generators: int = 2,
) -> dict[str, object]:
    """One run of the whole pipeline; figures of its steady part. The load comes from
    `generators` separate `collector simulate --mode agents` processes (each its countries'
    sites, every site a real agent pipeline), so one Python process does not bound it."""
    certs = make_dev_certs(work / "tls")
    topic = "e2e"
    async with EmbeddedBroker(
        topics=(TopicSpec(topic, 4, 3_600_000), TopicSpec(topic + ".dlq", 1, 3_600_000))
    ) as broker:
        tokens = work / "tokens.yaml"
        merged: dict[str, str] = {}
        parts = shards(countries, generators)
        for k, cs in enumerate(parts):
            sim_cfg = {
                "simulate": {
                    "sites_per_country": sites,
                    "late_probability": 0.0,
                    "interval_s": 1.0,
                    "countries": list(cs),
                    "duplicate_probability": 0.0,
                    "silent_after_s": 0,
                    "acceleration": acceleration,
                }
            }
            (work / f"sim-{k}.yaml").write_text(yaml.safe_dump(sim_cfg))
            await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "collector",
                    "--config",
                    str(work / f"sim-{k}.yaml"),
                    "simulate",
                    "--write-tokens",
                    str(work / f"tokens-{k}.yaml"),
                ],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            merged.update(yaml.safe_load((work / f"tokens-{k}.yaml").read_text()))
        tokens.write_text(yaml.safe_dump(merged))
        port = free_port()
        (work / "ingest.yaml").write_text(
            yaml.safe_dump(
                {
                    "kafka": {"bootstrap_servers": broker.bootstrap, "topic": topic},
                    "ingest": {
                        "listen": f"127.0.0.1:{port}",
                        "metrics_listen": "127.0.0.1:0",
                        "tls_cert": str(certs.server_cert),
                        "tls_key": str(certs.server_key),
                        "tokens_file": str(tokens),
                    },
                }
            )
        )
        agg_cfg: dict[str, object] = {
            "kafka": {
                "bootstrap_servers": broker.bootstrap,
                "topic": topic,
                "dead_letter_topic": topic + ".dlq",
            },
            "aggregate": {
                "metrics_listen": "127.0.0.1:0",
                "allowed_lateness_s": LATENESS_S,
                "windows_s": WINDOWS,
                "state_topic": topic + ".state",
                "group_id": f"e2e-{time.time_ns()}",
            },
        }
        if window_log is not None:
            agg_cfg["aggregate"]["window_log"] = str(window_log)  # type: ignore[index]
        (work / "aggregate.yaml").write_text(yaml.safe_dump(agg_cfg))
        ingest = await Proc(
            "ingest",
            ["ingest", "--config", str(work / "ingest.yaml")],
            work / "ingest.log",
            r"ingest ready: ",
        ).start()
        agg = await Proc(
            "aggregate",
            ["aggregate", "--config", str(work / "aggregate.yaml")],
            work / "aggregate.log",
            r"/metrics: https?://127.0.0.1:(?P<port>\d+)/",
        ).start()
        assert agg.match is not None
        agg_port = int(agg.match["port"])
        sims = [
            Proc(
                f"simulate-{k}",
                [
                    "--config",
                    str(work / f"sim-{k}.yaml"),
                    "simulate",
                    "--mode",
                    "agents",
                    "--target",
                    f"127.0.0.1:{port}",
                    "--ca-file",
                    str(certs.ca),
                    "--tokens-file",
                    str(tokens),
                    "--work-dir",
                    str(work / f"spools-{k}"),
                ],
                work / f"simulate-{k}.log",
                None,
            )
            for k in range(len(parts))
        ]
        for sim in sims:
            await sim.start()
        procs = [ingest, agg, *sims]
        try:
            await asyncio.sleep(3.0)  # warm-up: connections, group join, first windows
            n0 = await scrape_value(agg_port, "collector_aggregate_samples_total")
            cpu0 = [p.cpu() for p in procs]
            broker_p = psutil.Process(broker.pid) if broker.pid else None
            b0 = sum(broker_p.cpu_times()[:2]) if broker_p else 0.0
            t0 = time.monotonic()
            await asyncio.sleep(duration_s)
            n1 = await scrape_value(agg_port, "collector_aggregate_samples_total")
            wall = time.monotonic() - t0
            cpu = {p.name: (p.cpu() - c) / wall for p, c in zip(procs, cpu0, strict=True)}
            cpu["broker"] = ((sum(broker_p.cpu_times()[:2]) - b0) / wall) if broker_p else 0.0
            cpu["simulate (all)"] = sum(v for k, v in cpu.items() if k.startswith("simulate-"))
        finally:
            for p in reversed(procs):
                await p.stop()
    return {"samples_per_s": (n1 - n0) / wall, "cpu_cores": cpu, "wall": wall}


def visible_after_close(seen: dict[tuple[int, int, int], float]) -> list[float]:
    """Per closed window: wall time it appeared minus its close time (end + lateness)."""
    return [wall - (end / 1e9 + LATENESS_S) for (_, _, end), wall in seen.items()]


async def latency_run(work: Path, duration_s: float, sites: int) -> list[float]:
    """Paced run; tails the window log and notes when each (partition, window, end) appears."""
    log = work / "windows.jsonl"
    seen: dict[tuple[int, int, int], float] = {}
    stop = asyncio.Event()

    async def tail() -> None:
        pos = 0
        while not stop.is_set():
            if log.exists():
                with log.open() as f:
                    f.seek(pos)
                    chunk = f.read()
                    now = time.time()
                    cut = chunk.rfind("\n") + 1
                    pos += len(chunk[:cut].encode())
                    for line in chunk[:cut].splitlines():
                        r = json.loads(line)
                        seen.setdefault((r["partition"], r["window_s"], r["end_ns"]), now)
            await asyncio.sleep(0.05)

    t = asyncio.create_task(tail())
    begin = time.time()
    try:
        await pipeline(work, acceleration=1.0, duration_s=duration_s, sites=sites, window_log=log)
    finally:
        stop.set()
        await t
    # leave out the start (group join, first fetches): steady state only
    return visible_after_close({k: v for k, v in seen.items() if v > begin + 10.0})


async def main(quick: bool, generators: int, countries: tuple[str, ...]) -> int:
    base = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    ceil = ceilings(quick)
    for k, v in ceil.items():
        print(f"ceiling {k:16s}: {v:14,.0f} samples/s")
    (base / "tp").mkdir()
    tp = await pipeline(
        base / "tp",
        acceleration=0.0,
        duration_s=15.0 if quick else 60.0,
        sites=3 if quick else 10,
        window_log=None,
        countries=countries,
        generators=generators,
    )
    print(
        f"load generators: {len(shards(countries, generators))} processes "
        f"({', '.join('+'.join(c) for c in shards(countries, generators))})"
    )
    (base / "lat").mkdir()
    lat = await latency_run(base / "lat", 20.0 if quick else 90.0, 3)
    rate = float(tp["samples_per_s"])  # type: ignore[arg-type]
    cpu: dict[str, float] = tp["cpu_cores"]  # type: ignore[assignment]
    total_cpu = sum(v for k, v in cpu.items() if k != "simulate (all)") or 1.0
    print(f"end to end (fast-forward fleet): {rate:,.0f} samples/s over {tp['wall']:.0f}s")
    for name, cores in cpu.items():
        print(f"  cpu {name:10s}: {cores:5.2f} cores = {cores / total_cpu:6.1%} of the pipeline's")
    slowest = min(ceil.values())
    print(f"slowest stage alone: {slowest:,.0f} samples/s ({min(ceil, key=ceil.get)})")  # type: ignore[arg-type]
    if lat:
        lat.sort()
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    else:
        p50 = p99 = float("nan")
    print(
        f"visible after close (real time, {len(lat)} windows): p50 {p50:.2f}s p99 {p99:.2f}s "
        f"(target p99 <= 2 s)"
    )
    print(
        f"RESULT e2e_samples_per_s={rate:.0f} p99_visible_after_close_s={p99:.2f} "
        f"e2e_vs_slowest_stage={rate / slowest:.3f}"
    )
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs (CI smoke)")
    ap.add_argument(
        "--generators",
        type=int,
        default=3,
        help="simulator processes of the load (at most one per country; default 3)",
    )
    ap.add_argument("--countries", default="JP,US,AE", help="the fleet's countries (default JP,US,AE)")
    a = ap.parse_args()
    sys.exit(asyncio.run(main(a.quick, a.generators, tuple(a.countries.split(",")))))
