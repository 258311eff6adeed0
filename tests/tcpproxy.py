"""A small asyncio TCP proxy on loopback for network-fault tests.

    async with TcpProxy("127.0.0.1", upstream_port) as proxy:
        ... connect clients to proxy.port ...
        proxy.pause()          # stop forwarding bytes both ways (connections stay open: a hang)
        proxy.resume()
        await proxy.reset()    # abort every open connection with a TCP RST
        proxy.refuse = True    # new connections are closed at once
        proxy.delay_s = 0.2    # every byte arrives 200 ms later, each direction (latency)
        proxy.corrupt = f      # every chunk from the upstream reaches the client as f(chunk)

Only for tests: it listens on 127.0.0.1 and forwards to one upstream address.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable

from collector.lifecycle import Component


class TcpProxy(Component):
    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self.refuse = False
        self.delay_s = 0.0
        self.corrupt: Callable[[bytes], bytes] | None = None
        self.connections = 0  # accepted so far
        self.resets = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self.reset()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def reset(self) -> None:
        """Abort every open connection (RST to both sides)."""
        for a, b in list(self._conns):
            for w in (a, b):
                _rst(w)
            self.resets += 1
        self._conns.clear()
        await asyncio.sleep(0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.refuse:
            _rst(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _rst(writer)
            return
        pair = (writer, up_writer)
        self._conns.add(pair)
        t1 = asyncio.create_task(self._pump(reader, up_writer))
        t2 = asyncio.create_task(self._pump(up_reader, writer, downstream=True))
        self._tasks |= {t1, t2}
        try:
            await asyncio.wait({t1, t2}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (t1, t2):
                t.cancel()
            await asyncio.gather(t1, t2, return_exceptions=True)
            self._tasks -= {t1, t2}
            self._conns.discard(pair)
            for w in pair:
                w.close()

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, downstream: bool = False
    ) -> None:
        # Reading and writing are decoupled by a queue so that `delay_s` is latency (each
        # chunk leaves delay_s after it arrived), not a throughput limit.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=256)

        async def deliver() -> None:
            while True:
                t, data = await queue.get()
                if not data:
                    return
                wait = t + self.delay_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()

        writer = asyncio.create_task(deliver())
        try:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    if downstream and self.corrupt is not None:
                        data = self.corrupt(data)
                    await queue.put((loop.time(), data))
                    if writer.done():
                        break
            await queue.put((loop.time(), b""))
            with contextlib.suppress(OSError):
                await writer
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)


def _rst(w: asyncio.StreamWriter) -> None:
    sock = w.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()
