"""The simulator's PM file writer against the generator's own increments."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as hst

from collector.agent.sources.pm_parser import MEASUREMENTS, read_pm_file
from collector.simulate.generator import FleetGenerator
from collector.simulate.pm_files import MBIT, PmWriter, bin_counts
from collector.simulate.topology import CELL_COUNTERS, FleetModel
from tests.simulate_support import NS, START_S, small


def test_files_hold_whole_periods_of_the_models_increments_exactly(tmp_path: Path) -> None:
    period = 60
    # the run starts 25 s into a period: that first, partial period is not written
    sim = small(
        sites_per_country=1,
        cells_per_site=2,
        interval_s=5.0,
        jitter_s=0.0,
        start_unix_s=(START_S // period) * period + 25,
    )
    model = FleetModel(sim)
    gen = FleetGenerator(model, int(sim.start_unix_s * NS))  # type: ignore[operator]
    dirs = {st.index: tmp_path / st.info.site_id for st in model.sites}
    w = PmWriter(model, period, dirs)
    blocks = [gen.block(7) for _ in range(20)]  # 140 ticks = 700 s
    for b in blocks:
        w.add(b)
    first_full = ((START_S // period) + 1) * period * NS
    for st in model.sites:
        files = sorted(dirs[st.index].glob("*.xml"))
        assert len(files) == 10  # periods ending at +60 .. +600 s after the first boundary
        got: dict[tuple[str, str], int] = {}
        ends = set()
        for f in files:
            pm = read_pm_file(f)
            assert not pm.rejected
            for v in pm.values:
                if v.spec.metric in ("DRB.PdcpSduVolumeDL", "MM.HoExeIntraReq"):
                    got[(v.obj.cell, v.spec.metric)] = got.get((v.obj.cell, v.spec.metric), 0) + int(v.value)
                ends.add(v.end_unix_nano)
        assert min(ends) == first_full + period * NS
        sel = np.flatnonzero(model.cells["site"] == st.index)
        for row in sel:
            c0 = int(model.cells["c0"][row])
            cell = dict(model.counters[c0].labels)["cell"]
            t = np.concatenate([b.t[st.index] for b in blocks])
            inc = np.concatenate(
                [b.raw_increment[c0 + np.arange(len(CELL_COUNTERS))] for b in blocks], axis=1
            )
            written = (t - 1 >= first_full) & (t - 1 < max(ends))
            truth_bytes = int(inc[0, written].sum())
            # Mbit floored per period; the rest carries on: never more than 1 Mbit behind
            assert 0 <= truth_bytes - got[(cell, "DRB.PdcpSduVolumeDL")] * MBIT < MBIT
            assert got[(cell, "MM.HoExeIntraReq")] == int(inc[2, written].sum())


@settings(max_examples=80, deadline=None)
@given(
    hst.sampled_from(["L1M.SS-RSRP.Bin", "L1M.SS-RSRQ.Bin", "L1M.SS-SINR.Bin"]),
    hst.floats(-170.0, 60.0),
    hst.integers(1, 100_000),
)
def test_simulated_bins_hold_every_report_once_and_frame_them_with_empty_bins(
    dist: str, mean: float, reports: int
) -> None:
    counts = bin_counts(dist, mean, reports)
    assert sum(counts.values()) == reports  # whole reports, none lost to rounding
    n = MEASUREMENTS[dist].bins[2]  # type: ignore[index]
    assert all(0 <= x < n for x in counts)
    for x, c in counts.items():
        if c:  # its neighbours are written too (empty or not)
            assert all(x + d in counts for d in (-1, 1) if 0 <= x + d < n)
    # the bin holding the mean is the normal's mode up to rounding: every bounded bin two or
    # more bins away lies wholly farther from the mean, so it has a smaller share, and whole
    # reports (largest remainders) move each bin by less than one report. Near the mode of a
    # wide normal several bins tie within that one report, so this is the exact property.
    # (The two open bins at the ends collect whole tails and may hold more.)
    first, step, _ = MEASUREMENTS[dist].bins  # type: ignore[misc]
    want = math.ceil((mean - first) / step + 1e-12)
    if 2 < want < n - 3:
        at_mean = counts.get(want, 0)
        for x, c in counts.items():
            if 0 < x < n - 1 and abs(x - want) >= 2:
                assert c <= at_mean + 1, (x, c, want, at_mean)
