"""Kafka side of the ingest service: one record per batch, acks=all, with a deadline.

Where a batch becomes a Kafka record. `KafkaWriter.write()` returns only once the broker
acknowledged the record (acks=all), or raises `BrokerError` when the deadline
(`kafka.produce_timeout_s`) passes first. aiokafka itself has no delivery timeout and a
send can wait forever (aio-libs/aiokafka#1101), so every produce runs under our deadline;
after `producer_rebuild_after` consecutive timeouts the producer is considered wedged,
closed (bounded) and rebuilt.

Records are gathered per partition into aiokafka `BatchBuilder`s and handed over with
`send_batch()`: one future and one accumulator call per produce batch instead of per record
(`send()` costs more than parsing and validating a small batch). The partition is the one
`send()` would pick (Kafka's murmur2 of the key, so a site keeps its partition), order per
partition is kept (one flusher per partition hands batches over in order), and
`kafka.linger_ms` is how long a partition's first record waits for company.

A background probe keeps `healthy` current (metadata request with a short timeout) so the
gRPC health service can report NOT_SERVING while Kafka is unreachable.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from collector.config import RECORD_OVERHEAD, KafkaSettings
from collector.errors import BrokerError
from collector.kafka import producer_kwargs, record_headers

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 3.0
CLOSE_TIMEOUT_S = 5.0


def _settle(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
        fut.add_done_callback(_retrieve)  # nobody may be waiting any more


def _follow(fut: asyncio.Future[Any], answer: asyncio.Future[Any]) -> None:
    """Resolve our batch future from aiokafka's."""
    if fut.done():
        return
    if answer.cancelled():
        _settle(fut, BrokerError("produce cancelled"))
    elif (exc := answer.exception()) is not None:
        _settle(fut, exc)
    else:
        fut.set_result(answer.result())


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.debug("late Kafka failure after the deadline: %r", fut.exception())


@dataclass(slots=True)
class Delivery:
    """A record handed to the producer: its delivery future and its deadline."""

    future: asyncio.Future[Any]
    started: float
    deadline: float


@dataclass(slots=True)
class _OpenBatch:
    """Records gathered for one partition, not yet handed to the producer."""

    builder: Any  # aiokafka BatchBuilder
    future: asyncio.Future[Any]  # resolved by the broker's answer for the whole batch
    producer: AIOKafkaProducer


class KafkaWriter:
    def __init__(
        self,
        settings: KafkaSettings,
        bootstrap: str,
        *,
        on_latency: Callable[[float], None] | None = None,
        on_rebuild: Callable[[], None] | None = None,
        on_health: Callable[[bool], None] | None = None,
    ) -> None:
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
        self._close_deadline: float | None = None  # set by stop()
        self._partitions: list[int] = []
        self._partition_of: dict[bytes, int] = {}
        # per partition: batches waiting for their flusher, oldest first; the last one is open
        self._open: dict[int, collections.deque[_OpenBatch]] = {}
        self._flushers: dict[int, asyncio.Task[None]] = {}

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
            log.log(
                logging.INFO if healthy else logging.WARNING,
                "Kafka %s",
                "reachable" if healthy else "UNREACHABLE",
            )
        self.healthy = healthy
        self._on_health(healthy)

    async def send(self, key: bytes, value: bytes, agent_id: str, seq: int) -> Delivery:
        """Queue one record; return its Delivery. Raises BrokerError when the partition
        cannot be known within the deadline (metadata unavailable) or the record can never fit
        a produce request."""
        producer = self._producer
        if producer is None:
            raise BrokerError("producer is not running")
        started = time.monotonic()
        if len(value) + len(key) + RECORD_OVERHEAD > self.settings.max_request_size:
            raise BrokerError(
                f"record of {len(value)} bytes exceeds kafka.max_request_size "
                f"({self.settings.max_request_size})"
            )
        partition = self._partition_of.get(key)
        if partition is None:
            partition = await self._partition(producer, key)
        headers = record_headers(agent_id, seq)
        queue = self._open.get(partition)
        ob = queue[-1] if queue and queue[-1].producer is producer else None
        if ob is None:
            ob = self._open_batch(producer, partition)
        if ob.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            # Full: it goes as it is; the record opens the next batch (a record larger than
            # max_batch_size goes alone: the first record of a batch always fits).
            ob = self._open_batch(producer, partition)
            ob.builder.append(timestamp=None, key=key, value=value, headers=headers)
        return Delivery(ob.future, started, started + self.settings.produce_timeout_s)

    async def _partition(self, producer: AIOKafkaProducer, key: bytes) -> int:
        """The partition `send()` would choose for `key`; metadata is fetched when unknown."""
        try:
            async with asyncio.timeout(self.settings.produce_timeout_s):
                parts = sorted(await producer.partitions_for(self.topic))
        except TimeoutError as exc:
            self._timed_out()
            raise BrokerError(
                f"no metadata for topic {self.topic!r} within {self.settings.produce_timeout_s:g}s",
                timeout=True,
            ) from exc
        except KafkaError as exc:
            self._set_health(False)
            raise BrokerError(f"no metadata for topic {self.topic!r}: {exc!r}") from exc
        if parts != self._partitions:  # first time, or partitions were added
            self._partitions = parts
            self._partition_of.clear()
        partition = parts[(murmur2(key) & 0x7FFFFFFF) % len(parts)]
        self._partition_of[key] = partition
        return partition

    def _open_batch(self, producer: AIOKafkaProducer, partition: int) -> _OpenBatch:
        ob = _OpenBatch(producer.create_batch(), asyncio.get_running_loop().create_future(), producer)
        self._open.setdefault(partition, collections.deque()).append(ob)
        if partition not in self._flushers:
            task = asyncio.create_task(self._flush(partition), name=f"kafka-flush-{partition}")
            self._flushers[partition] = task
        return ob

    async def _flush(self, partition: int) -> None:
        """Hand the partition's gathered records over, batch after batch, in order, until
        none are left. Each batch's future follows the broker's answer."""
        try:
            if self.settings.linger_ms:
                await asyncio.sleep(self.settings.linger_ms / 1000)
            queue = self._open[partition]
            while queue:
                ob = queue.popleft()
                ob.builder.close()
                producer = self._producer
                if producer is None or ob.producer is not producer:
                    # gathered for a producer rebuilt since: never handed over, not stored
                    _settle(ob.future, BrokerError("producer rebuilt before the batch was sent"))
                    continue
                try:
                    async with asyncio.timeout(self.settings.produce_timeout_s):
                        answer = await producer.send_batch(ob.builder, self.topic, partition=partition)
                except TimeoutError:
                    self._timed_out()
                    _settle(
                        ob.future,
                        BrokerError(
                            f"Kafka did not take the batch within {self.settings.produce_timeout_s:g}s",
                            timeout=True,
                        ),
                    )
                except (KafkaError, OSError) as exc:
                    self._set_health(False)
                    _settle(ob.future, BrokerError(f"Kafka refused the batch: {exc!r}"))
                except asyncio.CancelledError:
                    _settle(ob.future, BrokerError("ingest is stopping"))
                    raise
                except Exception as exc:  # e.g. the partition vanished from the metadata
                    log.warning("produce to partition %d failed: %r", partition, exc)
                    self._partition_of.clear()
                    _settle(ob.future, BrokerError(f"produce failed: {exc!r}"))
                else:
                    answer.add_done_callback(lambda a, f=ob.future: _follow(f, a))
        finally:
            del self._flushers[partition]
            for ob in self._open.pop(partition, ()):  # cancelled (stop): nobody sends these
                _settle(ob.future, BrokerError("ingest is stopping"))

    async def wait(self, d: Delivery) -> None:
        """Wait for the broker's acks=all answer until the delivery's deadline."""
        if not d.future.done():
            await asyncio.wait((d.future,), timeout=max(0.0, d.deadline - time.monotonic()))
        if not d.future.done():
            d.future.add_done_callback(_retrieve)  # a late answer is dropped, not acked
            self._timed_out()
            raise BrokerError(
                f"Kafka did not acknowledge within {self.settings.produce_timeout_s:g}s", timeout=True
            )
        if (exc := d.future.exception()) is not None:
            if isinstance(exc, BrokerError):  # the batch failed before Kafka had it
                raise BrokerError(str(exc), timeout=exc.timeout) from exc
            self._set_health(False)
            raise BrokerError(f"Kafka refused the record: {exc!r}") from exc
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
        limit = CLOSE_TIMEOUT_S
        if self._close_deadline is not None:
            limit = max(0.1, min(limit, self._close_deadline - time.monotonic()))
        try:
            await asyncio.wait_for(producer.stop(), limit)
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

    async def stop(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Flush and close within `timeout_s` in all (the ingest passes what is left of its
        grace period): against a paused broker nothing more can be written anyway, and
        nothing unwritten was acknowledged."""
        deadline = time.monotonic() + min(timeout_s, CLOSE_TIMEOUT_S)
        self._close_deadline = deadline
        self._stopped.set()
        if self._flushers:  # hand over what was gathered; the producer's stop() flushes it
            _done, late = await asyncio.wait(
                set(self._flushers.values()), timeout=max(0.1, deadline - time.monotonic())
            )
            for flusher in late:
                flusher.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for task in (self._probe, self._rebuilding):
            if task is not None and not task.done():
                task.cancel()
                # a probe blocked on a paused broker may take its request timeout to notice
                # the cancellation: do not let it hold the shutdown past the deadline
                await asyncio.wait({task}, timeout=max(0.1, deadline - time.monotonic()))
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._close(producer)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self.healthy = False
        self._on_health(False)
