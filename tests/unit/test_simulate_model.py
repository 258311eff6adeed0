"""Simulator fleet model: determinism, block-size independence, wire encoding, geography."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from collector import wire
from collector.agent.batch import BatchBuilder
from collector.simulate.fleet import Simulation, site_tokens, write_tokens_file
from collector.simulate.generator import FleetGenerator
from collector.simulate.geo import CITIES, HOURLY_LOAD, diurnal_load, utc_offsets_s
from collector.simulate.topology import FleetModel
from tests.simulate_support import NS, START_S, small


def _run(seed: int, ticks: int = 40) -> list[tuple[str, int, str, bytes]]:
    sim = Simulation(small(seed=seed, duplicate_probability=0.2, late_probability=0.2, reset_every_s=100))
    return [(b.site.info.site_id, b.seq, b.kind, sim.encode(b)) for b in sim.run(ticks)]


def test_same_seed_gives_the_same_batch_bytes() -> None:
    a = _run(7)
    b = _run(7)
    assert a == b
    kinds = {k for _, _, k, _ in a}
    assert kinds == {"normal", "duplicate", "late"}
    c = _run(8)
    assert [r[3] for r in a] != [r[3] for r in c]


def test_values_do_not_depend_on_block_size() -> None:
    m = FleetModel(small(reset_every_s=60, clear_every_s=60, gap_probability=0.1))
    one = FleetGenerator(m, START_S * NS).block(30)
    g = FleetGenerator(m, START_S * NS)
    parts = [g.block(n) for n in (7, 7, 7, 9)]
    for name in (
        "values",
        "increment",
        "gauges",
        "t",
        "present",
        "epoch",
        "counted",
        "start",
        "reset_sample",
        "version",
    ):
        joined = np.concatenate([getattr(p, name) for p in parts], axis=1)
        np.testing.assert_array_equal(joined, getattr(one, name), err_msg=name)
    assert one.reset_sample.any()  # the restarts happened inside the compared range


def test_encoded_batch_equals_the_agent_batch_builder() -> None:
    sim = Simulation(small(reset_every_s=50))
    batches = [b for b in sim.run(30) if b.kind == "normal"]
    assert any(b.epoch > 0 for b in batches)
    for b in batches[:: max(1, len(batches) // 15)]:
        builder = BatchBuilder(b.site.agent_id, b.site.info, sim.gen.sites[b.site.index].boot_ids[b.epoch])
        sim.planner.fill_builder(b, builder)
        expected = builder.build(b.seq, b.t_max)
        for f in ("counters", "gauges"):  # the builder marks an empty column set present
            if not len(getattr(expected, f).series_index):
                expected.ClearField(f)  # type: ignore[arg-type]
        got = wire.parse_batch(sim.encode(b))
        assert got == expected
        assert sim.encode(b) == expected.SerializeToString()


def test_batches_hold_at_most_batch_samples_of_one_boot() -> None:
    sim = Simulation(
        small(batch_samples=300, batch_ticks=3, links_per_site=20, reset_every_s=40, clear_every_s=40)
    )
    batches = sim.run(24)
    assert all(b.samples <= 300 for b in batches)
    assert max(b.samples for b in batches) >= 250
    for b in batches:
        state = sim.gen.sites[b.site.index]
        got = wire.parse_batch(sim.encode(b))
        assert got.boot_id == state.boot_ids[b.epoch]
        starts = [s.start_time_unix_nano for s in got.series if s.counter_bits]
        for k in b.ticks:  # one start time per series for every tick of the batch
            assert starts == b.block.start[b.chunk.counter_lo : b.chunk.counter_hi, k].tolist()
    assert any(b.epoch > 0 and b.chunk.counter_hi > b.chunk.counter_lo for b in batches)


def test_counter_clear_changes_start_time_of_one_link_and_keeps_the_boot_id() -> None:
    m = FleetModel(small(reset_every_s=0, clear_every_s=100, gap_probability=0))
    g = FleetGenerator(m, START_S * NS)
    blk = g.block(60)
    site = m.sites[0]
    rows = slice(site.counter_lo, site.counter_hi)
    changed = np.flatnonzero((np.diff(blk.start[rows], axis=1) != 0).any(axis=1))
    assert len(changed)
    assert len(changed) % 8 == 0
    assert (blk.epoch == 0).all()  # no restart: same boot_id
    assert g.sites[0].clears >= 1
    r = site.counter_lo + int(changed[0])
    k = int(np.flatnonzero(np.diff(blk.start[r]))[0]) + 1
    assert blk.reset_sample[r, k]
    assert blk.increment[r, k] == blk.values[r, k]  # counted from 0 at the clear
    assert blk.start[r, k - 1] < blk.start[r, k] <= blk.t[0, k]


def test_32_bit_counters_wrap_and_move_less_than_2_31_between_delivered_samples() -> None:
    m = FleetModel(small(interval_s=60, gap_probability=0.2, gap_ticks=3))
    blk = FleetGenerator(m, START_S * NS).block(200)
    rows = np.flatnonzero(m.counter_mask == 2**32 - 1)
    assert len(rows)
    assert (blk.values[rows] < 2**32).all()
    delivered = blk.counted[m.counter_site[rows]]
    assert (blk.increment[rows][delivered] < 2**31).all()  # below half the range
    # at least one 32-bit series wrapped: its emitted value decreased without a restart
    v = blk.values[rows].astype(object)
    same_epoch = blk.epoch[m.counter_site[rows]][:, 1:] == blk.epoch[m.counter_site[rows]][:, :-1]
    assert ((v[:, 1:] < v[:, :-1]) & same_epoch).any()


def test_sites_are_real_cities_with_iana_timezones_and_tokens() -> None:
    m = FleetModel(small(sites_per_country=14, countries=("JP", "US", "AE")))
    ids = [s.info.site_id for s in m.sites]
    assert ids[:2] == ["jp-tokyo-01", "jp-osaka-01"]
    assert "jp-tokyo-02" in ids  # names repeat with a higher number past the list
    assert {s.info.timezone for s in m.sites if s.info.country == "US"} >= {
        "America/New_York",
        "America/Chicago",
        "America/Los_Angeles",
        "America/Denver",
    }
    assert all(s.info.timezone == "Asia/Dubai" for s in m.sites if s.info.country == "AE")
    assert len(set(ids)) == len(ids)
    assert all(c.name for cs in CITIES.values() for c in cs)
    tokens = site_tokens(small(sites_per_country=14, countries=("JP", "US", "AE")))
    assert set(tokens) == set(ids)
    assert len(set(tokens.values())) == len(ids)


def test_tokens_file_maps_token_to_site(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    tokens = site_tokens(small())
    data = yaml.safe_load(write_tokens_file(tmp_path / "t.yaml", tokens).read_text())
    assert {v: k for k, v in data.items()} == tokens


def _ns(y: int, mo: int, d: int, h: int) -> int:
    return int(datetime(y, mo, d, h, tzinfo=UTC).timestamp()) * NS


def test_diurnal_load_follows_each_sites_local_time_and_dst() -> None:
    # 12:00 UTC is 21:00 in Tokyo (evening peak) and 08:00 (EDT) / 07:00 (EST) in New York.
    noon = np.array([_ns(2026, 7, 1, 12), _ns(2026, 7, 1, 19)], dtype=np.int64)
    tokyo = diurnal_load("Asia/Tokyo", noon)
    assert tokyo.tolist() == [HOURLY_LOAD[21], HOURLY_LOAD[4]]  # 21:00 and 04:00 JST
    assert tokyo[0] > 4 * tokyo[1]
    jan_jul = np.array([_ns(2026, 1, 15, 12), _ns(2026, 7, 15, 12)], dtype=np.int64)
    assert utc_offsets_s("America/New_York", jan_jul).tolist() == [-5 * 3600, -4 * 3600]
    assert utc_offsets_s("America/Phoenix", jan_jul).tolist() == [-7 * 3600, -7 * 3600]
    ny = diurnal_load("America/New_York", jan_jul)
    assert ny[0] != pytest.approx(ny[1])  # same UTC hour, different local hour


def test_settings_reject_bad_values() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="jitter_s"):
        small(interval_s=1.0, jitter_s=0.6)
    with pytest.raises(ValidationError, match="coverage_5g"):
        small(coverage_5g={"JP": 1.5, "US": 0.9})


def test_gaps_never_exceed_gap_ticks_in_a_row() -> None:
    m = FleetModel(small(gap_probability=0.6, gap_ticks=3, sites_per_country=3, silent_after_s=0))
    present = FleetGenerator(m, START_S * NS).block(400).present
    assert 0.2 < 1 - present.mean() < 0.6
    for row in present:
        missing = 0
        for p in row.tolist():
            missing = 0 if p else missing + 1
            assert missing <= 3
    with pytest.raises(ValueError, match="record_link_bps"):
        small(record_link_bps=1e18, interval_s=3600, gap_ticks=100)


def test_injected_faults_duplicates_late_batches_and_a_silent_site() -> None:
    """Duplicates repeat a delivered batch exactly (same agent_id, seq and bytes); a late
    batch arrives after newer batches of its site; the last site sends nothing from
    ceil(silent_after_s / interval) on, the others go on."""
    s = small(
        sites_per_country=2,
        interval_s=10.0,
        jitter_s=1.0,
        duplicate_probability=0.2,
        late_probability=0.2,
        late_delay_s=30.0,
        silent_after_s=200.0,
        gap_probability=0,
    )
    sim = Simulation(s)
    batches = sim.run(60)
    decoded = [(b, wire.parse_batch(sim.encode(b))) for b in batches]
    first: dict[tuple[str, int], bytes] = {}
    dups = late = 0
    for b, pbb in decoded:
        key = (pbb.agent_id, pbb.seq)
        raw = sim.encode(b)
        if b.kind == "duplicate":
            dups += 1
            assert first[key] == raw  # the original went first, and this is the same batch
        else:
            assert key not in first  # apart from duplicates, no (agent_id, seq) repeats
            first[key] = raw
    for i, (b, _) in enumerate(decoded):
        if b.kind == "late":
            late += 1
            newer = [
                o
                for o, _ in decoded[:i]
                if o.site.index == b.site.index and o.kind == "normal" and o.seq > b.seq
            ]
            assert newer, "a late batch is delivered after newer batches of its site"
    assert dups > 0
    assert late > 0

    silent = sim.model.silent_site
    assert silent == sim.model.n_sites - 1
    silent_from = START_S * NS + 20 * 10 * NS  # tick ceil(200 / 10)
    for b, pbb in decoded:
        times = (
            wire.counter_columns(pbb).time_unix_nano.tolist()
            + wire.gauge_columns(pbb).time_unix_nano.tolist()
        )
        if b.site.index == silent:
            assert max(times) < silent_from
    assert any(b.site.index == silent for b in batches)  # it did send until then
    others_last = max(
        max(wire.counter_columns(p).time_unix_nano.tolist())
        for b, p in decoded
        if b.site.index != silent and len(p.counters.value)
    )
    assert others_last >= START_S * NS + 59 * 10 * NS  # the others run to the end
