"""SNMP link adapter (`agent.sources.link.adapter: snmp`): IF-MIB of routers and switches.

Polls each target with GETBULK walks of IF-MIB's ifTable/ifXTable columns (pysnmp, asyncio,
numeric OIDs, no MIB lookups) and maps every ifIndex row to a `LinkReading`:

    ifHCIn/OutOctets (Counter64)           -> link_in/out_octets, 64-bit
      else ifIn/OutOctets (Counter32)      -> the same, declared 32-bit (wraps recognised)
    ifHCIn/Out{Ucast,Multicast,Broadcast}Pkts summed (mod 2^64)   -> link_in/out_packets
      else the Counter32 columns summed mod 2^32, declared 32-bit
    ifIn/OutErrors, ifIn/OutDiscards (Counter32: IF-MIB has no 64-bit ones) -> 32-bit
    ifOperStatus (1 = up)                  -> link_oper_up
    ifHighSpeed (Mb/s) * 125000, else ifSpeed (b/s) / 8            -> link_speed_bytes
    ifName (else ifDescr), or ifAlias with `label: alias`         -> the `link` label
    sysUpTime + ifCounterDiscontinuityTime -> counter start (the discontinuity marker)

A sum of counters taken modulo the declared width is itself a counter of that width (its
delta mod 2^bits is the sum of the deltas), so summed packet counters stay exact through
wraps. The device's boot time is estimated once from sysUpTime and kept until sysUpTime goes
back (a reboot), so the marker does not jitter with the round trip; ifCounterDiscontinuityTime
(a sysUpTime value) moves it for one interface.

Every target polls in its own task at its own interval with its own timeout and retries:
a slow or dead device never delays the others. `read()` returns what finished since the
previous read, each reading stamped with its poll's time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from collector.address import parse_host_port
from collector.agent.metrics import TargetStats
from collector.agent.sources.devices import (
    KEY,
    Options,
    TargetTasks,
    next_tick,
    secret,
    sleep_or_stop,
    validate_options,
    wanted,
)
from collector.agent.sources.link_adapters import LinkAdapter, LinkReading

log = logging.getLogger(__name__)

SYS_UPTIME = (1, 3, 6, 1, 2, 1, 1, 3)
IF_TABLE = (1, 3, 6, 1, 2, 1, 2, 2, 1)
IF_X_TABLE = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)

# column name -> OID of the column (a row's OID is column + (ifIndex,))
COLUMNS: dict[str, tuple[int, ...]] = {
    "ifDescr": (*IF_TABLE, 2),
    "ifSpeed": (*IF_TABLE, 5),
    "ifOperStatus": (*IF_TABLE, 8),
    "ifInOctets": (*IF_TABLE, 10),
    "ifInUcastPkts": (*IF_TABLE, 11),
    "ifInDiscards": (*IF_TABLE, 13),
    "ifInErrors": (*IF_TABLE, 14),
    "ifOutOctets": (*IF_TABLE, 16),
    "ifOutUcastPkts": (*IF_TABLE, 17),
    "ifOutDiscards": (*IF_TABLE, 19),
    "ifOutErrors": (*IF_TABLE, 20),
    "ifName": (*IF_X_TABLE, 1),
    "ifInMulticastPkts": (*IF_X_TABLE, 2),
    "ifInBroadcastPkts": (*IF_X_TABLE, 3),
    "ifOutMulticastPkts": (*IF_X_TABLE, 4),
    "ifOutBroadcastPkts": (*IF_X_TABLE, 5),
    "ifHCInOctets": (*IF_X_TABLE, 6),
    "ifHCInUcastPkts": (*IF_X_TABLE, 7),
    "ifHCInMulticastPkts": (*IF_X_TABLE, 8),
    "ifHCInBroadcastPkts": (*IF_X_TABLE, 9),
    "ifHCOutOctets": (*IF_X_TABLE, 10),
    "ifHCOutUcastPkts": (*IF_X_TABLE, 11),
    "ifHCOutMulticastPkts": (*IF_X_TABLE, 12),
    "ifHCOutBroadcastPkts": (*IF_X_TABLE, 13),
    "ifHighSpeed": (*IF_X_TABLE, 15),
    "ifAlias": (*IF_X_TABLE, 18),
    "ifCounterDiscontinuityTime": (*IF_X_TABLE, 19),
}
# Walked every poll; the 32-bit columns only when some row lacks its 64-bit counterpart.
PRIMARY = (
    "ifOperStatus",
    "ifInDiscards",
    "ifInErrors",
    "ifOutDiscards",
    "ifOutErrors",
    "ifName",
    "ifHCInOctets",
    "ifHCInUcastPkts",
    "ifHCInMulticastPkts",
    "ifHCInBroadcastPkts",
    "ifHCOutOctets",
    "ifHCOutUcastPkts",
    "ifHCOutMulticastPkts",
    "ifHCOutBroadcastPkts",
    "ifHighSpeed",
    "ifCounterDiscontinuityTime",
)
# Walked with them when the label needs them, or when some row has no ifName.
LABEL_COLUMNS = {"alias": ("ifAlias",), "descr": ("ifDescr",), "name": ()}
FALLBACK32 = (
    "ifSpeed",
    "ifInOctets",
    "ifInUcastPkts",
    "ifOutOctets",
    "ifOutUcastPkts",
    "ifInMulticastPkts",
    "ifInBroadcastPkts",
    "ifOutMulticastPkts",
    "ifOutBroadcastPkts",
)
_HC_PACKETS = {
    "in_packets": ("ifHCInUcastPkts", "ifHCInMulticastPkts", "ifHCInBroadcastPkts"),
    "out_packets": ("ifHCOutUcastPkts", "ifHCOutMulticastPkts", "ifHCOutBroadcastPkts"),
}
_32_PACKETS = {
    "in_packets": ("ifInUcastPkts", "ifInMulticastPkts", "ifInBroadcastPkts"),
    "out_packets": ("ifOutUcastPkts", "ifOutMulticastPkts", "ifOutBroadcastPkts"),
}
_ERRORS = (
    ("in_errors", "ifInErrors"),
    ("out_errors", "ifOutErrors"),
    ("in_discards", "ifInDiscards"),
    ("out_discards", "ifOutDiscards"),
)
UPTIME_WRAP = 1 << 32  # sysUpTime is TimeTicks (centiseconds), wraps after ~497 days
_M32, _M64 = (1 << 32) - 1, (1 << 64) - 1

Table = Mapping[str, Mapping[int, Any]]  # column -> ifIndex -> int | bytes


# --- options --------------------------------------------------------------------------
AuthProtocol = Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"]
PrivProtocol = Literal["DES", "AES", "AES192", "AES256"]


class SnmpTarget(Options):
    name: str = Field(
        "",
        description="Target name: `target` label of the agent's "
        "self-metrics and the default link prefix. Empty: the address.",
    )
    address: str = Field(description="HOST or HOST:PORT (port 161 by default; [v6]:port).")
    version: Literal["2c", "3"] = Field(
        "2c", description="SNMP version: 2c (community) or 3 (USM, authPriv)."
    )
    community: SecretStr | None = Field(
        None, description="v2c community inline (discouraged: prefer community_env/_file)."
    )
    community_env: str = Field("", description="Environment variable holding the community.")
    community_file: Path | None = Field(None, description="File whose first line is the community.")
    user: str = Field("", description="v3 USM user name.")
    auth_protocol: AuthProtocol = Field("SHA", description="v3 authentication protocol.")
    auth_key: SecretStr | None = Field(None, description="v3 authentication passphrase inline (discouraged).")
    auth_key_env: str = Field("", description="Environment variable holding auth_key.")
    auth_key_file: Path | None = Field(None, description="File whose first line is auth_key.")
    priv_protocol: PrivProtocol = Field("AES", description="v3 privacy (encryption) protocol.")
    priv_key: SecretStr | None = Field(None, description="v3 privacy passphrase inline (discouraged).")
    priv_key_env: str = Field("", description="Environment variable holding priv_key.")
    priv_key_file: Path | None = Field(None, description="File whose first line is priv_key.")
    context: str = Field("", description="v3 context name (empty: the default context).")
    interval_s: float | None = Field(
        None, gt=0, description="Poll interval of this target (default: the adapter's interval_s)."
    )
    timeout_s: float | None = Field(
        None, gt=0, description="Per-request timeout (default: the adapter's timeout_s)."
    )
    retries: int | None = Field(
        None, ge=0, le=10, description="Retries per request (default: the adapter's retries)."
    )
    max_repetitions: int | None = Field(
        None, ge=1, le=200, description="GETBULK max-repetitions: table rows per request."
    )
    include: list[str] = Field(
        ["*"], description="Interface names (fnmatch, before the prefix) polled into readings."
    )
    exclude: list[str] = Field([], description="Interface names (fnmatch) left out.")
    label: Literal["name", "alias", "descr"] = Field(
        "name", description="`link` label from ifName (else ifDescr), ifAlias (else ifName) or ifDescr."
    )
    link_prefix: str | None = Field(
        None, description="Prepended to every link label (default '<name>:'; '' for none)."
    )
    media: Literal["optical", "copper"] | None = Field(
        None,
        description="Media of this device's links (default: the link source's media patterns, else copper).",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        parse_host_port(v, default_port=161)
        return v

    @model_validator(mode="after")
    def _creds(self) -> SnmpTarget:
        if self.version == "3" and not self.user:
            raise ValueError("version 3 needs `user`")
        return self


class SnmpOptions(Options):
    interval_s: float = Field(10.0, gt=0, description="Poll interval of every target without its own.")
    timeout_s: float = Field(2.0, gt=0, description="Per-request timeout (seconds).")
    retries: int = Field(1, ge=0, le=10, description="Retries of a timed-out request.")
    max_repetitions: int = Field(25, ge=1, le=200, description="GETBULK max-repetitions.")
    targets: list[SnmpTarget] = Field(min_length=1, description="The SNMP agents polled.")

    @model_validator(mode="after")
    def _unique(self) -> SnmpOptions:
        names = [t.name or t.address for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"target names must be unique: {names}")
        return self


# --- varbinds -> readings (pure) -------------------------------------------------------
@dataclass(slots=True)
class UptimeClock:
    """The device's boot time from sysUpTime, stable across polls (see module doc)."""

    boot_ns: int = 0
    last_uptime_cs: int = -1

    def update(self, uptime_cs: int, now_ns: int, interval_s: float) -> int:
        estimate = now_ns - uptime_cs * 10_000_000
        if self.last_uptime_cs < 0:
            self.boot_ns = estimate
        elif uptime_cs < self.last_uptime_cs:
            # A wrap of the 32-bit TimeTicks only when it was about to wrap; else a reboot.
            margin_cs = int((interval_s * 4 + 60) * 100)
            if self.last_uptime_cs >= UPTIME_WRAP - margin_cs:
                self.boot_ns += UPTIME_WRAP * 10_000_000
            else:
                self.boot_ns = estimate
        self.last_uptime_cs = uptime_cs
        return self.boot_ns


def _text(v: Any) -> str:
    if isinstance(v, bytes | bytearray):
        return bytes(v).decode("utf-8", "replace").strip("\x00").strip()
    return str(v).strip() if v is not None else ""


def _sum(cols: Table, names: Sequence[str], index: int, mask: int) -> int | None:
    """Modular sum of the columns present for this row; None when the first (unicast) one is
    missing."""
    first = cols.get(names[0], {}).get(index)
    if not isinstance(first, int):
        return None
    total = first
    for n in names[1:]:
        v = cols.get(n, {}).get(index)
        if isinstance(v, int):
            total += v
    return total & mask


def readings_from_table(
    cols: Table,
    *,
    boot_ns: int,
    time_ns: int,
    prefix: str = "",
    label: str = "name",
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    media: str | None = None,
) -> list[LinkReading]:
    """One LinkReading per ifIndex seen in any column (see the module doc for the mapping)."""
    indexes: set[int] = set()
    for c in cols.values():
        indexes.update(c)
    out: list[LinkReading] = []
    for i in sorted(indexes):

        def get(col: str, i: int = i) -> Any:
            return cols.get(col, {}).get(i)

        name = _text(get("ifName")) or _text(get("ifDescr")) or f"ifIndex{i}"
        if label == "alias":
            name = _text(get("ifAlias")) or name
        elif label == "descr":
            name = _text(get("ifDescr")) or name
        if not wanted(name, include, exclude):
            continue
        hc = isinstance(get("ifHCInOctets"), int) and isinstance(get("ifHCOutOctets"), int)
        if hc:
            octets_in, octets_out, bits = get("ifHCInOctets"), get("ifHCOutOctets"), 64
            packets = {k: _sum(cols, v, i, _M64) for k, v in _HC_PACKETS.items()}
        else:
            octets_in, octets_out, bits = get("ifInOctets"), get("ifOutOctets"), 32
            packets = {k: _sum(cols, v, i, _M32) for k, v in _32_PACKETS.items()}
        errs = {f: (v if isinstance(v := get(col), int) else None) for f, col in _ERRORS}
        oper = get("ifOperStatus")
        speed: int | None = None
        high = get("ifHighSpeed")
        if isinstance(high, int) and high > 0:
            speed = high * 125_000
        elif isinstance(low := get("ifSpeed"), int) and 0 < low < _M32:
            speed = low // 8  # 4294967295 means "faster than that": ifHighSpeed's job
        disc = get("ifCounterDiscontinuityTime")
        start = boot_ns + (disc * 10_000_000 if isinstance(disc, int) and disc > 0 else 0)
        out.append(
            LinkReading(
                name=prefix + name,
                media=media,
                in_octets=octets_in if isinstance(octets_in, int) else None,
                out_octets=octets_out if isinstance(octets_out, int) else None,
                in_packets=packets["in_packets"],
                out_packets=packets["out_packets"],
                **errs,
                counter_bits=bits,
                counter_bits_of=(() if bits == 32 else tuple((f, 32) for f, _ in _ERRORS)),
                counter_start_unix_nano=start,
                oper_up=(oper == 1) if isinstance(oper, int) else None,
                speed_bytes_per_second=speed,
                time_unix_nano=time_ns,
            )
        )
    return out


def needs_fallback(cols: Table) -> bool:
    """Some row has no 64-bit octet counters (or none are exposed at all)."""
    rows: set[int] = set()
    for c in cols.values():
        rows.update(c)
    hc_in, hc_out = cols.get("ifHCInOctets", {}), cols.get("ifHCOutOctets", {})
    return any(i not in hc_in or i not in hc_out for i in rows)


# --- protocol ---------------------------------------------------------------------------
class SnmpPollError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


_AUTH_ERRORS = {
    "WrongDigest",
    "UnknownUserName",
    "UnsupportedSecurityLevel",
    "DecryptionError",
    "UnknownSecurityName",
    "AuthenticationError",
    "AuthenticationFailure",
    "NotInTimeWindow",
    "UnknownEngineID",
}


def _classify(indication: Any) -> str:
    name = type(indication).__name__
    if name == "RequestTimedOut":
        return "timeout"
    if name in _AUTH_ERRORS:
        return "auth"
    return "snmp_error"


def _pyvalue(v: Any) -> Any:
    """pysnmp value -> int | bytes | None (noSuchObject, endOfMibView, ...)."""
    tag = type(v).__name__
    if tag in ("NoSuchObject", "NoSuchInstance", "EndOfMibView", "Null"):
        return None
    if tag in ("OctetString", "DisplayString", "IpAddress", "Opaque"):
        return v.asOctets()
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


@dataclass(slots=True)
class _Session:
    engine: Any
    auth: Any
    transport: Any
    context: Any
    max_repetitions: int
    budget_s: float  # bound on one whole poll
    requests: int = 0


async def _bulk(s: _Session, oids: Sequence[tuple[int, ...]]) -> list[tuple[tuple[int, ...], Any]]:
    """One GETBULK (sysUpTime.0 as the non-repeater, then `oids`); [(oid, value)].

    pysnmp's v3arch command generator is called directly with plain (OID, Null) varbinds:
    the high-level `bulk_cmd` resolves every varbind through a MIB view first, which costs
    about a third of a poll's CPU and buys nothing with numeric OIDs."""
    from pyasn1.type.univ import Null
    from pysnmp.entity.rfc3413 import cmdgen
    from pysnmp.hlapi.v3arch.asyncio.cmdgen import LCD
    from pysnmp.proto.rfc1902 import ObjectName

    s.requests += 1
    addr_name, _ = LCD.configure(s.engine, s.auth, s.transport, s.context.contextName)
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def done(_engine: Any, _handle: Any, ind: Any, status: Any, index: Any, vbs: Any, _ctx: Any) -> None:
        if not future.done():
            future.set_result((ind, status, index, vbs))

    null = Null("")
    cmdgen.BulkCommandGenerator().send_varbinds(
        s.engine,
        addr_name,
        s.context.contextEngineId,
        s.context.contextName,
        1,
        s.max_repetitions,
        [(ObjectName(SYS_UPTIME), null), *((ObjectName(o), null) for o in oids)],
        done,
        None,
    )
    ind, status, index, vbs = await future
    if ind:
        raise SnmpPollError(_classify(ind), str(ind))
    if status:
        status_text = status.prettyPrint() if hasattr(status, "prettyPrint") else str(status)
        raise SnmpPollError("snmp_error", f"{status_text} at varbind {int(index)}")
    return [(tuple(oid), val) for oid, val in vbs]


async def walk_columns(s: _Session, names: Sequence[str]) -> tuple[dict[str, dict[int, Any]], int]:
    """GETBULK walk of several table columns side by side; ({column: {ifIndex: value}},
    sysUpTime of the first response). Each column continues from its own last OID, so a
    truncated response or a column that ends early costs nothing extra."""
    cols: dict[str, dict[int, Any]] = {n: {} for n in names}
    cursor = {n: COLUMNS[n] for n in names}
    active = list(names)
    uptime = -1
    for _ in range(10_000):  # bound: a device returning non-increasing OIDs
        if not active:
            break
        vbs = await _bulk(s, [cursor[n] for n in active])
        if not vbs:
            raise SnmpPollError("snmp_error", "empty GETBULK response")
        up_oid, up_val = vbs[0]
        if uptime < 0:
            v = _pyvalue(up_val)
            if not isinstance(v, int) or up_oid[: len(SYS_UPTIME)] != SYS_UPTIME:
                raise SnmpPollError("snmp_error", "no sysUpTime.0 in the response")
            uptime = v
        done: set[str] = set()
        progressed = False
        for k, (oid, val) in enumerate(vbs[1:]):
            n = active[k % len(active)]
            if n in done:
                continue
            prefix = COLUMNS[n]
            v = _pyvalue(val)
            if v is None or oid[: len(prefix)] != prefix or len(oid) != len(prefix) + 1:
                done.add(n)  # endOfMibView (at the requested OID) or past the column
                continue
            if oid <= cursor[n]:
                raise SnmpPollError("snmp_error", f"OID not increasing at {oid}")
            cursor[n] = oid
            progressed = True
            cols[n][oid[-1]] = v
        if not progressed and not done:
            raise SnmpPollError("snmp_error", "GETBULK made no progress")
        active = [n for n in active if n not in done]
    return cols, uptime


_AUTH_PROTOCOLS = {
    "MD5": "usmHMACMD5AuthProtocol",
    "SHA": "usmHMACSHAAuthProtocol",
    "SHA224": "usmHMAC128SHA224AuthProtocol",
    "SHA256": "usmHMAC192SHA256AuthProtocol",
    "SHA384": "usmHMAC256SHA384AuthProtocol",
    "SHA512": "usmHMAC384SHA512AuthProtocol",
}
_PRIV_PROTOCOLS = {
    "DES": "usmDESPrivProtocol",
    "AES": "usmAesCfb128Protocol",
    "AES192": "usmAesCfb192Protocol",
    "AES256": "usmAesCfb256Protocol",
}


@dataclass(slots=True)
class _Target:
    name: str
    host: str
    port: int
    interval_s: float
    timeout_s: float
    retries: int
    max_repetitions: int
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    label: str
    prefix: str
    media: str | None
    auth: Any = None
    context_name: str = ""
    clock: UptimeClock = field(default_factory=UptimeClock)
    stats: TargetStats = field(default_factory=TargetStats)
    session: _Session | None = None
    tried: asyncio.Event = field(default_factory=asyncio.Event)  # first poll done or failed


def _poll_deadline(t: _Target) -> float:
    """How long one poll of `t` may take before it is given up (and counted a timeout)."""
    return 3 * max(t.interval_s, t.timeout_s * (t.retries + 1))


class SnmpLinkAdapter(LinkAdapter):
    """IF-MIB over SNMPv2c/v3 from one or more targets (see the module doc)."""

    def __init__(self, **options: Any) -> None:
        opts = validate_options(SnmpOptions, options)
        from pysnmp.hlapi.v3arch.asyncio import CommunityData, UsmUserData
        from pysnmp.hlapi.v3arch.asyncio import auth as hauth

        self.targets: dict[str, TargetStats] = {}
        self._targets: list[_Target] = []
        for k, t in enumerate(opts.targets):
            key = f"{KEY}.targets[{k}]"
            host, port = parse_host_port(t.address, default_port=161)
            name = t.name or t.address
            tgt = _Target(
                name=name,
                host=host,
                port=port,
                interval_s=t.interval_s or opts.interval_s,
                timeout_s=t.timeout_s or opts.timeout_s,
                retries=t.retries if t.retries is not None else opts.retries,
                max_repetitions=t.max_repetitions or opts.max_repetitions,
                include=tuple(t.include),
                exclude=tuple(t.exclude),
                label=t.label,
                prefix=t.link_prefix if t.link_prefix is not None else f"{name}:",
                media=t.media,
                context_name=t.context,
            )
            if t.version == "2c":
                community = secret(t.community, t.community_env, t.community_file, f"{key}.community")
                tgt.auth = CommunityData(community, mpModel=1)
            else:
                auth_key = secret(t.auth_key, t.auth_key_env, t.auth_key_file, f"{key}.auth_key")
                priv_key = secret(t.priv_key, t.priv_key_env, t.priv_key_file, f"{key}.priv_key")
                tgt.auth = UsmUserData(
                    t.user,
                    auth_key,
                    priv_key,
                    authProtocol=getattr(hauth, _AUTH_PROTOCOLS[t.auth_protocol]),
                    privProtocol=getattr(hauth, _PRIV_PROTOCOLS[t.priv_protocol]),
                )
            self.targets[name] = tgt.stats
            self._targets.append(tgt)
        self._pending: dict[str, list[LinkReading]] = {}
        self._workers = TargetTasks("snmp")
        self._stop = self._workers.stop

    def __repr__(self) -> str:  # never the credentials
        return f"SnmpLinkAdapter({[t.name for t in self._targets]})"

    async def read(self) -> Sequence[LinkReading]:
        if not self._workers.started:
            # every target's first poll ends (answered, failed, or given up at its poll
            # deadline): a dead target fails after timeout x (retries + 1), a live one takes
            # as long as its walk takes (pure-Python decoding: seconds on a busy host)
            await self._workers.start(self._targets, self._run, max(map(_poll_deadline, self._targets)))
        out: list[LinkReading] = []
        for name in list(self._pending):
            out.extend(self._pending.pop(name))
        return out

    async def poll(self, t: _Target) -> list[LinkReading]:
        """One poll of one target (raises SnmpPollError)."""
        s = await self._session(t)
        t0 = time.time_ns()
        cols, uptime = await walk_columns(s, PRIMARY + LABEL_COLUMNS[t.label])
        extra: tuple[str, ...] = FALLBACK32 if needs_fallback(cols) else ()
        unnamed = len(cols["ifName"]) < len(cols["ifOperStatus"]) or not cols["ifName"]
        if unnamed and "ifDescr" not in cols:  # no ifXTable, or rows without ifName
            extra += ("ifDescr",)
        if extra:
            more, _ = await walk_columns(s, extra)
            cols.update(more)
        boot = t.clock.update(uptime, t0, t.interval_s)
        return readings_from_table(
            cols,
            boot_ns=boot,
            time_ns=t0,
            prefix=t.prefix,
            label=t.label,
            include=t.include,
            exclude=t.exclude,
            media=t.media,
        )

    async def _session(self, t: _Target) -> _Session:
        if t.session is None:
            from pysnmp.error import PySnmpError
            from pysnmp.hlapi.v3arch.asyncio import (
                ContextData,
                SnmpEngine,
                Udp6TransportTarget,
                UdpTransportTarget,
            )

            cls = Udp6TransportTarget if ":" in t.host else UdpTransportTarget
            try:
                transport = await cls.create((t.host, t.port), timeout=t.timeout_s, retries=t.retries)
            except PySnmpError as exc:
                raise SnmpPollError("transport", str(exc)) from exc
            # One engine per target: v3 USM state (engine id, boots, keys) is per device.
            t.session = _Session(
                SnmpEngine(),
                t.auth,
                transport,
                ContextData(contextName=t.context_name),
                t.max_repetitions,
                t.interval_s,
            )
        return t.session

    async def _run(self, t: _Target) -> None:
        from pysnmp.error import PySnmpError

        failing = False
        while not self._stop.is_set():
            deadline = _poll_deadline(t)
            try:
                # A poll that overruns its interval skips the ticks it ran over (no work is
                # thrown away on a slow device); one that takes this long is given up.
                readings = await asyncio.wait_for(self.poll(t), deadline)
            except SnmpPollError as exc:
                reason, msg = exc.reason, str(exc)
            except TimeoutError:
                reason, msg = "timeout", f"poll took longer than {deadline:g} s"
            except (PySnmpError, OSError) as exc:
                reason, msg = "transport", str(exc)
            except Exception as exc:  # a pysnmp bug must not end this target's polling
                log.exception("snmp target %s: unexpected error", t.name)
                reason, msg = "internal", type(exc).__name__
            else:
                t.stats.polls += 1
                t.stats.up = True
                self._pending[t.name] = readings
                if failing:
                    log.info("snmp target %s (%s:%d): answering again", t.name, t.host, t.port)
                failing = False
                reason = ""
            if reason:
                t.stats.error(reason)
                t.stats.up = False
                level = logging.DEBUG if failing else logging.WARNING
                log.log(
                    level, "snmp target %s (%s:%d): poll failed (%s): %s", t.name, t.host, t.port, reason, msg
                )
                failing = True
            t.tried.set()
            if await sleep_or_stop(self._stop, next_tick(time.time(), t.interval_s)):
                break

    async def close(self) -> None:
        await self._workers.close()
        for t in self._targets:
            if t.session is not None:
                t.session.engine.close_dispatcher()
                t.session = None
