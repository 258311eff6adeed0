"""The poll path: a whole poll of records at once gives exactly what one record at a time
gives, the decoder's fast path reads exactly what the full parse reads, and published
floats do not depend on the window log."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collector.aggregate.config import AggregateSettings
from collector.aggregate.decode import Decoder, decode
from collector.aggregate.grouping import order_by_series_time
from collector.aggregate.heap import retain_freed_heap
from collector.aggregate.state import PartitionState
from collector.errors import ProtocolError
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.aggregate_support import NS, T0, SeriesDef, make_batch, make_fleet

CFG = AggregateSettings(windows_s=(10, 60, 300), allowed_lateness_s=10)


def _state_bits(st: PartitionState) -> dict[str, object]:
    """Everything published, compared bit for bit."""
    v = st.view()
    out: dict[str, object] = {
        "ledger": [
            (
                s.site_id,
                s.batches,
                s.dup_batches,
                s.samples,
                s.dropped,
                s.expected,
                s.received,
                s.samples_expected,
                s.samples_counted,
            )
            for s in v.sites
        ],
        "closed": st.closed_ns,
        "wm": st.wm_ns,
        "records": st.records,
    }
    for w in st.windows_s:
        out[f"c{w}"] = v.latest_counters[w].sort("sid").rows()
        g = v.latest_gauges[w].sort("sid")
        out[f"g{w}"] = [
            tuple(r[:2]) + tuple(np.float64(x).tobytes() if isinstance(x, float) else x for x in r[2:])
            for r in g.rows()
        ]
    return out


def _feed(
    records: list[bytes], cuts: list[int], cfg: AggregateSettings = CFG, log: bool = False
) -> PartitionState:
    st = PartitionState(0, cfg)
    if log:
        st.on_window = lambda *a: None
    bounds = [0, *sorted(set(cuts)), len(records)]
    for a, b in itertools.pairwise(bounds):
        if a < b:
            st.add_many([(i, records[i], None) for i in range(a, b)])
            st.advance()
    return st


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 240), max_size=12))
def test_poll_grouping_does_not_change_anything(cuts: list[int]) -> None:
    fleet = make_fleet()
    values = [v for _, v in fleet.records]
    one_by_one = PartitionState(0, CFG)
    for i, v in enumerate(values):
        one_by_one.add(i, v)
        one_by_one.advance()
    grouped = _feed(values, [c % (len(values) + 1) for c in cuts])
    assert _state_bits(grouped) == _state_bits(one_by_one)


@settings(max_examples=20, deadline=None)
@given(
    max_samples=st.integers(1, 400),
    bad_at=st.sets(st.integers(0, 119), max_size=4),
    instead=st.booleans(),
)
@example(max_samples=1, bad_at={0, 106, 108}, instead=True)  # lost batches: found the bug 1ed2f4e fixed
def test_a_poll_closed_in_sample_bounded_steps_gives_what_one_close_gives(
    max_samples: int, bad_at: set[int], instead: bool
) -> None:
    """The service adds a big poll in prefixes of about max_close_samples samples and closes
    after each (add_prefix): the same state as one add_many and one close, every record
    taken exactly once, each refusal at its own record. Bad records come between the fleet's
    batches or `instead` of some (a lost batch: a series without samples in the close's newest
    window still gets its own newest window, as with the window log)."""
    values = [v for _, v in make_fleet().records][:120]
    for i in sorted(bad_at):  # ascending: each lands at its own index
        if instead:
            values[i] = b"\xff" + values[i][:5]
        else:
            values.insert(i, b"\xff" + values[i][:5])
    rows = [(i, v, None) for i, v in enumerate(values)]
    whole = PartitionState(0, CFG)
    _, want_errors = whole.add_many(rows)
    whole.advance()
    steps = PartitionState(0, CFG)
    pos, got_errors, prefixes = 0, [], 0
    while pos < len(rows):
        _, errors, taken = steps.add_prefix(rows[pos:], max_samples)
        assert taken >= 1
        got_errors += [(pos + i, exc.reason) for i, exc in errors]
        pos += taken
        prefixes += 1
        steps.advance()
    assert pos == len(rows)
    assert steps.records == whole.records == len(rows)
    assert steps.next_offset == whole.next_offset == len(rows)
    assert got_errors == [(i, exc.reason) for i, exc in want_errors]
    assert [i for i, _ in got_errors] == sorted(bad_at)
    assert _state_bits(steps) == _state_bits(whole)
    if max_samples < 50:
        assert prefixes > 1


def test_bad_records_inside_a_poll_are_refused_alone() -> None:
    series = [SeriesDef("link_in_octets", {"link": "a", "media": "optical"})]
    good = [
        make_batch(agent="x", seq=s, site="s", series=series, counters=[(0, T0 + s * NS, s * 10)])
        for s in range(1, 5)
    ]
    bad_index = make_batch(agent="x", seq=9, site="s", series=series, counters=[(3, T0, 1)])
    records = [good[0], b"\xff\xff", good[1], bad_index, good[2], b"", good[3]]
    st = PartitionState(0, CFG)
    accepted, errors = st.add_many([(i, v, None) for i, v in enumerate(records)])
    assert accepted == 4
    assert [(i, str(e)) for i, e in errors] == [(1, str(errors[0][1])), (3, "series_index"), (5, "empty")]
    assert st.next_offset == len(records)
    assert st.records == len(records)
    assert st.sites[0].batches == 4  # the refused seq 9 never reached the dedup memory
    assert st.dedup.agents["x"].hi == 4


# the reason codes docs/aggregator.md lists for the dead-letter header and decode-error label
_DOC = (Path(__file__).resolve().parents[2] / "docs" / "aggregator.md").read_text()
_DOCUMENTED_REASONS = set(
    re.findall(r"`([a-z_]+)`", _DOC.split("The reason (header and label alike)", 1)[1].split(".\n", 1)[0])
)


def test_the_documented_reason_codes_are_the_ones_raised() -> None:
    raised = set()
    for f in ("collector/aggregate/decode.py", "collector/aggregate/periods.py", "collector/wire.py"):
        text = (Path(__file__).resolve().parents[2] / f).read_text()
        raised |= set(re.findall(r'ProtocolError\(\s*"([a-z_]+)"', text))
    assert raised == _DOCUMENTED_REASONS, (
        "docs/aggregator.md's list of dead-letter reasons differs from the ProtocolError codes: "
        f"not documented {sorted(raised - _DOCUMENTED_REASONS)}, "
        f"never raised {sorted(_DOCUMENTED_REASONS - raised)}"
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_every_refused_record_carries_a_short_reason_code(junk: bytes) -> None:
    """The dead-letter header and the decode-error label come from ProtocolError.reason: a
    short code (never a message), whatever the bytes."""
    series = [SeriesDef("link_in_octets", {"link": "a", "media": "optical"})]
    good = make_batch(agent="x", seq=1, site="s", series=series, counters=[(0, T0, 1)])
    st_ = PartitionState(0, CFG)
    _, errors = st_.add_many([(0, junk, None), (1, good[: len(good) // 2], None), (2, b"", None)])
    reasons = {e.reason for _, e in errors}
    assert {i for i, _ in errors} >= {1, 2}
    assert reasons <= _DOCUMENTED_REASONS, reasons
    assert dict((i, e.reason) for i, e in errors)[2] == "empty"


def _columns_equal(a: object, b: object) -> bool:
    return all(
        np.array_equal(getattr(a, f), getattr(b, f)) for f in ("series_index", "time_unix_nano", "value")
    )


def test_fast_path_reads_what_the_full_parse_reads() -> None:
    series = [SeriesDef("link_in_octets", {"link": f"e{i}", "media": "optical"}) for i in range(3)]
    series.append(SeriesDef("link_speed_bytes", {"link": "e0", "media": "optical"}, kind=pb.GAUGE))
    dec = Decoder()
    for seq in range(1, 6):
        raw = make_batch(
            agent="a",
            seq=seq,
            site="jp-1",
            series=series,
            counters=[(i, T0 + seq * NS, seq * 1000 + i) for i in range(3)],
            gauges=[(3, T0 + seq * NS, 1.5 * seq)],
        )
        got, want = dec.decode(raw), decode(raw)
        assert (got.agent_id, got.seq, got.site_id, got.country, got.region, got.boot_id, got.table_key) == (
            want.agent_id,
            want.seq,
            want.site_id,
            want.country,
            want.region,
            want.boot_id,
            want.table_key,
        )
        assert _columns_equal(got.counters, want.counters)
        assert _columns_equal(got.gauges, want.gauges)
        assert [s.metric for s in got.series()] == [s.metric for s in want.series()]
    assert dec.fast == 4  # the first record teaches the table, the others repeat it


@pytest.mark.parametrize("mutate", ["new_table", "unknown_field", "repeated_header", "unpacked", "bad_index"])
def test_fast_path_falls_back_or_refuses_like_the_full_parse(mutate: str) -> None:
    series = [SeriesDef("link_in_octets", {"link": "e0", "media": "optical"})]
    dec = Decoder()
    dec.read(make_batch(agent="a", seq=1, site="s", series=series, counters=[(0, T0, 1)]))
    raw = make_batch(agent="a", seq=2, site="s", series=series, counters=[(0, T0 + NS, 2)])
    if mutate == "new_table":
        raw = make_batch(agent="a", seq=2, site="s", series=[*series, series[0]], counters=[(1, T0 + NS, 2)])
    elif mutate == "unknown_field":
        raw += b"\xa0\x06\x01"  # field 100, varint: a newer contract
    elif mutate == "repeated_header":
        raw += b"\x10\x07"  # seq again: protobuf keeps the last one
    elif mutate == "unpacked":
        b = pb.Batch.FromString(raw)
        b.ClearField("counters")
        # the same sample with each column unpacked (legal protobuf, not what serializers write)
        raw = (
            b.SerializeToString()
            + b"\x3a\x17"
            + b"\x0d"
            + (0).to_bytes(4, "little")
            + b"\x11"
            + (T0 + NS).to_bytes(8, "little")
            + b"\x19"
            + (2).to_bytes(8, "little")
        )
    elif mutate == "bad_index":
        raw = make_batch(agent="a", seq=2, site="s", series=series, counters=[(5, T0 + NS, 2)])
    try:
        want = decode(raw)
    except ProtocolError as exc:
        with pytest.raises(ProtocolError, match=str(exc).split(":")[0]):
            dec.decode(raw)
        return
    got = dec.decode(raw)
    assert mutate in ("new_table", "unknown_field", "repeated_header", "unpacked")
    assert dec.fast == 0
    assert (got.seq, got.agent_id) == (want.seq, want.agent_id)
    assert _columns_equal(got.counters, want.counters)


def test_window_log_does_not_change_published_float_bits() -> None:
    series = [
        SeriesDef("link_optical_rx_power_dbm", {"link": f"e{i}", "media": "optical"}, kind=pb.GAUGE)
        for i in range(20)
    ]
    rng = np.random.default_rng(7)
    records = []
    for seq in range(1, 80):
        gauges = [
            (i, T0 + (seq * 3 + k) * NS, float(rng.normal(-3.0, 1e3))) for k in range(3) for i in range(20)
        ]
        records.append(make_batch(agent="a", seq=seq, site="s", series=series, gauges=gauges))
    plain = _feed(records, list(range(0, 80, 7)))
    logged = _feed(records, list(range(0, 80, 7)), log=True)
    assert _state_bits(plain) == _state_bits(logged)
    assert len(plain.latest_gauges[300]) == 20
    assert plain.latest_gauges[300]["sum"].dtype == pl.Float64


@settings(max_examples=20, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 240), max_size=8),
    windows=st.sampled_from([(10, 60, 300), (10, 60, 300, 900), (10, 30), (10,)]),
)
def test_without_the_window_log_the_state_is_the_same_as_with_it(
    cuts: list[int], windows: tuple[int, ...]
) -> None:
    """Without the window log a close keeps only the pane rows the newest windows read (and
    rolls the top tier only for them); what it publishes and what it keeps for later closes
    must be what the close that computes every window gives, whatever the tiers."""
    cfg = AggregateSettings(windows_s=windows, allowed_lateness_s=10)
    values = [v for _, v in make_fleet(n_batches=80).records]
    cuts = [c % (len(values) + 1) for c in cuts]
    plain = _feed(values, cuts, cfg)
    logged = _feed(values, cuts, cfg, log=True)
    assert _state_bits(plain) == _state_bits(logged)
    assert any(len(plain.latest_counters[w]) for w in windows)
    for a, b in zip(
        (*plain.counter_panes, *plain.gauge_panes), (*logged.counter_panes, *logged.gauge_panes), strict=True
    ):
        assert a.sort("sid", "pane").equals(b.sort("sid", "pane"))


def test_records_total_counts_each_record_once() -> None:
    """Records fetched before the seek to a restored offset are skipped, and not counted."""
    from types import SimpleNamespace

    from aiokafka import TopicPartition
    from prometheus_client import CollectorRegistry

    from collector.aggregate.service import Aggregator
    from collector.config import load_settings

    settings = load_settings(kafka={"topic": "t"}, aggregate={"metrics_listen": ""})
    agg = Aggregator(settings, bootstrap="127.0.0.1:1", registry=CollectorRegistry())
    agg._consumer = SimpleNamespace(highwater=lambda tp: None)  # type: ignore[assignment]
    series = [SeriesDef("link_in_octets", {"link": "a", "media": "optical"})]
    values = [
        make_batch(agent="x", seq=s + 1, site="s", series=series, counters=[(0, T0 + s * NS, s)])
        for s in range(10)
    ]
    st = PartitionState(0, settings.aggregate)
    for i in range(5):
        st.add(i, values[i])
    agg.states[0] = st  # restored: next offset 5
    recs = [
        SimpleNamespace(
            offset=i, value=values[i], headers=(("schema", b"telemetry.v1.Batch"),), partition=0, key=b"s"
        )
        for i in range(10)
    ]
    agg._process({TopicPartition("t", 0): recs})
    agg._process({TopicPartition("t", 0): recs[5:]})  # fetched again after the seek
    assert agg.registry.get_sample_value("collector_aggregate_records_total", {"partition": "0"}) == 5
    assert st.records == 10
    assert st.sites[0].dup_batches == 0


def test_the_service_closes_a_big_poll_in_steps_and_dead_letters_the_right_records() -> None:
    """With max_close_samples below the poll's samples the service adds and closes the poll in
    steps: each bad record is dead-lettered once, as itself, each record counted once, and
    the state is the one a single close gives."""
    from types import SimpleNamespace

    from aiokafka import TopicPartition
    from prometheus_client import CollectorRegistry

    from collector.aggregate.service import Aggregator
    from collector.config import load_settings

    settings = load_settings(kafka={"topic": "t"}, aggregate={"metrics_listen": "", "max_close_samples": 40})
    agg = Aggregator(settings, bootstrap="127.0.0.1:1", registry=CollectorRegistry())
    agg._consumer = SimpleNamespace(highwater=lambda tp: None)  # type: ignore[assignment]
    closes: list[int] = []
    values = [v for _, v in make_fleet().records][:96]
    for i in (3, 41, 42, 99):  # between the fleet's batches (see the test above)
        values.insert(i, b"\x0a\xff")  # truncated: refused
    recs = [
        SimpleNamespace(offset=i, value=v, headers=None, partition=0, key=b"s") for i, v in enumerate(values)
    ]
    st_ = agg.states[0] = PartitionState(0, settings.aggregate)
    advance = st_.advance
    st_.advance = lambda *a, **k: closes.append(st_.records) or advance(*a, **k)  # type: ignore[method-assign]
    dead, _ = agg._process({TopicPartition("t", 0): recs})
    assert [r.offset for r, _ in dead] == [3, 41, 42, 99]
    assert agg.registry.get_sample_value("collector_aggregate_records_total", {"partition": "0"}) == 100
    assert st_.records == 100
    assert st_.next_offset == 100
    assert len(closes) > 2  # stepped
    assert closes[-1] == 100  # the last close after every record
    whole = PartitionState(0, settings.aggregate)
    whole.add_many([(r.offset, r.value, None) for r in recs])
    whole.advance()
    assert _state_bits(st_) == _state_bits(whole)


def test_a_partition_behind_batches_its_closes_and_one_caught_up_closes_every_poll() -> None:
    """Behind (high watermark past the next offset) a partition closes once per
    close_interval_s or max_close_samples, caught up after every poll; either way the
    published state is the one of a close after every poll."""
    from types import SimpleNamespace

    from aiokafka import TopicPartition
    from prometheus_client import CollectorRegistry

    from collector.aggregate.service import Aggregator
    from collector.config import load_settings

    settings = load_settings(
        kafka={"topic": "t"},
        aggregate={"metrics_listen": "", "close_interval_s": 3600, "max_close_samples": 10**9},
    )
    agg = Aggregator(settings, bootstrap="127.0.0.1:1", registry=CollectorRegistry())
    end = {"hw": 10**6}
    agg._consumer = SimpleNamespace(highwater=lambda tp: end["hw"])  # type: ignore[assignment]
    values = [v for _, v in make_fleet().records]
    recs = [
        SimpleNamespace(offset=i, value=v, headers=None, partition=0, key=b"s") for i, v in enumerate(values)
    ]
    st_ = agg.states[0] = PartitionState(0, settings.aggregate)
    closes: list[int] = []
    advance = st_.advance
    st_.advance = lambda *a, **k: closes.append(st_.records) or advance(*a, **k)  # type: ignore[method-assign]
    every = PartitionState(0, settings.aggregate)
    polls = [recs[i : i + 10] for i in range(0, len(recs), 10)]
    for i, poll in enumerate(polls):
        if i == len(polls) - 1:
            end["hw"] = poll[-1].offset + 1  # the last poll catches up
        agg._process({TopicPartition("t", 0): poll})
        every.add_many([(r.offset, r.value, None) for r in poll])
        every.advance()
    # behind: the first poll's close only (the interval is an hour); caught up: a close
    assert closes == [10, len(recs)]
    assert _state_bits(st_) == _state_bits(every)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(-5, 5)), max_size=300), st.sampled_from([0, T0, 2**62])
)
def test_series_time_order_is_lexsort(pairs: list[tuple[int, int]], base: int) -> None:
    """The close path's one-key stable sort orders exactly like lexsort((t, sid)), repeated
    timestamps included (both stable), and falls back to lexsort when the key would overflow."""
    sid = np.array([p[0] for p in pairs], np.uint32)
    t = np.array([base + p[1] * NS for p in pairs], np.int64)
    assert np.array_equal(order_by_series_time(sid, t), np.lexsort((t, sid)))
    if len(t):
        wide = t.copy()
        wide[0] = 0  # span ~ base: (max sid + 1) * span can pass 2^63
        assert np.array_equal(order_by_series_time(sid, wide), np.lexsort((wide, sid)))


def test_heap_setting_applies_on_glibc_only_when_asked() -> None:
    import platform

    assert retain_freed_heap(0) is False  # 0 = glibc's defaults, nothing is called
    applied = retain_freed_heap(256)
    assert applied is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def _unissued(raw: bytes, first: int, last: int) -> bytes:
    b = pb.Batch.FromString(raw)
    b.unissued_seq_first, b.unissued_seq_last = first, last
    return b.SerializeToString()


def _with_created(raw: bytes, created: int) -> bytes:
    b = pb.Batch.FromString(raw)
    b.created_unix_nano = created
    return b.SerializeToString()


@pytest.mark.parametrize("created", [0, T0])
@pytest.mark.parametrize(
    "mutate",
    [
        "none",
        "long_seq",
        "new_site",
        "new_boot",
        "created_toggled",
        "new_table",
        "unknown_field",
        "repeated_header",
        "gauges_only",
        "no_samples",
        "bad_index",
        "other_agent",
        "unissued",
        "unissued_bad",
    ],
)
def test_known_layout_reads_what_the_full_parse_reads(created: int, mutate: str) -> None:
    """An agent's third record on is read by comparing it with the layout of its previous one;
    whatever differs goes through the other paths, with the full parse's result or refusal."""
    series = [SeriesDef("link_in_octets", {"link": f"e{i}", "media": "optical"}) for i in range(2)]
    series.append(SeriesDef("link_speed_bytes", {"link": "e0", "media": "optical"}, kind=pb.GAUGE))

    def batch(seq: int, **kw: object) -> bytes:
        args: dict[str, object] = {
            "agent": "a",
            "seq": seq,
            "site": "s",
            "series": series,
            "counters": [(0, T0 + seq * NS, seq), (1, T0 + seq * NS, 2 * seq)],
            "gauges": [(2, T0 + seq * NS, 1.25e9)],
        }
        args.update(kw)
        return _with_created(make_batch(**args), created)  # type: ignore[arg-type]

    dec = Decoder()
    for seq in (1, 2):
        dec.read(batch(seq))
    assert dec._layouts  # the second record left its layout
    raw = {
        "none": lambda: batch(3),
        "long_seq": lambda: batch(300),
        "new_site": lambda: batch(3, site="s2"),
        "new_boot": lambda: batch(3, boot="boot-2"),
        "created_toggled": lambda: _with_created(batch(3), 0 if created else T0),
        "new_table": lambda: batch(3, series=[*series, series[0]]),
        "unknown_field": lambda: batch(3) + b"\xa0\x06\x01",
        "repeated_header": lambda: batch(3) + b"\x10\x07",
        "gauges_only": lambda: batch(3, counters=[]),
        "no_samples": lambda: batch(3, counters=[], gauges=[]),
        "bad_index": lambda: batch(3, counters=[(7, T0, 1)]),
        "other_agent": lambda: batch(3, agent="b"),
        "unissued": lambda: _unissued(batch(3000), 1000, 2000),
        "unissued_bad": lambda: _unissued(batch(3), 5, 1),
    }[mutate]()
    if mutate in ("none", "long_seq", "unissued", "unissued_bad"):
        assert dec._known(raw) is not None
        full = Decoder().read(raw)  # the full parse: a decoder that has not seen the agent
        assert dec._known(raw).unissued == full.unissued  # type: ignore[union-attr]
        if mutate == "unissued":  # an agent's restarted boot declares the seqs it skipped
            assert full.unissued == (1000, 2000)
    try:
        want = decode(raw)
    except ProtocolError as exc:
        with pytest.raises(ProtocolError, match=str(exc).split(":")[0]):
            dec.decode(raw)
        return
    got = dec.decode(raw)
    assert (got.agent_id, got.seq, got.site_id, got.country, got.region, got.boot_id) == (
        want.agent_id,
        want.seq,
        want.site_id,
        want.country,
        want.region,
        want.boot_id,
    )
    assert _columns_equal(got.counters, want.counters)
    assert _columns_equal(got.gauges, want.gauges)
    assert [s.metric for s in got.series()] == [s.metric for s in want.series()]


@settings(max_examples=80, deadline=None)
@given(
    seq=st.one_of(
        st.integers(3, 127),
        st.integers(128, 2**14 - 1),
        st.integers(2**14, 2**21 - 1),
        st.integers(2**21, 2**35),
    )
)
def test_the_known_layout_reads_seqs_of_every_size_as_the_full_parse(seq: int) -> None:
    """Seqs of one to five varint bytes (two and three read inline, longer ones by the varint
    reader) read by the known layout, record by record and as a poll, as the full parse."""
    series = [SeriesDef("link_in_octets", {"link": "e0", "media": "optical"})]

    def batch(s: int) -> bytes:
        return make_batch(agent="a", seq=s, site="s", series=series, counters=[(0, T0 + s, s)])

    dec = Decoder()
    for s in (1, 2):
        dec.read(batch(s))
    raw = batch(seq)
    one = dec._known(raw)
    assert one is not None
    assert one.seq == seq == Decoder().read(raw).seq
    poll = dec.read_known([(0, raw, None), (1, batch(seq + 1), None)])
    assert poll is not None
    assert poll.seqs == [seq, seq + 1]


_RECORD_SHAPES = st.sampled_from(["same", "more", "fewer", "one", "gauges", "trailing", "unissued", "empty"])


@settings(max_examples=60, deadline=None)
@given(shapes=st.lists(_RECORD_SHAPES, min_size=1, max_size=12), n0=st.integers(1, 40))
def test_column_layout_shortcut_reads_what_the_full_parse_reads(shapes: list[str], n0: int) -> None:
    """An agent's counters-only record laid out like its previous one is read at the same
    column offsets; any record shaped otherwise (more or fewer samples, gauges, a field after
    the columns, unissued seqs) must still read exactly as the full parse reads it."""
    series = [SeriesDef("link_in_octets", {"link": f"e{i}", "media": "optical"}) for i in range(40)]
    series.append(SeriesDef("link_speed_bytes", {"link": "e0", "media": "optical"}, kind=pb.GAUGE))
    dec = Decoder()

    def batch(seq: int, shape: str) -> bytes:
        n = {"more": n0 + 7, "fewer": max(1, n0 - 1), "one": 1, "empty": 0}.get(shape, n0)
        counters = [(i % 40, T0 + seq * NS + i, seq * 1000 + i) for i in range(n)]
        gauges = [(40, T0 + seq * NS, 1.25e9)] if shape == "gauges" else []
        raw = make_batch(agent="a", seq=seq, site="s", series=series, counters=counters, gauges=gauges)
        if shape == "trailing":
            raw += b"\xa0\x06\x01"  # an unknown field after the columns
        if shape == "unissued":
            raw = _unissued(raw, 1, seq - 1) if seq > 2 else raw
        return raw

    for seq, shape in enumerate(["same", "same", *shapes], start=1):
        raw = batch(seq, shape)
        want = decode(raw)
        got = dec.decode(raw)
        assert (got.agent_id, got.seq, got.site_id, got.boot_id) == (
            want.agent_id,
            want.seq,
            want.site_id,
            want.boot_id,
        )
        assert _columns_equal(got.counters, want.counters), (seq, shape)
        assert _columns_equal(got.gauges, want.gauges), (seq, shape)
        assert dec.read(raw).unissued == Decoder().read(raw).unissued


def test_checkpoint_rounds_take_at_most_their_share_of_the_time() -> None:
    from collector.aggregate.state_topic import checkpoint_every

    assert checkpoint_every(0.01, 5.0, 0.25) == 5.0  # small state: the configured interval
    assert checkpoint_every(2.0, 5.0, 0.25) == 8.0  # 2 s rounds: every 8 s, 25 % of the time
    for spent in (0.0, 0.5, 1.25, 3.0, 40.0):
        every = checkpoint_every(spent, 5.0, 0.25)
        assert every >= 5.0
        assert spent / every <= 0.25


def test_the_checkpoint_interval_counts_from_when_the_member_owns_partitions() -> None:
    from collector.aggregate.state_topic import checkpoint_due

    # the loop started at 0; a group join took 5 s: no checkpoint right after the assignment
    assert not checkpoint_due(5.02, 0.0, 5.0, 5.0)
    assert checkpoint_due(10.0, 0.0, 5.0, 5.0)  # one interval after it
    # owning partitions for long: every interval after the last round, as before
    assert not checkpoint_due(14.9, 10.0, 5.0, 5.0)
    assert checkpoint_due(15.0, 10.0, 5.0, 5.0)
    assert not checkpoint_due(100.0, 0.0, None, 5.0)  # owning none: nothing to checkpoint


def test_a_duplicate_with_a_bigger_series_table_than_the_new_records_is_dropped_alone() -> None:
    """A resend (after a lost ack, an agent restart) sits in a poll beside new records whose
    tables are smaller: its series indexes point past every kept table. It is counted as a
    duplicate; the poll's new records are aggregated (it crashed the aggregator with an
    IndexError, found by bench/e2e.py's real-agent run)."""
    wide = [SeriesDef("link_in_octets", {"link": f"l{i}", "media": "optical"}) for i in range(8)]
    narrow = wide[:1]
    first = make_batch(agent="x", seq=1, site="s", series=wide, counters=[(7, T0, 70)])
    st = PartitionState(0, CFG)
    assert st.add_many([(0, first, None)]) == (1, [])
    again = make_batch(agent="x", seq=1, site="s", series=wide, counters=[(7, T0, 70)])
    new = make_batch(agent="x", seq=2, site="s", series=narrow, counters=[(0, T0 + NS, 5)])
    accepted, errors = st.add_many([(1, again, None), (2, new, None)])
    assert (accepted, errors) == (1, [])
    assert st.sites[0].dup_batches == 1
    assert st.sites[0].batches == 2


@settings(max_examples=30, deadline=None)
@given(
    n_links=st.integers(1, 12),
    cap=st.integers(1, 40),
    freed=st.lists(st.integers(0, 30), max_size=6, unique=True),
)
def test_a_series_table_registers_its_new_series_at_once_as_one_by_one(
    n_links: int, cap: int, freed: list[int]
) -> None:
    """_build_table reserves a table's new series ids and sets their arrays together; the
    registry must end as if each series had been registered alone (freed ids reused first,
    the per-site cap, speed series unresolving their link's counters)."""
    from collector.aggregate.registry import SeriesRegistry

    series = []
    for i in range(n_links):
        labels = [pb.Label(name="link", value=f"e{i}"), pb.Label(name="media", value="optical")]
        for m, kind in (
            ("link_in_octets", pb.COUNTER),
            ("link_speed_bytes", pb.GAUGE),
            ("link_out_octets", pb.COUNTER),
        ):
            series.append(pb.Series(metric=m, kind=kind, counter_bits=64, labels=labels, scale=1.0 + i))

    def registry() -> SeriesRegistry:
        reg = SeriesRegistry(cap)
        other = reg.site("old", "JP", "Kanto")
        reg._build_table(other, series[:30])  # ids to free, then reuse
        reg.release(np.array([x for x in freed if x < len(reg.keys)], np.int64))
        reg.site("s", "US", "us-east")
        return reg

    together, alone = registry(), registry()
    t = together._build_table(1, series)
    one = [alone._build_table(1, [s]) for s in series]
    assert t.sid.tolist() == [o.sid[0] for o in one]
    assert t.code.tolist() == [o.code[0] for o in one]
    n = len(together.keys)
    assert together.keys == alone.keys
    assert together.series_key == alone.series_key
    assert together.sites[1].series == alone.sites[1].series <= cap
    for name in ("site_of", "metric_of", "last_sample", "live", "scale", "speed_series"):
        assert np.array_equal(getattr(together, name)[:n], getattr(alone, name)[:n]), name
