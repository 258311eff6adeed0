"""The lean load generator of bench/e2e.py: simulator batches, streamed without agents.

    python bench/e2e_load.py --sim sim.yaml --duration S --target HOST:PORT --ca CA
    python bench/e2e_load.py --sim sim.yaml --duration S --bootstrap HOST:PORT --topic T

Each simulated site's batches come from the simulator's planner (`collector.simulate`:
`Simulation.step` + `encode`, the bytes an agent would send, real agent_id and seq from 1,
boot ids and counter restarts as the model has them), pre-built before the run so building
them costs nothing while it is measured. Every site streams on its own TLS connection with
its own bearer token, keeps a window of unacknowledged batches (`--window`, the reference
agent's 16) and reads the acks positionally, as docs/contract.md section 4 says. There is no
spool, no source and no per-sample Python work: what this process costs is the gRPC client.

With `--bootstrap` the same bytes go straight into Kafka instead (acks=all, key = site_id,
the ingest's headers): the bare-produce ceiling of the same load.

Protocol with bench/e2e.py: prints `ready {...}` once the pool is built, starts on a line
`go` on stdin, prints `progress <acked samples> <monotonic s>` every 0.5 s, stops writing
after `--duration` seconds, waits (bounded) for the outstanding acks and prints
`summary {...}` (JSON). `--paced`: real time instead (each tick's batches when the wall clock
reaches it, for the latency run); the pool then fills as time passes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from grpc import aio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collector import wire  # noqa: E402
from collector.proto.telemetry.v1 import telemetry_pb2 as pb  # noqa: E402
from collector.simulate.config import SimulateSettings  # noqa: E402
from collector.simulate.fleet import AGENT_BACKFILL_S, Simulation, site_tokens  # noqa: E402
from collector.simulate.topology import start_ns_for  # noqa: E402

METHOD = "/telemetry.v1.IngestService/Stream"
# Bound of the wait for outstanding acks after the last write.
DRAIN_S = 30.0
# Fast-forward: how far (event time) a site's next batch may be ahead of the slowest site's
# last written one. Real sites move in step with the wall clock; streams left to their own
# pace drift apart by minutes of simulated time per wall second, and the aggregator stops
# waiting for a site more than site_idle_s (300 s) behind its partition's newest event time
# and then counts that site's samples late. Well inside it.
LEAD_S = 30


@dataclass
class Site:
    """One simulated site's stream: its pre-built batches and its in-flight window."""

    site_id: str
    agent_id: str
    token: str
    # (seq, bytes, samples, first and last event time) of each batch not written yet
    pool: collections.deque[tuple[int, bytes, int, int, int]] = field(default_factory=collections.deque)
    written_t: int = 0  # event time (t_max) of the last batch written
    inflight: collections.deque[tuple[int, int]] = field(default_factory=collections.deque)
    more: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    acked: int = 0
    acked_samples: int = 0
    nacks: collections.Counter[str] = field(default_factory=collections.Counter)


class Load:
    def __init__(self, settings: SimulateSettings, *, paced: bool, window: int, pool_bytes: int) -> None:
        start = start_ns_for(settings) if paced else start_ns_for(settings, time.time() - AGENT_BACKFILL_S)
        self.sim = Simulation(settings, start_ns=start, paced=paced)
        self.paced = paced
        self.window = window
        self.pool_bytes = pool_bytes
        tokens = site_tokens(settings)
        self.sites = [
            Site(st.info.site_id, st.agent_id, tokens[st.info.site_id]) for st in self.sim.model.sites
        ]
        self.pooled_bytes = 0
        self.built_samples = 0
        self.built_cpu_s = 0.0
        self.writing = True
        self.lead_ns = LEAD_S * 1_000_000_000
        self.gate = asyncio.Condition()
        for s in self.sites:
            s.written_t = self.sim.start_ns

    # --- the pool ----------------------------------------------------------------------

    def build(self, max_ticks: int | None = None) -> None:
        """One simulator step: its batches into the sites' pools."""
        t = time.process_time()
        for b in self.sim.step(max_ticks):
            raw = self.sim.encode(b)
            self.sites[b.site.index].pool.append((b.seq, raw, b.samples, b.t_min, b.t_max))
            self.pooled_bytes += len(raw)
            self.built_samples += b.samples
        self.built_cpu_s += time.process_time() - t
        for s in self.sites:
            if s.pool:
                s.more.set()

    def prefill(self) -> None:
        if not self.paced:
            while self.pooled_bytes < self.pool_bytes:
                self.build()

    async def refill(self) -> None:
        """Keep the pool from running dry (fast-forward) or add each tick on time (paced)."""
        sim = self.sim
        while self.writing:
            if self.paced:
                delay = (sim.tick_time_ns(sim.next_tick) - time.time_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
                self.build(1)
            elif self.pooled_bytes < self.pool_bytes // 4:
                self.build()
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(0.05)

    def _may_write(self, t_min: int) -> bool:
        return not self.writing or t_min <= min(x.written_t for x in self.sites) + self.lead_ns

    async def next_item(self, s: Site) -> tuple[int, bytes, int, int, int] | None:
        while self.writing:
            if s.pool:
                t_min = s.pool[0][3]
                if not self.paced and not self._may_write(t_min):
                    async with self.gate:
                        await self.gate.wait_for(functools.partial(self._may_write, t_min))
                    continue
                item = s.pool.popleft()
                self.pooled_bytes -= len(item[1])
                return item
            s.more.clear()
            waiter = asyncio.ensure_future(s.more.wait())
            await asyncio.wait({waiter}, timeout=0.2)
            waiter.cancel()
        return None

    async def written(self, s: Site, t_max: int) -> None:
        """A batch of `s` was written: its event time opens the gate for the others."""
        s.written_t = t_max
        async with self.gate:
            self.gate.notify_all()

    # --- gRPC ------------------------------------------------------------------------------

    async def stream(self, s: Site, target: str, creds: grpc.ChannelCredentials) -> None:
        window = asyncio.Semaphore(self.window)
        async with aio.secure_channel(
            target, creds, options=[("grpc.max_send_message_length", 8 << 20)]
        ) as ch:
            call = ch.stream_stream(METHOD, request_serializer=None, response_deserializer=pb.Ack.FromString)(
                metadata=(("authorization", f"Bearer {s.token}"),)
            )

            async def writer() -> None:
                while (item := await self.next_item(s)) is not None:
                    await window.acquire()
                    seq, raw, n, _, t_max = item
                    s.inflight.append((seq, n))
                    await call.write(raw)
                    s.sent += 1
                    await self.written(s, t_max)
                await call.done_writing()

            w = asyncio.create_task(writer())
            while (ack := await call.read()) is not aio.EOF:
                # Positional: one batch, or seq_last - seq + 1 for an OK range (contract §4).
                k = ack.seq_last - ack.seq + 1 if ack.code == pb.OK and ack.seq_last > ack.seq else 1
                for _ in range(k):
                    _, n = s.inflight.popleft()
                    if ack.code == pb.OK:
                        s.acked += 1
                        s.acked_samples += n
                    window.release()
                if ack.code != pb.OK:
                    s.nacks[pb.Code.Name(ack.code)] += 1
            await w

    # --- Kafka (bare produce) -----------------------------------------------------------

    async def produce(self, s: Site, producer: object, topic: str) -> None:
        window = asyncio.Semaphore(self.window)
        pending: set[asyncio.Future[object]] = set()
        schema = wire.SCHEMA.encode()

        def done(fut: asyncio.Future[object], n: int) -> None:
            pending.discard(fut)
            window.release()
            if fut.exception() is None:
                s.acked += 1
                s.acked_samples += n
            else:
                s.nacks[type(fut.exception()).__name__] += 1

        while (item := await self.next_item(s)) is not None:
            await window.acquire()
            seq, raw, n, _, t_max = item
            headers = [("schema", schema), ("agent_id", s.agent_id.encode()), ("seq", str(seq).encode())]
            fut = await producer.send(topic, raw, key=s.site_id.encode(), headers=headers)  # type: ignore[attr-defined]
            s.sent += 1
            await self.written(s, t_max)
            pending.add(fut)
            fut.add_done_callback(lambda f, n=n: done(f, n))
        if pending:
            await asyncio.wait(pending)

    # --- the run ----------------------------------------------------------------------------

    def acked_samples(self) -> int:
        return sum(s.acked_samples for s in self.sites)

    async def run(self, a: argparse.Namespace) -> dict[str, object]:
        self.prefill()
        print(
            "ready "
            + json.dumps(
                {
                    "sites": len(self.sites),
                    "pool_samples": self.built_samples,
                    "pool_bytes": self.pooled_bytes,
                    "build_cpu_s": round(self.built_cpu_s, 3),
                }
            ),
            flush=True,
        )
        if (await asyncio.to_thread(sys.stdin.readline)).strip() != "go":
            raise SystemExit("e2e_load: no go")
        cpu0, t0 = time.process_time(), time.monotonic()
        build0 = self.built_samples
        producer = None
        if a.bootstrap:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(
                bootstrap_servers=a.bootstrap,
                acks="all",
                linger_ms=2,
                max_batch_size=1 << 20,
                max_request_size=8 << 20,
                compression_type=a.compression or None,
            )
            await producer.start()
            tasks = [asyncio.create_task(self.produce(s, producer, a.topic)) for s in self.sites]
        else:
            creds = grpc.ssl_channel_credentials(root_certificates=Path(a.ca).read_bytes())
            tasks = [asyncio.create_task(self.stream(s, a.target, creds)) for s in self.sites]
        refill = asyncio.create_task(self.refill())

        async def progress() -> None:
            while True:
                print(f"progress {self.acked_samples()} {time.monotonic():.3f}", flush=True)
                await asyncio.sleep(0.5)

        prog = asyncio.create_task(progress())
        try:
            done, _ = await asyncio.wait(tasks, timeout=a.duration, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # a stream that failed ends the run with its error
            self.writing = False
            stopped = time.monotonic()
            async with self.gate:
                self.gate.notify_all()
            async with asyncio.timeout(DRAIN_S):
                await asyncio.gather(*tasks)
        finally:
            self.writing = False
            prog.cancel()
            refill.cancel()
            if producer is not None:
                await producer.stop()
        end = time.monotonic()
        nacks: collections.Counter[str] = collections.Counter()
        for s in self.sites:
            nacks.update(s.nacks)
        return {
            "sent": sum(s.sent for s in self.sites),
            "acked": sum(s.acked for s in self.sites),
            "acked_samples": self.acked_samples(),
            "nacks": dict(nacks),
            "write_s": round(stopped - t0, 3),
            "wall_s": round(end - t0, 3),
            "cpu_s": round(time.process_time() - cpu0, 3),
            "built_during_run": self.built_samples - build0,
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", required=True, type=Path, help="YAML with a `simulate:` section (the fleet)")
    ap.add_argument("--duration", type=float, required=True, help="seconds of writing after `go`")
    ap.add_argument("--target", help="ingest (or bare gRPC server) HOST:PORT")
    ap.add_argument("--ca", help="CA file of the server's TLS certificate")
    ap.add_argument("--bootstrap", help="Kafka bootstrap: produce straight into Kafka instead")
    ap.add_argument("--topic", default="bare")
    ap.add_argument("--compression", default="", help="Kafka compression of the bare produce")
    ap.add_argument("--window", type=int, default=16, help="unacknowledged batches per stream")
    ap.add_argument("--pool-mb", type=float, default=200.0, help="batches pre-built before `go`")
    ap.add_argument("--paced", action="store_true", help="real time (latency run)")
    a = ap.parse_args()
    if not a.bootstrap and not (a.target and a.ca):
        ap.error("--target and --ca, or --bootstrap")
    settings = SimulateSettings.model_validate(yaml.safe_load(a.sim.read_text())["simulate"])
    load = Load(settings, paced=a.paced, window=a.window, pool_bytes=int(a.pool_mb * (1 << 20)))
    summary = asyncio.run(load.run(a))
    print("summary " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
