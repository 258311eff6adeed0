"""collector.address.parse_host_port: the one HOST:PORT parser of listen and device addresses,
and the settings that use it (listen addresses, SNMP and gNMI targets)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from collector.address import join_host_port, parse_host_port
from collector.agent.sources.gnmi import GnmiTarget
from collector.agent.sources.snmp import SnmpTarget
from collector.config import load_settings
from collector.errors import ConfigError

hostnames = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: ipaddress.IPv6Address(a).compressed)
ports = st.integers(0, 65535)


@given(host=st.one_of(hostnames, ipv4), port=ports)
def test_host_and_port_read_back(host: str, port: int) -> None:
    assert parse_host_port(f"{host}:{port}", listen=True) == (host, port)
    if port:
        assert parse_host_port(f"{host}:{port}") == (host, port)
        assert parse_host_port(f"{host}:{port}", default_port=161) == (host, port)


@given(host=ipv6, port=st.integers(1, 65535))
def test_an_ipv6_host_loses_its_brackets(host: str, port: int) -> None:
    for kw in ({}, {"listen": True}, {"default_port": 161}):
        assert parse_host_port(f"[{host}]:{port}", **kw) == (host, port)
    # without brackets an IPv6 address is a host (devices), or host + last group as port (listen)
    assert parse_host_port(host, default_port=161) == (host, 161)
    assert parse_host_port(f"[{host}]", default_port=161) == (host, 161)


@given(host=st.one_of(hostnames, ipv4), port=st.one_of(st.integers(65536, 10**7), st.integers(-999, -1)))
def test_a_port_out_of_range_is_refused(host: str, port: int) -> None:
    for kw in ({}, {"listen": True}, {"default_port": 161}):
        with pytest.raises(ValueError, match="expected HOST"):
            parse_host_port(f"{host}:{port}", **kw)


@given(text=st.text(max_size=40))
def test_any_text_is_an_address_or_a_value_error(text: str) -> None:
    for kw in ({}, {"listen": True}, {"default_port": 161}):
        try:
            host, port = parse_host_port(text, **kw)
        except ValueError as exc:
            problem: str | None = str(exc)
        else:
            problem = None
            assert 0 <= port <= 65535
            assert host or kw.get("listen")
        if problem is not None:
            assert repr(text) in problem  # the message quotes what was written


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        (":9464", ("", 9464)),  # every interface (the agent binds loopback then)
        ("[::]:9464", ("::", 9464)),
        ("::1:9464", ("::1", 9464)),  # accepted before brackets were usual
        ("0.0.0.0:4317", ("0.0.0.0", 4317)),
    ],
)
def test_listen_addresses(text: str, want: tuple[str, int]) -> None:
    assert parse_host_port(text, listen=True) == want


@pytest.mark.parametrize("text", ["9464", "host", "host:", "host:x", "[::1]", "[::1]x", "[::1:80"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_host_port(text, listen=True)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1", ("127.0.0.1", 161)),
        ("127.0.0.1:1161", ("127.0.0.1", 1161)),
        ("[::1]:1161", ("::1", 1161)),
        ("::1", ("::1", 161)),
        ("router", ("router", 161)),
    ],
)
def test_snmp_addresses(text: str, want: tuple[str, int]) -> None:
    assert parse_host_port(text, default_port=161) == want
    assert SnmpTarget(address=text).address == text


@pytest.mark.parametrize("text", ["", ":161", "[]:161", "router:0", "router:x", "[::1]x", "[::1"])
def test_bad_snmp_addresses(text: str) -> None:
    with pytest.raises(ValidationError, match="expected"):
        SnmpTarget(address=text)


def test_gnmi_needs_a_port_and_brackets_around_ipv6() -> None:
    assert GnmiTarget(address="r1.example:57400", plaintext=True).address == "r1.example:57400"
    assert GnmiTarget(address="[::1]:57400", plaintext=True).address == "[::1]:57400"
    for bad in ("r1.example", "r1.example:0", "::1:57400", "[::1]", ""):
        with pytest.raises(ValidationError, match="expected"):
            GnmiTarget(address=bad, plaintext=True)


@pytest.mark.parametrize(
    "key", ["ingest.listen", "ingest.metrics_listen", "agent.metrics_listen", "aggregate.metrics_listen"]
)
def test_every_listen_setting_is_checked_by_the_one_parser(key: str) -> None:
    section, field = key.split(".")
    for bad in ("9464", "host:70000", "[::1]"):
        with pytest.raises(ConfigError, match=field):
            load_settings(None, **{section: {field: bad}})
    ok = load_settings(None, **{section: {field: "[::1]:0"}})
    assert getattr(getattr(ok, section), field) == "[::1]:0"
    assert getattr(getattr(load_settings(None, **{section: {field: ""}}), section), field) == ""


@given(host=st.one_of(hostnames, ipv4, ipv6), port=st.integers(1, 65535))
def test_join_host_port_reads_back_through_the_parser(host: str, port: int) -> None:
    text = join_host_port(host, port)
    assert parse_host_port(text) == (host, port)
    assert parse_host_port(text, listen=True) == (host, port)
    assert parse_host_port(text, default_port=161) == (host, port)
