"""gNMI link adapter (`agent.sources.link.adapter: gnmi`): OpenConfig over gNMI Subscribe.

One long-lived `gNMI.Subscribe` stream per target (grpc.aio with stubs generated from the
vendored openconfig/gnmi protos): STREAM mode with SAMPLE subscriptions at the target's
interval and ON_CHANGE for oper-status; when the target refuses that, STREAM with SAMPLE
only, then POLL (a Poll request per interval on the open stream), then ONCE (a new RPC per
interval). Paths read (`origin` and module prefixes ignored):

    /interfaces/interface[name]/state/counters/{in,out}-octets         -> link_{in,out}_octets
    .../counters/{in,out}-pkts, else {in,out}-{unicast,multicast,broadcast}-pkts summed
                                                                        -> link_{in,out}_packets
    .../counters/{in,out}-errors, {in,out}-discards                     -> link_*_errors/discards
    .../counters/last-clear (ns since the epoch)                         -> counter start marker
    /interfaces/interface[name]/state/oper-status (UP = 1)               -> link_oper_up
    /interfaces/interface[name]/ethernet/state/port-speed (SPEED_100GB), or state/high-speed
    (Mb/s)                                                               -> link_speed_bytes
    /interfaces/interface[name]/state/transceiver (component name)      -> which link a
                                                                           transceiver is on
    /components/component[name]/transceiver/physical-channels/channel[index]/state/
        input-power/instant, output-power/instant (dBm), laser-bias-current/instant (mA)
                                                    -> link_optical_{rx,tx}_power_dbm, _laser_bias_amperes
    /components/component[name]/optical-channel/state/pre-fec-ber/instant, osnr/instant
                                                    -> link_optical_prefec_ber, link_optical_osnr_db

Counters are uint64 (64-bit, exact: uint_val or RFC 7951 JSON strings, never a float).
Updates are merged per interface; a read returns, per link, what changed since the last
read: the counters stamped with their notification's timestamp, plus the latest gauges. For a
multi-lane transceiver the worst lane is reported (lowest power, highest bias). A target that
drops, refuses or stalls (no update for `stall_after_s`) is reconnected with exponential
backoff and full jitter, counted per reason, in its own task: the others go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
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
    cancel_all,
    secret,
    sleep_or_stop,
    validate_options,
    wanted,
)
from collector.agent.sources.link_adapters import LinkAdapter, LinkReading
from collector.backoff import backoff_delay
from collector.errors import ConfigError

log = logging.getLogger(__name__)

COUNTER_LEAVES = frozenset(
    (
        "in-octets",
        "out-octets",
        "in-pkts",
        "out-pkts",
        "in-unicast-pkts",
        "in-multicast-pkts",
        "in-broadcast-pkts",
        "out-unicast-pkts",
        "out-multicast-pkts",
        "out-broadcast-pkts",
        "in-errors",
        "out-errors",
        "in-discards",
        "out-discards",
        "last-clear",
    )
)
_OPTIC_LEAVES = {
    "input-power": "rx_power_dbm",
    "output-power": "tx_power_dbm",
    "laser-bias-current": "laser_bias_amperes",
}
_OCH_LEAVES = {"pre-fec-ber": "prefec_ber", "osnr": "osnr_db"}
_M64 = (1 << 64) - 1
_SPEED = re.compile(r"SPEED_(\d+(?:\.\d+)?)(MB|GB|TB)$")
_SPEED_UNIT = {"MB": 10**6, "GB": 10**9, "TB": 10**12}

DEFAULT_PATHS = {
    "counters": "/interfaces/interface/state/counters",
    "oper_status": "/interfaces/interface/state/oper-status",
    "port_speed": "/interfaces/interface/ethernet/state/port-speed",
    "transceiver_of": "/interfaces/interface/state/transceiver",
    "transceiver": "/components/component/transceiver/physical-channels/channel/state",
    "optical_channel": "/components/component/optical-channel/state",
}


# --- options --------------------------------------------------------------------------
class GnmiTarget(Options):
    name: str = Field(
        "",
        description="Target name: `target` label of the agent's "
        "self-metrics and the default link prefix. Empty: the address.",
    )
    address: str = Field(description="HOST:PORT of the gNMI server (e.g. 'r1.example:57400').")
    plaintext: bool = Field(False, description="No TLS. Only for loopback tests; never in production.")
    ca_file: Path | None = Field(
        None, description="PEM CA bundle of the target's certificate (empty: system trust store)."
    )
    client_cert: Path | None = Field(None, description="PEM client certificate (mTLS), with client_key.")
    client_key: Path | None = Field(None, description="PEM key of client_cert.")
    server_name: str = Field("", description="TLS name to verify instead of the address's host.")
    username: str = Field("", description="Sent as `username` metadata with the password.")
    password: SecretStr | None = Field(
        None, description="Inline password (discouraged: prefer password_env/_file)."
    )
    password_env: str = Field("", description="Environment variable holding the password.")
    password_file: Path | None = Field(None, description="File whose first line is the password.")
    interval_s: float | None = Field(
        None,
        gt=0,
        description="SAMPLE interval (and POLL/ONCE period) of this target; default: the adapter's.",
    )
    mode: Literal["auto", "stream", "poll", "once"] = Field(
        "auto",
        description="'auto': STREAM (ON_CHANGE oper-status) -> STREAM (all SAMPLE) -> "
        "POLL -> ONCE, the first the target accepts; or force one mode.",
    )
    encoding: Literal["proto", "json_ietf", "json"] = Field(
        "proto", description="Encoding asked for (values are read in any encoding)."
    )
    timestamps: Literal["device", "agent"] = Field(
        "device",
        description="Event time of samples: the notification timestamp or the "
        "agent's receive time (for a device with a wrong clock).",
    )
    paths: dict[str, str] = Field(
        {},
        description="Override subscription paths by role "
        f"({', '.join(DEFAULT_PATHS)}); '' drops that subscription.",
    )
    components: dict[str, str] = Field(
        {},
        description="Component name -> link name for "
        "optics the target does not relate to an interface "
        "(transponder line ports).",
    )
    include: list[str] = Field(["*"], description="Link names (fnmatch, before the prefix) reported.")
    exclude: list[str] = Field([], description="Link names (fnmatch) left out.")
    link_prefix: str | None = Field(
        None, description="Prepended to every link label (default '<name>:'; '' for none)."
    )
    media: Literal["optical", "copper"] | None = Field(
        None, description="Media of links without optics readings."
    )

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        parse_host_port(v)
        return v

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = set(v) - set(DEFAULT_PATHS)
        if unknown:
            raise ValueError(f"unknown path roles {sorted(unknown)}; known: {list(DEFAULT_PATHS)}")
        return v

    @model_validator(mode="after")
    def _pairs(self) -> GnmiTarget:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        return self


class GnmiOptions(Options):
    interval_s: float = Field(10.0, gt=0, description="SAMPLE interval of targets without their own.")
    connect_timeout_s: float = Field(10.0, gt=0, description="Bound on connecting and on the first response.")
    stall_after_s: float = Field(
        0.0, ge=0, description="No update for this long reopens the stream; 0: 3 intervals + 10 s."
    )
    backoff_initial_s: float = Field(
        1.0, gt=0, description="First reconnect delay cap (doubles per failure, full jitter)."
    )
    backoff_max_s: float = Field(60.0, gt=0, description="Largest reconnect delay cap.")
    targets: list[GnmiTarget] = Field(min_length=1, description="The gNMI targets.")

    @model_validator(mode="after")
    def _unique(self) -> GnmiOptions:
        names = [t.name or t.address for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"target names must be unique: {names}")
        return self


# --- notifications -> readings (pure) ----------------------------------------------------
Elems = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


def parse_path(text: str) -> Elems:
    """'/a/b[k=v]/c' -> (("a", ()), ("b", (("k", "v"),)), ("c", ()))."""
    out: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    for part in re.findall(r"([^/\[\]]+)((?:\[[^\]]*\])*)", text):
        name, keys = part
        kv = tuple((k.partition("=")[0], k.partition("=")[2]) for k in re.findall(r"\[([^\]]*)\]", keys))
        out.append((name, kv))
    return tuple(out)


def _strip(name: str) -> str:
    return name.rsplit(":", 1)[-1]


def elems_of(path: Any) -> Elems:
    """A gnmi.Path's elements (or the deprecated string elements), module prefixes dropped."""
    if path.elem:
        return tuple((_strip(e.name), tuple(sorted(e.key.items()))) for e in path.elem)
    return tuple((_strip(e), ()) for e in path.element)


def typed_value(v: Any) -> Any:
    """TypedValue -> int | float | str | bool | dict | list | None."""
    kind = v.WhichOneof("value")
    if kind in ("uint_val", "int_val", "double_val", "float_val", "string_val", "bool_val", "ascii_val"):
        return getattr(v, kind)
    if kind == "decimal_val":
        return v.decimal_val.digits / 10**v.decimal_val.precision
    if kind in ("json_val", "json_ietf_val"):
        try:
            return json.loads(getattr(v, kind))
        except (ValueError, UnicodeDecodeError):
            return None
    if kind == "leaflist_val":
        return [typed_value(e) for e in v.leaflist_val.element]
    return None


def _flatten(elems: Elems, value: Any) -> Iterable[tuple[Elems, Any]]:
    """A JSON container value becomes one (path, leaf value) per leaf."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten((*elems, (_strip(k), ())), v)
    elif isinstance(value, list) and value and all(isinstance(e, dict) for e in value):
        # a keyed list in JSON: keys are the entry's scalar members named like "name"/"index"
        for entry in value:
            keys = tuple(sorted((k, str(v)) for k, v in entry.items() if _strip(k) in ("name", "index")))
            rest = {k: v for k, v in entry.items() if _strip(k) not in ("name", "index")}
            head = (*elems[:-1], (elems[-1][0], tuple((_strip(k), v) for k, v in keys)))
            yield from _flatten(head, rest)
    else:
        yield elems, value


def as_counter(v: Any) -> int | None:
    """uint64 from uint_val/int_val or an RFC 7951 decimal string; never from a float."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if 0 <= v <= _M64 else None
    if isinstance(v, str) and v.isascii() and v.isdigit():
        n = int(v)
        return n if n <= _M64 else None
    return None


def as_float(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def port_speed(v: Any) -> int | None:
    """openconfig-if-ethernet ETHERNET_SPEED identity -> bytes per second."""
    if not isinstance(v, str):
        return None
    m = _SPEED.search(_strip(v))
    if m is None:
        return None
    return int(float(m.group(1)) * _SPEED_UNIT[m.group(2)]) // 8


@dataclass(slots=True)
class _Link:
    counters: dict[str, int] = field(default_factory=dict)
    counters_time: int = 0
    counters_dirty: bool = False
    oper_up: bool | None = None
    speed: int | None = None
    gauges_time: int = 0
    dirty: bool = False
    transceiver: str = ""


@dataclass(slots=True)
class _Optics:
    lanes: dict[str, dict[str, float]] = field(default_factory=dict)
    och: dict[str, float] = field(default_factory=dict)
    time: int = 0
    dirty: bool = False


@dataclass(slots=True)
class GnmiState:
    """The merged OpenConfig state of one target; `apply` each notification, `readings` to
    take what changed since the last call."""

    components: dict[str, str] = field(default_factory=dict)  # static component -> link
    links: dict[str, _Link] = field(default_factory=dict)
    optics: dict[str, _Optics] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count

    def _reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def apply(self, n: Any, receive_ns: int = 0) -> None:
        """One gnmi.Notification (device timestamp unless `receive_ns` is given)."""
        t = receive_ns or n.timestamp or time.time_ns()
        prefix = elems_of(n.prefix) if n.HasField("prefix") else ()
        for u in n.update:
            value = typed_value(u.val)
            for elems, leaf in _flatten((*prefix, *elems_of(u.path)), value):
                self.leaf(elems, leaf, t)
        for d in n.delete:
            elems = (*prefix, *elems_of(d))
            if len(elems) == 2 and elems[0][0] == "interfaces":
                self.links.pop(_key(elems[1], "name"), None)
            elif len(elems) == 2 and elems[0][0] == "components":
                self.optics.pop(_key(elems[1], "name"), None)

    def leaf(self, e: Elems, v: Any, t: int) -> None:
        names = tuple(x[0] for x in e)
        if names[:2] == ("interfaces", "interface") and len(e) >= 4:
            link_name = _key(e[1], "name")
            if not link_name:
                return self._reject("no_key")
            rest = names[2:]
            if rest[:2] == ("state", "counters") and len(rest) == 3 and rest[2] in COUNTER_LEAVES:
                c = as_counter(v)
                if c is None:
                    return self._reject("bad_counter")
                lk = self.links.setdefault(link_name, _Link())
                lk.counters[rest[2]] = c
                lk.counters_time = max(lk.counters_time, t)
                lk.counters_dirty = lk.dirty = True
            elif rest == ("state", "oper-status"):
                lk = self.links.setdefault(link_name, _Link())
                lk.oper_up = isinstance(v, str) and _strip(v).upper() == "UP"
                lk.gauges_time = max(lk.gauges_time, t)
                lk.dirty = True
            elif rest in (("ethernet", "state", "port-speed"), ("state", "high-speed")):
                speed = (
                    port_speed(v)
                    if rest[0] == "ethernet"
                    else (c * 125_000 if (c := as_counter(v)) else None)
                )
                if speed is None:
                    return self._reject("bad_speed")
                lk = self.links.setdefault(link_name, _Link())
                lk.speed = speed
                lk.gauges_time = max(lk.gauges_time, t)
                lk.dirty = True
            elif rest == ("state", "transceiver") and isinstance(v, str):
                self.links.setdefault(link_name, _Link()).transceiver = v
        elif names[:2] == ("components", "component") and len(e) >= 5:
            comp = _key(e[1], "name")
            if not comp:
                return self._reject("no_key")
            rest = names[2:]
            if (
                rest[:3] == ("transceiver", "physical-channels", "channel")
                and len(rest) == 6
                and rest[3] == "state"
                and rest[5] == "instant"
                and rest[4] in _OPTIC_LEAVES
            ):
                f = as_float(v)
                if f is None:
                    return self._reject("bad_optics")
                o = self.optics.setdefault(comp, _Optics())
                o.lanes.setdefault(_key(e[4], "index"), {})[rest[4]] = f
                o.time, o.dirty = max(o.time, t), True
            elif (
                rest[:2] == ("optical-channel", "state")
                and len(rest) == 4
                and rest[3] == "instant"
                and rest[2] in _OCH_LEAVES
            ):
                f = as_float(v)
                if f is None:
                    return self._reject("bad_optics")
                o = self.optics.setdefault(comp, _Optics())
                o.och[rest[2]] = f
                o.time, o.dirty = max(o.time, t), True
        return None

    def readings(
        self,
        prefix: str = "",
        include: Sequence[str] = ("*",),
        exclude: Sequence[str] = (),
        media: str | None = None,
    ) -> list[LinkReading]:
        """Per link, what changed since the previous call."""
        link_of = {lk.transceiver: name for name, lk in self.links.items() if lk.transceiver}
        link_of.update(self.components)  # configured mappings win
        by_link: dict[str, list[_Optics]] = {}
        for comp, o in self.optics.items():
            by_link.setdefault(link_of.get(comp, comp), []).append(o)
        out: list[LinkReading] = []
        for name in sorted(set(self.links) | set(by_link)):
            lk: _Link | None = self.links.get(name)
            optics = by_link.get(name, [])
            optics_dirty = any(o.dirty for o in optics)
            if not ((lk is not None and lk.dirty) or optics_dirty):
                continue
            if not wanted(name, include, exclude):
                continue
            r = LinkReading(name=prefix + name, media="optical" if optics else media)
            times = []
            if lk is not None and lk.dirty:
                if lk.counters_dirty:
                    c = lk.counters
                    r.in_octets, r.out_octets = c.get("in-octets"), c.get("out-octets")
                    r.in_packets = _packets(c, "in")
                    r.out_packets = _packets(c, "out")
                    r.in_errors, r.out_errors = c.get("in-errors"), c.get("out-errors")
                    r.in_discards, r.out_discards = c.get("in-discards"), c.get("out-discards")
                    r.counter_start_unix_nano = c.get("last-clear", 0)
                    times.append(lk.counters_time)
                r.oper_up, r.speed_bytes_per_second = lk.oper_up, lk.speed
                times.append(lk.gauges_time)
            if optics_dirty:
                lanes = [la for o in optics for la in o.lanes.values()]
                rx = [la["input-power"] for la in lanes if "input-power" in la]
                tx = [la["output-power"] for la in lanes if "output-power" in la]
                bias = [la["laser-bias-current"] for la in lanes if "laser-bias-current" in la]
                r.rx_power_dbm = min(rx) if rx else None
                r.tx_power_dbm = min(tx) if tx else None
                r.laser_bias_amperes = max(bias) / 1000.0 if bias else None  # mA
                ber = [o.och["pre-fec-ber"] for o in optics if "pre-fec-ber" in o.och]
                osnr = [o.och["osnr"] for o in optics if "osnr" in o.och]
                r.prefec_ber = max(ber) if ber else None
                r.osnr_db = min(osnr) if osnr else None
                times.extend(o.time for o in optics)
            # counters carry their own sample time; gauges ride along with it
            r.time_unix_nano = lk.counters_time if lk is not None and lk.counters_dirty else max(times)
            out.append(r)
        for lk in self.links.values():
            lk.dirty = lk.counters_dirty = False
        for o in self.optics.values():
            o.dirty = False
        return out


def _key(elem: tuple[str, tuple[tuple[str, str], ...]], name: str) -> str:
    for k, v in elem[1]:
        if _strip(k) == name:
            return v
    return ""


def _packets(c: dict[str, int], d: str) -> int | None:
    total = c.get(f"{d}-pkts")
    if total is not None:
        return total
    ucast = c.get(f"{d}-unicast-pkts")
    if ucast is None:
        return None
    # a modular sum of 64-bit counters is a 64-bit counter (see snmp.py)
    return (ucast + c.get(f"{d}-multicast-pkts", 0) + c.get(f"{d}-broadcast-pkts", 0)) & _M64


# --- protocol ---------------------------------------------------------------------------
def to_path(text: str) -> Any:
    from collector.proto.openconfig.gnmi import gnmi_pb2 as g

    return g.Path(elem=[g.PathElem(name=n, key=dict(k)) for n, k in parse_path(text)])


Attempt = tuple[str, bool]  # (mode, on_change for oper-status)
_AUTO: tuple[Attempt, ...] = (("stream", True), ("stream", False), ("poll", False), ("once", False))


class _Refused(Exception):
    """The target refused this subscription mode (try the next)."""


@dataclass(slots=True)
class _Target:
    name: str
    address: str
    options: GnmiTarget
    interval_s: float
    prefix: str
    password: str | None
    state: GnmiState
    stats: TargetStats = field(default_factory=TargetStats)
    attempts: tuple[Attempt, ...] = _AUTO
    chosen: int = 0
    last_update: float = 0.0
    tried: asyncio.Event = field(default_factory=asyncio.Event)  # first sync, or a failure


class GnmiLinkAdapter(LinkAdapter):
    """OpenConfig interfaces and optics over gNMI Subscribe (see the module doc)."""

    def __init__(self, **options: Any) -> None:
        self.opts = opts = validate_options(GnmiOptions, options)
        self.targets: dict[str, TargetStats] = {}
        self._targets: list[_Target] = []
        for k, t in enumerate(opts.targets):
            key = f"{KEY}.targets[{k}]"
            name = t.name or t.address
            for attr in ("ca_file", "client_cert", "client_key"):
                p = getattr(t, attr)
                if p is not None and not Path(p).is_file():
                    raise ConfigError(f"no such file: {p}", key=f"{key}.{attr}")
            password = (
                secret(t.password, t.password_env, t.password_file, f"{key}.password", required=False)
                if t.username
                else None
            )
            attempts = _AUTO if t.mode == "auto" else ((t.mode, t.mode == "stream"),)
            tgt = _Target(
                name=name,
                address=t.address,
                options=t,
                interval_s=t.interval_s or opts.interval_s,
                prefix=t.link_prefix if t.link_prefix is not None else f"{name}:",
                password=password,
                state=GnmiState(components=dict(t.components)),
                attempts=attempts,
            )
            self.targets[name] = tgt.stats
            self._targets.append(tgt)
        self._workers = TargetTasks("gnmi")
        self._stop = self._workers.stop

    def __repr__(self) -> str:  # never the password
        return f"GnmiLinkAdapter({[t.name for t in self._targets]})"

    async def read(self) -> Sequence[LinkReading]:
        if not self._workers.started:
            await self._workers.start(self._targets, self._run, self.opts.connect_timeout_s + 1.0)
        out: list[LinkReading] = []
        for t in self._targets:
            o = t.options
            out.extend(t.state.readings(t.prefix, o.include, o.exclude, o.media))
            for reason, n in t.state.rejected.items():
                t.stats.errors[f"value_{reason}"] = t.stats.errors.get(f"value_{reason}", 0) + n
            t.state.rejected.clear()
        return out

    # -- connection
    def _channel(self, t: _Target) -> Any:
        import grpc

        o = t.options
        opts: list[tuple[str, Any]] = [
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ]
        if o.plaintext:
            return grpc.aio.insecure_channel(t.address, options=opts)
        root = Path(o.ca_file).read_bytes() if o.ca_file else None
        cert = Path(o.client_cert).read_bytes() if o.client_cert else None
        key = Path(o.client_key).read_bytes() if o.client_key else None
        if o.server_name:
            opts.append(("grpc.ssl_target_name_override", o.server_name))
        creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)
        return grpc.aio.secure_channel(t.address, creds, options=opts)

    def _metadata(self, t: _Target) -> tuple[tuple[str, str], ...]:
        if not t.options.username:
            return ()
        return (("username", t.options.username), ("password", t.password or ""))

    def _request(self, t: _Target, mode: str, on_change: bool) -> Any:
        from collector.proto.openconfig.gnmi import gnmi_pb2 as g

        paths = {**DEFAULT_PATHS, **t.options.paths}
        interval_ns = int(t.interval_s * 1e9)
        subs = []
        for role, p in paths.items():
            if not p:
                continue
            if mode == "stream":
                if on_change and role in ("oper_status", "transceiver_of"):
                    subs.append(g.Subscription(path=to_path(p), mode=g.ON_CHANGE))
                else:
                    subs.append(g.Subscription(path=to_path(p), mode=g.SAMPLE, sample_interval=interval_ns))
            else:
                subs.append(g.Subscription(path=to_path(p)))
        encoding = {"proto": g.PROTO, "json_ietf": g.JSON_IETF, "json": g.JSON}
        return g.SubscribeRequest(
            subscribe=g.SubscriptionList(
                subscription=subs,
                encoding=encoding[t.options.encoding],
                mode={
                    "stream": g.SubscriptionList.STREAM,
                    "poll": g.SubscriptionList.POLL,
                    "once": g.SubscriptionList.ONCE,
                }[mode],
            )
        )

    def _handle(self, t: _Target, resp: Any) -> None:
        kind = resp.WhichOneof("response")
        t.last_update = time.monotonic()
        if kind == "update":
            t.stats.polls += 1
            receive = time.time_ns() if t.options.timestamps == "agent" else 0
            t.state.apply(resp.update, receive)
        elif kind == "sync_response":
            t.tried.set()  # the target's full state has arrived
        elif kind == "error":
            raise _Failed("target_error", resp.error.message)

    async def _session(self, t: _Target, mode: str, on_change: bool) -> None:
        """One connection: runs until the stream breaks, stalls or the adapter stops."""
        import grpc

        from collector.proto.openconfig.gnmi import gnmi_pb2 as g
        from collector.proto.openconfig.gnmi import gnmi_pb2_grpc as gg

        stall = self.opts.stall_after_s or (3 * t.interval_s + 10.0)
        async with self._channel(t) as channel:
            stub = gg.gNMIStub(channel)
            try:
                await asyncio.wait_for(channel.channel_ready(), self.opts.connect_timeout_s)
            except TimeoutError:
                raise _Failed("connect", f"no connection within {self.opts.connect_timeout_s:g} s") from None
            if mode == "once":
                while not self._stop.is_set():
                    call = stub.Subscribe(_one(self._request(t, mode, on_change)), metadata=self._metadata(t))
                    await self._consume(t, call, stall, until_sync=True)
                    if await sleep_or_stop(self._stop, t.interval_s):
                        return
                return
            queue: asyncio.Queue[Any] = asyncio.Queue()
            queue.put_nowait(self._request(t, mode, on_change))
            call = stub.Subscribe(_from_queue(queue), metadata=self._metadata(t))
            poller = None
            if mode == "poll":

                async def poll() -> None:
                    while not await sleep_or_stop(self._stop, t.interval_s):
                        queue.put_nowait(g.SubscribeRequest(poll=g.Poll()))

                poller = asyncio.create_task(poll())
            try:
                await self._consume(t, call, stall)
            except grpc.aio.AioRpcError:
                raise
            finally:
                if poller is not None:
                    await cancel_all([poller])
                call.cancel()

    async def _consume(self, t: _Target, call: Any, stall_s: float, until_sync: bool = False) -> None:
        import grpc

        it = call.__aiter__()
        first = True
        while not self._stop.is_set():
            try:
                resp = await asyncio.wait_for(
                    it.__anext__(), self.opts.connect_timeout_s if first else stall_s
                )
            except StopAsyncIteration:
                if until_sync:
                    return
                raise _Failed("closed", "the target ended the stream") from None
            except TimeoutError:
                raise _Failed(
                    "stalled" if not first else "no_response",
                    f"no update for {stall_s if not first else self.opts.connect_timeout_s:g} s",
                ) from None
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if first and code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT):
                    raise _Refused(f"{code.name}: {exc.details()}") from None
                raise _Failed(code.name.lower(), exc.details() or code.name) from None
            if first:
                first = False
                t.stats.up = True
            self._handle(t, resp)
            if until_sync and resp.WhichOneof("response") == "sync_response":
                call.cancel()
                return

    async def _run(self, t: _Target) -> None:
        failures = 0
        while not self._stop.is_set():
            mode, on_change = t.attempts[t.chosen]
            reason = ""
            try:
                await self._session(t, mode, on_change)
            except _Refused as exc:
                if t.chosen + 1 < len(t.attempts):
                    log.info(
                        "gnmi target %s: %s subscription refused (%s); trying %s",
                        t.name,
                        _label(t.attempts[t.chosen]),
                        exc,
                        _label(t.attempts[t.chosen + 1]),
                    )
                    t.chosen += 1
                    t.stats.error("refused")
                    continue
                reason, msg = "refused", str(exc)
            except _Failed as exc:
                reason, msg = exc.reason, str(exc)
            except OSError as exc:
                reason, msg = "io", str(exc)
            except Exception as exc:  # a grpc or decoding bug must not end this target
                log.exception("gnmi target %s: unexpected error", t.name)
                reason, msg = "internal", type(exc).__name__
            if self._stop.is_set():
                break
            t.tried.set()
            was_up = t.stats.up
            t.stats.up = False
            reason = reason or "closed"
            t.stats.error(reason)
            t.stats.reconnects += 1
            failures = 0 if was_up else failures + 1
            level = logging.WARNING if was_up or failures == 1 else logging.DEBUG
            log.log(
                level,
                "gnmi target %s (%s): stream failed (%s): %s; reconnecting",
                t.name,
                t.address,
                reason,
                msg if reason != "internal" else "see above",
            )
            if await sleep_or_stop(
                self._stop, backoff_delay(failures, self.opts.backoff_initial_s, self.opts.backoff_max_s)
            ):
                break

    async def close(self) -> None:
        await self._workers.close()
        for t in self._targets:
            t.stats.up = False


class _Failed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def _label(a: Attempt) -> str:
    return f"{a[0].upper()}{' + ON_CHANGE' if a[1] else ''}"


async def _one(request: Any) -> AsyncIterator[Any]:
    yield request


async def _from_queue(q: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    while True:
        yield await q.get()
