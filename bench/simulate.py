"""Simulator generation rate: in process, and written straight into Kafka (mode 2).

    python bench/simulate.py [--quick] [--seconds N]

The benchmark fleet (collector.simulate.bench.BENCH_FLEET): 10 sites per country, each with
100 links, 30 cells and 5 hosts (~2000 series per site), ~1000-sample batches, default
faults. Measured in one run:
  1. generate + encode only (no Kafka): the simulator's own ceiling;
  2. generate + encode + produce to an embedded Tansu broker with acks=all, counting the
     wait for the last acknowledgement (what feeds the aggregator benchmark).
The broker shares this machine's cores with the simulator.

Last line: RESULT simulate_samples_per_s=<n, into Kafka> generate_only_samples_per_s=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collector.broker import EmbeddedBroker, TopicSpec  # noqa: E402
from collector.simulate.bench import BENCH_FLEET, measure_generation  # noqa: E402
from collector.simulate.config import SimulateSettings  # noqa: E402
from collector.simulate.fleet import Simulation  # noqa: E402


def generate_only(seconds: float) -> tuple[float, float]:
    """(samples/s, mean samples per batch) of generation and encoding without Kafka."""
    sim = Simulation(SimulateSettings.model_validate(BENCH_FLEET))
    samples = batches = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds and sim.next_tick < 30 * 8640:
        for b in sim.step():
            sim.encode(b)
            samples += b.samples
            batches += 1
    return samples / (time.perf_counter() - t0), samples / max(batches, 1)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 s per measurement")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    gen, per_batch = generate_only(seconds)
    print(f"generate+encode only: {gen:,.0f} samples/s, {per_batch:,.0f} samples per batch")
    async with EmbeddedBroker(topics=(TopicSpec("simbench", 6, 600_000),)) as broker:
        c0 = time.process_time()
        t0 = time.perf_counter()
        rate = await measure_generation(broker.bootstrap, "simbench", seconds)
        cpu = (time.process_time() - c0) / (time.perf_counter() - t0)
    print(
        f"into Kafka (acks=all, Tansu on this machine): {rate:,.0f} samples/s, "
        f"simulator process {cpu:.2f} cores"
    )
    print(f"RESULT simulate_samples_per_s={rate:.0f} generate_only_samples_per_s={gen:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
