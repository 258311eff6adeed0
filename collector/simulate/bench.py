"""Generation rate of the simulator writing straight into Kafka (mode 2).

Used by bench/agent.py (`simulate_samples_per_s`) and bench/simulate.py: the simulator must
be able to feed the aggregator benchmark, >= 2,000,000 samples/s with ~1000-sample batches.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from collector.config import Settings
from collector.simulate.config import SimulateSettings
from collector.simulate.fleet import FleetRunner

# The benchmark fleet: 10 sites per country, each 100 links, 30 cells and 5 hosts
# (~2000 series per site), fast-forward, default faults.
BENCH_FLEET = dict(
    sites_per_country=10,
    links_per_site=100,
    cells_per_site=30,
    hosts_per_site=5,
    acceleration=0.0,
    batch_samples=1000,
    start_unix_s=1_780_000_000.0,
)
# Upper bound of simulated time, so a run is bounded by count as well as by wall time.
_MAX_SIM_S = 30 * 86400


async def measure_generation(
    bootstrap: str, topic: str, seconds: float, settings: SimulateSettings | None = None
) -> float:
    """Samples per second generated, encoded and acknowledged by Kafka (acks=all).

    Runs the benchmark fleet for about `seconds` of wall time (or until 30 simulated days),
    then waits for every record to be acknowledged; the rate counts that wait.
    """
    sim = settings or SimulateSettings.model_validate(BENCH_FLEET)
    cfg = Settings(simulate=sim)
    with tempfile.TemporaryDirectory(prefix="simbench-") as tmp:
        runner = FleetRunner(cfg, bootstrap=bootstrap, topic=topic, work_dir=Path(tmp), duration_s=_MAX_SIM_S)
        t0 = time.perf_counter()
        await runner.start()
        try:
            deadline = t0 + seconds
            while not runner.done and time.perf_counter() < deadline:
                await runner._stop_wait(min(0.05, max(0.0, deadline - time.perf_counter())))
        finally:
            await runner.stop()
        elapsed = time.perf_counter() - t0
    if not runner.drained:
        raise RuntimeError("Kafka did not acknowledge every record of the benchmark")
    return runner.samples / elapsed
