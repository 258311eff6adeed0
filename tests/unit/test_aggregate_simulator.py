"""The aggregator against the simulator's ground truth (collector/simulate, docs/simulator.md).

A small Japan/US fleet with every fault turned up (restarts, counter clears, 32-bit wraps,
the 402 Tb/s link, gaps, duplicates, late batches, a silent site) is fed in delivery order
to one partition's state; every closed window must equal the truth exactly: counter deltas
as integers (the simulator counts a restarted counter from 0, the aggregator makes the first
sample after a reset a new baseline: `delta - reset_delta`), gauge count/min/max exactly and
sums to float rounding.
"""

from __future__ import annotations

import re

import polars as pl

from collector.aggregate.config import AggregateSettings
from collector.aggregate.frames import NS
from collector.aggregate.registry import log_labels
from collector.aggregate.state import PartitionState
from collector.simulate.config import SimulateSettings
from collector.simulate.fleet import Simulation

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _label_key(text: str) -> str:
    labels = dict(_LABEL.findall(text or ""))
    return log_labels(labels)


def test_closed_windows_equal_simulator_truth() -> None:
    sim_settings = SimulateSettings(
        acceleration=0,
        start_unix_s=1_780_000_200,
        sites_per_country=1,
        links_per_site=4,
        cells_per_site=3,
        hosts_per_site=1,
        cpus_per_host=2,
        reset_every_s=900,
        clear_every_s=900,
        gap_probability=0.05,
        duplicate_probability=0.05,
        late_probability=0.05,
        late_delay_s=15,
        silent_after_s=1800,
    )
    sim = Simulation(sim_settings, truth=True)
    batches = sim.run(ticks=360)  # one simulated hour at 10 s
    kinds = {b.kind for b in batches}
    assert {"normal", "duplicate", "late"} <= kinds

    # every late batch is within 300 s of its site's newest event time (docs/simulator.md)
    cfg = AggregateSettings(allowed_lateness_s=300, stale_ttl_s=7200)
    st = PartitionState(0, cfg)
    c_parts: list[pl.DataFrame] = []
    g_parts: list[pl.DataFrame] = []

    def sink(p: int, w: int, cw: pl.DataFrame, gw: pl.DataFrame) -> None:
        c_parts.append(cw.with_columns(window_s=pl.lit(w)))
        g_parts.append(gw.with_columns(window_s=pl.lit(w)))

    st.on_window = sink
    for i, b in enumerate(batches):
        st.add(i, sim.encode(b), {"schema": b"telemetry.v1.Batch"})
        if i % 20 == 19:
            st.advance()
    st.advance(idle_ns=3600 * NS)  # end of the run: close everything
    assert all(s.dropped["late"] == 0 for s in st.sites)
    assert sum(s.dropped["duplicate"] for s in st.sites) > 0

    truth = sim.truth.windows().filter(pl.col("level") == "series")  # type: ignore[union-attr]
    truth = truth.with_columns(
        end=pl.col("window_start_unix_nano") + pl.col("window_s").cast(pl.Int64) * NS,
        key=pl.col("labels").map_elements(_label_key, return_dtype=pl.String),
        window_s=pl.col("window_s").cast(pl.Int32),
    )
    keys = ["site", "metric", "labels", "window_s", "end"]

    got_c = pl.concat(c_parts).with_columns(pl.col("window_s").cast(pl.Int32))
    # the truth's windows are tumbling: compare the sliding windows that coincide with them
    got_c = got_c.filter(pl.col("end") % (pl.col("window_s").cast(pl.Int64) * NS) == 0)
    got_c = got_c.unique(subset=keys)
    want_c = truth.filter((pl.col("kind") == "counter") & (pl.col("increments") > pl.col("resets")))
    want_c = want_c.select(
        site=pl.col("site_id"),
        metric="metric",
        labels="key",
        window_s="window_s",
        end="end",
        want_inc=(pl.col("delta") - pl.col("reset_delta")).cast(pl.Int128),
        want_n=(pl.col("increments") - pl.col("resets")).cast(pl.UInt32),
    )
    got_c = got_c.filter(pl.col("n") > 0).select(*keys, "inc", "n", "wraps", "resets")
    joined = want_c.join(got_c, on=keys, how="full", coalesce=True)
    missing = joined.filter(pl.col("inc").is_null() | pl.col("want_inc").is_null())
    assert not len(missing), missing.head(10)
    wrong = joined.filter((pl.col("inc") != pl.col("want_inc")) | (pl.col("n") != pl.col("want_n")))
    assert not len(wrong), wrong.head(10)
    assert len(joined) > 1000
    # the fleet exercised the hard cases
    assert joined.filter(pl.col("metric") == "link_in_octets")["inc"].max() > 10**15  # type: ignore[operator]
    assert joined["wraps"].sum() > 0
    assert got_c["resets"].sum() > 0

    got_g = pl.concat(g_parts).with_columns(pl.col("window_s").cast(pl.Int32))
    got_g = got_g.filter(pl.col("end") % (pl.col("window_s").cast(pl.Int64) * NS) == 0).unique(subset=keys)
    want_g = truth.filter(pl.col("kind") == "gauge").select(
        site=pl.col("site_id"),
        metric="metric",
        labels="key",
        window_s="window_s",
        end="end",
        want_cnt="samples",
        want_sum="gauge_sum",
        want_min="gauge_min",
        want_max="gauge_max",
    )
    jg = want_g.join(got_g.select(*keys, "sum", "cnt", "min", "max"), on=keys, how="full", coalesce=True)
    assert not len(jg.filter(pl.col("cnt").is_null() | pl.col("want_cnt").is_null()))
    bad = jg.filter(
        (pl.col("cnt") != pl.col("want_cnt"))
        | (pl.col("min") != pl.col("want_min"))
        | (pl.col("max") != pl.col("want_max"))
        | (
            (pl.col("sum") - pl.col("want_sum")).abs()
            > 1e-9 * pl.max_horizontal(pl.col("want_sum").abs(), pl.lit(1.0))
        )
    )
    assert not len(bad), bad.head(10)
