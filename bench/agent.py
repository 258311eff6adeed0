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
3. Link adapters (`--adapters`, also part of the default run): the agent's CPU for 100
   interfaces at a 1 s interval with each link adapter, one after the other in the same run,
   as a ratio to `linux`. To give every adapter the same 100 real interfaces without
   touching the machine's network, the measurement re-runs itself in a new network and mount
   namespace (`unshare --net --mount`, needs root) with 50 veth pairs: `linux` reads them
   from that namespace's /sys/class/net; `snmp` polls Debian's snmpd (v2c, and v3 authPriv
   SHA/AES) serving their IF-MIB on the namespace's loopback; `gnmi` subscribes over TLS to
   the tests' gNMI target (tests/gnmi_support.py, in the sink process) streaming 100
   OpenConfig interfaces, half with transceiver optics, one SAMPLE per second. The agent
   side is the link source, spool and sender to the acking sink. NA when unshare, ip or
   snmpd is missing.

Last line: RESULT agent_core_fraction=<x> simulate_samples_per_s=<n>
  link_linux_core_per_100if_1s=<x> link_snmp_core_per_100if_1s=<x>
  link_snmp_v3_core_per_100if_1s=<x> link_gnmi_core_per_100if_1s=<x>
  snmp_to_linux=<r> snmp_v3_to_linux=<r> gnmi_to_linux=<r>
(link_*: CPU seconds per 100 interface readings = the core fraction of 100 interfaces at a
1 s interval; *_to_linux: same-run ratios)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LINKS, CELLS, HOSTS, INTERVAL_S = 100, 30, 5, 1.0
TOKEN = "bench-token-0123456789"


# ---- the sink process: acks every batch, and plays the gNB writing PM files -----------------


async def _sink(port: int, cert: Path, key: Path, pm_dir: Path | None) -> None:
    import grpc
    from grpc import aio

    from collector.agent.sources.pm_parser import MEASUREMENTS
    from collector.proto.telemetry.v1 import telemetry_pb2 as pb
    from collector.simulate.pm_writer import render_meas_collec

    async def stream(requests, context):  # type: ignore[no-untyped-def]
        async for raw in requests:
            # the seq is field 2 (varint) right after agent_id; parse only what is needed
            b = pb.Batch()
            b.MergeFromString(raw)
            yield pb.Ack(seq=b.seq, code=pb.OK)

    server = aio.server(options=[("grpc.max_receive_message_length", 8 << 20)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "telemetry.v1.IngestService",
                {
                    "Stream": grpc.stream_stream_rpc_method_handler(
                        stream, request_deserializer=None, response_serializer=pb.Ack.SerializeToString
                    )
                },
            ),
        )
    )
    creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    server.add_secure_port(f"127.0.0.1:{port}", creds)
    await server.start()
    print("sink ready", flush=True)
    if pm_dir is None:
        await asyncio.Event().wait()
    assert pm_dir is not None
    metrics = sorted(MEASUREMENTS)
    k = 0
    while True:
        begin = dt.datetime.now(dt.UTC).replace(microsecond=0)
        cells = {str(c): {m: (k * 7 + c * 13 + i) % 100 for i, m in enumerate(metrics)} for c in range(CELLS)}
        data = render_meas_collec(begin=begin, duration_s=1, element="gNB-bench", cells=cells)
        tmp = pm_dir / f".A{k:08d}.tmp"
        tmp.write_bytes(data)
        tmp.rename(pm_dir / f"A{k:08d}.xml")  # atomic: the reader never sees half a file
        k += 1
        await asyncio.sleep(INTERVAL_S - time.time() % INTERVAL_S)


async def _gnmi_sink(port: int, gnmi_port: int, cert: Path, key: Path, ca: Path) -> None:
    """The acking ingest sink plus a gNMI target with 100 interfaces, in one process."""
    from collector.devcerts import DevCerts
    from tests.gnmi_support import NS, Device, GnmiTarget, Port

    ports = tuple(
        Port(f"et-0/0/{i}", 1_000_000 * (i + 1), transceiver=f"xcvr-{i}" if i % 2 == 0 else "")
        for i in range(LINKS)
    )
    dev = Device(t0_ns=time.time_ns() // NS * NS, ports=ports)
    target = GnmiTarget(dev, certs=DevCerts(ca, cert, key, cert, key), pace_s=INTERVAL_S)
    await target.start(gnmi_port)
    await _sink(port, cert, key, None)


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
            [
                sys.executable,
                __file__,
                "--sink",
                str(port),
                str(certs.server_cert),
                str(certs.server_key),
                str(pm_dir),
            ],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert sink.stdout is not None
            if b"sink ready" not in sink.stdout.readline():
                raise RuntimeError("sink did not start")
            settings = AgentSettings.model_validate(
                {
                    "ingest": {
                        "target": f"127.0.0.1:{port}",
                        "ca_file": str(certs.ca),
                        "server_name": "localhost",
                        "token": TOKEN,
                    },
                    "spool": {"dir": str(tmp / "spool"), "fsync": "interval"},
                }
            )
            site = SiteInfo("jp-tokyo-01", "JP", "Kanto", "Asia/Tokyo")
            sources: list[Source] = [
                LinkSource(
                    LinkSourceSettings(
                        adapter="synthetic",
                        interval_s=INTERVAL_S,
                        options={"links": LINKS, "optical_every": 2},
                        exclude=[],
                    )
                ),
                CellSource(
                    CellSourceSettings(
                        enabled=True, pm_dir=pm_dir, interval_s=INTERVAL_S, settle_s=0.0, after="delete"
                    )
                ),
                *(
                    ServerSource(ServerSourceSettings(interval_s=INTERVAL_S), host=f"host-{i}")
                    for i in range(HOSTS)
                ),
            ]
            stop = asyncio.Event()
            async with AgentPipeline(
                settings, agent_id="bench-agent", site=site, boot_id="bench", spool_dir=tmp / "spool"
            ) as p:
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
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "samples": samples,
        "batches": sent,
        "acked": acked,
        "drained": float(drained),
        "cell_samples_total": cells_read,
    }


SNMP_COMMUNITY, SNMP_USER, SNMP_AUTH, SNMP_PRIV = "bench-c0mm", "bench", "bench-auth-1", "bench-priv-1"


def _netns_setup(pairs: int) -> None:
    """Inside the private namespace: loopback up, sysfs of this namespace, veth pairs up."""
    subprocess.run(["mount", "-t", "sysfs", "sysfs", "/sys"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    batch = "".join(
        f"link add bench{i}a type veth peer name bench{i}b\nlink set bench{i}a up\nlink set bench{i}b up\n"
        for i in range(pairs)
    )
    subprocess.run(["ip", "-batch", "-"], input=batch.encode(), check=True)


async def _run_link_source(
    adapter: str, options: dict, seconds: float, warmup: float, sink_port: int, certs, tmp: Path
) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from collector.agent.batch import SiteInfo
    from collector.agent.config import AgentSettings, LinkSourceSettings
    from collector.agent.pipeline import AgentPipeline
    from collector.agent.sources import run_source
    from collector.agent.sources.link import LinkSource

    spool = tmp / f"spool-{adapter}-{len(options)}-{time.monotonic_ns()}"
    settings = AgentSettings.model_validate(
        {
            "ingest": {
                "target": f"127.0.0.1:{sink_port}",
                "ca_file": str(certs.ca),
                "server_name": "localhost",
                "token": TOKEN,
            },
            "spool": {"dir": str(spool), "fsync": "interval"},
        }
    )
    site = SiteInfo("jp-tokyo-01", "JP", "Kanto", "Asia/Tokyo")
    src = LinkSource(
        LinkSourceSettings(adapter=adapter, interval_s=INTERVAL_S, options=options, exclude=["lo", "*:lo"])
    )
    stop = asyncio.Event()
    readings = [0]
    read = src.adapter.read

    async def counted() -> Any:  # interface readings delivered (the unit of the figure)
        got = await read()
        readings[0] += len(got)
        return got

    src.adapter.read = counted  # type: ignore[method-assign]
    try:
        async with AgentPipeline(
            settings, agent_id=f"bench-{adapter}", site=site, boot_id="bench", spool_dir=spool
        ) as p:
            task = asyncio.create_task(run_source(src, p, stop))
            await asyncio.sleep(warmup)
            s0, c0, r0 = src.stats.samples, src.stats.collections, readings[0]
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(seconds)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            samples = src.stats.samples - s0
            n_readings = readings[0] - r0
            stop.set()
            await task
    finally:
        await src.close()
    errors = {t: dict(st.errors) for t, st in src.stats.targets.items() if st.errors}
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "samples": samples,
        "readings": n_readings,
        "collections": src.stats.collections - c0,
        "errors": errors,
    }


def _start_snmpd(tmp: Path) -> tuple[subprocess.Popen, int]:  # type: ignore[type-arg]
    from tests.snmp_support import free_udp_port

    port = free_udp_port()
    conf = tmp / "snmpd.conf"
    conf.write_text(
        f"agentAddress udp:127.0.0.1:{port}\nrocommunity {SNMP_COMMUNITY} 127.0.0.1\n"
        f'createUser {SNMP_USER} SHA "{SNMP_AUTH}" AES "{SNMP_PRIV}"\n'
        f"rouser {SNMP_USER} priv\n"
    )
    (tmp / "snmp-persist").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [
            shutil.which("snmpd") or "/usr/sbin/snmpd",
            "-f",
            "-Ln",
            "-C",
            "-c",
            str(conf),
            "-M",
            str(tmp / "nomibs"),
            "-m",
            "",
            "-p",
            str(tmp / "snmpd.pid"),
        ],
        env={**os.environ, "SNMP_PERSISTENT_DIR": str(tmp / "snmp-persist"), "MIBS": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        ok = (
            subprocess.run(
                [
                    "snmpget",
                    "-v2c",
                    "-c",
                    SNMP_COMMUNITY,
                    "-t",
                    "0.3",
                    "-r",
                    "0",
                    f"127.0.0.1:{port}",
                    "1.3.6.1.2.1.1.3.0",
                ],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )
        if ok:
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("snmpd did not answer")


async def measure_adapters_here(seconds: float, warmup: float) -> dict[str, dict]:
    """Runs inside the private namespace (see the module doc)."""
    from collector.broker import free_port
    from collector.devcerts import make_dev_certs

    _netns_setup(LINKS // 2)
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="adapterbench-") as tmp_s:
        tmp = Path(tmp_s)
        certs = make_dev_certs(tmp / "tls")
        sink_port, gnmi_port = free_port(), free_port()
        sink = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--gnmi-sink",
                str(sink_port),
                str(gnmi_port),
                str(certs.server_cert),
                str(certs.server_key),
                str(certs.ca),
            ],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        snmpd, snmp_port = _start_snmpd(tmp)
        try:
            assert sink.stdout is not None
            if b"sink ready" not in sink.stdout.readline():
                raise RuntimeError("sink did not start")
            snmp_target = {
                "name": "sw",
                "address": f"127.0.0.1:{snmp_port}",
                "max_repetitions": 25,
                "timeout_s": 1.0,
            }
            runs = {
                "linux": ("linux", {}),
                "snmp": (
                    "snmp",
                    {"interval_s": INTERVAL_S, "targets": [{**snmp_target, "community": SNMP_COMMUNITY}]},
                ),
                "snmp_v3": (
                    "snmp",
                    {
                        "interval_s": INTERVAL_S,
                        "targets": [
                            {
                                **snmp_target,
                                "version": "3",
                                "user": SNMP_USER,
                                "auth_key": SNMP_AUTH,
                                "priv_key": SNMP_PRIV,
                            }
                        ],
                    },
                ),
                "gnmi": (
                    "gnmi",
                    {
                        "interval_s": INTERVAL_S,
                        "targets": [
                            {
                                "name": "r1",
                                "address": f"127.0.0.1:{gnmi_port}",
                                "ca_file": str(certs.ca),
                                "server_name": "localhost",
                            }
                        ],
                    },
                ),
            }
            for name, (adapter, options) in runs.items():
                out[name] = await _run_link_source(adapter, options, seconds, warmup, sink_port, certs, tmp)
        finally:
            sink.kill()
            sink.wait()
            snmpd.terminate()
            snmpd.wait(10)
    return out


def measure_adapters(seconds: float, warmup: float) -> dict[str, dict] | None:
    """Re-runs this script in a private network+mount namespace; None when impossible."""
    missing = [
        b
        for b in ("unshare", "ip", "snmpd", "snmpget")
        if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()
    ]
    if missing or os.geteuid() != 0:
        print(f"link adapters: NA ({'missing ' + ', '.join(missing) if missing else 'needs root'})")
        return None
    res = subprocess.run(
        [
            "unshare",
            "--net",
            "--mount",
            "--",
            sys.executable,
            __file__,
            "--adapters-in-netns",
            str(seconds),
            str(warmup),
        ],
        capture_output=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    if res.returncode != 0:
        print(f"link adapters: NA (namespace run failed: {res.stderr.decode()[-2000:]})")
        return None
    return json.loads(res.stdout.decode().strip().splitlines()[-1])


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


def report_adapters(res: dict[str, dict] | None) -> str:
    """Per adapter: CPU seconds per 100 interface readings, which at a 1 s interval is the
    fraction of one core 100 interfaces cost (polls that failed or ran late are not in
    the denominator), and the same-run ratio to linux."""
    keys = ("linux", "snmp", "snmp_v3", "gnmi")
    if res is None:
        return " ".join(
            [f"link_{k}_core_per_100if_1s=NA" for k in keys] + [f"{k}_to_linux=NA" for k in keys[1:]]
        )
    print(
        f"link adapters: {LINKS} interfaces at {INTERVAL_S:g} s, one after the other in one run "
        f"(agent process CPU: link source + spool + sender)"
    )
    per100 = {}
    for k in keys:
        r = res[k]
        per100[k] = r["cpu_s"] / max(r["readings"], 1) * 100
        print(
            f"  {k:8s} {per100[k] * 100:6.2f}% of one core per 100 interfaces at 1 s "
            f"({r['cpu_s'] / r['wall_s'] * 100:.2f}% measured, {r['readings']} interface "
            f"readings in {r['wall_s']:.1f} s, {r['samples']} samples)"
            + (f", errors {r['errors']}" if r["errors"] else "")
        )
    lin = per100["linux"]
    return " ".join(
        [f"link_{k}_core_per_100if_1s={per100[k]:.4f}" for k in keys]
        + [f"{k}_to_linux={per100[k] / lin:.2f}" for k in keys[1:]]
    )


async def main(seconds: float, sim_seconds: float, warmup: float, adapters: str) -> None:
    if adapters == "only":
        print("RESULT " + report_adapters(measure_adapters(seconds, warmup)))
        return
    r = await measure_agent(seconds, warmup)
    cpu, wall = r["cpu_s"], r["wall_s"]
    fraction = cpu / wall
    print(
        f"agent: {LINKS} links, {CELLS} cells, {HOSTS} hosts at {INTERVAL_S:g} s; "
        f"measured {wall:.1f} s after {warmup:g} s warm-up (pid {os.getpid()})"
    )
    print(
        f"  samples collected   {r['samples']:.0f} ({r['samples'] / wall:.0f}/s; cell samples "
        f"so far {r['cell_samples_total']:.0f})"
    )
    print(
        f"  batches sent/acked  {r['batches']:.0f}/{r['acked']:.0f}; spool drained at the end: "
        f"{bool(r['drained'])}"
    )
    print(f"  CPU                 {cpu:.3f} s = {fraction * 100:.2f}% of one core (target <= 2%)")
    if r["samples"]:
        print(f"  per sample          {cpu / r['samples'] * 1e6:.2f} us CPU")
    if r["batches"]:
        print(f"  per sent batch      {cpu / r['batches'] * 1e3:.3f} ms CPU")
    rate = await measure_simulator(sim_seconds)
    sim = "NA" if rate is None else f"{rate:.0f}"
    if rate is not None:
        print(f"simulator: {rate:.0f} samples/s straight to Kafka (target >= 2,000,000)")
    links = report_adapters(measure_adapters(seconds, warmup)) if adapters == "yes" else ""
    print(f"RESULT agent_core_fraction={fraction:.4f} simulate_samples_per_s={sim} {links}".rstrip())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--gnmi-sink":
        asyncio.run(
            _gnmi_sink(
                int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]), Path(sys.argv[6])
            )
        )
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--adapters-in-netns":
        result = asyncio.run(measure_adapters_here(float(sys.argv[2]), float(sys.argv[3])))
        print(json.dumps(result))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--sink":
        asyncio.run(_sink(int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])))
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="agent measurement window")
    ap.add_argument("--sim-seconds", type=float, default=10.0, help="simulator run")
    ap.add_argument("--quick", action="store_true", help="8 s agent window, 5 s simulator")
    ap.add_argument(
        "--adapters",
        choices=("yes", "no", "only"),
        default="yes",
        help="measure the link adapters too (part 3), skip them, or only them",
    )
    a = ap.parse_args()
    if a.quick:
        a.seconds, a.sim_seconds = 8.0, 5.0
    asyncio.run(main(a.seconds, a.sim_seconds, warmup=3.0, adapters=a.adapters))
