"""Dead letters survive a slow or failing dead-letter produce: the aggregator retries what
was not written (never what was), so a transient broker problem under load does not lose
the copy of a bad record. The producer here is a scripted stand-in (pure retry logic; the
real broker path is tests/integration/test_aggregate_pipeline.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry

from collector.aggregate import dead_letter
from collector.aggregate.service import Aggregator
from collector.config import load_settings


class ScriptedProducer:
    """send() answers per call from a script: 'ok', 'fail' (the future fails), 'raise' (send
    itself raises), 'hang' (no answer: the produce deadline passes)."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.sent: list[bytes] = []
        self.written: list[bytes] = []

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[Any]:
        what = self.script.pop(0) if self.script else "ok"
        self.sent.append(value)
        if what == "raise":
            raise KafkaTimeoutError()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if what == "ok":
            fut.set_result(SimpleNamespace(offset=len(self.written)))
            self.written.append(value)
        elif what == "fail":
            fut.set_exception(KafkaTimeoutError())
        return fut


def _agg(producer: ScriptedProducer) -> Aggregator:
    settings = load_settings(kafka={"topic": "t", "produce_timeout_s": 0.2}, aggregate={"metrics_listen": ""})
    agg = Aggregator(settings, bootstrap="127.0.0.1:1", registry=CollectorRegistry())
    agg._producer = producer  # type: ignore[assignment]
    return agg


def _dead(n: int) -> list[tuple[object, str]]:
    return [
        (SimpleNamespace(value=b"bad%d" % i, key=None, headers=(), partition=0, offset=i), "columns")
        for i in range(n)
    ]


def _value(agg: Aggregator, name: str) -> float:
    return agg.registry.get_sample_value(name) or 0.0


async def test_failed_and_timed_out_dead_letters_are_retried_once_each(monkeypatch: Any) -> None:
    monkeypatch.setattr(dead_letter, "ATTEMPTS", 4)
    # record 0 fails, 1 is written, 2 hangs past the deadline, 3 raises at send
    p = ScriptedProducer(["fail", "ok", "hang", "raise"])
    agg = _agg(p)
    await agg._dead_letter(_dead(4))
    assert sorted(p.written) == [b"bad0", b"bad1", b"bad2", b"bad3"]  # each exactly once
    assert p.sent.count(b"bad1") == 1  # written: never sent again
    assert _value(agg, "collector_aggregate_dead_letter_records_total") == 4
    assert _value(agg, "collector_aggregate_dead_letter_failures_total") == 0


async def test_a_dead_letter_never_written_is_counted_after_the_last_attempt(monkeypatch: Any) -> None:
    monkeypatch.setattr(dead_letter, "ATTEMPTS", 2)
    p = ScriptedProducer(["ok", "fail", "fail", "fail"])
    agg = _agg(p)
    await agg._dead_letter(_dead(2))
    assert p.written == [b"bad0"]
    assert _value(agg, "collector_aggregate_dead_letter_records_total") == 1
    assert _value(agg, "collector_aggregate_dead_letter_failures_total") == 1
