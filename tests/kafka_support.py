"""Reading a topic back in tests: one consumer set-up (every partition, from the start)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


@asynccontextmanager
async def topic_reader(
    bootstrap: str, topic: str
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A started consumer assigned to every partition of `topic`, positioned at the start."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic) or set()
        if not parts:
            await c._client.force_metadata_update()
            parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        yield c, tps
    finally:
        await c.stop()


async def read_topic(bootstrap: str, topic: str, expect: int, timeout_s: float = 30.0) -> list[Any]:
    """Records of every partition of `topic` once `expect` arrived (or the timeout), plus
    whatever one more short poll finds (duplicates beyond `expect`)."""
    async with topic_reader(bootstrap, topic) as (c, tps):
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expect and time.monotonic() < deadline:
            got = await c.getmany(*tps, timeout_ms=500, max_records=5000)
            for recs in got.values():
                out.extend(recs)
        got = await c.getmany(*tps, timeout_ms=300)
        for recs in got.values():
            out.extend(recs)
        return out
