"""Restart and scale-out equivalence on the real broker.

Run 1: one aggregator, undisturbed. Run 2: `collector aggregate` processes SIGKILLed twice
mid-stream and restarted. Run 3: a second aggregator joins the group mid-stream (rebalance).
All three publish exactly the same closed windows - the ground truth - and none is lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry

from collector.aggregate.service import Aggregator
from collector.aggregate.window_log import window_records
from collector.broker import EmbeddedBroker
from tests.aggregate_support import (
    Fleet,
    final_boundary,
    make_fleet,
    produce,
    published,
    truth_windows,
)
from tests.conftest import make_topic
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
SITES = (
    ("jp-tokyo-01", "JP", "Kanto"),
    ("jp-osaka-01", "JP", "Kansai"),
    ("us-nyc-01", "US", "us-east"),
    ("us-sfo-01", "US", "us-west"),
)
PART = {"jp-tokyo-01": 0, "jp-osaka-01": 1, "us-nyc-01": 2, "us-sfo-01": 0}
AGG = {
    "idle_timeout_s": 3600.0,
    "checkpoint_interval_s": 0.3,
    "session_timeout_ms": 1500,
    "heartbeat_interval_ms": 500,
    "metrics_listen": "127.0.0.1:0",
}


def _fleet() -> Fleet:
    return make_fleet(n_batches=60, sites=SITES)


def _thirds(records: list) -> list[list]:  # type: ignore[type-arg]
    n = len(records)
    return [records[: n // 3], records[n // 3 : 2 * n // 3], records[2 * n // 3 :]]


def _complete(rows: list[dict], upto: int) -> bool:
    ends = {(r["partition"], r["end_ns"]) for r in rows if r["window_s"] == 10}
    return all((p, upto) in ends for p in set(PART.values()))


async def _topics(broker: EmbeddedBroker) -> tuple[str, str]:
    return await make_topic(broker, 3), await make_topic(broker, 1, prefix="dlq")


def _settings(topic: str, dlq: str, **extra: object):  # type: ignore[no-untyped-def]
    from collector.config import load_settings

    return load_settings(
        kafka={"topic": topic, "dead_letter_topic": dlq},
        aggregate={**AGG, "group_id": f"g-{topic}", "state_topic": f"{topic}.state", **extra},
    )


async def _run_undisturbed(broker: EmbeddedBroker, fleet: Fleet) -> dict:
    topic, dlq = await _topics(broker)
    await produce(broker.bootstrap, topic, fleet.records, PART)
    rows: list[dict] = []
    async with Aggregator(
        _settings(topic, dlq),
        bootstrap=broker.bootstrap,
        registry=CollectorRegistry(),
        on_window=lambda p, w, c, g: rows.extend(window_records(p, w, c, g)),
    ):
        assert await eventually(lambda: _complete(rows, final_boundary(fleet)), within=60), "run 1"
    return published(rows)


def _spawn(bootstrap: str, topic: str, dlq: str, log: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "COLLECTOR_KAFKA__TOPIC": topic,
        "COLLECTOR_KAFKA__DEAD_LETTER_TOPIC": dlq,
        "COLLECTOR_AGGREGATE__GROUP_ID": f"g-{topic}",
        "COLLECTOR_AGGREGATE__STATE_TOPIC": f"{topic}.state",
        "COLLECTOR_AGGREGATE__WINDOW_LOG": str(log),
        **{f"COLLECTOR_AGGREGATE__{k.upper()}": str(v) for k, v in AGG.items()},
    }
    with open(out, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "collector", "aggregate", "--bootstrap", bootstrap],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )


def _read_log(log: Path) -> list[dict]:
    rows = []
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by SIGKILL: its window is re-published after the restart
    return rows


async def _checkpoints(out: Path) -> float:
    """collector_aggregate_checkpoints_total of the newest process (its /metrics URL is in `out`)."""
    urls = re.findall(r"aggregator /metrics: (http://\S+)", out.read_text())
    if not urls:
        return 0.0
    try:
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(urls[-1], timeout=5).read())
    except OSError:
        return 0.0
    m = re.search(rb"^collector_aggregate_checkpoints_total (\S+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


async def _kill(proc: subprocess.Popen[bytes], sig: int) -> None:
    os.kill(proc.pid, sig)
    try:
        await asyncio.to_thread(proc.wait, 20)
    except subprocess.TimeoutExpired:
        proc.kill()
        await asyncio.to_thread(proc.wait)


async def _run_killed(broker: EmbeddedBroker, fleet: Fleet, tmp: Path) -> dict:
    topic, dlq = await _topics(broker)
    log, out = tmp / "windows.jsonl", tmp / "aggregate.out"
    parts = _thirds(fleet.records)
    upto = final_boundary(fleet)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, chunk in enumerate(parts):
            before = len(_read_log(log))
            procs.append(_spawn(broker.bootstrap, topic, dlq, log, out))
            await produce(broker.bootstrap, topic, chunk, PART)
            if i < 2:
                # let it publish and checkpoint, then kill it without warning
                assert await eventually(lambda b=before: len(_read_log(log)) > b + 20, within=60), (
                    f"progress before kill {i + 1}: {out.read_text()[-1500:]}"
                )

                async def checkpointed(n: int = i + 1) -> bool:
                    return await _checkpoints(out) >= n

                assert await eventually(checkpointed, within=30, step=0.1), (
                    f"no checkpoint before kill {i + 1}"
                )
                await _kill(procs[-1], signal.SIGKILL)
        assert await eventually(lambda: _complete(_read_log(log), upto), within=90), (
            f"run 2: {out.read_text()[-1500:]}"
        )
        await _kill(procs[-1], signal.SIGTERM)
        assert procs[-1].returncode == 0, out.read_text()[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs[:2]] == [-signal.SIGKILL, -signal.SIGKILL]
    assert "restored from checkpoint" in out.read_text(), "restarts should resume from checkpoints"
    return published(_read_log(log))


async def _run_rebalanced(broker: EmbeddedBroker, fleet: Fleet) -> tuple[dict, int]:
    topic, dlq = await _topics(broker)
    rows: list[dict] = []
    sink = lambda p, w, c, g: rows.extend(window_records(p, w, c, g))  # noqa: E731
    first, second, third = _thirds(fleet.records)
    s = _settings(topic, dlq)
    async with Aggregator(s, bootstrap=broker.bootstrap, registry=CollectorRegistry(), on_window=sink) as a:
        await produce(broker.bootstrap, topic, first, PART)
        assert await eventually(lambda: len(rows) > 20, within=60), "progress of member A"
        async with Aggregator(
            s, bootstrap=broker.bootstrap, registry=CollectorRegistry(), on_window=sink
        ) as b:
            await produce(broker.bootstrap, topic, second, PART)
            assert await eventually(
                lambda: len(a.states) + len(b.states) == 3 and len(b.states) > 0, within=60
            ), "rebalance to two members"
            await produce(broker.bootstrap, topic, third, PART)
            assert await eventually(lambda: _complete(rows, final_boundary(fleet)), within=90), "run 3"
            restores = int(a.metrics.restores._value.get() + b.metrics.restores._value.get())
    return published(rows), restores


async def test_kill9_restarts_and_rebalance_publish_identical_windows(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    fleet = _fleet()
    run1 = await _run_undisturbed(broker, fleet)
    run2 = await _run_killed(broker, fleet, tmp_path)
    run3, restores = await _run_rebalanced(broker, fleet)
    want = truth_windows(fleet, (10, 60, 300), 10, final_boundary(fleet))
    assert run1 == want
    assert set(run2) == set(run1), "a window was lost or invented across kill -9"
    assert run2 == run1
    assert run3 == run1
    assert restores >= 1, "the rebalance should have moved a partition through a checkpoint"
