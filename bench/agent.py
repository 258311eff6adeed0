"""Agent CPU cost for one site, and the simulator's generation rate.

    python bench/agent.py [--seconds 20] [--sim-seconds 10] [--quick]

1. Agent: one site with 100 links (synthetic adapter, every 2nd optical), 30 cells (a 3GPP
   TS 32.435 PM XML file for 30 cells arrives every second and is parsed) and 5 hosts (five
   server sources reading this machine's /proc and psutil), every source at a 1 s interval,
   spooled (fsync: interval) and streamed over TLS to an acking sink. The sink and the
   "gNB" writing the PM files run in a separate process, so this process's CPU time
   (time.process_time: every thread, gRPC's included) is the agent's alone. Measured over
   `--seconds` after a warm-up; reported per collected sample, per sent batch, and as a
   fraction of one core (target <= 0.02).
2. Simulator: `collector.simulate.bench.measure_generation` (batches written straight to
   Kafka, bypassing ingest) against an embedded Tansu broker, in samples/s; NA when that
   function or the broker is not available.

Last line: RESULT agent_core_fraction=<x> simulate_samples_per_s=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import inspect
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LINKS, CELLS, HOSTS, INTERVAL_S = 100, 30, 5, 1.0
TOKEN = "bench-token-0123456789"


# ---- the sink process: acks every batch, and plays the gNB writing PM files -----------------

async def _sink(port: int, cert: Path, key: Path, pm_dir: Path) -> None:
    import grpc
    from grpc import aio

    from collector.agent.sources.cell import PM_MEASUREMENTS, render_meas_collec
    from collector.proto.telemetry.v1 import telemetry_pb2 as pb

    async def stream(requests, context):  # type: ignore[no-untyped-def]
        async for raw in requests:
            # the seq is field 2 (varint) right after agent_id; parse only what is needed
            b = pb.Batch()
            b.MergeFromString(raw)
            yield pb.Ack(seq=b.seq, code=pb.OK)

    server = aio.server(options=[("grpc.max_receive_message_length", 8 << 20)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "telemetry.v1.IngestService",
        {"Stream": grpc.stream_stream_rpc_method_handler(
            stream, request_deserializer=None,
            response_serializer=pb.Ack.SerializeToString)}),))
    creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    server.add_secure_port(f"127.0.0.1:{port}", creds)
    await server.start()
    print("sink ready", flush=True)
    metrics = sorted(PM_MEASUREMENTS)
    k = 0
    while True:
        begin = dt.datetime.now(dt.UTC).replace(microsecond=0)
        cells = {str(c): {m: (k * 7 + c * 13 + i) % 100 for i, m in enumerate(metrics)}
                 for c in range(CELLS)}
        data = render_meas_collec(begin=begin, duration_s=1, element="gNB-bench", cells=cells)
        tmp = pm_dir / f".A{k:08d}.tmp"
        tmp.write_bytes(data)
        tmp.rename(pm_dir / f"A{k:08d}.xml")  # atomic: the reader never sees half a file
        k += 1
        await asyncio.sleep(INTERVAL_S - time.time() % INTERVAL_S)


# ---- the agent, measured in this process ----------------------------------------------------

async def measure_agent(seconds: float, warmup: float) -> dict[str, float]:
    from collector.agent.batch import SiteInfo
    from collector.agent.config import (
        AgentSettings,
        CellSourceSettings,
        LinkSourceSettings,
        ServerSourceSettings,
    )
    from collector.agent.pipeline import AgentPipeline
    from collector.agent.sources import Source, run_source
    from collector.agent.sources.cell import CellSource
    from collector.agent.sources.link import LinkSource
    from collector.agent.sources.server import ServerSource
    from collector.broker import free_port
    from collector.devcerts import make_dev_certs

    with tempfile.TemporaryDirectory(prefix="agentbench-") as tmp_s:
        tmp = Path(tmp_s)
        certs = make_dev_certs(tmp / "tls")
        pm_dir = tmp / "pm"
        pm_dir.mkdir()
        port = free_port()
        sink = subprocess.Popen(
            [sys.executable, __file__, "--sink", str(port), str(certs.server_cert),
             str(certs.server_key), str(pm_dir)], stdout=subprocess.PIPE, cwd=ROOT)
        try:
            assert sink.stdout is not None
            if b"sink ready" not in sink.stdout.readline():
                raise RuntimeError("sink did not start")
            settings = AgentSettings.model_validate({
                "ingest": {"target": f"127.0.0.1:{port}", "ca_file": str(certs.ca),
                           "server_name": "localhost", "token": TOKEN},
                "spool": {"dir": str(tmp / "spool"), "fsync": "interval"},
            })
            site = SiteInfo("jp-tokyo-01", "JP", "Kanto", "Asia/Tokyo")
            sources: list[Source] = [
                LinkSource(LinkSourceSettings(adapter="synthetic", interval_s=INTERVAL_S,
                                              options={"links": LINKS, "optical_every": 2},
                                              exclude=[])),
                CellSource(CellSourceSettings(enabled=True, pm_dir=pm_dir, interval_s=INTERVAL_S,
                                              settle_s=0.0, after="delete")),
                *(ServerSource(ServerSourceSettings(interval_s=INTERVAL_S), host=f"host-{i}")
                  for i in range(HOSTS)),
            ]
            stop = asyncio.Event()
            async with AgentPipeline(settings, agent_id="bench-agent", site=site,
                                     boot_id="bench", spool_dir=tmp / "spool") as p:
                tasks = [asyncio.create_task(run_source(s, p, stop)) for s in sources]
                await asyncio.sleep(warmup)
                samples0 = sum(s.stats.samples for s in sources)
                sent0, acked0 = p.stats.sent, p.stats.acked
                cpu0, wall0 = time.process_time(), time.perf_counter()
                await asyncio.sleep(seconds)
                cpu = time.process_time() - cpu0
                wall = time.perf_counter() - wall0
                samples = sum(s.stats.samples for s in sources) - samples0
                sent, acked = p.stats.sent - sent0, p.stats.acked - acked0
                stop.set()
                await asyncio.gather(*tasks)
                drained = await p.wait_drained(10.0)
                cells_read = sources[1].stats.samples
        finally:
            sink.kill()
            sink.wait()
    return {"cpu_s": cpu, "wall_s": wall, "samples": samples, "batches": sent, "acked": acked,
            "drained": float(drained), "cell_samples_total": cells_read}


async def measure_simulator(seconds: float) -> float | None:
    try:
        from collector.simulate.bench import measure_generation
    except ImportError as exc:
        print(f"simulator: collector.simulate.bench.measure_generation not available ({exc})")
        return None
    from collector.broker import EmbeddedBroker, TopicSpec
    from collector.errors import BrokerLaunchError

    try:
        async with EmbeddedBroker(topics=(TopicSpec("simbench", 6, 600_000),)) as b:
            res = measure_generation(b.bootstrap, "simbench", seconds)
            rate = await res if inspect.isawaitable(res) else res
            return float(rate)
    except BrokerLaunchError as exc:
        print(f"simulator: no broker ({exc})")
        return None


async def main(seconds: float, sim_seconds: float, warmup: float) -> None:
    r = await measure_agent(seconds, warmup)
    cpu, wall = r["cpu_s"], r["wall_s"]
    fraction = cpu / wall
    print(f"agent: {LINKS} links, {CELLS} cells, {HOSTS} hosts at {INTERVAL_S:g} s; "
          f"measured {wall:.1f} s after {warmup:g} s warm-up (pid {os.getpid()})")
    print(f"  samples collected   {r['samples']:.0f} ({r['samples'] / wall:.0f}/s; cell samples "
          f"so far {r['cell_samples_total']:.0f})")
    print(f"  batches sent/acked  {r['batches']:.0f}/{r['acked']:.0f}; spool drained at the end: "
          f"{bool(r['drained'])}")
    print(f"  CPU                 {cpu:.3f} s = {fraction * 100:.2f}% of one core (target <= 2%)")
    if r["samples"]:
        print(f"  per sample          {cpu / r['samples'] * 1e6:.2f} us CPU")
    if r["batches"]:
        print(f"  per sent batch      {cpu / r['batches'] * 1e3:.3f} ms CPU")
    rate = await measure_simulator(sim_seconds)
    sim = "NA" if rate is None else f"{rate:.0f}"
    if rate is not None:
        print(f"simulator: {rate:.0f} samples/s straight to Kafka (target >= 2,000,000)")
    print(f"RESULT agent_core_fraction={fraction:.4f} simulate_samples_per_s={sim}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--sink":
        asyncio.run(_sink(int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]),
                          Path(sys.argv[5])))
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="agent measurement window")
    ap.add_argument("--sim-seconds", type=float, default=10.0, help="simulator run")
    ap.add_argument("--quick", action="store_true", help="8 s agent window, 5 s simulator")
    a = ap.parse_args()
    if a.quick:
        a.seconds, a.sim_seconds = 8.0, 5.0
    asyncio.run(main(a.seconds, a.sim_seconds, warmup=3.0))
