"""The consume loop against the real broker: it asks for a partition's next fetch before it
processes the poll it has, so the broker prepares one fetch (or waits for new records) while
the last is processed."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from collector.aggregate.service import Aggregator
from collector.broker import EmbeddedBroker
from tests.aggregate_support import aggregator_settings, make_fleet, produce
from tests.conftest import make_topic
from tests.waiting import eventually


async def test_the_next_fetch_is_asked_for_before_a_poll_is_processed(broker: EmbeddedBroker) -> None:
    topic = await make_topic(broker, 1)
    dlq = await make_topic(broker, 1, prefix="dlq")
    fleet = make_fleet(n_batches=40)
    sites = dict.fromkeys({site for site, _ in fleet.records}, 0)
    settings = aggregator_settings(topic, dlq, metrics_listen="")
    events: list[tuple[str, int, int]] = []  # ("fetch", offset, 0) / ("process", first, last)
    agg = Aggregator(settings, bootstrap=broker.bootstrap, registry=CollectorRegistry())
    process = agg._process

    def logged_process(batch: dict[Any, list[Any]]) -> Any:
        recs = [r for rs in batch.values() for r in rs]
        if recs:
            events.append(("process", recs[0].offset, recs[-1].offset))
        return process(batch)

    agg._process = logged_process  # type: ignore[method-assign]
    async with agg:
        assert agg._consumer is not None
        client = agg._consumer._client
        send = client.send

        async def logged_send(node_id: int, request: Any, **kw: Any) -> Any:
            if type(request).__name__.startswith("FetchRequest"):
                for t, parts in request.topics:
                    events.extend(("fetch", p[1], 0) for p in parts if t == topic)
            return await send(node_id, request, **kw)

        client.send = logged_send
        assert await eventually(lambda: 0 in agg.states, within=30)
        for i in range(0, len(fleet.records), 20):  # caught up: a poll per slice produced
            end = (await produce(broker.bootstrap, topic, fleet.records[i : i + 20], sites))[0]
            assert await eventually(lambda end=end: agg.states[0].next_offset == end, within=30)
    polls = [(i, a, b) for i, (kind, a, b) in enumerate(events) if kind == "process"]
    assert len(polls) >= 4, events
    for i, _first, last in polls:
        # the fetch that starts after this poll went out before the poll was processed
        asked = [j for j, (kind, off, _) in enumerate(events) if kind == "fetch" and off == last + 1]
        assert asked, (last, events)
        assert asked[0] < i, (i, last, events)
