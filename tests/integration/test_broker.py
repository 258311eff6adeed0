"""The embedded broker launcher against the real Tansu binary."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from collector.broker import EmbeddedBroker, TopicSpec


async def test_broker_starts_creates_topics_and_round_trips() -> None:
    async with EmbeddedBroker(topics=(TopicSpec("rt", 4, 600_000),)) as b:
        p = AIOKafkaProducer(bootstrap_servers=b.bootstrap, acks="all")
        await p.start()
        try:
            assert await p.partitions_for("rt") == {0, 1, 2, 3}
            md = await p.send_and_wait("rt", b"hello", key=b"jp-tokyo-01")
        finally:
            await p.stop()
        c = AIOKafkaConsumer(bootstrap_servers=b.bootstrap, auto_offset_reset="earliest")
        await c.start()
        try:
            from aiokafka import TopicPartition

            tp = TopicPartition("rt", md.partition)
            c.assign([tp])
            got = await c.getmany(tp, timeout_ms=5000)
            assert [r.value for r in got[tp]] == [b"hello"]
        finally:
            await c.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=b.bootstrap)
        await admin.start()
        try:
            [resp] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "rt")])
            entries = {e[0]: e[1] for res in resp.resources for e in res[4]}
        finally:
            await admin.close()
        assert entries["retention.ms"] == "600000"
        pid = b.pid
    assert pid is not None
    assert b.proc is None


def test_broker_command_runs_until_sigterm() -> None:
    import re
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "broker", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"bootstrap=127\.0\.0\.1:(\d+) pid=(\d+)", line)
        assert m, line
        import socket

        with socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=5):
            pass
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
