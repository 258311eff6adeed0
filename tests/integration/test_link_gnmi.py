"""gNMI link adapter against a protocol-level gNMI target (grpc.aio, TLS, loopback)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from collector.agent.sources.gnmi import GnmiLinkAdapter
from collector.agent.sources.link_adapters import LinkReading
from collector.devcerts import DevCerts
from collector.proto.openconfig.gnmi import gnmi_pb2 as g
from tests.gnmi_support import BASE, NS, Device, GnmiTarget
from tests.waiting import eventually

PASSWORD = "s3cret-gnmi-pw"


@pytest_asyncio.fixture
async def target(certs: DevCerts) -> AsyncIterator[GnmiTarget]:
    t = GnmiTarget(
        Device(t0_ns=(time.time_ns() // NS - 600) * NS), certs=certs, username="telemetry", password=PASSWORD
    )
    await t.start()
    try:
        yield t
    finally:
        await t.stop()


def options(t: GnmiTarget, certs: DevCerts, **more: Any) -> dict[str, Any]:
    tgt = {
        "name": "r1",
        "address": f"127.0.0.1:{t.port}",
        "ca_file": str(certs.ca),
        "server_name": "localhost",
        "username": "telemetry",
        "password_env": "TEST_GNMI_PW",
        "interval_s": 1.0,
        "components": {"och-1": "et-0/0/1"},
        **more.pop("target", {}),
    }
    return {
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.3,
        "connect_timeout_s": 5.0,
        "targets": [tgt],
        **more,
    }


async def collect(a: GnmiLinkAdapter, want: int = 1, within: float = 30.0) -> list[LinkReading]:
    got: list[LinkReading] = []

    async def more() -> bool:
        got.extend(await a.read())
        return len(got) >= want

    loop_end = time.monotonic() + within
    while time.monotonic() < loop_end and not await more():
        await eventually(lambda: False, within=0.05)
    return got


async def test_stream_readings_equal_the_device_model(
    target: GnmiTarget, certs: DevCerts, monkeypatch: Any
) -> None:
    monkeypatch.setenv("TEST_GNMI_PW", PASSWORD)
    a = GnmiLinkAdapter(**options(target, certs))
    try:
        got = await collect(a, want=6)
    finally:
        await a.close()
    dev = target.device
    p1, p2 = dev.ports
    seen = {r.name for r in got}
    assert seen == {"r1:et-0/0/1", "r1:et-0/0/2"}  # optics merged into their interface
    for r in got:
        k, rem = divmod(r.time_unix_nano - dev.t0_ns, dev.step_ns)
        assert rem == 0
        port = p1 if r.name.endswith("/1") else p2
        if r.in_octets is None:  # a reading of gauges only (an update between two samples)
            continue
        o = dev.octets(port, k)
        assert r.in_octets == o
        assert r.in_octets > 2**53
        assert r.out_octets == o // 2
        assert r.in_packets == o // 1000 + o // 100_000 + 7  # unicast + multicast + broadcast
        assert r.out_packets == o // 2000  # out-pkts as sent
        assert (r.in_errors, r.in_discards) == (k, 2 * k)
        assert r.counter_bits == 64
        assert r.counter_start_unix_nano == dev.last_clear(k) == 0
        assert r.oper_up is True
    # a read can fall between a sample's transceiver and optical-channel notifications:
    # take one after both (values not yet received are None, never stale or made up)
    r1 = next(r for r in got if r.name == "r1:et-0/0/1" and r.prefec_ber is not None)
    assert r1.media == "optical"
    assert r1.speed_bytes_per_second == 100 * 10**9 // 8
    assert (r1.rx_power_dbm, r1.tx_power_dbm) == (-3.1, 1.0)  # the worst lane
    assert r1.laser_bias_amperes == pytest.approx(0.007)
    assert (r1.prefec_ber, r1.osnr_db) == (1.5e-9, 31.5)
    r2 = next(r for r in got if r.name == "r1:et-0/0/2" and r.speed_bytes_per_second)
    assert r2.speed_bytes_per_second == 10 * 10**9 // 8
    assert r2.rx_power_dbm is None
    # what the target was asked for: SAMPLE at the interval, ON_CHANGE for oper-status
    req = target.requests[0].subscribe
    assert req.mode == g.SubscriptionList.STREAM
    modes = {"/".join(e.name for e in s.path.elem): (s.mode, s.sample_interval) for s in req.subscription}
    assert modes["interfaces/interface/state/counters"] == (g.SAMPLE, NS)
    assert modes["interfaces/interface/state/oper-status"][0] == g.ON_CHANGE
    assert target.metadata[0]["username"] == "telemetry"


async def test_counter_clear_moves_the_discontinuity_marker(
    target: GnmiTarget, certs: DevCerts, monkeypatch: Any
) -> None:
    monkeypatch.setenv("TEST_GNMI_PW", PASSWORD)
    target.device.clear_at = 15
    a = GnmiLinkAdapter(**options(target, certs, target={"include": ["et-0/0/1"]}))
    try:
        await a.read()  # starts the stream
        assert await eventually(lambda: target.k > 25, within=60)
        got = await collect(a, want=1)
    finally:
        await a.close()
    dev = target.device
    after = [r for r in got if r.in_octets is not None]
    assert after
    for r in after:
        k = (r.time_unix_nano - dev.t0_ns) // dev.step_ns
        assert k >= dev.clear_at
        assert r.counter_start_unix_nano == dev.time(dev.clear_at)
        assert r.in_octets == dev.octets(dev.ports[0], k) < BASE


@pytest.mark.parametrize(
    ("refuse", "modes"),
    [
        (frozenset({"on_change"}), ["stream", "stream"]),
        (frozenset({"stream"}), ["stream", "stream", "poll"]),
        (frozenset({"stream", "poll"}), ["stream", "stream", "poll", "once"]),
    ],
)
async def test_falls_back_to_the_mode_the_target_supports(
    certs: DevCerts, monkeypatch: Any, refuse: frozenset[str], modes: list[str]
) -> None:
    monkeypatch.setenv("TEST_GNMI_PW", PASSWORD)
    t = GnmiTarget(
        Device(t0_ns=(time.time_ns() // NS - 600) * NS),
        certs=certs,
        username="telemetry",
        password=PASSWORD,
        refuse=refuse,
    )
    await t.start()
    a = GnmiLinkAdapter(**options(t, certs, target={"interval_s": 0.1}))
    try:
        got = await collect(a, want=4)
        assert any(r.in_octets is not None for r in got)
    finally:
        await a.close()
        await t.stop()
    names = {
        g.SubscriptionList.STREAM: "stream",
        g.SubscriptionList.POLL: "poll",
        g.SubscriptionList.ONCE: "once",
    }
    asked = [names[r.subscribe.mode] for r in t.requests]
    assert asked[: len(modes)] == modes
    assert a.targets["r1"].errors.get("refused", 0) == len(modes) - 1
    if "poll" in modes[-1:]:
        assert t.k >= 1  # answered Poll requests on the open stream


async def test_reconnects_after_the_target_restarts(
    target: GnmiTarget, certs: DevCerts, monkeypatch: Any
) -> None:
    monkeypatch.setenv("TEST_GNMI_PW", PASSWORD)
    a = GnmiLinkAdapter(**options(target, certs))
    st = a.targets["r1"]
    try:
        await a.read()
        assert await eventually(lambda: st.up and st.polls > 5, within=30)
        port = target.port
        await target.stop()
        assert await eventually(lambda: not st.up and st.reconnects >= 1, within=30)
        await a.read()
        polls = st.polls
        await target.start(port)  # same address, a new server process state
        assert await eventually(lambda: st.up and st.polls > polls + 5, within=30)
        assert target.streams >= 2
        assert (await collect(a, want=1))[0].name.startswith("r1:")
    finally:
        await a.close()


async def test_wrong_password_is_counted_and_never_logged(
    target: GnmiTarget, certs: DevCerts, monkeypatch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-password-777"
    monkeypatch.setenv("TEST_GNMI_PW", wrong)
    caplog.set_level(logging.DEBUG, logger="collector")
    a = GnmiLinkAdapter(**options(target, certs))
    try:
        await a.read()
        assert await eventually(lambda: a.targets["r1"].errors.get("unauthenticated", 0) >= 2, within=30)
        assert await a.read() == []
    finally:
        await a.close()
    assert "gnmi target r1" in caplog.text
    assert "unauthenticated" in caplog.text
    assert wrong not in caplog.text
    assert PASSWORD not in caplog.text
    assert wrong not in repr(a)


async def test_a_stalled_target_is_reconnected_without_holding_up_another(
    certs: DevCerts, monkeypatch: Any, tmp_path: Path
) -> None:
    monkeypatch.setenv("TEST_GNMI_PW", PASSWORD)
    t0 = (time.time_ns() // NS - 600) * NS
    live = GnmiTarget(Device(t0_ns=t0), certs=certs, username="telemetry", password=PASSWORD)
    stalled = GnmiTarget(
        Device(t0_ns=t0), certs=certs, username="telemetry", password=PASSWORD, pace_s=3600.0
    )  # sends its first sample, then nothing
    await live.start()
    await stalled.start()
    common = {
        "ca_file": str(certs.ca),
        "server_name": "localhost",
        "username": "telemetry",
        "password_env": "TEST_GNMI_PW",
        "interval_s": 0.2,
    }
    a = GnmiLinkAdapter(
        stall_after_s=1.0,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
        targets=[
            {"name": "live", "address": f"127.0.0.1:{live.port}", **common},
            {"name": "stalled", "address": f"127.0.0.1:{stalled.port}", **common},
        ],
    )
    try:
        await a.read()
        assert await eventually(lambda: a.targets["stalled"].errors.get("stalled", 0) >= 2, within=60)
        assert a.targets["live"].polls > 20
        assert not a.targets["live"].errors
        assert await eventually(lambda: stalled.streams >= 3, within=30)  # reopened each time
    finally:
        await a.close()
        await live.stop()
        await stalled.stop()


async def test_mtls_client_certificate_and_the_first_read(
    certs: DevCerts, monkeypatch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TEST_GNMI_PW", PASSWORD)
    t = GnmiTarget(
        Device(t0_ns=(time.time_ns() // NS - 600) * NS),
        certs=certs,
        username="telemetry",
        password=PASSWORD,
        require_client_cert=True,
    )
    await t.start()
    with_cert = GnmiLinkAdapter(
        **options(
            t, certs, target={"client_cert": str(certs.client_cert), "client_key": str(certs.client_key)}
        )
    )
    without = GnmiLinkAdapter(**options(t, certs))
    try:
        first = await with_cert.read()  # waits for the target's initial sync
        assert {r.name for r in first} == {"r1:et-0/0/1", "r1:et-0/0/2"}
        assert all(r.in_octets is not None for r in first)
        assert await without.read() == []
        assert await eventually(lambda: sum(without.targets["r1"].errors.values()) >= 1, within=30)
        assert not without.targets["r1"].up
    finally:
        await with_cert.close()
        await without.close()
        await t.stop()
