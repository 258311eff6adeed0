"""HOST:PORT addresses: the one parser behind every address setting.

Two kinds of address are configured:

- a **listen** address (`ingest.listen`, `*.metrics_listen`): `HOST:PORT` with a port always
  written, 0 meaning "pick a free port"; the host may be empty (`:9464`) and an IPv6 host is
  written in brackets (`[::]:9464`; for compatibility an unbracketed IPv6 host whose last
  `:`-group is the port, `::1:9464`, is read the same way);
- a **device** address (an SNMP agent, a gNMI target): a host is required, the port is 1 to
  65535 and, where the protocol has a well-known one (SNMP's 161), may be left out. An
  unbracketed address with several colons is a bare IPv6 host (`fe80::1`): a port after an
  IPv6 host needs the brackets (`[fe80::1]:1161`).

`parse_host_port` returns the host without brackets, ready for `socket`/`asyncio`/`aiohttp`.
A bad address is a ValueError saying which form was expected; pydantic turns it into a
config error naming the key (collector/settings_fields.py).
"""

from __future__ import annotations

MAX_PORT = 65535


def parse_host_port(text: str, *, default_port: int | None = None, listen: bool = False) -> tuple[str, int]:
    """(host, port) of `text`.

    `listen`: a listen address (empty host and port 0 allowed, the port required).
    `default_port`: the port of a device address written without one (None: required)."""
    want = "HOST:PORT" if default_port is None else "HOST or HOST:PORT"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError(f"expected [IPV6-HOST]:PORT, got {text!r} (no closing bracket)")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected [IPV6-HOST]:PORT, got {text!r}")
            port_text: str | None = rest[1:]
        else:
            port_text = None
    elif not listen and text.count(":") > 1:
        host, port_text = text, None  # an IPv6 host: a port after it needs the brackets
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            host, port_text = text, None
    if port_text is None:
        if default_port is None:
            raise ValueError(f"expected {want}, got {text!r} (no port)")
        port = default_port
    elif port_text.isascii() and port_text.isdigit():
        port = int(port_text)
    else:
        raise ValueError(f"expected {want}, got {text!r} (the port is not a number)")
    lowest = 0 if listen else 1
    if not lowest <= port <= MAX_PORT:
        raise ValueError(f"expected {want} with a port from {lowest} to {MAX_PORT}, got {text!r}")
    if not host and not listen:
        raise ValueError(f"expected {want}, got {text!r} (no host)")
    return host, port


def join_host_port(host: str, port: int) -> str:
    """`host:port` for a URL or a gRPC target: an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
