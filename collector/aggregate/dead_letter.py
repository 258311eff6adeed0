"""The dead-letter topic: a copy of every record that is not a valid batch, with its reason.

The service's consume loop (collector/aggregate/service.py) hands over the records a poll
refused (their `ProtocolError.reason` as the `dlq_reason` header, `dlq_source` naming the
topic/partition/offset) and waits until they are written before it moves on, so no
checkpoint passes a record whose copy is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from collector.aggregate.self_metrics import SelfMetrics
from collector.backoff import backoff_delay

log = logging.getLogger(__name__)

ATTEMPTS = 4  # dead-letter produce attempts of one poll's records
# between attempts: full-jitter backoff (collector/backoff.py) from 0.5 s, at most 5 s
RETRY_S, RETRY_MAX_S = 0.5, 5.0

# (the refused Kafka record, its reason code)
DeadRecord = tuple[object, str]


class DeadLetters:
    def __init__(
        self,
        source_topic: str,
        topic: str,
        produce_timeout_s: float,
        metrics: SelfMetrics,
        stopping: asyncio.Event,
    ) -> None:
        self.source_topic = source_topic
        self.topic = topic
        self.produce_timeout_s = produce_timeout_s
        self.metrics = metrics
        self._stopping = stopping

    async def copy(self, producer: AIOKafkaProducer, dead: list[DeadRecord]) -> None:
        """Copy `dead` to the dead-letter topic. A produce that fails or misses its deadline
        - a broker slow under load, a leader moving - is retried, up to ATTEMPTS attempts
        with backoff, never re-sending a record already written; only what is still not
        written then is counted in dead_letter_failures and skipped (its decode error stays
        counted by reason)."""
        written = [False] * len(dead)
        why = ""
        attempt = 0
        for attempt in range(1, ATTEMPTS + 1):
            try:  # aiokafka sends can wait forever (aio-libs/aiokafka#1101)
                async with asyncio.timeout(self.produce_timeout_s):
                    await self._send(producer, dead, written)
                why = "produce failed"
            except TimeoutError:
                why = f"not written within {self.produce_timeout_s:g}s"
            left = written.count(False)
            if not left:
                return
            if attempt == ATTEMPTS or self._stopping.is_set():
                break
            delay = backoff_delay(attempt - 1, RETRY_S, RETRY_MAX_S)
            log.warning(
                "dead-letter topic: %d record(s) %s; retry %d of %d in %.1fs",
                left,
                why,
                attempt,
                ATTEMPTS - 1,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        left = written.count(False)
        self.metrics.dead_letter_failures.inc(left)
        log.warning(
            "dead-letter topic did not take %d record(s) in %d attempt(s) (%s; counted, "
            "decode errors stay counted by reason)",
            left,
            attempt,
            why,
        )

    async def _send(self, producer: AIOKafkaProducer, dead: list[DeadRecord], written: list[bool]) -> None:
        """Send each record of `dead` not written yet; wait for the answers. A send left
        without an answer by the previous attempt's deadline is sent again (a copy may then
        be written twice; it is counted once)."""
        mine = []
        for i, (r, reason) in enumerate(dead):
            if written[i]:
                continue
            headers = list(getattr(r, "headers", None) or ())
            headers += [
                ("dlq_reason", reason.encode()),
                ("dlq_source", f"{self.source_topic}/{r.partition}/{r.offset}".encode()),  # type: ignore[attr-defined]
            ]
            try:
                fut = await producer.send(
                    self.topic,
                    r.value,  # type: ignore[attr-defined]
                    key=r.key,  # type: ignore[attr-defined]
                    headers=headers,
                )
            except KafkaError as exc:
                log.debug("dead-letter produce failed: %s", exc)
                continue
            mine.append(fut)
            fut.add_done_callback(functools.partial(self._done, written, i))
        waiting = [f for f in mine if not f.done()]
        if waiting:
            await asyncio.wait(waiting)  # not gather: a deadline must not cancel the sends

    def _done(self, written: list[bool], i: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            log.debug("dead-letter produce failed: %s", "cancelled" if fut.cancelled() else fut.exception())
            return
        if not written[i]:
            written[i] = True
            self.metrics.dead_letters.inc()
