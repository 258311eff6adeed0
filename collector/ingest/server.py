"""The ingest gRPC service: agent streams in, one Kafka record per valid batch out.

    agent --Stream(Batch)--> [auth] -> [parse, validate] -> KafkaWriter (acks=all) --Ack--> agent

Delivery rule: an OK Ack for a seq is sent only after Kafka acknowledged the record holding
that batch. Acks go out in the order batches arrived on the stream; consecutive OK seqs
already stored are coalesced into one ranged Ack.

Flow control: a stream has at most `max_inflight_per_stream` batches between "read" and
"acked"; all streams together at most `max_inflight_total` batches and `max_inflight_bytes`
bytes. When a bound is reached the service stops reading, so HTTP/2 flow control pushes
back on the agent instead of memory growing. Nothing is buffered without limit and nothing
Kafka did not take is acknowledged.

Requests are received as raw bytes (no deserializer) so the Kafka record value is exactly
the bytes the agent sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from collector import wire
from collector.config import IngestSettings, Settings
from collector.errors import BrokerError, ConfigError, ProtocolError, RuleViolation
from collector.exposition.http import MetricsServer, serve_metrics
from collector.ingest.auth import TokenStore
from collector.ingest.compression import CorruptCompression, encoding_of, inflate
from collector.ingest.metrics import IngestMetrics
from collector.ingest.producer import Delivery, KafkaWriter
from collector.ingest.validate import Limits, TableInfo, validate
from collector.lifecycle import Component
from collector.proto.telemetry.v1 import telemetry_pb2 as pb

log = logging.getLogger(__name__)

SERVICE = "telemetry.v1.IngestService"
METHOD = f"/{SERVICE}/Stream"
# Slots beyond max_concurrent_streams that grpc itself still admits (health checks,
# reflection, and streams we refuse with a counted status and a retry hint).
BACKSTOP_EXTRA_RPCS = 64
# Compressed messages above this are inflated on a worker thread (zlib releases the GIL), so
# one large batch does not hold up every other stream's acks.
INFLATE_IN_THREAD_BYTES = 64 * 1024


def limits_from(s: IngestSettings) -> Limits:
    return Limits(
        max_message_bytes=s.max_message_bytes,
        max_series=s.max_series,
        max_samples=s.max_samples,
        max_labels=s.max_labels,
        max_name_length=s.max_name_length,
        max_label_value_length=s.max_label_value_length,
        max_future_skew_s=s.max_future_skew_s,
        max_past_age_s=s.max_past_age_s,
    )


def transport_limit(s: IngestSettings) -> int:
    """Largest message gRPC reads at all (twice max_message_bytes, capped below 2 GiB)."""
    return min(2 * s.max_message_bytes, 2**31 - 1)


def server_options(s: IngestSettings) -> list[tuple[str, int]]:
    ms = lambda sec: int(sec * 1000)  # noqa: E731
    return [
        # Twice the contract's limit on the wire: a batch in between is read, answered (reason
        # oversize) and counted; only beyond it gRPC ends the stream itself (RESOURCE_EXHAUSTED,
        # which the application cannot tell from a client's cancel). gRPC refuses such a
        # message on its length prefix, so this bounds the memory one stream can hold.
        ("grpc.max_receive_message_length", transport_limit(s)),
        # The service undoes per-message compression itself (compression.py): gRPC's own
        # decompression ends the stream on a corrupt or over-inflating message, uncounted.
        ("grpc.per_message_decompression", 0),
        ("grpc.max_send_message_length", 1024 * 1024),
        ("grpc.keepalive_time_ms", ms(s.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", ms(s.keepalive_timeout_s)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", ms(s.min_client_ping_interval_s)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_age_ms", ms(s.max_connection_age_s)),
        ("grpc.max_connection_age_grace_ms", ms(s.max_connection_age_grace_s)),
        ("grpc.max_connection_idle_ms", ms(s.connection_idle_timeout_s)),
        ("grpc.so_reuseport", 0),
    ]


class ByteBudget:
    """A counting limit on bytes in flight, shared by all streams."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = asyncio.Condition()
        self._waiting = 0

    async def acquire(self, n: int) -> None:
        n = min(n, self.limit)  # one oversized batch may still pass, alone
        if not self._waiting and self.used + n <= self.limit:
            self.used += n  # fast path: no lock, the loop is single-threaded
            return
        async with self._cond:
            self._waiting += 1
            try:
                await self._cond.wait_for(lambda: self.used + n <= self.limit)
            finally:
                self._waiting -= 1
            self.used += n

    async def release(self, n: int) -> None:
        self.used -= min(n, self.limit)
        if self._waiting:
            async with self._cond:
                self._cond.notify_all()


@dataclass(slots=True)
class _Pending:
    seq: int
    nbytes: int
    samples: int
    delivery: Delivery | None = None  # handed to Kafka, outcome pending
    result: tuple[int, str, str] | None = None  # (code, reason, rule) once known
    budgeted: bool = False
    kafka: bool = False  # went to the Kafka stage
    release: Callable[[], None] | None = None  # returns the stream's in-flight slot
    fresh: bool = True  # seq above every seq read before on this stream (may start/join a range)


@dataclass(slots=True, eq=False)
class _StreamState:
    site: str | None
    peer: str
    pending: deque[_Pending] = field(default_factory=deque)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader_done: bool = False
    reader: asyncio.Task[None] | None = None
    table: tuple[Any, TableInfo] | None = None  # last validated series table
    high_seq: int = 0  # highest seq read on this stream
    site_slots: asyncio.Semaphore | None = None  # the site's in-flight budget (token mode)
    token: bytes | None = None  # digest of the stream's token (token mode), see _read
    # set when the stream must end with a non-OK status once every read batch is answered
    failure: tuple[grpc.StatusCode, str] | None = None
    end_reason: str = "completed"  # label of collector_ingest_streams_ended_total


class IngestServer(Component):
    """The ingest service as a component: `async with IngestServer(settings) as s: ...`."""

    def __init__(
        self, settings: Settings, *, bootstrap: str | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.cfg = settings.ingest
        self.bootstrap = bootstrap or settings.kafka.bootstrap_servers
        if not self.bootstrap:
            raise ConfigError(
                "no Kafka to write to: set kafka.bootstrap_servers "
                "(or use `collector run` for the embedded broker)",
                key="kafka.bootstrap_servers",
            )
        self.registry = registry or CollectorRegistry()
        self.metrics = IngestMetrics(self.registry)
        self.limits = limits_from(self.cfg)
        self.port = 0
        self.metrics_port = 0
        self.tokens: TokenStore | None = None
        self._server: aio.Server | None = None
        self._writer: KafkaWriter | None = None
        self._health = health.aio.HealthServicer()
        self._health_task: asyncio.Task[None] | None = None
        self._http: MetricsServer | None = None
        self._streams: set[_StreamState] = set()
        self._site_streams: dict[str, int] = {}
        self._site_inflight: dict[str, asyncio.Semaphore] = {}
        self._draining = False
        self._no_streams = asyncio.Event()
        self._inflight = asyncio.Semaphore(self.cfg.max_inflight_total)
        self._bytes = ByteBudget(self.cfg.max_inflight_bytes)
        # read at scrape time: cheaper than a gauge update per batch
        self._inflight_count = self._inflight_nbytes = 0
        self.metrics.inflight_batches.set_function(lambda: self._inflight_count)
        self.metrics.inflight_bytes.set_function(lambda: self._inflight_nbytes)

    # ---- lifecycle ---------------------------------------------------------------------

    def _credentials(self) -> grpc.ServerCredentials | None:
        c = self.cfg
        if c.plaintext:
            return None
        if not c.tls_cert or not c.tls_key:
            raise ConfigError(
                "TLS needs ingest.tls_cert and ingest.tls_key (or ingest.plaintext: true, explicitly)",
                key="ingest.tls_cert",
            )
        try:
            cert, key = Path(c.tls_cert).read_bytes(), Path(c.tls_key).read_bytes()
            ca = Path(c.client_ca).read_bytes() if c.client_ca else None
        except OSError as exc:
            raise ConfigError(
                f"cannot read TLS file {exc.filename}: {exc.strerror}",
                key="ingest.tls_cert/tls_key/client_ca",
            ) from exc
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )

    async def start(self) -> None:
        if self._server is not None:
            return
        if not self.cfg.allow_unauthenticated:
            if not self.cfg.tokens_file:
                raise ConfigError(
                    "ingest.tokens_file is required (or allow_unauthenticated: true)",
                    key="ingest.tokens_file",
                )
            reloads = self.metrics.token_reloads
            self.tokens = TokenStore(Path(self.cfg.tokens_file), on_reload=lambda r: reloads.labels(r).inc())
        creds = self._credentials()
        self._writer = KafkaWriter(
            self.settings.kafka,
            self.bootstrap,
            on_latency=self.metrics.produce_seconds.observe,
            on_rebuild=self.metrics.producer_rebuilds.inc,
            on_health=lambda up: self.metrics.kafka_up.set(1 if up else 0),
        )
        await self._writer.start()
        try:
            server = aio.server(
                options=server_options(self.cfg),
                maximum_concurrent_rpcs=(self.cfg.max_concurrent_streams + BACKSTOP_EXTRA_RPCS),
            )
            handler = grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Stream": grpc.stream_stream_rpc_method_handler(
                        self._stream, request_deserializer=None, response_serializer=pb.Ack.SerializeToString
                    ),
                },
            )
            server.add_generic_rpc_handlers((handler,))
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            reflection.enable_server_reflection(
                (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
            )
            try:
                if creds is None:
                    self.port = server.add_insecure_port(self.cfg.listen)
                else:
                    self.port = server.add_secure_port(self.cfg.listen, creds)
            except RuntimeError as exc:  # grpc's way of saying "bind failed"
                raise ConfigError(
                    f"cannot listen on {self.cfg.listen} (address in use?)", key="ingest.listen"
                ) from exc
            if not self.port:
                raise ConfigError(f"cannot listen on {self.cfg.listen}", key="ingest.listen")
            await server.start()
            self._server = server
            await self._set_health(True)
            self._health_task = asyncio.create_task(self._health_loop(), name="ingest-health")
            if self.cfg.metrics_listen:
                self._http = await serve_metrics(
                    "ingest", self.cfg.metrics_listen, self.cfg.metrics_web_config, self.registry
                )
                self.metrics_port = self._http.bound_port
        except BaseException:
            if self._server is not None:
                await self._server.stop(grace=None)
                self._server = None
            if self._health_task is not None:
                self._health_task.cancel()
            await self._writer.stop()
            raise
        log.info(
            "ingest listening on %s (port %d, %s), writing to %s topic %s",
            self.cfg.listen,
            self.port,
            "plaintext" if creds is None else ("mTLS" if self.cfg.client_ca else "TLS"),
            self.bootstrap,
            self._writer.topic,
        )

    async def _set_health(self, up: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE):
            await self._health.set(name, status)

    async def _health_loop(self) -> None:
        last: bool | None = True
        while True:
            await asyncio.sleep(0.5)
            up = bool(self._writer and self._writer.healthy) and not self._draining
            if up != last:
                await self._set_health(up)
                last = up

    async def stop(self) -> None:
        """Stop accepting, answer what is in flight within the grace period, then close."""
        server, self._server = self._server, None
        if server is None:
            return
        self._draining = True
        log.info("stopping: answering in-flight batches for up to %gs", self.cfg.grace_period_s)
        await self._set_health(False)
        for st in list(self._streams):
            if st.failure is None:
                st.failure = (
                    grpc.StatusCode.UNAVAILABLE,
                    "ingest is shutting down: every batch read was answered; reconnect",
                )
                st.end_reason = "shutdown"
            if st.reader is not None:
                st.reader.cancel()
        deadline = time.monotonic() + self.cfg.grace_period_s
        if self._streams:
            self._no_streams.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_streams.wait(), self.cfg.grace_period_s)
        await server.stop(grace=max(0.1, deadline - time.monotonic()))
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        if self._writer is not None:
            # the whole shutdown stays within the grace period (plus a short close)
            await self._writer.stop(max(0.5, deadline - time.monotonic()))
        if self._http is not None:
            await self._http.stop()
            self._http = None
        self._draining = False
        log.info("ingest stopped")

    # ---- the RPC -----------------------------------------------------------------------

    async def _authenticate(self, context: aio.ServicerContext) -> tuple[str | None, bytes | None]:
        """The token's site and the token's digest (None, None without tokens)."""
        if self._draining:
            await self._refuse(
                context, "shutting_down", grpc.StatusCode.UNAVAILABLE, "server is shutting down, reconnect"
            )
        if self.tokens is None:
            self.metrics.streams.labels("unauthenticated_allowed").inc()
            return None, None
        md = dict(context.invocation_metadata() or ())
        header = md.get("authorization", "")
        if isinstance(header, bytes):
            header = header.decode(errors="replace")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            await self._refuse(
                context,
                "unauthenticated",
                grpc.StatusCode.UNAUTHENTICATED,
                "missing 'authorization: Bearer <token>' metadata",
            )
        site = self.tokens.site_for(token.strip())
        if site is None:
            await self._refuse(context, "unauthenticated", grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        self.metrics.streams.labels("ok").inc()
        return site, TokenStore.digest(token.strip())

    async def _refuse(
        self,
        context: aio.ServicerContext,
        reason: str,
        code: grpc.StatusCode,
        details: str,
        retry_after_ms: int | None = None,
    ) -> None:
        """End a stream before it reads anything: counted by reason, with a retry hint."""
        self.metrics.streams.labels(reason).inc()
        self.metrics.streams_refused.labels(reason).inc()
        md: tuple[tuple[str, str], ...] = ()
        if retry_after_ms is not None:
            md = (("retry-after-ms", str(retry_after_ms)), ("grpc-retry-pushback-ms", str(retry_after_ms)))
        await context.abort(code, details, trailing_metadata=md)

    async def _admitted(self, context: aio.ServicerContext) -> None:
        """Say that the stream is taken now rather than with its first ack: a client that
        waits for the initial metadata before writing reads a refusal's own status and
        trailers (`_refuse`); one that writes at once may see its write fail with gRPC's
        INTERNAL instead. The metadata states the idle timeout (`stream-idle-timeout-ms`),
        so a client can end an idle stream itself before this server does: a batch written
        while the server ends the stream would meet the same INTERNAL."""
        idle_ms = max(1, round(self.cfg.stream_idle_timeout_s * 1000))
        await context.send_initial_metadata((("stream-idle-timeout-ms", str(idle_ms)),))

    async def _admit_stream(self, site: str | None, context: aio.ServicerContext) -> None:
        """The global and the per-site stream limits; refuse with RESOURCE_EXHAUSTED."""
        hint = self.cfg.retry_after_ms
        if len(self._streams) >= self.cfg.max_concurrent_streams:
            await self._refuse(
                context,
                "too_many_streams",
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"ingest is at its limit of {self.cfg.max_concurrent_streams} streams; retry after {hint} ms",
                hint,
            )
        if site is not None and self._site_streams.get(site, 0) >= self.cfg.max_streams_per_site:
            await self._refuse(
                context,
                "too_many_streams_site",
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"site {site!r} already has {self.cfg.max_streams_per_site} open "
                f"streams (ingest.max_streams_per_site); retry after {hint} ms",
                hint,
            )

    async def _stream(
        self, requests: AsyncIterator[bytes], context: aio.ServicerContext
    ) -> AsyncIterator[pb.Ack]:
        site, token = await self._authenticate(context)
        await self._admit_stream(site, context)
        await self._admitted(context)
        st = _StreamState(site=site, peer=context.peer(), token=token)
        if site is not None:
            self._site_streams[site] = self._site_streams.get(site, 0) + 1
            st.site_slots = self._site_inflight.setdefault(
                site, asyncio.Semaphore(self.cfg.max_inflight_per_site)
            )
        st.reader = asyncio.create_task(self._read(requests, st), name=f"read {st.peer}")
        self._streams.add(st)
        self.metrics.streams_open.inc()
        try:
            async for ack in self._acks(st):
                yield ack
        except BaseException:  # the client went away (or the call was aborted under us)
            st.end_reason = "cancelled"
            raise
        finally:
            self.metrics.streams_open.dec()
            self._streams.discard(st)
            if not self._streams:
                self._no_streams.set()
            if st.reader is not None and not st.reader.done():
                st.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await st.reader
            while st.pending:  # the client went away: still release budgets when Kafka answers
                await self._finish(st.pending.popleft())
            if site is not None:  # after the drain: no batch of this stream holds a slot now
                left = self._site_streams[site] - 1
                if left:
                    self._site_streams[site] = left
                else:
                    del self._site_streams[site]
                    del self._site_inflight[site]
            self.metrics.streams_ended.labels(st.end_reason).inc()
        if st.failure is not None:
            # Every batch read was answered above; the status says why no more are read,
            # the trailer `stream-end-reason` says it to programs (see docs/contract.md).
            await context.abort(*st.failure, trailing_metadata=(("stream-end-reason", st.end_reason),))

    async def _read(self, requests: AsyncIterator[bytes], st: _StreamState) -> None:
        per_stream = asyncio.Semaphore(self.cfg.max_inflight_per_stream)
        site_slots = st.site_slots

        def release() -> None:
            per_stream.release()
            if site_slots is not None:
                site_slots.release()

        totals = self.metrics.totals
        st.changed.set()
        try:
            async for raw in requests:
                totals.batches_received += 1
                totals.received_bytes += len(raw)
                if self._revoked(st):
                    # the token left the tokens file while the stream was open: this batch
                    # and every later one is refused; those read before are still answered
                    self.metrics.batches_rejected.labels("token_revoked").inc()
                    st.pending.append(
                        _Pending(
                            seq=wire.peek_seq(raw),
                            nbytes=len(raw),
                            samples=0,
                            result=(pb.UNAUTHENTICATED, _REVOKED, "token_revoked"),
                        )
                    )
                    st.end_reason = "token_revoked"
                    st.failure = (grpc.StatusCode.UNAUTHENTICATED, _REVOKED)
                    break
                await per_stream.acquire()
                if site_slots is not None:
                    try:
                        await site_slots.acquire()
                    except BaseException:  # cancelled while waiting: the slot is not ours
                        per_stream.release()
                        raise
                try:
                    item = await self._admit(raw, st)
                except Exception as exc:  # a bug, never bad input: answer the batch anyway
                    item = self._internal_error(raw, exc)
                except BaseException:  # cancelled: the site's slot must not leak
                    release()
                    raise
                item.release = release  # the slots return when the ack is decided
                if item.delivery is not None:
                    item.delivery.future.add_done_callback(lambda _f: st.changed.set())
                st.pending.append(item)
                st.changed.set()
        except Exception as exc:  # the request stream itself failed: end with a status
            log.exception("reading stream from %s failed", st.peer)
            st.end_reason = "internal"
            st.failure = (grpc.StatusCode.INTERNAL, f"ingest could not read the stream: {exc!r}")
        finally:
            st.reader_done = True
            st.changed.set()

    def _reject(self, seq: int, nbytes: int, rule: str, reason: str) -> _Pending:
        """A batch answered INVALID_ARGUMENT before it was parsed, counted by `rule`."""
        self.metrics.batches_rejected.labels(rule).inc()
        return _Pending(seq=seq, nbytes=nbytes, samples=0, result=(pb.INVALID_ARGUMENT, reason, rule))

    def _revoked(self, st: _StreamState) -> bool:
        return (
            self.tokens is not None
            and st.token is not None
            and self.tokens.site_for_digest(st.token) != st.site
        )

    def _internal_error(self, raw: bytes, exc: Exception) -> _Pending:
        log.error("internal error on a batch (answered INTERNAL, retriable): %r", exc, exc_info=exc)
        self.metrics.batches_rejected.labels("internal").inc()
        return _Pending(
            seq=wire.peek_seq(raw),
            nbytes=len(raw),
            samples=0,
            result=(
                pb.INTERNAL,
                f"internal error in the ingest service ({type(exc).__name__}); not stored, retry later",
                "internal",
            ),
        )

    async def _admit(self, raw: bytes, st: _StreamState) -> _Pending:
        """Decompress, parse, validate, authorise and start producing one batch."""
        limit = self.limits.max_message_bytes
        corrupt: CorruptCompression | None = None
        try:
            if len(raw) > INFLATE_IN_THREAD_BYTES and encoding_of(raw):
                raw, encoding = await asyncio.to_thread(inflate, raw, limit)  # zlib drops the GIL
            else:
                raw, encoding = inflate(raw, limit)
        except CorruptCompression as exc:
            if not exc.maybe_plain:
                return self._reject(0, len(raw), "decompress", f"{exc}: not stored")
            corrupt, encoding = exc, None  # or an uncompressed batch that starts like zlib
        if len(raw) > limit:
            what = f"{encoding} batch inflates past" if encoding else f"batch of {len(raw)} bytes exceeds"
            return self._reject(
                wire.peek_seq(raw),
                len(raw),
                "oversize",
                f"{what} ingest.max_message_bytes ({limit}): split it",
            )
        try:
            batch = wire.parse_batch(raw)
        except ProtocolError as exc:
            if corrupt is not None:
                return self._reject(
                    0, len(raw), "decompress", f"{corrupt}, nor an uncompressed Batch ({exc}): not stored"
                )
            return self._reject(wire.peek_seq(raw), len(raw), "decode", str(exc))
        seq = batch.seq
        fresh = seq > st.high_seq
        if fresh:
            st.high_seq = seq
        else:
            self.metrics.batches_repeated.inc()
        try:
            known = st.table if st.table is not None and batch.series == st.table[0] else None
            checked, info = validate(batch, self.limits, time.time_ns(), known[1] if known else None)
        except RuleViolation as exc:
            self.metrics.batches_rejected.labels(exc.reason).inc()
            return _Pending(
                seq=seq,
                nbytes=len(raw),
                samples=0,
                fresh=fresh,
                result=(pb.Code.Value(exc.code), exc.message, exc.reason),
            )
        if known is None:
            st.table = (batch.series, info)
        if st.site is not None and batch.site.site_id != st.site:
            self.metrics.batches_rejected.labels("permission_denied").inc()
            return _Pending(
                seq=seq,
                nbytes=len(raw),
                samples=0,
                fresh=fresh,
                result=(
                    pb.PERMISSION_DENIED,
                    f"site.site_id {batch.site.site_id!r} is not the token's site {st.site!r}",
                    "permission_denied",
                ),
            )
        self.metrics.totals.samples_received += checked.samples
        item = _Pending(seq=seq, nbytes=len(raw), samples=checked.samples, fresh=fresh)
        await self._inflight.acquire()
        try:
            await self._bytes.acquire(len(raw))
        except BaseException:
            self._inflight.release()
            raise
        item.budgeted = item.kafka = True  # from here on _finish returns the budgets
        self._inflight_count += 1
        self._inflight_nbytes += len(raw)
        assert self._writer is not None
        try:
            item.delivery = await self._writer.send(batch.site.site_id.encode(), raw, batch.agent_id, seq)
        except BrokerError as exc:
            item.result = _broker_failure(exc)
        except Exception as exc:  # a bug in the produce path: the batch is still answered
            log.error("produce failed unexpectedly: %r", exc, exc_info=exc)
            item.result = (
                pb.INTERNAL,
                f"internal error in the ingest service ({type(exc).__name__}); not stored, retry later",
                "internal",
            )
        except BaseException:  # cancelled (stream ended): nobody will finish this item
            item.result = (pb.CANCELLED, "stream ended", "cancelled")
            await self._finish(item)
            raise
        return item

    async def _finish(self, item: _Pending) -> tuple[int, str, str]:
        """Wait for an item's outcome, release its budgets, count it."""
        release, item.release = item.release, None
        try:
            if item.delivery is not None:
                assert self._writer is not None
                try:
                    await self._writer.wait(item.delivery)
                    item.result = (pb.OK, "", "")
                except BrokerError as exc:
                    item.result = _broker_failure(exc)
                except Exception as exc:  # never leave a batch unanswered
                    log.error("waiting for Kafka failed unexpectedly: %r", exc, exc_info=exc)
                    item.result = (
                        pb.INTERNAL,
                        f"internal error in the ingest service "
                        f"({type(exc).__name__}); not stored, retry later",
                        "internal",
                    )
            assert item.result is not None
            result = item.result
        finally:
            if release is not None:
                release()
            if item.budgeted:
                item.budgeted = False
                self._inflight.release()
                await self._bytes.release(item.nbytes)
                self._inflight_count -= 1
                self._inflight_nbytes -= item.nbytes
        code, _reason, rule = result
        if item.kafka:  # rejections before Kafka were counted in _admit
            if code == pb.OK:
                self.metrics.totals.batches_accepted += 1
                self.metrics.totals.samples_accepted += item.samples
            else:
                self.metrics.batches_rejected.labels(rule).inc()
                self.metrics.samples_rejected.labels(rule).inc(item.samples)
        return result

    async def _acks(self, st: _StreamState) -> AsyncIterator[pb.Ack]:
        """One ack per batch read, in arrival order (see Ack in the .proto for the rules)."""
        while True:
            while not st.pending:
                if st.reader_done:
                    return
                st.changed.clear()
                try:
                    async with asyncio.timeout(self.cfg.stream_idle_timeout_s):
                        await st.changed.wait()
                except TimeoutError:
                    if st.pending or st.reader_done:
                        continue
                    st.end_reason = "idle_timeout"
                    st.failure = (
                        grpc.StatusCode.UNAVAILABLE,
                        f"no batch for {self.cfg.stream_idle_timeout_s:g}s and nothing "
                        "in flight: stream closed to free its slot; open a new one "
                        "when there is data",
                    )
                    return
            head = st.pending.popleft()
            code, reason, _rule = await self._finish(head)
            if code != pb.OK or not head.fresh:
                yield pb.Ack(
                    seq=head.seq,
                    seq_last=head.seq,
                    code=code,  # type: ignore[arg-type]
                    reason=reason,
                    retry_after_ms=self.cfg.retry_after_ms if code in _RETRIABLE else 0,
                )
                continue
            last = head.seq
            # Coalesce following batches that are already stored and carry the next seqs.
            # Only seqs above every earlier seq of the stream join a range, so ranges of one
            # stream never overlap; a repeated or backwards seq gets an ack of its own.
            nack: pb.Ack | None = None
            while st.pending:
                nxt = st.pending[0]
                fut = nxt.delivery.future if nxt.delivery is not None else None
                if (
                    nxt.seq != last + 1
                    or not nxt.fresh
                    or fut is None
                    or not fut.done()
                    or fut.cancelled()
                    or fut.exception() is not None
                ):
                    break
                st.pending.popleft()
                ncode, nreason, _ = await self._finish(nxt)
                if ncode != pb.OK:  # the future was OK, so only an internal error gets here
                    nack = pb.Ack(
                        seq=nxt.seq,
                        seq_last=nxt.seq,
                        code=ncode,  # type: ignore[arg-type]
                        reason=nreason,
                        retry_after_ms=self.cfg.retry_after_ms,
                    )
                    break
                last = nxt.seq
            yield pb.Ack(seq=head.seq, seq_last=last, code=pb.OK)
            if nack is not None:
                yield nack


def _broker_failure(exc: BrokerError) -> tuple[int, str, str]:
    if exc.timeout:
        return (pb.DEADLINE_EXCEEDED, f"not stored: {exc}", "kafka_timeout")
    return (pb.UNAVAILABLE, f"not stored: {exc}", "kafka_error")


_REVOKED = "token revoked: no longer in ingest.tokens_file; not stored, the stream ends UNAUTHENTICATED"
_RETRIABLE = {pb.UNAVAILABLE, pb.DEADLINE_EXCEEDED, pb.RESOURCE_EXHAUSTED, pb.INTERNAL}
