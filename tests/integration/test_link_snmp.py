"""SNMP link adapter against Debian's snmpd (net-snmp) on a loopback port.

The adapter's readings are compared with an independent snmpbulkwalk of the same OIDs
taken just before and just after the poll (this host's interface counters move, so a
counter must lie between the two walks; everything else must be equal).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from collector.agent.batch import BatchBuilder
from collector.agent.config import LinkSourceSettings
from collector.agent.sources.link import LinkSource
from collector.agent.sources.link_adapters import LinkReading
from collector.agent.sources.snmp import COLUMNS, SnmpLinkAdapter
from collector.broker import EmbeddedBroker
from collector.devcerts import DevCerts
from collector.errors import ConfigError
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.agent_support import SITE, agent_tls, site_section, topic_batches, write_yaml
from tests.ingest_support import ingest_settings, started, token_for
from tests.procs import collector_process
from tests.snmp_support import (
    COMMUNITY,
    COMMUNITY32,
    V3_AUTH,
    V3_PRIV,
    V3_USER,
    Snmpd,
    bulkwalk,
    v3_args,
)
from tests.waiting import eventually

IF_TABLE = "1.3.6.1.2.1.2.2.1"
IF_X_TABLE = "1.3.6.1.2.1.31.1.1.1"


@pytest_asyncio.fixture
async def snmpd(tmp_path: Path) -> AsyncIterator[Snmpd]:
    d = Snmpd(tmp_path / "snmpd")
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


def col(walk: dict[str, str], name: str, index: int) -> str | None:
    return walk.get(".".join(map(str, COLUMNS[name])) + f".{index}")


async def walk_all(address: str, *auth: str) -> dict[str, str]:
    return {**await bulkwalk(address, IF_TABLE, *auth), **await bulkwalk(address, IF_X_TABLE, *auth)}


def between(v: int | None, lo: str | None, hi: str | None, bits: int) -> bool:
    """lo <= v <= hi on a counter of `bits` (modular, in case it wrapped in between)."""
    assert v is not None
    assert lo is not None
    assert hi is not None
    m = 1 << bits
    return (v - int(lo)) % m <= (int(hi) - int(lo)) % m


def by_index(readings: list[LinkReading], walk: dict[str, str], prefix: str) -> dict[int, LinkReading]:
    names = {
        v: int(k.rsplit(".", 1)[1])
        for k, v in walk.items()
        if k.startswith(".".join(map(str, COLUMNS["ifName"])) + ".")
    }
    return {names[r.name.removeprefix(prefix)]: r for r in readings}


def sum_of(walk: dict[str, str], cols: tuple[str, ...], i: int) -> int:
    return sum(int(col(walk, c, i) or 0) for c in cols)


async def test_v2c_readings_equal_an_independent_bulkwalk(snmpd: Snmpd) -> None:
    a = SnmpLinkAdapter(targets=[{"name": "sw1", "address": snmpd.address, "community": COMMUNITY}])
    try:
        before = await walk_all(snmpd.address)
        readings = list(await a.poll(a._targets[0]))
        after = await walk_all(snmpd.address)
    finally:
        await a.close()
    rows = by_index(readings, before, "sw1:")
    assert rows
    assert len(rows) == len(readings)
    for i, r in rows.items():
        assert r.counter_bits == 64
        assert dict(r.counter_bits_of) == {
            "in_errors": 32,
            "out_errors": 32,
            "in_discards": 32,
            "out_discards": 32,
        }
        assert between(r.in_octets, col(before, "ifHCInOctets", i), col(after, "ifHCInOctets", i), 64)
        assert between(r.out_octets, col(before, "ifHCOutOctets", i), col(after, "ifHCOutOctets", i), 64)
        hc_in = ("ifHCInUcastPkts", "ifHCInMulticastPkts", "ifHCInBroadcastPkts")
        assert between(r.in_packets, str(sum_of(before, hc_in, i)), str(sum_of(after, hc_in, i)), 64)
        for field, c in (
            ("in_errors", "ifInErrors"),
            ("out_errors", "ifOutErrors"),
            ("in_discards", "ifInDiscards"),
            ("out_discards", "ifOutDiscards"),
        ):
            assert between(getattr(r, field), col(before, c, i), col(after, c, i), 32)
        assert r.oper_up == (col(before, "ifOperStatus", i) == "1")
        high = int(col(before, "ifHighSpeed", i) or 0)
        assert r.speed_bytes_per_second == (high * 125_000 if high else None)
        disc = int(col(before, "ifCounterDiscontinuityTime", i) or 0)
        assert r.counter_start_unix_nano > 0
        assert r.time_unix_nano - r.counter_start_unix_nano >= disc * 10_000_000


async def test_v3_authpriv_readings_and_the_link_source_batch(snmpd: Snmpd, monkeypatch: Any) -> None:
    monkeypatch.setenv("TEST_SNMP_AUTH", V3_AUTH)
    monkeypatch.setenv("TEST_SNMP_PRIV", V3_PRIV)
    a = SnmpLinkAdapter(
        interval_s=0.2,
        targets=[
            {
                "name": "r1",
                "address": snmpd.address,
                "version": "3",
                "user": V3_USER,
                "auth_protocol": "SHA",
                "auth_key_env": "TEST_SNMP_AUTH",
                "priv_protocol": "AES",
                "priv_key_env": "TEST_SNMP_PRIV",
            }
        ],
    )
    src = LinkSource(LinkSourceSettings(exclude=[]), adapter=a)
    try:
        before = await walk_all(snmpd.address, *v3_args())
        b = BatchBuilder("agent-1", SITE, "boot-1")
        await src.collect(b, 1)  # the first read starts the target's polling task
        assert await eventually(lambda: a.targets["r1"].polls >= 1, within=30)
        await src.collect(b, 1)
        batch = b.build(1, 1)
    finally:
        await src.close()
    names = {
        int(k.rsplit(".", 1)[1]): v
        for k, v in before.items()
        if k.startswith(".".join(map(str, COLUMNS["ifName"])) + ".")
    }
    series = {(s.metric, dict((lab.name, lab.value) for lab in s.labels)["link"]): s for s in batch.series}
    for name in names.values():
        octets = series[("link_in_octets", f"r1:{name}")]
        assert octets.counter_bits == 64
        assert octets.start_time_unix_nano > 0
        assert series[("link_in_errors", f"r1:{name}")].counter_bits == 32
        assert ("link_oper_up", f"r1:{name}") in series
    assert src.stats.targets["r1"].up


async def test_32_bit_device_is_declared_32_bit(snmpd: Snmpd) -> None:
    a = SnmpLinkAdapter(targets=[{"name": "old", "address": snmpd.address, "community": COMMUNITY32}])
    try:
        hidden = await bulkwalk(
            snmpd.address, ".".join(map(str, COLUMNS["ifHCInOctets"])), "-v2c", "-c", COMMUNITY32
        )
        # the view really hides the 64-bit counters (snmpbulkwalk then GETs the base OID)
        assert all("No Such" in v for v in hidden.values())
        before = await walk_all(snmpd.address, "-v2c", "-c", COMMUNITY32)
        readings = list(await a.poll(a._targets[0]))
        after = await walk_all(snmpd.address, "-v2c", "-c", COMMUNITY32)
        src = LinkSource(LinkSourceSettings(exclude=[]), adapter=a)
        a._pending["old"] = readings
        b = BatchBuilder("agent-1", SITE, "boot-1")
        await src.collect(b, 1)
        batch = b.build(1, 1)
    finally:
        await a.close()
    rows = by_index(readings, before, "old:")
    assert rows
    for i, r in rows.items():
        assert r.counter_bits == 32
        assert r.counter_bits_of == ()
        assert between(r.in_octets, col(before, "ifInOctets", i), col(after, "ifInOctets", i), 32)
        assert between(r.out_octets, col(before, "ifOutOctets", i), col(after, "ifOutOctets", i), 32)
        c32 = ("ifInUcastPkts", "ifInMulticastPkts", "ifInBroadcastPkts")
        lo, hi = sum_of(before, c32, i) % 2**32, sum_of(after, c32, i) % 2**32
        assert between(r.in_packets, str(lo), str(hi), 32)
    octet_series = [
        s for s in batch.series if s.metric in ("link_in_octets", "link_out_octets", "link_in_packets")
    ]
    assert octet_series
    assert all(s.counter_bits == 32 for s in octet_series)


async def test_v3_wrong_credentials_are_a_clear_counted_error(
    snmpd: Snmpd, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-auth-key-42"
    a = SnmpLinkAdapter(
        interval_s=0.2,
        timeout_s=0.5,
        retries=0,
        targets=[
            {
                "name": "r1",
                "address": snmpd.address,
                "version": "3",
                "user": V3_USER,
                "auth_key": wrong,
                "priv_key": V3_PRIV,
            }
        ],
    )
    caplog.set_level(logging.DEBUG, logger="collector")
    try:
        assert await a.read() == []
        assert await eventually(lambda: a.targets["r1"].errors.get("auth", 0) >= 2, within=30)
        assert await a.read() == []
    finally:
        await a.close()
    st = a.targets["r1"]
    assert not st.up
    assert st.polls == 0
    text = caplog.text
    assert "snmp target r1" in text
    assert "(auth)" in text
    assert wrong not in text
    assert V3_PRIV not in text


async def test_a_stopped_snmpd_does_not_stall_the_other_target(tmp_path: Path) -> None:
    live, dead = Snmpd(tmp_path / "live"), Snmpd(tmp_path / "dead")
    await live.start()
    await dead.start()
    a = SnmpLinkAdapter(
        interval_s=0.2,
        targets=[
            {"name": "live", "address": live.address, "community": COMMUNITY},
            # a long timeout on purpose: its polls hang for seconds while the other one goes on
            {"name": "dead", "address": dead.address, "community": COMMUNITY, "timeout_s": 3.0, "retries": 1},
        ],
    )
    got: dict[str, int] = {"live": 0, "dead": 0}

    async def drain() -> None:
        for r in await a.read():
            got[r.name.split(":", 1)[0]] += 1

    try:
        await drain()
        assert await eventually(lambda: a.targets["dead"].polls >= 1, within=30)
        dead.pause()  # SIGSTOP: the device stops answering mid-run
        polls_at_pause = a.targets["live"].polls
        got["live"] = 0

        async def live_goes_on() -> bool:
            await drain()
            return a.targets["live"].polls >= polls_at_pause + 5 and got["live"] > 0

        for _ in range(300):
            if await live_goes_on():
                break
            await eventually(lambda: False, within=0.1)
        assert await live_goes_on()
        assert await eventually(lambda: a.targets["dead"].errors.get("timeout", 0) >= 1, within=30)
        assert not a.targets["dead"].up
        assert a.targets["live"].up
        dead.resume()
        dead_polls = a.targets["dead"].polls
        assert await eventually(lambda: a.targets["dead"].polls > dead_polls, within=30)
        assert a.targets["dead"].up
        await dead.stop()  # gone for good: still only counted
        errors = a.targets["dead"].errors.get("timeout", 0)
        assert await eventually(lambda: a.targets["dead"].errors.get("timeout", 0) > errors, within=30)
    finally:
        await a.close()
        await live.stop()
        await dead.stop()


async def test_per_target_interface_globs_and_interval(snmpd: Snmpd) -> None:
    # two targets on one device: one keeps only the loopback and polls on the adapter's long
    # interval, the other leaves it out and polls on its own short one
    a = SnmpLinkAdapter(
        interval_s=60,
        targets=[
            {"name": "only-lo", "address": snmpd.address, "community": COMMUNITY, "include": ["lo"]},
            {
                "name": "no-lo",
                "address": snmpd.address,
                "community": COMMUNITY,
                "exclude": ["lo"],
                "interval_s": 0.2,
            },
        ],
    )
    seen: dict[str, set[str]] = {"only-lo": set(), "no-lo": set()}

    async def drain() -> None:
        for r in await a.read():
            target, _, link = r.name.partition(":")
            seen[target].add(link)

    try:
        started = time.time()
        await drain()  # the first read waits for both targets' first poll
        for _ in range(300):
            await drain()
            if a.targets["no-lo"].polls >= 4:
                break
            await eventually(lambda: False, within=0.1)
        assert a.targets["no-lo"].polls >= 4
        # ticks are aligned to wall-clock multiples of the interval: besides its first poll,
        # the 60 s target polls once per minute boundary passed meanwhile, and no more (the
        # test once started a second before one and saw 2)
        boundaries = int(time.time() // 60) - int(started // 60)
        assert 1 <= a.targets["only-lo"].polls <= 1 + boundaries
        assert seen["only-lo"] == {"lo"}
        assert seen["no-lo"]
        assert "lo" not in seen["no-lo"]
    finally:
        await a.close()


async def test_missing_secret_is_a_config_error_naming_the_key(monkeypatch: Any) -> None:
    monkeypatch.delenv("NO_SUCH_COMMUNITY", raising=False)
    with pytest.raises(ConfigError, match=r"targets\[0\]\.community_env"):
        SnmpLinkAdapter(targets=[{"address": "127.0.0.1:161", "community_env": "NO_SUCH_COMMUNITY"}])
    with pytest.raises(ConfigError, match=r"targets\[1\]\.address"):
        SnmpLinkAdapter(
            targets=[
                {"address": "127.0.0.1", "community": "x"},
                {"address": "127.0.0.1:notaport", "community": "x"},
            ]
        )
    with pytest.raises(ConfigError, match=r"targets\[0\]"):
        SnmpLinkAdapter(targets=[{"address": "127.0.0.1", "version": "3"}])


async def test_the_first_read_carries_the_first_poll(snmpd: Snmpd, tmp_path: Path) -> None:
    """`collector agent --once` collects each source once: the first read waits (bounded)
    for every target's first poll; a dead target only costs its timeout."""
    dead = Snmpd(tmp_path / "dead")  # never started: nothing answers on its port
    a = SnmpLinkAdapter(
        timeout_s=0.5,
        retries=0,
        targets=[
            {"name": "sw1", "address": snmpd.address, "community": COMMUNITY},
            {"name": "gone", "address": dead.address, "community": COMMUNITY},
        ],
    )
    try:
        first = await a.read()
        assert {r.name.split(":", 1)[0] for r in first} == {"sw1"}
        assert await eventually(lambda: a.targets["gone"].errors.get("timeout", 0) >= 1, within=30)
        assert a.targets["gone"].polls == 0
        assert not a.targets["gone"].up
    finally:
        await a.close()


async def test_collector_agent_once_with_the_snmp_adapter_delivers_the_device_links(
    snmpd: Snmpd, broker: EmbeddedBroker, topic: str, certs: DevCerts, tmp_path: Path
) -> None:
    """The YAML wiring: `adapter: snmp` with a v3 user whose keys come from the environment,
    a real `collector agent --once` -> TLS ingest -> Tansu; the keys never reach the log."""
    server = await started(ingest_settings(tmp_path, certs, broker.bootstrap, topic))
    spool = tmp_path / "spool"
    cfg = write_yaml(
        tmp_path / "agent.yaml",
        {
            "agent": {
                "agent_id": "agent-snmp-once",
                "site": site_section(),
                "ingest": agent_tls(
                    certs, f"127.0.0.1:{server.port}", token_for(SITE.site_id), server_name="localhost"
                ),
                "spool": {"dir": str(spool)},
                "metrics_listen": "",
                "shutdown_grace_s": 15.0,
                "sources": {
                    "server": {"enabled": False},
                    "cell": {"enabled": False},
                    "link": {
                        "adapter": "snmp",
                        "interval_s": 10,
                        "exclude": [],
                        "options": {
                            "targets": [
                                {
                                    "name": "core1",
                                    "address": snmpd.address,
                                    "version": "3",
                                    "user": V3_USER,
                                    "auth_key_env": "SNMP_TEST_AUTH",
                                    "priv_key_env": "SNMP_TEST_PRIV",
                                }
                            ]
                        },
                    },
                },
            }
        },
    )
    agent = collector_process(
        ["--log-level", "DEBUG", "agent", "--config", str(cfg), "--once"],
        tmp_path / "agent.log",
        env={"SNMP_TEST_AUTH": V3_AUTH, "SNMP_TEST_PRIV": V3_PRIV},
    )
    names = await bulkwalk(snmpd.address, ".".join(map(str, COLUMNS["ifName"])), *v3_args())
    try:
        await agent.start()
        assert agent.proc is not None
        async with asyncio.timeout(60):
            rc = await agent.proc.wait()
        assert rc == 0, agent.log()
    finally:
        await agent.kill()
        await server.stop()
    got = [b for b in await topic_batches(broker.bootstrap, topic, 1) if b.agent_id == "agent-snmp-once"]
    assert len(got) == 1
    batch = pb.Batch.FromString(got[0].value)
    links = {lab.value for s in batch.series for lab in s.labels if lab.name == "link"}
    assert links == {f"core1:{n}" for n in names.values()}
    log_text = agent.log()
    assert V3_AUTH not in log_text
    assert V3_PRIV not in log_text
