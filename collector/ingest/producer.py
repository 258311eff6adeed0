"""Kafka side of the ingest service: one record per batch, acks=all, with a deadline.

Where a batch becomes a Kafka record. `KafkaWriter.write()` returns only once the broker
acknowledged the record (acks=all), or raises `BrokerError` when the deadline
(`kafka.produce_timeout_s`) passes first. aiokafka itself has no delivery timeout and a
send can wait forever (aio-libs/aiokafka#1101), so every produce runs under our deadline;
after `producer_rebuild_after` consecutive timeouts the producer is considered wedged,
closed (bounded) and rebuilt.

A background probe keeps `healthy` current (metadata request with a short timeout) so the
gRPC health service can report NOT_SERVING while Kafka is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from collector.config import KafkaSettings
from collector.errors import BrokerError
from collector.wire import SCHEMA

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 3.0
CLOSE_TIMEOUT_S = 5.0


def producer_kwargs(k: KafkaSettings, bootstrap: str) -> dict[str, Any]:
    """aiokafka producer arguments from settings (shared with the simulator's direct mode)."""
    kwargs: dict[str, Any] = dict(
        bootstrap_servers=bootstrap,
        client_id=k.client_id,
        acks="all",
        enable_idempotence=k.enable_idempotence,
        request_timeout_ms=k.request_timeout_ms,
        linger_ms=k.linger_ms,
        max_batch_size=k.max_batch_size,
        max_request_size=k.max_request_size,
        compression_type=k.compression_type,
        security_protocol=k.security_protocol,
    )
    if k.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        kwargs["ssl_context"] = create_ssl_context(
            cafile=str(k.ssl_cafile) if k.ssl_cafile else None,
            certfile=str(k.ssl_certfile) if k.ssl_certfile else None,
            keyfile=str(k.ssl_keyfile) if k.ssl_keyfile else None,
        )
    if k.sasl_mechanism:
        kwargs.update(sasl_mechanism=k.sasl_mechanism, sasl_plain_username=k.sasl_username,
                      sasl_plain_password=k.sasl_password)
    return kwargs


def record_headers(agent_id: str, seq: int) -> list[tuple[str, bytes]]:
    return [("schema", SCHEMA.encode()), ("agent_id", agent_id.encode()),
            ("seq", str(seq).encode())]


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.debug("late Kafka failure after the deadline: %r", fut.exception())


@dataclass(slots=True)
class Delivery:
    """A record handed to the producer: its delivery future and its deadline."""

    future: asyncio.Future[Any]
    started: float
    deadline: float


class KafkaWriter:
    def __init__(self, settings: KafkaSettings, bootstrap: str, *,
                 on_latency: Callable[[float], None] | None = None,
                 on_rebuild: Callable[[], None] | None = None,
                 on_health: Callable[[bool], None] | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.topic = settings.topic
        self.healthy = False
        self._producer: AIOKafkaProducer | None = None
        self._timeouts = 0
        self._rebuilding: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._on_latency = on_latency or (lambda s: None)
        self._on_rebuild = on_rebuild or (lambda: None)
        self._on_health = on_health or (lambda h: None)
        self._stopped = asyncio.Event()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(**producer_kwargs(self.settings, self.bootstrap))

    async def start(self) -> None:
        if self._producer is not None:
            return
        self._stopped.clear()
        producer = self._new_producer()
        try:
            await asyncio.wait_for(producer.start(), self.settings.request_timeout_ms / 1000)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._close(producer)
            raise BrokerError(f"cannot reach Kafka at {self.bootstrap}: {exc!r}") from exc
        self._producer = producer
        self._set_health(True)
        self._probe = asyncio.create_task(self._probe_loop(), name="kafka-probe")

    def _set_health(self, healthy: bool) -> None:
        if healthy != self.healthy:
            log.log(logging.INFO if healthy else logging.WARNING,
                    "Kafka %s", "reachable" if healthy else "UNREACHABLE")
        self.healthy = healthy
        self._on_health(healthy)

    async def send(self, key: bytes, value: bytes, agent_id: str, seq: int) -> Delivery:
        """Queue one record; return its Delivery. Raises BrokerError when even queueing
        misses the deadline (metadata unavailable, producer buffer full)."""
        producer = self._producer
        if producer is None:
            raise BrokerError("producer is not running")
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.produce_timeout_s):
                fut = await producer.send(self.topic, value=value, key=key,
                                          headers=record_headers(agent_id, seq))
        except TimeoutError as exc:
            self._timed_out()
            raise BrokerError(f"Kafka did not take the record within "
                              f"{self.settings.produce_timeout_s:g}s", timeout=True) from exc
        except KafkaError as exc:
            self._set_health(False)
            raise BrokerError(f"Kafka refused the record: {exc!r}") from exc
        return Delivery(fut, started, started + self.settings.produce_timeout_s)

    async def wait(self, d: Delivery) -> None:
        """Wait for the broker's acks=all answer until the delivery's deadline."""
        if not d.future.done():
            await asyncio.wait((d.future,), timeout=max(0.0, d.deadline - time.monotonic()))
        if not d.future.done():
            d.future.add_done_callback(_retrieve)  # a late answer is dropped, not acked
            self._timed_out()
            raise BrokerError(f"Kafka did not acknowledge within "
                              f"{self.settings.produce_timeout_s:g}s", timeout=True)
        if (exc := d.future.exception()) is not None:
            self._set_health(False)
            raise BrokerError(f"Kafka refused the record: {exc!r}")
        self._timeouts = 0
        self._on_latency(time.monotonic() - d.started)
        if not self.healthy:
            self._set_health(True)

    async def write(self, key: bytes, value: bytes, agent_id: str, seq: int) -> None:
        """Produce one record and wait for acks=all, at most produce_timeout_s."""
        await self.wait(await self.send(key, value, agent_id, seq))

    def _timed_out(self) -> None:
        self._timeouts += 1
        self._set_health(False)
        if self._timeouts >= self.settings.producer_rebuild_after:
            self._schedule_rebuild()

    def _schedule_rebuild(self) -> None:
        if self._rebuilding is None or self._rebuilding.done():
            self._rebuilding = asyncio.create_task(self._rebuild(), name="kafka-rebuild")

    async def _rebuild(self) -> None:
        """Replace a wedged producer. Its pending sends fail and are not acknowledged."""
        log.warning("producer wedged after %d consecutive timeouts: rebuilding", self._timeouts)
        old = self._producer
        new = self._new_producer()
        try:
            await asyncio.wait_for(new.start(), self.settings.request_timeout_ms / 1000)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("rebuilt producer cannot reach Kafka yet (%r); keeping the old one", exc)
            await self._close(new)
            return
        if self._stopped.is_set():
            await self._close(new)
            return
        self._producer = new
        self._timeouts = 0
        self._on_rebuild()
        if old is not None:
            task = asyncio.create_task(self._close(old))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close(self, producer: AIOKafkaProducer) -> None:
        # stop() flushes; against a wedged broker it can hang, so it gets a deadline.
        try:
            await asyncio.wait_for(producer.stop(), CLOSE_TIMEOUT_S)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("producer did not close cleanly: %r", exc)

    async def _probe_loop(self) -> None:
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), PROBE_INTERVAL_S)
            if self._stopped.is_set():
                return
            producer = self._producer
            if producer is None:
                continue
            try:
                await asyncio.wait_for(producer.client.fetch_all_metadata(), PROBE_TIMEOUT_S)
            except (KafkaError, OSError, TimeoutError):
                self._set_health(False)
                if self._timeouts >= self.settings.producer_rebuild_after:
                    self._schedule_rebuild()
            else:
                if not self.healthy and self._timeouts == 0:
                    self._set_health(True)

    async def stop(self) -> None:
        self._stopped.set()
        for task in (self._probe, self._rebuilding):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._close(producer)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self.healthy = False
        self._on_health(False)
