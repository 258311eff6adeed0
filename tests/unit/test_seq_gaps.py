"""Seqs an agent reserved but never issued (a crash leaves the rest of its block unused):
declared by the spool on restart, carried on the wire, and kept out of the aggregator's
completeness ledger; a real gap is still reported missing."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.agent.batch import BatchBuilder
from collector.agent.config import SpoolSettings
from collector.agent.spool import Spool
from collector.aggregate.config import AggregateSettings
from collector.aggregate.dedup import Agent
from collector.aggregate.state import PartitionState
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.agent_support import SITE, fill
from tests.aggregate_support import NS, T0, SeriesDef

CFG = AggregateSettings(allowed_lateness_s=10, site_idle_s=30)
SERIES = [SeriesDef("link_in_octets", {"link": "a", "media": "copper"})]


def _spool(tmp: Path, **kw: object) -> Spool:
    s = Spool(
        SpoolSettings(dir=tmp, compression="none", **kw),  # type: ignore[arg-type]
        clock_ns=lambda: 10**9,
    )
    s.open()
    return s


def test_crash_declares_the_unused_rest_of_the_block(tmp_path: Path) -> None:
    sp = _spool(tmp_path, seq_block=100)
    for _ in range(7):
        sp.append(sp.next_seq(), 0, 1, b"x")
    sp.ack(range(1, 8))  # everything acked; the segment being written stays
    sp._unlock()  # like SIGKILL: no close()
    sp2 = _spool(tmp_path, seq_block=100)
    assert sp2.next_seq() == 101
    assert sp2.unissued == (8, 100)


def test_clean_close_hands_the_block_back(tmp_path: Path) -> None:
    sp = _spool(tmp_path, seq_block=100)
    for _ in range(7):
        sp.append(sp.next_seq(), 0, 1, b"x")
    sp.close()
    sp2 = _spool(tmp_path, seq_block=100)
    assert sp2.unissued is None
    assert sp2.next_seq() == 8  # nothing skipped, nothing reused


def test_batch_carries_the_declaration_both_encodings() -> None:
    b = BatchBuilder("a1", SITE, "boot", (8, 100))
    raw = fill(b, T0).build_bytes(101, 5)
    parsed = pb.Batch.FromString(raw)
    assert (parsed.unissued_seq_first, parsed.unissued_seq_last) == (8, 100)
    assert raw == fill(b, T0).build(101, 5).SerializeToString()
    plain = pb.Batch.FromString(fill(BatchBuilder("a1", SITE, "boot"), T0).build_bytes(1, 5))
    assert (plain.unissued_seq_first, plain.unissued_seq_last) == (0, 0)


def _batch(seq: int, t_s: int, boot: str, gap: tuple[int, int] | None = None) -> bytes:
    b = pb.Batch(
        agent_id="a1",
        seq=seq,
        boot_id=boot,
        site=pb.Site(site_id="jp-1", country="JP", region="Kanto", timezone="UTC"),
    )
    s = SERIES[0]
    b.series.append(
        pb.Series(
            metric=s.metric,
            kind=pb.COUNTER,
            unit="bytes",
            counter_bits=64,
            labels=[pb.Label(name=k, value=v) for k, v in s.labels.items()],
        )
    )
    b.counters.series_index.append(0)
    b.counters.time_unix_nano.append(T0 + t_s * NS)
    b.counters.value.append(1000 + t_s)
    if gap is not None:
        b.unissued_seq_first, b.unissued_seq_last = gap
    return b.SerializeToString()


def _ledger(st_: PartitionState) -> tuple[int, int]:
    site = st_.view().sites[0]
    return site.expected, site.received


def test_restarted_agent_is_complete_and_a_real_gap_still_counts() -> None:
    st_ = PartitionState(0, CFG)
    off = 0
    for seq in range(1, 59):  # first boot: 1..58
        st_.add(off, _batch(seq, seq, "b1"))
        off += 1
    for k, seq in enumerate(range(1025, 1040)):  # second boot after a crash
        if seq == 1030:
            continue  # really lost
        st_.add(off, _batch(seq, 100 + k, "b2", (59, 1024)))
        off += 1
    expected, received = _ledger(st_)
    assert received == 58 + 14
    assert expected - received == 1  # only seq 1030
    # survives a checkpoint
    st2 = PartitionState.restore(st_.snapshot(), CFG)
    assert _ledger(st2) == (expected, received)


def test_a_declared_seq_that_arrives_anyway_counts_as_issued() -> None:
    st_ = PartitionState(0, CFG)
    st_.add(0, _batch(1, 1, "b1"))
    st_.add(1, _batch(5, 5, "b1"))  # arrived before the declaration, inside it
    st_.add(2, _batch(11, 11, "b2", (2, 10)))
    st_.add(3, _batch(7, 7, "b1"))  # inside it, after it
    expected, received = _ledger(st_)
    assert (expected, received) == (4, 4)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 200), st.integers(0, 20)), max_size=8),
    st.sets(st.integers(1, 250), max_size=60),
)
def test_expected_matches_a_set_model(gaps: list[tuple[int, int]], seen: set[int]) -> None:
    """expected = seqs in [lo, hi] not declared, plus declared ones that arrived."""
    a: Agent | None = None
    declared: set[int] = set()
    events: list[tuple[str, int, int]] = [("seq", s, 0) for s in sorted(seen)]
    events += [("gap", lo, lo + n) for lo, n in gaps]
    events.sort(key=lambda e: (e[1], e[0]))
    arrived: set[int] = set()
    for kind, x, y in events:
        if kind == "seq":
            if a is None:
                a = Agent(0, x, x, 1, 1)
            else:
                a.hi = max(a.hi, x)
                a.mask = 0  # recomputed below
                a.received += 1
                if a.in_gap(x):
                    a.gap_hits += 1
            arrived.add(x)
            a.mask = sum(1 << (a.hi - s) for s in arrived if a.hi - s < 64)
        elif a is not None:
            a.declare_unissued(x, y, 64)
            declared |= set(range(x, y + 1))
    if a is None:
        return
    lo, hi = min(arrived), max(arrived)
    want = sum(1 for s in range(lo, hi + 1) if s not in declared or s in arrived)
    assert a.expected() == want


def test_poll_path_reads_the_declaration_on_the_fast_path_too() -> None:
    """The aggregator's per-poll path (add_many) and its fast decoder (a record repeating its
    agent's series table, read without the protobuf runtime) see fields 14-15 exactly as the
    full parse does: a poll of the second boot's records gives the one-by-one ledger."""
    recs = [(seq, _batch(seq, seq, "b1")) for seq in range(1, 59)]
    recs += [
        (seq, _batch(seq, 100 + k, "b2", (59, 1024)))
        for k, seq in enumerate(range(1025, 1040))
        if seq != 1030
    ]
    one = PartitionState(0, CFG)
    for off, (_, r) in enumerate(recs):
        one.add(off, r)
    poll = PartitionState(0, CFG)
    n, errors = poll.add_many([(off, r, None) for off, (_, r) in enumerate(recs)])
    assert not errors
    assert n > 0
    assert poll._decoder.fast >= len(recs) - 3  # the table repeats: fast after its first record
    assert _ledger(poll) == _ledger(one)
    expected, received = _ledger(poll)
    assert expected - received == 1  # only seq 1030


def test_fast_and_full_decode_agree_on_the_declaration() -> None:
    from collector.aggregate.decode import Decoder

    dec = Decoder()
    first = dec.read(_batch(1025, 1, "b2", (59, 1024)))  # full parse: the table is new
    again = dec.read(_batch(1026, 2, "b2", (59, 1024)))  # fast path
    assert dec.fast == 1
    assert first.unissued == again.unissued == (59, 1024)
    assert dec.read(_batch(1027, 3, "b2")).unissued is None
    # a range that is not before the batch's seq, or reversed, is ignored (a hint only)
    assert dec.read(_batch(1028, 4, "b2", (59, 1028))).unissued is None
    assert dec.read(_batch(1029, 5, "b2", (90, 80))).unissued is None
