"""The spool: record format, recovery from damage, bounds, drops by priority, persisted seq."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.agent.config import SpoolSettings
from collector.agent.spool import Spool, SpoolError
from collector.agent.spool.records import HEADER_SIZE, RAW, ZLIB, decode_payload, encode_record, scan
from collector.agent.spool.seq_file import seq_file_body

records_st = st.lists(
    st.tuples(
        st.integers(1, 2**64 - 1),
        st.integers(0, 9),
        st.integers(-(2**63), 2**63 - 1),
        st.binary(max_size=300),
    ),
    max_size=20,
)


@given(records_st, st.sampled_from([RAW, ZLIB]))
def test_records_round_trip(recs: list[tuple[int, int, int, bytes]], fmt: int) -> None:
    enc = (lambda b: zlib.compress(b, 1)) if fmt == ZLIB else (lambda b: b)
    data = b"".join(encode_record(s, p, c, enc(b), fmt=fmt) for s, p, c, b in recs)
    res = scan(data)
    assert (res.corrupt, res.torn) == (0, 0)
    got = [
        (
            r.seq,
            r.priority,
            r.created_unix_nano,
            decode_payload(r, data[r.offset + HEADER_SIZE : r.offset + HEADER_SIZE + r.length]),
        )
        for r in res.records
    ]
    assert got == recs


@given(records_st.filter(bool), st.data())
def test_truncated_tail_keeps_every_complete_record(
    recs: list[tuple[int, int, int, bytes]], data: st.DataObject
) -> None:
    blobs = [encode_record(*r) for r in recs]
    whole = b"".join(blobs)
    cut = data.draw(st.integers(0, len(whole)))
    res = scan(whole[:cut])
    complete = 0
    pos = 0
    for b in blobs:
        if pos + len(b) > cut:
            break
        complete += 1
        pos += len(b)
    assert [r.seq for r in res.records] == [r[0] for r in recs[:complete]]
    assert res.torn == (1 if cut != pos else 0)
    assert res.corrupt == 0


@given(records_st.filter(lambda r: len(r) >= 3), st.data())
def test_flipped_byte_loses_at_most_the_damaged_record(
    recs: list[tuple[int, int, int, bytes]], data: st.DataObject
) -> None:
    blobs = [encode_record(*r) for r in recs]
    whole = bytearray(b"".join(blobs))
    i = data.draw(st.integers(0, len(whole) - 1))
    whole[i] ^= data.draw(st.integers(1, 255))
    res = scan(bytes(whole))  # never raises
    # which record held the damaged byte
    pos, hit = 0, 0
    for k, b in enumerate(blobs):
        if pos <= i < pos + len(b):
            hit = k
        pos += len(b)
    expected = [r[0] for k, r in enumerate(recs) if k != hit]
    got = [r.seq for r in res.records]
    assert all(s in got for s in expected)
    assert res.corrupt + res.torn >= 1 or got == [r[0] for r in recs]


def _spool(tmp: Path, **kw: object) -> Spool:
    # a clock near the epoch: the small `created` values of these tests never expire; raw
    # records unless a test asks for compression, so sizes are what the test writes
    kw.setdefault("compression", "none")
    s = Spool(SpoolSettings(dir=tmp, **kw), clock_ns=lambda: 10**9)  # type: ignore[arg-type]
    s.open()
    return s


def test_ack_deletes_and_restart_sees_only_unacked(tmp_path: Path) -> None:
    sp = _spool(tmp_path)
    for i in range(10):
        seq = sp.next_seq()
        assert sp.append(seq, i % 2, 1_000 + i, f"batch{seq}".encode())
    assert sp.ack([1, 2, 3, 4]) == 4
    sp.close()
    sp2 = _spool(tmp_path)
    assert sp2.live_seqs() == [5, 6, 7, 8, 9, 10]
    got = []
    while (item := sp2.take_next()) is not None:
        got.append(item)
    assert got == [(s, f"batch{s}".encode()) for s in range(5, 11)]
    assert sp2.next_seq() > 10
    sp2.ack(range(5, 11))
    assert len(sp2) == 0
    assert not list(tmp_path.glob("*.seg"))


def test_seq_never_repeats_without_clean_close(tmp_path: Path) -> None:
    sp = _spool(tmp_path, seq_block=3)
    used = [sp.next_seq() for _ in range(5)]
    # no close(): like SIGKILL, where the kernel releases the lock and nothing else happens.
    # Nothing was appended, so only the seq file remembers.
    sp._unlock()
    sp2 = _spool(tmp_path, seq_block=3)
    assert sp2.next_seq() > max(used)


def test_damaged_seq_file_refuses_to_guess(tmp_path: Path) -> None:
    sp = _spool(tmp_path)
    sp.next_seq()
    sp.close()
    (tmp_path / "seq").write_text("12 deadbeef\n")
    with pytest.raises(SpoolError, match="damaged"):
        _spool(tmp_path)


def test_full_spool_drops_oldest_lowest_priority_segment_first(tmp_path: Path) -> None:
    payload = b"x" * 1000
    rec = HEADER_SIZE + len(payload)
    sp = _spool(tmp_path, max_bytes=64 * 1024, segment_bytes=4 * rec)
    prio = {}
    n = 0
    while sp.counters.dropped["spool_full"] == 0:
        n += 1
        seq = sp.next_seq()
        prio[seq] = 0 if n % 3 else 5
        sp.append(seq, prio[seq], n, payload)
    assert sp.bytes <= 64 * 1024
    live = sp.live_seqs()
    dropped = [s for s in prio if s not in live]
    assert dropped, "something was dropped"
    assert all(prio[s] == 0 for s in dropped)  # high priority survives
    assert dropped == sorted(dropped)[: len(dropped)]
    assert min(s for s in live if prio[s] == 0) > max(dropped)  # the oldest went first
    assert sp.counters.dropped["spool_full"] == len(dropped)


def test_batch_larger_than_spool_is_dropped_and_counted(tmp_path: Path) -> None:
    sp = _spool(tmp_path, max_bytes=64 * 1024)
    assert not sp.append(sp.next_seq(), 0, 1, b"y" * (70 * 1024))
    assert sp.counters.dropped["too_large"] == 1
    assert len(sp) == 0


def test_expired_batches_are_dropped_with_reason(tmp_path: Path) -> None:
    now = [10**18]
    sp = Spool(SpoolSettings(dir=tmp_path, max_age_s=60, segment_bytes=4096), clock_ns=lambda: now[0])
    sp.open()
    for _ in range(3):
        sp.append(sp.next_seq(), 0, now[0], b"z" * 100)
    now[0] += 61 * 10**9
    sp.append(sp.next_seq(), 1, now[0], b"fresh")
    assert sp.counters.dropped["max_age"] == 3
    assert sp.live_seqs() == [4]


def test_corrupt_segment_at_startup_is_skipped_and_counted(tmp_path: Path) -> None:
    sp = _spool(tmp_path, segment_bytes=10**6)
    for _ in range(5):
        sp.append(sp.next_seq(), 0, 1, b"p" * 200)
    sp.close()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    rec = HEADER_SIZE + 200
    data[rec + 40] ^= 0xFF  # inside record 2's payload
    seg.write_bytes(bytes(data[:-50]))  # and a torn tail (record 5)
    (tmp_path / "0-00000000000000000099.seg").write_bytes(os.urandom(300))  # garbage segment
    sp2 = _spool(tmp_path)
    assert sp2.live_seqs() == [1, 3, 4]
    assert sp2.counters.dropped["corrupt"] >= 1
    assert sp2.counters.dropped["torn"] >= 2
    assert sp2.next_seq() > 5  # the seq file still rules


def test_requeue_resends_in_seq_order(tmp_path: Path) -> None:
    sp = _spool(tmp_path)
    for _ in range(4):
        sp.append(sp.next_seq(), 0, 1, b"a")
    taken = [sp.take_next() for _ in range(3)]
    assert [t[0] for t in taken if t] == [1, 2, 3]
    sp.ack([2])
    sp.requeue([3, 1])
    order = []
    while (item := sp.take_next()) is not None:
        order.append(item[0])
    assert order == [1, 3, 4]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["append", "ack", "restart"]), max_size=40))
def test_restart_keeps_exactly_the_unacked(tmp_path: Path, ops: list[str]) -> None:
    d = tmp_path / os.urandom(4).hex()
    sp = _spool(d, segment_bytes=4096)
    live: set[int] = set()
    seen: set[int] = set()
    for op in ops:
        if op == "append":
            s = sp.next_seq()
            assert s not in seen
            seen.add(s)
            sp.append(s, s % 3, s, b"q" * 500)
            live.add(s)
        elif op == "ack" and live:
            s = min(live)
            sp.ack([s])
            live.discard(s)
        elif op == "restart":
            sp.close()
            sp = _spool(d, segment_bytes=4096)
        assert set(sp.live_seqs()) == live


def test_compressed_spool_stores_less_and_returns_the_same_bytes(tmp_path: Path) -> None:
    batch = b"link_in_octets bytes et-0/0/1 optical " * 200
    sizes = {}
    for comp in ("zlib", "none"):
        sp = _spool(tmp_path / comp, compression=comp)
        for _ in range(5):
            sp.append(sp.next_seq(), 1, 1, batch)
        sizes[comp] = sp.bytes
        sp.close()
        sp2 = _spool(tmp_path / comp, compression="none")  # the format is per record
        got = []
        while (item := sp2.take_next()) is not None:
            got.append(item[1])
        assert got == [batch] * 5
    assert sizes["zlib"] * 10 < sizes["none"]


def test_second_agent_on_the_same_spool_is_refused(tmp_path: Path) -> None:
    sp = _spool(tmp_path)
    with pytest.raises(SpoolError, match="in use by another agent"):
        _spool(tmp_path)
    sp.close()
    _spool(tmp_path).close()  # free again after close


def test_unusable_directory_is_a_spool_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("not a directory")
    with pytest.raises(SpoolError, match="cannot use spool directory"):
        _spool(f / "spool")


def test_failed_open_releases_the_lock_and_files(tmp_path: Path) -> None:
    sp = _spool(tmp_path)
    sp.append(sp.next_seq(), 0, 1, b"a")
    sp.close()
    (tmp_path / "seq").write_text("garbage\n")
    with pytest.raises(SpoolError, match="damaged"):
        _spool(tmp_path)
    (tmp_path / "seq").unlink()
    with pytest.raises(SpoolError, match="missing in a spool that was used"):
        _spool(tmp_path)  # not refused as "in use": each failed open let go of the lock
    (tmp_path / "seq").write_bytes(seq_file_body(1024))  # the operator restores it
    sp2 = _spool(tmp_path)
    assert sp2.live_seqs() == [1]
    assert sp2.next_seq() == 1025


def test_missing_seq_file_in_a_drained_spool_is_an_error(tmp_path: Path) -> None:
    sp = _spool(tmp_path)
    for _ in range(3):
        sp.append(sp.next_seq(), 0, 1, b"a")
    sp.ack([1, 2, 3])
    sp.close()
    assert not list(tmp_path.glob("*.seg"))  # nothing left but the seq file remembers
    (tmp_path / "seq").unlink()
    with pytest.raises(SpoolError, match="missing"):
        _spool(tmp_path)


def test_fresh_spool_writes_its_seq_file_at_open(tmp_path: Path) -> None:
    _spool(tmp_path).close()
    assert (tmp_path / "seq").read_bytes() == seq_file_body(0)
    sp = _spool(tmp_path)  # opened and closed without a batch: still fine
    assert sp.next_seq() == 1


def test_a_full_disk_emptying_the_spool_keeps_the_old_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write failing on a full disk retires its segment; when that was the last one, the
    # spool compacts acks.log through acks.tmp, which fails too. The batch must be dropped
    # and counted (not raise), the old journal stay in use, and nothing spooled later be lost:
    # the old journal's descriptor must not be closed and its number reused by the next
    # segment, whose records the journal's appends would then overwrite.
    import errno

    real_write = os.write
    full = [False]

    def write(fd: int, data: bytes) -> int:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    sp = _spool(tmp_path)
    first = sp.next_seq()
    assert sp.append(first, 0, 1_000, b"first")
    assert sp.ack([first]) == 1  # the segment being written stays, empty
    full[0] = True
    lost = sp.next_seq()
    assert not sp.append(lost, 0, 1_001, b"lost")  # dropped, counted
    assert sp.counters.dropped["io_error"] == 1
    full[0] = False
    assert not (tmp_path / "acks.tmp").exists()
    seqs = [sp.next_seq() for _ in range(5)]
    for s in seqs:
        assert sp.append(s, 0, 2_000 + s, f"batch{s}".encode())
    assert sp.ack(seqs[:2]) == 2  # journalled in the old acks.log
    sp.close()
    sp2 = _spool(tmp_path)
    assert sp2.live_seqs() == seqs[2:]
    got = []
    while (item := sp2.take_next()) is not None:
        got.append(item)
    assert got == [(s, f"batch{s}".encode()) for s in seqs[2:]]
    sp2.close()
