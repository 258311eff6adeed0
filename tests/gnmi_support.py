"""A protocol-level gNMI target for tests: a grpc.aio server implementing `gNMI.Subscribe`
(stubs generated from the vendored openconfig/gnmi protos) over TLS on a loopback port.

It serves a small OpenConfig device whose samples are a known function of the sample
number k: notification k has timestamp `t0_ns + k * step_ns` and counters that grow by an
exact rate per second of that timeline, starting above 2^53, cleared (counters back to 0,
`last-clear` = that sample's time) at sample `clear_at`. Samples are sent `pace_s` apart in
real time (faster than their timeline, so windows close quickly). STREAM, POLL and ONCE are
served; `refuse` makes it answer like a target without a mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from collector.devcerts import DevCerts
from collector.proto.openconfig.gnmi import gnmi_pb2 as g
from collector.proto.openconfig.gnmi import gnmi_pb2_grpc as gg

NS = 10**9
BASE = 2**60 + 12_345  # far above 2^53: float64 would lose it


@dataclass
class Port:
    name: str
    rate: int  # in-octets per second of the sample timeline
    speed: str = "SPEED_100GB"
    transceiver: str = ""


@dataclass
class Device:
    t0_ns: int
    step_ns: int = NS
    clear_at: int = 10**9  # sample number of the counter clear (never by default)
    ports: tuple[Port, ...] = (
        Port("et-0/0/1", 5_000_000_000, transceiver="xcvr-1"),
        Port("et-0/0/2", 1_250_000_000, speed="SPEED_10GB"),
    )
    lanes: tuple[tuple[float, float, float], ...] = ((-2.5, 1.2, 6.5), (-3.1, 1.0, 7.0))
    prefec_ber: float = 1.5e-9
    osnr_db: float = 31.5
    oper: str = "UP"

    def time(self, k: int) -> int:
        return self.t0_ns + k * self.step_ns

    def octets(self, p: Port, k: int) -> int:
        if k >= self.clear_at:
            return p.rate * (k - self.clear_at) * self.step_ns // NS
        return BASE + p.rate * k * self.step_ns // NS

    def last_clear(self, k: int) -> int:
        return self.time(self.clear_at) if k >= self.clear_at else 0

    def sample(self, k: int) -> list[g.Notification]:
        out = []
        t = self.time(k)
        for p in self.ports:
            o = self.octets(p, k)
            prefix = g.Path(
                origin="openconfig",
                elem=[
                    g.PathElem(name="interfaces"),
                    g.PathElem(name="interface", key={"name": p.name}),
                    g.PathElem(name="state"),
                    g.PathElem(name="counters"),
                ],
            )
            leaves = {
                "in-octets": o,
                "out-octets": o // 2,
                "in-unicast-pkts": o // 1000,
                "in-multicast-pkts": o // 100_000,
                "in-broadcast-pkts": 7,
                "out-pkts": o // 2000,
                "in-errors": k,
                "out-errors": 0,
                "in-discards": 2 * k,
                "out-discards": 0,
                "last-clear": self.last_clear(k),
            }
            out.append(
                g.Notification(
                    timestamp=t,
                    prefix=prefix,
                    update=[
                        g.Update(path=g.Path(elem=[g.PathElem(name=leaf)]), val=g.TypedValue(uint_val=v))
                        for leaf, v in leaves.items()
                    ],
                )
            )
            ifp = g.Path(
                elem=[g.PathElem(name="interfaces"), g.PathElem(name="interface", key={"name": p.name})]
            )
            ups = [
                g.Update(
                    path=g.Path(
                        elem=[
                            g.PathElem(name="ethernet"),
                            g.PathElem(name="state"),
                            g.PathElem(name="port-speed"),
                        ]
                    ),
                    val=g.TypedValue(string_val=f"openconfig-if-ethernet:{p.speed}"),
                ),
                g.Update(
                    path=g.Path(elem=[g.PathElem(name="state"), g.PathElem(name="oper-status")]),
                    val=g.TypedValue(string_val=self.oper),
                ),
            ]
            if p.transceiver:
                ups.append(
                    g.Update(
                        path=g.Path(elem=[g.PathElem(name="state"), g.PathElem(name="transceiver")]),
                        val=g.TypedValue(string_val=p.transceiver),
                    )
                )
            out.append(g.Notification(timestamp=t, prefix=ifp, update=ups))
            if p.transceiver:
                ups = []
                for i, (rx, tx, bias) in enumerate(self.lanes):
                    for leaf, v in (("input-power", rx), ("output-power", tx), ("laser-bias-current", bias)):
                        ups.append(
                            g.Update(
                                path=g.Path(
                                    elem=[
                                        g.PathElem(name="openconfig-platform-transceiver:physical-channels"),
                                        g.PathElem(name="channel", key={"index": str(i)}),
                                        g.PathElem(name="state"),
                                        g.PathElem(name=leaf),
                                        g.PathElem(name="instant"),
                                    ]
                                ),
                                val=g.TypedValue(double_val=v),
                            )
                        )
                out.append(
                    g.Notification(
                        timestamp=t,
                        prefix=g.Path(
                            elem=[
                                g.PathElem(name="components"),
                                g.PathElem(name="component", key={"name": p.transceiver}),
                                g.PathElem(name="transceiver"),
                            ]
                        ),
                        update=ups,
                    )
                )
        och = g.Path(
            elem=[
                g.PathElem(name="components"),
                g.PathElem(name="component", key={"name": "och-1"}),
                g.PathElem(name="optical-channel"),
                g.PathElem(name="state"),
            ]
        )
        out.append(
            g.Notification(
                timestamp=t,
                prefix=och,
                update=[
                    g.Update(
                        path=g.Path(elem=[g.PathElem(name="pre-fec-ber"), g.PathElem(name="instant")]),
                        val=g.TypedValue(double_val=self.prefec_ber),
                    ),
                    g.Update(
                        path=g.Path(elem=[g.PathElem(name="osnr"), g.PathElem(name="instant")]),
                        val=g.TypedValue(double_val=self.osnr_db),
                    ),
                ],
            )
        )
        return out


@dataclass
class GnmiTarget(gg.gNMIServicer):
    device: Device
    certs: DevCerts | None = None
    username: str = ""
    password: str = ""
    require_client_cert: bool = False
    refuse: frozenset[str] = frozenset()  # "stream", "on_change", "poll"
    pace_s: float = 0.05
    max_samples: int = 100_000  # bound on what one stream sends
    port: int = 0
    k: int = 0
    requests: list[g.SubscribeRequest] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    streams: int = 0
    server: Any = None

    async def Subscribe(
        self,
        request_iterator: AsyncIterator[g.SubscribeRequest],  # type: ignore[override]
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[g.SubscribeResponse]:
        md = {k: v for k, v in context.invocation_metadata() or ()}
        self.metadata.append(md)
        if self.username and (md.get("username") != self.username or md.get("password") != self.password):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad username or password")
        it = request_iterator.__aiter__()
        first = await it.__anext__()
        self.requests.append(first)
        sl = first.subscribe
        mode = {sl.STREAM: "stream", sl.POLL: "poll", sl.ONCE: "once"}[sl.mode]
        if mode in self.refuse:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{mode} mode not supported")
        if "on_change" in self.refuse and any(s.mode == g.ON_CHANGE for s in sl.subscription):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ON_CHANGE not supported")
        self.streams += 1
        for n in self.device.sample(self.k):
            yield g.SubscribeResponse(update=n)
        yield g.SubscribeResponse(sync_response=True)
        if mode == "once":
            self.k += 1
            return
        if mode == "poll":
            async for req in it:
                if req.HasField("poll"):
                    self.k += 1
                    for n in self.device.sample(self.k):
                        yield g.SubscribeResponse(update=n)
                    yield g.SubscribeResponse(sync_response=True)
            return
        for _ in range(self.max_samples):
            await asyncio.sleep(self.pace_s)
            self.k += 1
            for n in self.device.sample(self.k):
                yield g.SubscribeResponse(update=n)

    async def start(self, port: int = 0) -> int:
        self.server = grpc.aio.server()
        gg.add_gNMIServicer_to_server(self, self.server)
        addr = f"127.0.0.1:{port or self.port}"
        if self.certs is None:
            self.port = self.server.add_insecure_port(addr)
        else:
            c = self.certs
            creds = grpc.ssl_server_credentials(
                [(c.server_key.read_bytes(), c.server_cert.read_bytes())],
                root_certificates=c.ca.read_bytes() if self.require_client_cert else None,
                require_client_auth=self.require_client_cert,
            )
            self.port = self.server.add_secure_port(addr, creds)
        await self.server.start()
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None
