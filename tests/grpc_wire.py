"""A gRPC client at the HTTP/2 frame level (h2), for what grpcio's client never sends: a
message flagged compressed whose payload is corrupt, any flag with any bytes.

    h2_stream(port, ca, token, [(compressed_flag, payload), ...]) -> H2Result(acks, status)

One stream over TLS on loopback: HEADERS, every message as length-prefixed gRPC frames, the
client's half-close, then the server's acks and trailers. Blocking; call it in a thread.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

from collector.proto.telemetry.v1 import telemetry_pb2 as pb

METHOD = "/telemetry.v1.IngestService/Stream"


@dataclass
class H2Result:
    acks: list[pb.Ack] = field(default_factory=list)
    status: int | None = None  # grpc-status of the trailers
    message: str = ""
    reset: int | None = None  # RST_STREAM error code, when the server reset the stream


def frame(payload: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", int(compressed), len(payload)) + payload


def h2_stream(
    port: int,
    ca: bytes,
    token: str,
    messages: list[tuple[bool, bytes]],
    *,
    encoding: str = "gzip",
    server_name: str = "localhost",
    timeout_s: float = 30.0,
) -> H2Result:
    ctx = ssl.create_default_context(cadata=ca.decode())
    ctx.set_alpn_protocols(["h2"])
    assert messages, "at least one message"
    result = H2Result()
    body = b"".join(frame(m, flag) for flag, m in messages)
    deadline = time.monotonic() + timeout_s
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as tcp,
        ctx.wrap_socket(tcp, server_hostname=server_name) as sock,
    ):
        assert sock.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(
            sid,
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":path", METHOD),
                (":authority", f"{server_name}:{port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-encoding", encoding),
                ("grpc-accept-encoding", "identity"),
                ("authorization", f"Bearer {token}"),
            ],
        )
        sock.sendall(conn.data_to_send())
        sent, ended, data = 0, False, b""
        while not ended:
            if time.monotonic() > deadline:
                raise TimeoutError("no end of stream from the server")
            while (
                sent < len(body)
                and (room := min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)) > 0
            ):
                chunk = body[sent : sent + room]
                sent += len(chunk)
                conn.send_data(sid, chunk, end_stream=sent == len(body))
            sock.sendall(conn.data_to_send())
            incoming = sock.recv(65536)
            if not incoming:
                break
            for ev in conn.receive_data(incoming):
                if isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.TrailersReceived | h2.events.ResponseReceived):
                    hdrs = dict(ev.headers)
                    if "grpc-status" in hdrs:
                        result.status = int(hdrs["grpc-status"])
                        result.message = hdrs.get("grpc-message", "")
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    ended = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    result.reset = ev.error_code
                    ended = True
            sock.sendall(conn.data_to_send())
    pos = 0
    while pos + 5 <= len(data):
        _flag, n = struct.unpack(">BI", data[pos : pos + 5])
        result.acks.append(pb.Ack.FromString(data[pos + 5 : pos + 5 + n]))
        pos += 5 + n
    return result
