"""End to end: simulated batches through ingest -> broker -> aggregator -> /metrics, every
stage its own process on this machine, against the stages' own ceilings measured in the
same run.

    python bench/e2e.py [--quick]

The load is bench/e2e_load.py, a lean generator: the simulator's planner pre-builds each
site's batches (the bytes an agent would send, real agent_id and seq), and one process
streams them, one TLS connection and bearer token per site, a window of 16 unacknowledged
batches each, reading every ack. No spool and no per-sample work, so the figure measures
the pipeline, not the agents (an agent fleet simulated on the same 2 cores took 95 % of
the CPU before: see docs/reliability.md).

1. Ceilings, measured now with the same load: (a) bare gRPC: the generator against a bare
   grpc.aio stream server that acks every message (bench/ingest.py --bare-server, TLS);
   (b) bare produce: the generator's batch bytes straight into Kafka (aiokafka, acks=all,
   the ingest's compression); (c) consume + decode: bench/aggregate.py's (b) stage,
   1000-sample batches (its (c) full aggregator is printed for reference).
2. Throughput (fast-forward): Tansu, `collector ingest` (TLS), `collector aggregate` and the
   generator: sustained samples/s = samples the aggregator accepted per wall second over
   the steady part of the run (`collector_aggregate_samples_total`, scraped); the ingest's
   rate (OK acks) beside it, their difference is backlog left in Kafka. CPU of every
   process from /proc (psutil) over the same interval, as cores and as shares of the
   pipeline's (ingest + broker + aggregator) CPU.
3. Latency, paced in real time (the generator sends each tick's batches when the wall clock
   reaches it): for every closed window, the wall time it first appears in the aggregator's
   window log (the same moment it is in the state that /metrics renders) minus the window's
   close time (end + allowed lateness): `visible_after_close`; p50/p99. Target p99 <= 2 s.
4. Secondary: the same pipeline fed by real agents (`--generators` separate `collector
   simulate --mode agents --fast-forward` processes, every site a full agent pipeline with
   its spool): what a fleet of agents simulated on this machine gets through.

Read the ratios, not the absolute numbers: the 2 cores are shared by the broker, the ingest,
the aggregator, the generator and (on the team machine) other people's work.

Last line: RESULT e2e_samples_per_s=<n> p99_visible_after_close_s=<x> e2e_vs_slowest_stage=<ratio>
p50_visible_after_close_s=<x> generator_cpu_share=<x> agents_e2e_samples_per_s=<n>
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collector.broker import EmbeddedBroker, TopicSpec, free_port  # noqa: E402
from collector.config import KafkaSettings  # noqa: E402
from collector.devcerts import DevCerts, make_dev_certs  # noqa: E402
from collector.simulate.config import SimulateSettings  # noqa: E402
from collector.simulate.fleet import Simulation, site_tokens, write_tokens_file  # noqa: E402

LATENESS_S = 2.0
WINDOWS = [2, 10]
PY = sys.executable
COLLECTOR = [PY, "-m", "collector"]


@dataclass
class Figures:
    """What one measured run gives: samples/s, CPU cores per process over the same interval."""

    rate: float
    cpu: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    ingest_rate: float = 0.0  # the ingest's OK acks (lean runs)
    dropped: float = 0.0  # samples the aggregator did not count
    drop_reasons: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)  # the generator's
    parts: list[tuple[str, ...]] = field(default_factory=list)  # real-agent run: shards
    offered: float = 0.0  # real-agent run: samples/s the paced fleet generates
    failed: str = ""


@dataclass(frozen=True)
class Timing:
    """Seconds of one run: warm-up (connections, group join, first windows), then measured."""

    warmup: float
    window: float


# The simulator derives a site's token from its seed and its index in the fleet: fleets of
# one run (and shards of one fleet) get seeds of their own, else their tokens collide.
SEED = 20260401


def fleet(countries: tuple[str, ...], sites: int, acceleration: float, seed: int = SEED) -> dict[str, object]:
    return {
        "simulate": {
            "seed": seed,
            "sites_per_country": sites,
            "late_probability": 0.0,
            "interval_s": 1.0,
            "countries": list(countries),
            "duplicate_probability": 0.0,
            "silent_after_s": 0,
            "acceleration": acceleration,
            # One batch per site and tick (all its series), as an agent sends one collection.
            # The simulator's default for fast-forward, 10 ticks cut into series chunks,
            # spans 10 s of event time per batch: beyond the 2 s allowed lateness, a site's
            # later chunks of the same ticks would be late behind its first.
            "batch_ticks": 1,
        }
    }


class Proc:
    """A child process; `ready` is a regex of the stdout line that says it is up."""

    def __init__(self, name: str, argv: list[str], log: Path, ready: str | None, stdin: bool = False) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.ready = re.compile(ready) if ready else None
        self.stdin = stdin
        self.p: asyncio.subprocess.Process | None = None
        self.match: re.Match[str] | None = None
        self.on_line: Callable[[str], None] | None = None
        self._drainer: asyncio.Task[None] | None = None

    async def start(self) -> Proc:
        with self.log.open("ab") as log:
            self.p = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=str(ROOT),
                stderr=log,
                stdout=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.PIPE if self.stdin else asyncio.subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        assert self.p.stdout is not None
        if self.ready is not None:
            async with asyncio.timeout(120):
                while True:
                    line = (await self.p.stdout.readline()).decode()
                    if not line:
                        raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
                    if m := self.ready.search(line):
                        self.match = m
                        break
        self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return self

    async def _drain(self) -> None:
        assert self.p is not None
        assert self.p.stdout is not None
        while line := await self.p.stdout.readline():
            if self.on_line is not None:
                self.on_line(line.decode())

    async def send(self, text: str) -> None:
        assert self.p is not None
        assert self.p.stdin is not None
        self.p.stdin.write(text.encode())
        await self.p.stdin.drain()

    async def wait(self, timeout_s: float) -> int:
        assert self.p is not None
        rc = await asyncio.wait_for(self.p.wait(), timeout_s)
        if self._drainer is not None:
            await self._drainer
        return rc

    def cpu(self) -> float:
        """CPU seconds (user + system) of the process, and of its children it reaped."""
        assert self.p is not None
        try:
            return float(sum(psutil.Process(self.p.pid).cpu_times()[:4]))
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


class Generator(Proc):
    """bench/e2e_load.py: `ready`, then `go`, `progress` lines, a `summary`."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        super().__init__(
            name, [PY, str(ROOT / "bench" / "e2e_load.py"), *args], log, r"^ready (?P<j>.*)$", True
        )
        self.progress: tuple[int, float] = (0, time.monotonic())
        self.summary: dict[str, Any] | None = None
        self.on_line = self._line

    def _line(self, line: str) -> None:
        if line.startswith("progress "):
            _, n, t = line.split()
            self.progress = (int(n), float(t))
        elif line.startswith("summary "):
            self.summary = json.loads(line[len("summary ") :])

    async def finish(self, timeout_s: float) -> dict[str, Any]:
        rc = await self.wait(timeout_s)
        if rc != 0 or self.summary is None:
            raise RuntimeError(f"{self.name} exited {rc}: {self.log.read_text()[-3000:]}")
        return self.summary


def rate_between(a: tuple[int, float], b: tuple[int, float]) -> float:
    return (b[0] - a[0]) / max(b[1] - a[1], 1e-9)


async def scrape(port: int, names: tuple[str, ...]) -> dict[str, float]:
    """Sum of every sample of each metric family named (all label sets); also, per
    `name:reason`, the sum over the samples with that reason label."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    await writer.drain()
    body = (await reader.read()).decode()
    writer.close()
    out = dict.fromkeys(names, 0.0)
    for line in body.splitlines():
        for name in names:
            if line.startswith(name + " ") or line.startswith(name + "{"):
                value = float(line.rsplit(" ", 1)[1])
                out[name] += value
                if m := re.search(r'reason="([^"]*)"', line):
                    key = f"{name}:{m[1]}"
                    out[key] = out.get(key, 0.0) + value
    return out


ACCEPTED = "collector_aggregate_samples_total"
DROPPED = "collector_site_samples_dropped_total"


# ---- 1. ceilings ---------------------------------------------------------------------------


async def measure_generator(gen: Generator, timing: Timing, others: list[Proc]) -> Figures:
    """Start a ready generator, measure its ack rate over the steady window."""
    await gen.send("go\n")
    await asyncio.sleep(timing.warmup)
    p0, c0, t0 = gen.progress, [p.cpu() for p in (gen, *others)], time.monotonic()
    await asyncio.sleep(timing.window)
    p1, c1, wall = gen.progress, [p.cpu() for p in (gen, *others)], time.monotonic() - t0
    summary = await gen.finish(60 + timing.warmup + timing.window)
    cpu = {p.name: (b - a) / wall for p, a, b in zip((gen, *others), c0, c1, strict=True)}
    return Figures(rate_between(p0, p1), cpu, wall, summary=summary)


def load_args(sim: Path, timing: Timing, *, paced: bool = False) -> list[str]:
    args = ["--sim", str(sim), "--duration", str(timing.warmup + timing.window + 1.0)]
    return [*args, "--paced"] if paced else args


async def ceiling_bare_grpc(work: Path, sim: Path, certs: DevCerts, timing: Timing) -> Figures:
    port = free_port()
    server = Proc(
        "bare-grpc",
        [
            PY,
            str(ROOT / "bench" / "ingest.py"),
            "--bare-server",
            str(port),
            str(certs.server_cert),
            str(certs.server_key),
        ],
        work / "bare-grpc.log",
        r"^ready",
    )
    await server.start()
    try:
        gen = Generator(
            "generator",
            [*load_args(sim, timing), "--target", f"127.0.0.1:{port}", "--ca", str(certs.ca)],
            work / "gen-bare-grpc.log",
        )
        await gen.start()
        return await measure_generator(gen, timing, [server])
    finally:
        await server.stop()


async def ceiling_bare_produce(work: Path, sim: Path, bootstrap: str, timing: Timing) -> Figures:
    gen = Generator(
        "generator",
        [
            *load_args(sim, timing),
            "--bootstrap",
            bootstrap,
            "--topic",
            "bare",
            "--compression",
            KafkaSettings().compression_type or "",
        ],
        work / "gen-bare-produce.log",
    )
    await gen.start()
    return await measure_generator(gen, timing, [])


def ceiling_consume_decode(quick: bool) -> tuple[float, float]:
    """(consume + decode, full aggregator) samples/s of bench/aggregate.py, run now."""
    out = subprocess.run(
        [
            PY,
            "bench/aggregate.py",
            "--samples",
            "200000" if quick else "1000000",
            "--samples-per-batch",
            "1000",
            "--rounds",
            "1",
            "--compression",
            "none",
        ],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=900,
        check=True,
    ).stdout
    b = re.search(r"\(b\) consume \+ decode\s+:\s+([\d,]+) samples/s", out)
    c = re.search(r"\(c\) full aggregator\s+:\s+([\d,]+) samples/s", out)
    if b is None or c is None:
        raise RuntimeError(f"bench/aggregate.py printed no (b)/(c) figure:\n{out}")
    return float(b[1].replace(",", "")), float(c[1].replace(",", ""))


# ---- 2.-4. the pipeline -----------------------------------------------------------------------


class StageDied(RuntimeError):
    pass


class Pipeline:
    """`collector ingest` (TLS) and `collector aggregate` on a topic of their own."""

    def __init__(self, work: Path, broker: EmbeddedBroker, certs: DevCerts, tokens: Path, topic: str) -> None:
        self.work, self.broker, self.certs, self.tokens, self.topic = work, broker, certs, tokens, topic
        self.port = free_port()
        self.window_log: Path | None = None
        self.procs: list[Proc] = []
        self.agg_port = 0

    async def start(self, window_log: Path | None = None) -> None:
        w, topic = self.work, self.topic
        (w / "ingest.yaml").write_text(
            yaml.safe_dump(
                {
                    "kafka": {"bootstrap_servers": self.broker.bootstrap, "topic": topic},
                    "ingest": {
                        "listen": f"127.0.0.1:{self.port}",
                        "metrics_listen": "127.0.0.1:0",
                        "tls_cert": str(self.certs.server_cert),
                        "tls_key": str(self.certs.server_key),
                        "tokens_file": str(self.tokens),
                    },
                }
            )
        )
        agg: dict[str, object] = {
            "metrics_listen": "127.0.0.1:0",
            "allowed_lateness_s": LATENESS_S,
            "windows_s": WINDOWS,
            "state_topic": topic + ".state",
            "group_id": f"e2e-{topic}-{time.time_ns()}",
        }
        if window_log is not None:
            agg["window_log"] = str(window_log)
        kafka = {
            "bootstrap_servers": self.broker.bootstrap,
            "topic": topic,
            "dead_letter_topic": topic + ".dlq",
        }
        (w / "aggregate.yaml").write_text(yaml.safe_dump({"kafka": kafka, "aggregate": agg}))
        ingest = Proc(
            "ingest",
            [*COLLECTOR, "ingest", "--config", str(w / "ingest.yaml")],
            w / "ingest.log",
            r"ingest ready: ",
        )
        self.procs.append(await ingest.start())
        aggregator = Proc(
            "aggregator",
            [*COLLECTOR, "aggregate", "--config", str(w / "aggregate.yaml")],
            w / "aggregate.log",
            r"/metrics: https?://127.0.0.1:(?P<port>\d+)/",
        )
        self.procs.append(await aggregator.start())
        assert aggregator.match is not None
        self.agg_port = int(aggregator.match["port"])

    def check(self) -> None:
        """Raise StageDied when the ingest or the aggregator exited during the run."""
        for proc in self.procs:
            if proc.p is not None and proc.p.returncode is not None:
                tail = "\n".join(proc.log.read_text().splitlines()[-12:])
                raise StageDied(f"{proc.name} exited with status {proc.p.returncode} during the run:\n{tail}")

    async def scrape(self) -> dict[str, float]:
        self.check()
        try:
            return await scrape(self.agg_port, (ACCEPTED, DROPPED))
        except OSError:
            await asyncio.sleep(0.5)
            self.check()
            raise

    def broker_cpu(self) -> float:
        if not self.broker.pid:
            return 0.0
        return float(sum(psutil.Process(self.broker.pid).cpu_times()[:2]))

    async def stop(self) -> None:
        for p in reversed(self.procs):
            await p.stop()


async def lean_throughput(
    work: Path, broker: EmbeddedBroker, certs: DevCerts, tokens: Path, sim: Path, timing: Timing
) -> Figures:
    pipe = Pipeline(work, broker, certs, tokens, "e2e")
    await pipe.start()
    try:
        gen = Generator(
            "generator",
            [*load_args(sim, timing), "--target", f"127.0.0.1:{pipe.port}", "--ca", str(certs.ca)],
            work / "generator.log",
        )
        await gen.start()
        procs = [*pipe.procs, gen]
        await gen.send("go\n")
        await asyncio.sleep(timing.warmup)
        m0, g0 = await pipe.scrape(), gen.progress
        c0, b0, t0 = [p.cpu() for p in procs], pipe.broker_cpu(), time.monotonic()
        await asyncio.sleep(timing.window)
        m1, g1 = await pipe.scrape(), gen.progress
        pipe.check()
        c1, b1, wall = [p.cpu() for p in procs], pipe.broker_cpu(), time.monotonic() - t0
        summary = await gen.finish(60 + timing.warmup + timing.window)
    finally:
        await pipe.stop()
    cpu = {p.name: (b - a) / wall for p, a, b in zip(procs, c0, c1, strict=True)}
    cpu["broker"] = (b1 - b0) / wall
    return Figures(
        (m1[ACCEPTED] - m0[ACCEPTED]) / wall,
        cpu,
        wall,
        ingest_rate=rate_between(g0, g1),
        dropped=m1[DROPPED] - m0[DROPPED],
        drop_reasons={
            k.split(":", 1)[1]: m1[k] - m0.get(k, 0.0)
            for k in m1
            if k.startswith(DROPPED + ":") and m1[k] > m0.get(k, 0.0)
        },
        summary=summary,
    )


def visible_after_close(seen: dict[tuple[int, int, int], float]) -> list[float]:
    """Per closed window: wall time it appeared minus its close time (end + lateness)."""
    return [wall - (end / 1e9 + LATENESS_S) for (_, _, end), wall in seen.items()]


async def lean_latency(
    work: Path, broker: EmbeddedBroker, certs: DevCerts, tokens: Path, sim: Path, seconds: float
) -> tuple[list[float], dict[str, Any]]:
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

    pipe = Pipeline(work, broker, certs, tokens, "paced")
    await pipe.start(window_log=log)
    t = asyncio.create_task(tail())
    try:
        gen = Generator(
            "generator",
            [
                *load_args(sim, Timing(0.0, seconds), paced=True),
                "--target",
                f"127.0.0.1:{pipe.port}",
                "--ca",
                str(certs.ca),
            ],
            work / "generator.log",
        )
        await gen.start()
        begin = time.time()
        await gen.send("go\n")
        summary = await gen.finish(60 + seconds)
        await asyncio.sleep(LATENESS_S + 1.0)  # the last windows close
        pipe.check()
    finally:
        stop.set()
        await t
        await pipe.stop()
    # leave out the start (group join, first fetches): steady state only
    return visible_after_close({k: v for k, v in seen.items() if v > begin + 10.0}), summary


def shards(countries: tuple[str, ...], generators: int) -> list[tuple[str, ...]]:
    """The fleet's countries split over `generators` simulator processes (one country each at
    most: a process simulates whole countries, so sites and tokens never overlap)."""
    n = max(1, min(generators, len(countries)))
    return [countries[k::n] for k in range(n)]


async def agents_throughput(
    work: Path,
    broker: EmbeddedBroker,
    certs: DevCerts,
    countries: tuple[str, ...],
    sites: int,
    generators: int,
    timing: Timing,
    acceleration: float,
) -> Figures:
    """The secondary figure: real agent pipelines (`collector simulate --mode agents`), paced
    at `acceleration` x real time (0: fast-forward). Offered: the fleet's samples per second
    at that pace."""
    merged: dict[str, str] = {}
    parts = shards(countries, generators)
    offered = 0.0
    for k, cs in enumerate(parts):
        cfg = work / f"sim-{k}.yaml"
        shard = fleet(cs, sites, acceleration, SEED + 100 + k)
        model = Simulation(SimulateSettings.model_validate(shard["simulate"])).model
        offered += sum(st.n_series for st in model.sites) * acceleration / model.interval_s
        cfg.write_text(yaml.safe_dump(shard))
        merged.update(site_tokens(SimulateSettings.model_validate(shard["simulate"])))
    tokens = write_tokens_file(work / "tokens.yaml", merged)
    pipe = Pipeline(work, broker, certs, tokens, "agents")
    await pipe.start()
    sims = [
        Proc(
            f"simulate-{k}",
            [
                *COLLECTOR,
                "--config",
                str(work / f"sim-{k}.yaml"),
                "simulate",
                "--mode",
                "agents",
                "--target",
                f"127.0.0.1:{pipe.port}",
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
    try:
        for s in sims:
            await s.start()
        procs = [*pipe.procs, *sims]
        await asyncio.sleep(timing.warmup)
        n0, c0, b0, t0 = await pipe.scrape(), [p.cpu() for p in procs], pipe.broker_cpu(), time.monotonic()
        await asyncio.sleep(timing.window)
        n1, c1, b1 = await pipe.scrape(), [p.cpu() for p in procs], pipe.broker_cpu()
        wall = time.monotonic() - t0
        pipe.check()
    except StageDied as exc:
        return Figures(float("nan"), parts=parts, failed=str(exc), offered=offered)
    finally:
        for s in reversed(sims):
            await s.stop()
        await pipe.stop()
    cpu = {p.name: (b - a) / wall for p, a, b in zip(procs, c0, c1, strict=True)}
    cpu["broker"] = (b1 - b0) / wall
    return Figures((n1[ACCEPTED] - n0[ACCEPTED]) / wall, cpu, wall, parts=parts, offered=offered)


# ---- report ------------------------------------------------------------------------------------

PIPELINE = ("ingest", "broker", "aggregator")


def print_cpu(cpu: dict[str, float], rate: float) -> None:
    total = sum(cpu.values()) or 1.0
    pipeline = sum(cpu[k] for k in PIPELINE) or 1.0
    for name, cores in cpu.items():
        share = (
            f"{cores / pipeline:6.1%} of the pipeline's" if name in PIPELINE else "(load, not the pipeline)"
        )
        per = f", {rate / cores:12,.0f} samples per CPU-second" if name in PIPELINE and cores > 0 else ""
        print(f"  cpu {name:12s}: {cores:5.2f} cores = {cores / total:6.1%} of all {share}{per}")


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def main(a: argparse.Namespace) -> int:
    quick = a.quick
    countries = tuple(a.countries.split(","))
    base = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    certs = make_dev_certs(base / "tls")
    ceiling_t = Timing(3.0, 6.0 if quick else 20.0)
    tp_t = Timing(5.0, 15.0 if quick else 60.0)
    sites = a.sites or (3 if quick else 10)
    sim_ff = base / "fleet.yaml"
    sim_ff.write_text(yaml.safe_dump(fleet(countries, sites, 0.0)))
    sim_paced = base / "fleet-paced.yaml"
    sim_paced.write_text(yaml.safe_dump(fleet(countries, 3, 1.0, SEED + 1)))
    tokens = base / "tokens.yaml"
    # token -> site_id for both fleets (a site of both has two tokens)
    both: dict[str, str] = {}
    for f in (fleet(countries, sites, 0.0), fleet(countries, 3, 1.0, SEED + 1)):
        both.update(
            {tok: site for site, tok in site_tokens(SimulateSettings.model_validate(f["simulate"])).items()}
        )
    tokens.write_text(yaml.safe_dump(both))
    n_sites = len(countries) * sites
    print(
        f"fleet: {n_sites} sites ({', '.join(countries)}, {sites} per country), 1 s interval, "
        f"fast-forward from 6 days ago; cpus={os.cpu_count()}; work dir {base}",
        flush=True,
    )
    topics = [TopicSpec("bare", 4, 3_600_000)]
    for t in ("e2e", "paced", "agents"):
        topics += [TopicSpec(t, 4, 3_600_000), TopicSpec(t + ".dlq", 1, 3_600_000)]
    async with EmbeddedBroker(topics=tuple(topics)) as broker:
        for d in ("bare-grpc-0", "bare-produce-0", "bare-grpc-1", "bare-produce-1", "tp", "lat", "agents"):
            (base / d).mkdir()
        # The gRPC and produce ceilings run before and after the throughput run, each best
        # kept: the shared machine's load changes within minutes, a ceiling is the best the
        # stage did in this run.
        grpc_r: list[float] = []
        produce_r: list[float] = []

        async def transport_ceilings(k: int) -> None:
            grpc_r.append((await ceiling_bare_grpc(base / f"bare-grpc-{k}", sim_ff, certs, ceiling_t)).rate)
            print(
                f"ceiling bare gRPC      : {grpc_r[-1]:12,.0f} samples/s (generator -> bare grpc.aio server)"
            )
            produce_r.append(
                (
                    await ceiling_bare_produce(
                        base / f"bare-produce-{k}", sim_ff, broker.bootstrap, ceiling_t
                    )
                ).rate
            )
            print(f"ceiling bare produce   : {produce_r[-1]:12,.0f} samples/s (generator -> Kafka, acks=all)")

        await transport_ceilings(0)
        decode_c, full_agg = await asyncio.to_thread(ceiling_consume_decode, quick)
        print(f"ceiling consume+decode : {decode_c:12,.0f} samples/s (bench/aggregate.py (b), 1000-sample)")
        print(f"reference: aggregator alone (bench/aggregate.py (c)): {full_agg:,.0f} samples/s", flush=True)
        tp = await lean_throughput(base / "tp", broker, certs, tokens, sim_ff, tp_t)
        print(f"end to end             : {tp.rate:12,.0f} samples/s", flush=True)
        await transport_ceilings(1)
        lat, lat_summary = await lean_latency(
            base / "lat", broker, certs, tokens, sim_paced, 20.0 if quick else 90.0
        )
        agents = await agents_throughput(
            base / "agents",
            broker,
            certs,
            countries,
            sites,
            a.generators,
            Timing(5.0, 10.0 if quick else 60.0),
            a.agents_acceleration,
        )
    ceilings = {"bare_grpc": max(grpc_r), "bare_produce": max(produce_r), "consume_decode": decode_c}
    rate = tp.rate
    backlog = max(0.0, tp.ingest_rate - rate) * tp.wall
    print(
        f"end to end (lean generator, fast-forward): {rate:,.0f} samples/s accepted by the aggregator "
        f"over {tp.wall:.0f} s; the ingest acked {tp.ingest_rate:,.0f} samples/s (backlog left in Kafka: "
        f"{backlog:,.0f} samples); {tp.dropped:,.0f} samples dropped by the aggregator "
        f"{tp.drop_reasons or ''}"
    )
    print(
        f"  generator: {tp.summary['sent']} batches sent, {tp.summary['acked']} acked OK, "
        f"non-OK {tp.summary['nacks'] or 'none'}, "
        f"{tp.summary['built_during_run']:,} samples built while running"
    )
    print_cpu(tp.cpu, rate)
    stage_of = {"ingest": "bare_grpc", "broker": "bare_produce", "aggregator": "consume_decode"}
    for stage, c in stage_of.items():
        print(
            f"  {stage:10s} ceiling {c:15s}: {ceilings[c]:12,.0f} samples/s; "
            f"end to end = {rate / ceilings[c]:.3f} of it"
        )
    slowest = min(ceilings, key=lambda k: ceilings[k])
    print(f"slowest stage alone: {ceilings[slowest]:,.0f} samples/s ({slowest})")
    gen_share = tp.cpu["generator"] / (sum(tp.cpu.values()) or 1.0)
    p50 = statistics.median(lat) if lat else float("nan")
    p99 = percentile(lat, 0.99)
    print(
        f"visible after close (real time, lean generator, {len(lat)} windows): p50 {p50:.2f}s "
        f"p99 {p99:.2f}s max {max(lat) if lat else float('nan'):.2f}s (target p99 <= 2 s); "
        f"generator non-OK: {lat_summary['nacks'] or 'none'}"
    )
    print(
        f"secondary, real agents ({len(agents.parts)} `collector simulate --mode agents` processes: "
        f"{', '.join('+'.join(c) for c in agents.parts)}, paced "
        f"{a.agents_acceleration or 'fast-forward'}x): {agents.rate:,.0f} samples/s"
        + (f" of {agents.offered:,.0f} offered" if agents.offered else "")
    )
    if agents.failed:
        print(f"  FAILED: {agents.failed}")
    else:
        print_cpu(agents.cpu, agents.rate)
    print(
        f"RESULT e2e_samples_per_s={rate:.0f} p99_visible_after_close_s={p99:.2f} "
        f"e2e_vs_slowest_stage={rate / ceilings[slowest]:.3f} p50_visible_after_close_s={p50:.2f} "
        f"generator_cpu_share={gen_share:.3f} agents_e2e_samples_per_s={agents.rate:.0f}"
    )
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs (CI smoke)")
    ap.add_argument("--sites", type=int, default=0, help="sites per country (default 3 quick, 10 full)")
    ap.add_argument(
        "--generators",
        type=int,
        default=3,
        help="simulator processes of the secondary real-agent run (at most one per country; default 3)",
    )
    ap.add_argument(
        "--agents-acceleration",
        type=float,
        default=20.0,
        help="pace of the real-agent run, x real time (0 = fast-forward, which starves the "
        "agents' senders: the simulator yields to them once per generated block); default 20",
    )
    ap.add_argument("--countries", default="JP,US,AE", help="the fleet's countries (default JP,US,AE)")
    sys.exit(asyncio.run(main(ap.parse_args())))
