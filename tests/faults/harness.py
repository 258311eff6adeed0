"""The whole pipeline as separate processes, and the one checker of the fault suite.

    async with Stack(tmp, sites=4) as s:       # own Tansu broker, TLS ingest, aggregator, agents
        await s.start_agents()
        await s.ingest.kill()                  # real signals, by pid
        ...
        report = await s.check()               # acknowledged vs Kafka vs published vs truth

Processes are started as the CLI starts them: `python -m collector ingest|aggregate --config
FILE`, agents as `python -m tests.faults.agent_proc LEDGER -- agent --config FILE` (the CLI
plus a ledger of issued and acknowledged seqs) with the deterministic `synthetic` link
adapter. Everything listens on 127.0.0.1 with free ports and every process is stopped by pid.

The checker (`check`) compares, for every batch identified by (agent_id, seq):
  * what agents saw acknowledged (their ledgers) against what is in Kafka, read by an
    independent client (confluent-kafka / librdkafka, not aiokafka): nothing acknowledged
    is missing, nothing in Kafka was never issued, every copy of a seq is the same bytes;
  * what the aggregator published (its window log, every publication of every incarnation)
    against the ground truth computed here, in Python integers, from the distinct batches:
    every closed window equals the truth, and a window published twice has one value.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from collector.broker import EmbeddedBroker, TopicSpec, free_port
from collector.devcerts import DevCerts, make_dev_certs
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.agent_support import metric_value, scrape, write_yaml
from tests.aggregate_support import NS, TruthCounter, label_key, window_truth
from tests.ingest_support import SITES, TOKENS, token_for
from tests.procs import ChildProcess as Process
from tests.tcpproxy import TcpProxy

FULL = os.environ.get("FAULTS_FULL", "") not in ("", "0")  # the documented long form


def scaled(quick: float, full: float) -> float:
    """A duration of the quick form (CI) or of the full form (FAULTS_FULL=1)."""
    return full if FULL else quick


@dataclass
class Agent:
    agent_id: str
    site: str
    config: Path
    ledger: Path
    spool: Path
    log: Path
    proc: Process | None = None
    prefix: list[str] = field(default_factory=list)

    @property
    def metrics_port(self) -> int:
        assert self.proc is not None
        assert self.proc.match is not None
        return int(self.proc.match["port"])

    async def start(self, *, queue: bool = True) -> Process:
        self.proc = Process(
            f"agent {self.agent_id}",
            ["-m", "tests.faults.agent_proc", str(self.ledger), "--", "agent", "--config", str(self.config)],
            self.log,
            r"agent ready: .*metrics port=(?P<port>\d+)",
            prefix=self.prefix,
        )
        return await self.proc.start(queue=queue)


@dataclass
class WebAuth:
    """The stack's /metrics web config (see `Stack.secure_metrics`)."""

    config: Path
    ca: Path
    user: str
    password: str


def https_get(
    port: int,
    web: WebAuth | None,
    path: str = "/metrics",
    *,
    user: str | None = None,
    password: str | None = None,
    timeout: float = 20.0,
) -> tuple[int, str]:
    """GET over HTTPS trusting the stack's CA; basic auth with `web`'s credentials (or the
    given ones; user="" sends none). Blocking: run it in a thread."""
    import base64
    import ssl
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
    u = web.user if user is None and web is not None else user
    pw = web.password if password is None and web is not None else password
    if u:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{u}:{pw}".encode()).decode())
    ctx = ssl.create_default_context(cafile=str(web.ca)) if web is not None else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class Report:
    """What the checker found (every figure the docs table reports)."""

    issued: int = 0
    acked: int = 0
    in_kafka: int = 0  # distinct (agent_id, seq)
    kafka_records: int = 0
    duplicates: int = 0
    acked_missing: list[tuple[str, int]] = field(default_factory=list)
    never_issued: list[tuple[str, int]] = field(default_factory=list)
    reused: list[tuple[str, int]] = field(default_factory=list)
    windows_checked: int = 0
    windows_published: int = 0
    republished: int = 0
    republished_different: list[Any] = field(default_factory=list)
    windows_wrong: list[Any] = field(default_factory=list)
    windows_missing: list[Any] = field(default_factory=list)
    late: float = 0.0  # samples the aggregators dropped as late (a legit reason to differ)

    def assert_ok(self, *, max_duplicates: int | None = None, windows: bool = True) -> None:
        assert not self.acked_missing, f"acknowledged but not in Kafka: {self.acked_missing[:10]}"
        assert not self.never_issued, f"in Kafka but never issued: {self.never_issued[:10]}"
        assert not self.reused, f"one seq, different bytes: {self.reused[:10]}"
        assert self.acked > 0, "nothing was acknowledged: the load did not run"
        if max_duplicates is not None:
            assert self.duplicates <= max_duplicates, self
        if windows:
            assert not self.republished_different, (
                f"closed windows re-published with other values: {self.republished_different[:5]}"
            )
            assert not self.windows_wrong, (
                f"windows differ from the truth ({self.summary()}): {self.windows_wrong[:3]}"
            )
            assert not self.windows_missing, f"truth windows never published: {self.windows_missing[:5]}"
            assert self.windows_checked > 0, "no closed window to compare"

    def summary(self) -> str:
        return (
            f"issued={self.issued} acked={self.acked} kafka_distinct={self.in_kafka} "
            f"kafka_records={self.kafka_records} duplicates={self.duplicates} "
            f"acked_missing={len(self.acked_missing)} windows_checked={self.windows_checked} "
            f"republished={self.republished} republished_different={len(self.republished_different)} "
            f"windows_wrong={len(self.windows_wrong)} windows_missing={len(self.windows_missing)} "
            f"late={self.late:.0f}"
        )


def read_ledger(path: Path) -> tuple[set[int], set[int]]:
    issued: set[int] = set()
    acked: set[int] = set()
    if not path.exists():
        return issued, acked
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2 or not all(p.isdigit() for p in parts[1:]):
            continue  # a line torn by SIGKILL
        if parts[0] == "S":
            issued.add(int(parts[1]))
        elif parts[0] == "A":
            acked.update(int(p) for p in parts[1:])
    return issued, acked


def read_kafka(
    bootstrap: str, topic: str, *, at_least: int = 0, idle_s: float = 3.0, within: float = 60.0
) -> list[tuple[pb.Batch, bytes]]:
    """Every record of `topic`, by an independent client (librdkafka). Blocking: run it in a
    thread. Reads until at least `at_least` records and nothing new for `idle_s`."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"faults-reader-{os.getpid()}-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "broker.address.family": "v4",
            "log_level": 3,
        }
    )
    try:
        md = c.list_topics(topic, timeout=20)
        parts = sorted(md.topics[topic].partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: list[tuple[pb.Batch, bytes]] = []
        end = time.monotonic() + within
        last_new = time.monotonic()
        while time.monotonic() < end:
            msgs = c.consume(num_messages=2000, timeout=0.5)
            got = 0
            for m in msgs:
                if m.error() is not None:
                    continue
                if any(k == "planted" for k, _ in (m.headers() or ())):
                    got += 1  # progress, not a batch
                    continue  # a case's malformed record written straight to Kafka (case 9)
                v = m.value()
                out.append((pb.Batch.FromString(v), v))
                got += 1
            now = time.monotonic()
            if got:
                last_new = now
            elif len(out) >= at_least and now - last_new >= idle_s:
                break
        return out
    finally:
        c.close()


def read_window_logs(paths: list[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in paths:
        if not p.exists():
            continue
        for line in p.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the last line of an incarnation killed mid-write
    return rows


def truth_windows(
    batches: list[pb.Batch], windows_s: tuple[int, ...], pane_s: int
) -> dict[tuple[str, str, str, int, int], tuple]:
    """Ground truth of every window, from distinct batches, one sample at a time in Python
    integers (see tests/aggregate_support.py): counters (increase, dt_ns, n), gauges
    (sum, count, min, max)."""
    from collector.catalog import METRICS, Kind

    spec = {m.name: m for m in METRICS}
    counters: dict[tuple[str, str, str], list[tuple[int, int, object]]] = defaultdict(list)
    gauges: dict[tuple[str, str, str], list[tuple[int, float]]] = defaultdict(list)
    for b in batches:
        site = b.site.site_id
        keys = []
        for s in b.series:
            m = spec.get(s.metric)
            if m is None:
                keys.append(None)
                continue
            labels = {lb.name: lb.value for lb in s.labels if lb.name in m.labels}
            epoch = (b.boot_id, s.start_time_unix_nano, s.scale or 1.0, s.counter_bits)
            keys.append(((site, s.metric, label_key(labels)), m.kind, epoch))
        for i, t, v in zip(b.counters.series_index, b.counters.time_unix_nano, b.counters.value, strict=True):
            k = keys[i]
            if k is not None and k[1] is Kind.COUNTER:
                counters[k[0]].append((t, v, k[2]))
        for i, t, v in zip(b.gauges.series_index, b.gauges.time_unix_nano, b.gauges.value, strict=True):
            k = keys[i]
            if k is not None and k[1] is Kind.GAUGE:
                gauges[k[0]].append((t, v))
    pane = pane_s * NS
    slides = {w: windows_s[max(0, j - 1)] * NS for j, w in enumerate(windows_s)}
    out: dict[tuple[str, str, str, int, int], tuple] = {}
    for key, samples in counters.items():
        samples.sort(key=lambda x: x[0])
        tc = TruthCounter(bits=64)
        for t, v, e in samples:
            tc.add(t, v, e)
        lo, hi = samples[0][0], samples[-1][0]
        for w in windows_s:
            ends = list(range((lo // slides[w] + 1) * slides[w], hi + w * NS + 1, slides[w]))
            for end, val in window_truth(tc.deltas, w * NS, pane, ends).items():
                out[(*key, w, end)] = val
    for key, gs in gauges.items():
        ts = sorted(gs)
        lo, hi = ts[0][0], ts[-1][0]
        for w in windows_s:
            for end in range((lo // slides[w] + 1) * slides[w], hi + w * NS + 1, slides[w]):
                vals = [v for t, v in ts if end - w * NS <= t < end]
                if vals:
                    out[(*key, w, end)] = (sum(vals), len(vals), min(vals), max(vals))
    return out


def _published_value(r: dict[str, Any]) -> tuple | None:
    if r["kind"] == "counter":
        return (int(r["increase"]), r["dt_ns"], r["n"]) if r["n"] else None
    return (r["sum"], r["count"], r["min"], r["max"])


def _same(a: tuple, b: tuple) -> bool:
    if len(a) == 4:  # gauge: the sum is a float sum in another order
        return math.isclose(a[0], b[0], rel_tol=1e-9, abs_tol=1e-9) and a[1:] == b[1:]
    return a == b


class Stack:
    """Broker + ingest + aggregator(s) + agents, each its own process."""

    def __init__(
        self,
        tmp: Path,
        *,
        sites: int = 2,
        partitions: int = 2,
        windows_s: tuple[int, ...] = (2, 10),
        allowed_lateness_s: float = 6.0,
        link_interval_s: float = 0.5,
        links: int = 4,
        agent: dict[str, Any] | None = None,
        ingest: dict[str, Any] | None = None,
        aggregate: dict[str, Any] | None = None,
        aggregators: int = 1,
        proxy: bool = False,
    ) -> None:
        self.tmp = tmp
        # 1 JP + 1 US by default; 4 = 2 JP + 2 US
        self.site_ids = ["jp-tokyo-01", "us-dallas-01", "jp-osaka-01", "us-seattle-01"][:sites]
        self.partitions = partitions
        self.windows_s = windows_s
        self.lateness = allowed_lateness_s
        self.link_interval_s = link_interval_s
        self.links = links
        self.agent_over = agent or {}
        self.ingest_over = ingest or {}
        self.aggregate_over = aggregate or {}
        self.n_aggregators = aggregators
        self.broker = EmbeddedBroker()
        self.topic = "telemetry.faults"
        self.certs: DevCerts | None = None
        self.ingest_port = 0
        self.ingest: Process | None = None
        self.aggregators: list[Process | None] = [None] * aggregators
        self.window_logs = [tmp / f"windows-{i}.jsonl" for i in range(aggregators)]
        self.agents: list[Agent] = []
        self.agent_target = ""  # where agents connect (the ingest, or a proxy in front of it)
        self.with_proxy = proxy
        self.proxy: TcpProxy | None = None
        self.web: WebAuth | None = None  # /metrics of every process over HTTPS + basic auth
        self.kafka_over: dict[str, Any] = {}  # kafka settings of the ingest and aggregators
        self.tokens = dict(TOKENS)  # the ingest's tokens file (token -> site)
        self.tokens_file = tmp / "tokens.yaml"
        # batches of agents not run by the stack (a case's own gRPC client): in Kafka without
        # a ledger, and their sites' windows not compared (see check)
        self.foreign_agents: set[str] = set()
        self.foreign_sites: set[str] = set()

    # --- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.broker.start()
        await self.broker.create_topics(
            [TopicSpec(self.topic, self.partitions, 3_600_000), TopicSpec(self.topic + ".dlq", 1, 3_600_000)]
        )
        self.certs = make_dev_certs(self.tmp / "tls")
        self.ingest_port = free_port()
        self.agent_target = f"127.0.0.1:{self.ingest_port}"
        if self.with_proxy:
            self.proxy = TcpProxy("127.0.0.1", self.ingest_port)
            await self.proxy.start()
            self.agent_target = f"127.0.0.1:{self.proxy.port}"
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.broker.resume()
        for a in self.agents:
            if a.proc is not None:
                await a.proc.kill()
        for g in self.aggregators:
            if g is not None:
                await g.kill()
        if self.ingest is not None:
            await self.ingest.kill()
        if self.proxy is not None:
            await self.proxy.stop()
        await self.broker.stop()

    def secure_metrics(self, user: str = "prometheus", password: str = "scrape-pw-0123456789") -> WebAuth:
        """Serve every process's /metrics over HTTPS with basic auth (call before starting
        them): one web config file (exporter-toolkit format) for all, the stack's CA."""
        import bcrypt

        assert self.certs is not None
        h = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        cfg = write_yaml(
            self.tmp / "web.yml",
            {
                "tls_server_config": {
                    "cert_file": str(self.certs.server_cert),
                    "key_file": str(self.certs.server_key),
                },
                "basic_auth_users": {user: h},
            },
        )
        self.web = WebAuth(cfg, self.certs.ca, user, password)
        for over in (self.ingest_over, self.aggregate_over, self.agent_over):
            over["metrics_web_config"] = str(cfg)
        return self.web

    def ingest_config(self) -> Path:
        assert self.certs is not None
        tokens = write_yaml(self.tokens_file, self.tokens)
        return write_yaml(
            self.tmp / "ingest.yaml",
            {
                "kafka": {
                    "bootstrap_servers": self.broker.bootstrap,
                    "topic": self.topic,
                    "produce_timeout_s": 5.0,
                    **self.kafka_over,
                },
                "ingest": {
                    "listen": f"127.0.0.1:{self.ingest_port}",
                    "metrics_listen": "127.0.0.1:0",
                    "tls_cert": str(self.certs.server_cert),
                    "tls_key": str(self.certs.server_key),
                    "tokens_file": str(tokens),
                    "grace_period_s": 2.0,
                    **self.ingest_over,
                },
            },
        )

    async def start_ingest(self) -> Process:
        if self.proxy is not None:
            # agents connect to the proxy; each ingest start gets a fresh port behind it (a
            # port freed by SIGKILL can be taken by any process on the machine meanwhile)
            self.ingest_port = free_port()
            self.proxy.upstream = ("127.0.0.1", self.ingest_port)
        self.ingest = Process(
            "ingest",
            ["-m", "collector", "ingest", "--config", str(self.ingest_config())],
            self.tmp / "ingest.log",
            r"ingest ready: grpc port=(?P<port>\d+) metrics port=(?P<metrics>\d+)",
        )
        return await self.ingest.start()

    def aggregate_config(self, i: int) -> Path:
        return write_yaml(
            self.tmp / f"aggregate-{i}.yaml",
            {
                "kafka": {
                    "bootstrap_servers": self.broker.bootstrap,
                    "topic": self.topic,
                    "dead_letter_topic": self.topic + ".dlq",
                    **self.kafka_over,
                },
                "aggregate": {
                    "windows_s": list(self.windows_s),
                    "allowed_lateness_s": self.lateness,
                    "metrics_listen": "127.0.0.1:0",
                    "window_log": str(self.window_logs[i]),
                    "state_topic": self.topic + ".state",
                    "group_id": "faults-agg",
                    "session_timeout_ms": 6000,
                    "heartbeat_interval_ms": 1000,
                    **self.aggregate_over,
                },
            },
        )

    async def start_aggregator(self, i: int = 0) -> Process:
        p = Process(
            f"aggregator {i}",
            ["-m", "collector", "aggregate", "--config", str(self.aggregate_config(i))],
            self.tmp / f"aggregate-{i}.log",
            r"/metrics: https?://127.0.0.1:(?P<port>\d+)/",
        )
        self.aggregators[i] = await p.start()
        return p

    def agent_config(self, a: Agent) -> Path:
        assert self.certs is not None
        site = SITES[a.site]
        over = dict(self.agent_over)
        ingest = {
            "target": self.agent_target,
            "ca_file": str(self.certs.ca),
            "token": token_for(a.site),
            "server_name": "localhost",
            "backoff_initial_s": 0.05,
            "backoff_max_s": 1.0,
            "connect_timeout_s": 2.0,
            "ack_timeout_s": 6.0,
            **over.pop("ingest", {}),
        }
        return write_yaml(
            a.config,
            {
                "agent": {
                    "agent_id": a.agent_id,
                    "site": {
                        "site_id": site.site_id,
                        "country": site.country,
                        "region": site.region,
                        "timezone": site.timezone,
                    },
                    "ingest": ingest,
                    "spool": {"dir": str(a.spool), **over.pop("spool", {})},
                    "metrics_listen": "127.0.0.1:0",
                    "shutdown_grace_s": 5.0,
                    "sources": {
                        "server": {"enabled": False},
                        "cell": {"enabled": False},
                        "link": {
                            "adapter": "synthetic",
                            "interval_s": self.link_interval_s,
                            "options": {"links": self.links},
                        },
                    },
                    **over,
                }
            },
        )

    async def start_agents(self, fault_injection: set[str] | None = None) -> list[Agent]:
        """Start every site's agent; those of `fault_injection` sites under `fiu-run -x`."""
        if not self.agents:
            for site in self.site_ids:
                d = self.tmp / f"agent-{site}"
                d.mkdir(exist_ok=True)
                a = Agent(f"agent-{site}", site, d / "agent.yaml", d / "ledger", d / "spool", d / "agent.log")
                if site in (fault_injection or ()):
                    a.prefix = ["fiu-run", "-x"]
                self.agent_config(a)
                self.agents.append(a)
        await asyncio.gather(*(a.start() for a in self.agents))
        return self.agents

    async def start_agents_subset(self, agents: list[Agent]) -> None:
        await asyncio.gather(*(a.start(queue=False) for a in agents))

    async def scrape(self, port: int) -> str:
        """/metrics of a process of this stack (over HTTPS with basic auth when `web` is set)."""
        if self.web is None:
            return await scrape(port)
        status, body = await asyncio.to_thread(https_get, port, self.web)
        assert status == 200, f"/metrics on port {port} answered {status}"
        return body

    async def scrape_aggregator(self, port: int) -> str:
        return await self.scrape(port)

    async def scrape_agent(self, a: Agent) -> str:
        return await self.scrape(a.metrics_port)

    async def wait_all_connected_and_acking(self, within: float = 10.0) -> float:
        """Seconds until every agent has a new OK ack (its stream is back); fails after `within`."""
        t0 = time.monotonic()
        base = {aid: len(ack) for aid, (_, ack) in self.ledgers().items()}
        while True:
            now = {aid: len(ack) for aid, (_, ack) in self.ledgers().items()}
            if all(now[a] > base[a] for a in base):
                return time.monotonic() - t0
            assert time.monotonic() - t0 < within, (
                f"streams not back within {within}s: {[a for a in base if now[a] <= base[a]]}"
            )
            await asyncio.sleep(0.05)

    @staticmethod
    def value(text: str, name: str, **labels: str) -> float | None:
        return metric_value(text, name, **labels)

    async def stop_agents(self, within: float = 30.0) -> list[int]:
        """SIGTERM every agent (they drain for shutdown_grace_s); their exit codes."""
        out = []
        for a in self.agents:
            if a.proc is not None:
                rc = await a.proc.terminate(within)
                out.append(rc)
        return out

    # --- observation -------------------------------------------------------------------
    def ledgers(self) -> dict[str, tuple[set[int], set[int]]]:
        return {a.agent_id: read_ledger(a.ledger) for a in self.agents}

    def acked_total(self) -> int:
        return sum(len(ack) for _, ack in self.ledgers().values())

    async def ingest_metric(self, name: str, **labels: str) -> float | None:
        assert self.ingest is not None
        assert self.ingest.match is not None
        return metric_value(await self.scrape(int(self.ingest.match["metrics"])), name, **labels)

    async def wait_acked(self, more_than: int, within: float = 60.0) -> bool:
        end = time.monotonic() + within
        while time.monotonic() < end:
            if self.acked_total() > more_than:
                return True
            await asyncio.sleep(0.2)
        return False

    async def drain(self, within: float = 180.0) -> None:
        """Stop the agents (SIGTERM) and wait until everything they issued is acknowledged,
        restarting them on their spools if some was left (their grace period may end first)."""
        await self.stop_agents()
        end = time.monotonic() + within
        while True:
            pending = {aid: iss - ack for aid, (iss, ack) in self.ledgers().items() if iss - ack}
            if not pending:
                return
            assert time.monotonic() < end, f"not drained: { ({k: len(v) for k, v in pending.items()}) }"
            await self.start_agents_drain_only(pending)

    async def start_agents_drain_only(self, pending: dict[str, set[int]]) -> None:
        import yaml

        for a in self.agents:
            if a.agent_id not in pending:
                continue
            data = yaml.safe_load(a.config.read_text())
            data["agent"]["sources"]["link"]["enabled"] = False
            data["agent"]["shutdown_grace_s"] = 30.0  # --once: wait this long for the drain
            drain_cfg = a.config.with_name("drain.yaml")
            drain_cfg.write_text(yaml.safe_dump(data))
            p = Process(
                f"agent {a.agent_id} --once",
                [
                    "-m",
                    "tests.faults.agent_proc",
                    str(a.ledger),
                    "--",
                    "agent",
                    "--once",
                    "--config",
                    str(drain_cfg),
                ],
                a.log,
                r"agent ready: ",
            )
            await p.start()
            assert p.proc is not None
            await asyncio.wait_for(p.proc.wait(), 60)

    async def check(self, *, settle_s: float = 4.0) -> Report:
        """The one checker. Call after `drain()` and after the aggregators caught up."""
        rep = Report()
        ledgers = self.ledgers()
        for iss, ack in ledgers.values():
            rep.issued += len(iss)
            rep.acked += len(ack)
        records = await asyncio.to_thread(
            read_kafka, self.broker.bootstrap, self.topic, at_least=rep.acked, idle_s=settle_s
        )
        rep.kafka_records = len(records)
        copies: dict[tuple[str, int], set[bytes]] = defaultdict(set)
        distinct: dict[tuple[str, int], pb.Batch] = {}
        for b, raw in records:
            copies[(b.agent_id, b.seq)].add(raw)
            distinct.setdefault((b.agent_id, b.seq), b)
        rep.in_kafka = len(distinct)
        rep.duplicates = rep.kafka_records - rep.in_kafka
        rep.reused = sorted(k for k, v in copies.items() if len(v) > 1)
        for aid, (_iss, ack) in ledgers.items():
            rep.acked_missing += [(aid, s) for s in sorted(ack) if (aid, s) not in distinct]
        rep.never_issued = sorted(
            k
            for k, b in distinct.items()
            if k[0] not in self.foreign_agents
            and b.site.site_id not in self.foreign_sites
            and (k[0] not in ledgers or k[1] not in ledgers[k[0]][0])
        )
        truth = truth_windows(list(distinct.values()), self.windows_s, self.windows_s[0])
        rows = read_window_logs(self.window_logs)
        first: dict[tuple[str, str, str, int, int], tuple] = {}
        boundary: dict[tuple[str, int], int] = {}
        for r in rows:
            key = (r["site"], r["metric"], r["labels"], r["window_s"], r["end_ns"])
            val = _published_value(r)
            boundary[(r["site"], r["window_s"])] = max(
                boundary.get((r["site"], r["window_s"]), 0), r["end_ns"]
            )
            if val is None:
                continue
            if key in first:
                rep.republished += 1
                if not _same(first[key], val):
                    rep.republished_different.append((key, first[key], val))
                continue
            first[key] = val
        rep.windows_published = len(first)
        for g in self.aggregators:
            if g is not None and g.alive() and g.match is not None:
                text = await self.scrape(int(g.match["port"]))
                rep.late += sum(
                    metric_value(text, "collector_site_samples_dropped_total", site=x, reason="late") or 0
                    for x in self.site_ids
                )
        for key, want in truth.items():
            if key[0] in self.foreign_sites:
                continue
            b = boundary.get((key[0], key[3]))
            if b is None or key[4] > b:
                continue  # not closed yet
            rep.windows_checked += 1
            got = first.get(key)
            if got is None:
                rep.windows_missing.append((key, want))
            elif not _same(got, want):
                rep.windows_wrong.append((key, got, want))
        for key in first:
            if key not in truth and key[0] not in self.foreign_sites:
                rep.windows_wrong.append((key, first[key], None))
        return rep

    async def wait_published(self, within: float = 90.0, quiet: float = 5.0) -> None:
        """Wait until the aggregators' window logs stop growing for `quiet` seconds: every
        record consumed and every window its watermark passed closed. (The newest windows
        close only by the idle timeout; the checker compares the windows that are closed.)"""
        end = time.monotonic() + within
        last = -1
        stable_since = time.monotonic()
        while time.monotonic() < end:
            size = sum(p.stat().st_size for p in self.window_logs if p.exists())
            if size != last:
                last = size
                stable_since = time.monotonic()
            elif size > 0 and time.monotonic() - stable_since > quiet:
                return
            await asyncio.sleep(0.5)
