"""The agent's sender: streams spooled batches to the ingest service and applies the acks.

Sits between the spool and the network. One bidi `IngestService.Stream` at a time carries a
window of in-flight batches, lowest seq first. Acks (in the order the batches arrived):

* OK (possibly covering a seq range): the batches are deleted from the spool;
* INVALID_ARGUMENT / PERMISSION_DENIED: the batch is moved aside to the spool's rejected/
  directory and counted, never retried;
* anything else (RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED, ...): the batch goes
  back to the spool and sending pauses for a backoff (at least the ack's retry_after_ms).

A broken stream (disconnect, server restart, no ack within ack_timeout_s) puts every in-flight
batch back and reconnects after an exponential backoff with full jitter and a cap, at least
the server's `retry-after-ms` when it refused the stream (site stream limit). A stream with
nothing to send is ended by the agent itself (half-close) shortly before the ingest's idle
timeout, which the ingest states in its initial metadata (`stream-idle-timeout-ms`), and is
reopened at once: a batch written while the ingest ends the stream would fail with gRPC's
INTERNAL. A stream the ingest closed for being idle (trailer `stream-end-reason:
idle_timeout`; an ingest that does not state its timeout) is reopened at once too. Neither is
a failure. Every wait ends at once when shutdown begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from collector.agent.config import IngestTargetSettings
from collector.agent.spool import Spool
from collector.backoff import backoff_delay
from collector.errors import ConfigError
from collector.proto.telemetry.v1 import telemetry_pb2 as pb

log = logging.getLogger(__name__)

METHOD = "/telemetry.v1.IngestService/Stream"
REJECT_CODES = frozenset({pb.INVALID_ARGUMENT, pb.PERMISSION_DENIED})


def retry_pushback_s(exc: grpc.aio.AioRpcError) -> float:
    """The server's retry hint on a refused stream (trailing metadata `retry-after-ms`, see
    docs/contract.md), in seconds; 0 when there is none."""
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after-ms":
            try:
                return max(0.0, int(value) / 1000.0)
            except (TypeError, ValueError):
                return 0.0
    return 0.0


def stream_end_reason(exc: grpc.aio.AioRpcError) -> str:
    """The ingest's trailer `stream-end-reason` (idle_timeout, shutdown, internal), or ''."""
    for key, value in exc.trailing_metadata() or ():
        if key == "stream-end-reason":
            return str(value)
    return ""


def idle_close_after(metadata: Any) -> float | None:
    """How long a stream with nothing in flight stays open before the agent ends it: a margin
    (a tenth of the ingest's idle timeout, at least 1 s, at most half of it) before the
    timeout the ingest states in its initial metadata (`stream-idle-timeout-ms`, see
    docs/contract.md). None when it states none (older ingests): the ingest ends the stream."""
    for key, value in metadata or ():
        if key == "stream-idle-timeout-ms":
            try:
                timeout = int(value) / 1000.0
            except (TypeError, ValueError):
                return None
            if timeout <= 0:
                return None
            return max(timeout / 2, timeout - max(1.0, timeout / 10))
    return None


def read_token(settings: IngestTargetSettings) -> str:
    if settings.token_file is not None:
        try:
            lines = settings.token_file.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(
                f"cannot read token file {settings.token_file}: {exc.strerror}", key="agent.ingest.token_file"
            ) from exc
        return lines[0].strip() if lines else ""
    return settings.token


def channel_credentials(settings: IngestTargetSettings) -> grpc.ChannelCredentials | None:
    """TLS (and mTLS) credentials from the settings; None for plaintext."""
    if settings.plaintext:
        return None

    def _read(path: Any, key: str) -> bytes | None:
        if path is None:
            return None
        try:
            return bytes(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}", key=f"agent.ingest.{key}") from exc

    return grpc.ssl_channel_credentials(
        root_certificates=_read(settings.ca_file, "ca_file"),
        private_key=_read(settings.client_key, "client_key"),
        certificate_chain=_read(settings.client_cert, "client_cert"),
    )


def _identity(b: bytes) -> bytes:
    return b


def _outcome(fut: asyncio.Future[Any]) -> Any:
    """A finished future's result; None when it was cancelled or raised."""
    if fut.cancelled() or fut.exception() is not None:
        return None
    return fut.result()


class _StreamBroken(Exception):
    pass


class _IdleClosed(Exception):
    """The agent ended a stream that had nothing to send (see idle_close_after)."""


@dataclass(slots=True)
class SenderCounters:
    sent: int = 0  # batch writes on a stream (a resend counts again)
    retriable_acks: int = 0
    stream_failures: int = 0
    recoveries: int = 0  # failure streaks ended by an OK ack


class Sender:
    """Owns the connection to the ingest service for one agent identity."""

    def __init__(
        self,
        settings: IngestTargetSettings,
        spool: Spool,
        *,
        token: str | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self._token = read_token(settings) if token is None else token
        self._creds = channel_credentials(settings)
        self._rand = rand
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[int, float] = {}
        self._retry_at = 0.0
        self._active_at = 0.0  # loop time of the stream's last write or ack (idle close)
        self._ack_failures = 0
        self._streak_stream = 0  # stream failures in the current failure streak
        self._streak_acks = 0  # retriable acks in it
        self._streak_since = 0.0
        self.connected = False
        self.last_error = ""
        self.counters = SenderCounters()

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="agent-sender")

    async def stop(self, grace_s: float = 0.0) -> None:
        """Keep sending for up to grace_s while connected, then close the stream."""
        task = self._task
        if task is None:
            return
        if grace_s > 0 and self.connected:
            deadline = time.monotonic() + grace_s
            while self.connected and (len(self.spool) or self._inflight):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await self.wait_progress(min(left, 0.1))
        self._stopping.set()
        self._wake.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._task = None

    async def wait_progress(self, timeout_s: float) -> None:
        """Return after the next ack (or stream state change), or after timeout_s."""
        self._progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), timeout_s)

    def wake(self) -> None:
        """New batches are in the spool."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    # --- connection loop ---------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            acked_before = self.spool.counters.acked
            pushback = 0.0
            try:
                await self._session()
            except _IdleClosed:
                log.debug("stream idle: ended it before the ingest's idle timeout; reopening")
                attempt = 0
                # a retriable ack's pause outlives its stream: the next one starts after it
                self.connected = False
                await self._sleep(self._retry_at - asyncio.get_running_loop().time())
                continue
            except _StreamBroken as exc:
                self._note_failure(str(exc))
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                msg = f"{code.name}: {exc.details()}"
                if stream_end_reason(exc) == "idle_timeout":
                    # The ingest frees the slot of a stream with nothing to send (sources
                    # with long intervals, e.g. 15-minute PM files): not a failure.
                    log.info("ingest closed the idle stream; reopening")
                    attempt = 0
                    continue
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    log.error("ingest refused the stream (%s): check agent.ingest.token / certs", msg)
                pushback = retry_pushback_s(exc)  # e.g. the site's stream limit was reached
                self._note_failure(msg)
            except (grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
                self._note_failure(f"stream closed: {exc}")  # a write on a finished call
            except Exception as exc:
                # Whatever it was, the spool keeps the batches: log it and reconnect rather
                # than leaving the agent collecting with nobody sending.
                log.exception("sender: unexpected error")
                self._note_failure(f"unexpected {type(exc).__name__}: {exc}")
            finally:
                self.connected = False
                self._progress.set()
            if self.spool.counters.acked > acked_before:
                attempt = 0
            delay = max(
                pushback,
                backoff_delay(
                    attempt, self.settings.backoff_initial_s, self.settings.backoff_max_s, self._rand
                ),
            )
            attempt += 1
            await self._sleep(delay)

    def _note_failure(self, msg: str) -> None:
        self.counters.stream_failures += 1
        self._trouble(msg, stream=True)

    def _trouble(self, msg: str, *, stream: bool) -> None:
        """One warning per failure streak (an outage), however many retries it takes; the
        recovery (next OK ack) is logged with the streak's counts."""
        if not self._streak_stream and not self._streak_acks:
            self._streak_since = time.monotonic()
            what = "stream failed" if stream else "batches not stored"
            log.warning(
                "ingest %s (%s): %s; retrying with backoff, the spool keeps every batch "
                "(logged once until it recovers)",
                what,
                self.settings.target,
                msg,
            )
        if stream:
            self._streak_stream += 1
        else:
            self._streak_acks += 1
        self.last_error = msg

    def _recovered(self) -> None:
        log.warning(
            "ingest (%s) recovered after %.1fs: %d stream failure(s), %d retriable ack(s); last error: %s",
            self.settings.target,
            time.monotonic() - self._streak_since,
            self._streak_stream,
            self._streak_acks,
            self.last_error,
        )
        self.counters.recoveries += 1
        self._streak_stream = self._streak_acks = 0

    async def _sleep(self, delay: float) -> None:
        """Sleep that ends at once when shutdown begins."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    def _channel(self) -> grpc.aio.Channel:
        s = self.settings
        options: list[tuple[str, Any]] = [
            ("grpc.keepalive_time_ms", int(s.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.enable_retries", 0),
            ("grpc.max_send_message_length", s.max_batch_bytes),
            ("grpc.initial_reconnect_backoff_ms", int(s.backoff_initial_s * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(s.backoff_max_s * 1000)),
        ]
        if s.server_name:
            options.append(("grpc.ssl_target_name_override", s.server_name))
        comp = grpc.Compression.Gzip if s.compression == "gzip" else grpc.Compression.NoCompression
        if self._creds is None:
            return grpc.aio.insecure_channel(s.target, options=options, compression=comp)
        return grpc.aio.secure_channel(s.target, self._creds, options=options, compression=comp)

    async def _session(self) -> None:
        channel = self._channel()
        try:
            ready = asyncio.ensure_future(channel.channel_ready())
            stop = asyncio.ensure_future(self._stopping.wait())
            done, _ = await asyncio.wait(
                {ready, stop}, timeout=self.settings.connect_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            stop.cancel()
            if ready not in done:
                ready.cancel()
            await asyncio.gather(ready, stop, return_exceptions=True)  # never leave them pending
            if ready not in done:
                if self._stopping.is_set():
                    return
                raise _StreamBroken(f"no connection within {self.settings.connect_timeout_s}s")
            metadata = (("authorization", f"Bearer {self._token}"),) if self._token else None
            stream = channel.stream_stream(
                METHOD, request_serializer=_identity, response_deserializer=pb.Ack.FromString
            )
            call = stream(metadata=metadata)
            self.connected = True
            self._retry_at = 0.0
            self._active_at = asyncio.get_running_loop().time()
            reader = asyncio.create_task(self._read_loop(call))
            writer = asyncio.create_task(self._write_loop(call))
            watchdog = asyncio.create_task(self._watchdog(call))
            idle = False
            try:
                # Whichever ends first ends the session: the reader on a status or EOF, the
                # writer when a write fails or it ended an idle stream, the watchdog when acks
                # stop coming.
                done, _ = await asyncio.wait({reader, writer, watchdog}, return_when=asyncio.FIRST_COMPLETED)
                idle = writer in done and _outcome(writer) is True
                if writer in done and not reader.done():
                    # A write on a call the ingest already ended (e.g. an idle close racing
                    # the next batch): the status the reader is about to get says why. After
                    # our own half-close of an idle stream, the ingest's OK (an EOF here).
                    await asyncio.wait({reader}, timeout=2.0)
            finally:
                call.cancel()
                for t in (reader, writer, watchdog):
                    t.cancel()
                results = await asyncio.gather(reader, writer, watchdog, return_exceptions=True)
                self.spool.requeue(list(self._inflight))
                self._inflight.clear()
            # The reader's status says most about what happened; then the writer's error.
            # (The EOF that follows our own idle half-close is what was asked for.)
            for r in results:
                if isinstance(r, Exception) and not (idle and isinstance(r, _StreamBroken)):
                    raise r
            if idle:
                raise _IdleClosed()
            raise _StreamBroken("stream ended")
        finally:
            await channel.close()

    async def _write_loop(self, call: Any) -> bool:
        """Write spooled batches until the call ends; True when it ended an idle stream."""
        admitted = asyncio.ensure_future(call.initial_metadata())
        try:
            return await self._write_batches(call, admitted)
        finally:
            admitted.cancel()  # never left pending; the reader reports what ended the call
            await asyncio.gather(admitted, return_exceptions=True)

    async def _write_batches(self, call: Any, admitted: asyncio.Future[Any]) -> bool:
        loop = asyncio.get_running_loop()
        window = self.settings.window
        if self.settings.admission_wait_s > 0:
            # The ingest sends its initial metadata once it takes the stream. A refused
            # stream is over by then: write nothing, and the reader gets the refusal's own
            # status and retry hint rather than the INTERNAL of a write racing it.
            await asyncio.wait({admitted}, timeout=self.settings.admission_wait_s)
            if call.done():
                return False
        idle_after: float | None = None  # from the initial metadata, once it has come
        while True:
            if idle_after is None and admitted.done():
                idle_after = idle_close_after(_outcome(admitted))
            now = loop.time()
            # nothing in flight: the ingest ends the stream idle_timeout after its last ack
            idle_at = self._active_at + idle_after if idle_after is not None and not self._inflight else None
            if idle_at is not None and idle_at <= now:
                await call.done_writing()  # nothing is written after this: no write races its end
                return True
            if self._retry_at > now:
                await self._sleep(min(self._retry_at, math.inf if idle_at is None else idle_at) - now)
                continue
            if len(self._inflight) < window:
                item = self.spool.take_next()
                if item is not None:
                    seq, payload = item
                    self._inflight[seq] = time.monotonic()
                    await call.write(payload)
                    self._active_at = loop.time()
                    self.counters.sent += 1
                    continue
            self._wake.clear()
            if len(self._inflight) < window and self.spool.has_waiting():
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if idle_at is None else idle_at - now):
                    await self._wake.wait()

    async def _watchdog(self, call: Any) -> None:
        timeout = self.settings.ack_timeout_s
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            if self._inflight:
                oldest = min(self._inflight.values())
                if time.monotonic() - oldest > timeout:
                    raise _StreamBroken(f"no ack for {timeout:.0f}s: reopening the stream")

    async def _read_loop(self, call: Any) -> None:
        while True:
            ack = await call.read()
            if ack is grpc.aio.EOF:
                raise _StreamBroken("server closed the stream")
            self._active_at = asyncio.get_running_loop().time()
            self._apply(ack)
            self._progress.set()

    def _apply(self, ack: pb.Ack) -> None:
        first = ack.seq
        if ack.code == pb.OK:
            last = ack.seq_last or first
            done = [s for s in self._inflight if first <= s <= last]
            for s in done:
                del self._inflight[s]
            self.spool.ack(done)
            self._ack_failures = 0
            if self._streak_stream or self._streak_acks:
                self._recovered()
        elif first not in self._inflight:
            log.debug("ack for seq %d not in flight: ignored", first)
            return
        elif ack.code in REJECT_CODES:
            del self._inflight[first]
            name = pb.Code.Name(ack.code)
            log.error(
                "batch seq %d rejected (%s: %s): moved to %s",
                first,
                name,
                ack.reason,
                self.spool.rejected_dir,
            )
            self.spool.reject(first, name, ack.reason)
        else:
            del self._inflight[first]
            self.spool.requeue([first])
            self.counters.retriable_acks += 1
            delay = max(
                ack.retry_after_ms / 1000.0,
                backoff_delay(
                    self._ack_failures,
                    self.settings.backoff_initial_s,
                    self.settings.backoff_max_s,
                    self._rand,
                ),
            )
            self._ack_failures += 1
            loop = asyncio.get_running_loop()
            self._retry_at = max(self._retry_at, loop.time() + delay)
            self._trouble(f"{pb.Code.Name(ack.code)}: {ack.reason}", stream=False)
        self._wake.set()
