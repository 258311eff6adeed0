"""Case 12, the soak (full mode only, not in CI): the whole pipeline for 30 minutes with
periodic agent reconnects and one aggregator restart; every process's RSS must not drift by
10 % or more, and the one checker must find nothing lost.

    .venv/bin/python -m tests.faults.soak                 # 30 min (the case of issue #13)
    .venv/bin/python -m tests.faults.soak --minutes 3     # a short rehearsal

Stack: own Tansu broker, TLS ingest behind the in-repo TCP proxy, one aggregator, 2 JP + 2 US
agents (`tests/faults/harness.py`). Every `--reconnect-s` (default 60) the proxy resets
every connection, so each agent reconnects; at half time the aggregator is SIGKILLed and
restarted. RSS of the ingest, the aggregator and each agent is sampled every 5 s; drift =
mean RSS over the last fifth of the run / mean over the second fifth - 1 (the first fifth is
warm-up: imports, first windows, caches filling). An aggregator's samples are compared within
one incarnation (the restarted one is compared with itself after its own warm-up).
Last line: RESULT soak_minutes=<m> max_rss_drift=<x> acked=<n> lost=<n> windows_checked=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.faults.harness import Process, Stack


def drift(samples: list[tuple[float, int]], start: float, end: float) -> float:
    """Mean RSS of the last fifth of [start, end] over the mean of the second fifth, minus 1."""
    span = end - start
    second = [r for t, r in samples if start + span / 5 <= t < start + 2 * span / 5]
    last = [r for t, r in samples if t >= start + 4 * span / 5]
    if not second or not last:
        return 0.0
    return statistics.mean(last) / statistics.mean(second) - 1.0


async def soak(tmp: Path, minutes: float, reconnect_s: float) -> int:
    dur = minutes * 60
    rss: dict[str, list[tuple[float, int]]] = {}
    spans: dict[str, tuple[float, float]] = {}
    async with Stack(tmp, sites=4, proxy=True, aggregate={"idle_timeout_s": 120.0}) as s:
        await s.start_ingest()
        await s.start_aggregator()
        await s.start_agents()
        assert await s.wait_acked(20), "the load did not start"
        assert s.proxy is not None
        t0 = time.monotonic()
        next_reset = t0 + reconnect_s
        restarted = False
        resets = 0
        agg_name = "aggregator"
        spans[agg_name] = (t0, t0 + dur / 2)
        while (now := time.monotonic()) < t0 + dur:
            procs: dict[str, Process | None] = {"ingest": s.ingest, agg_name: s.aggregators[0]}
            for a in s.agents:
                procs[a.agent_id] = a.proc
            for name, p in procs.items():
                if p is not None and p.alive():
                    rss.setdefault(name, []).append((now, p.rss_bytes()))
            if now >= next_reset:
                await s.proxy.reset()  # every agent's stream breaks: they reconnect
                resets += 1
                next_reset = now + reconnect_s
            if not restarted and now >= t0 + dur / 2:
                agg = s.aggregators[0]
                assert agg is not None
                await agg.kill()  # SIGKILL, then the restart replays from its checkpoint
                await s.start_aggregator(0)
                restarted = True
                agg_name = "aggregator (restarted)"
                spans[agg_name] = (time.monotonic(), t0 + dur)
            await asyncio.sleep(5.0)
        end = time.monotonic()
        await s.drain()
        await s.wait_published()
        rep = await s.check()
    drifts = {name: drift(sam, *spans.get(name, (t0, end))) for name, sam in rss.items()}
    for name, d in drifts.items():
        sam = [r for _, r in rss[name]]
        print(f"rss {name:28s}: {min(sam) / 2**20:7.1f} .. {max(sam) / 2**20:7.1f} MiB, drift {d:+.1%}")
    print(f"soak: {minutes:g} min, {resets} reconnect rounds, 1 aggregator restart; {rep.summary()}")
    lost = len(rep.acked_missing)
    worst = max(drifts.values(), default=0.0)
    print(
        f"RESULT soak_minutes={minutes:g} max_rss_drift={worst:.3f} acked={rep.acked} lost={lost} "
        f"windows_checked={rep.windows_checked}"
    )
    rep.assert_ok(max_duplicates=32 * 4 * (resets + 1))
    assert worst < 0.10, f"RSS drift {worst:.1%} (>= 10 %): {drifts}"
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--reconnect-s", type=float, default=60.0)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a new temp dir)")
    a = ap.parse_args()
    tmp = a.dir or Path(tempfile.mkdtemp(prefix="faults-soak-"))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"soak work directory: {tmp}", flush=True)
    return asyncio.run(soak(tmp, a.minutes, a.reconnect_s))


if __name__ == "__main__":
    sys.exit(main())
