"""The hardware CRC32C walk over fetched record bytes against aiokafka's own check: it never
passes what aiokafka's check would refuse, and passes what aiokafka passes."""

from __future__ import annotations

from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import kafka_crc

_records = st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=300)), min_size=1, max_size=6)


def _batch(base_offset: int, records: list[tuple[bytes, bytes]]) -> bytes:
    b = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i, (k, v) in enumerate(records):
        b.append(i, timestamp=1_764_000_000_000 + i, key=k, value=v, headers=[("schema", b"x")])
    out = bytearray(b.build())
    out[0:8] = base_offset.to_bytes(8, "big")  # the offset is outside the CRC
    return bytes(out)


def _aiokafka_passes(raw: bytes) -> bool:
    """What aiokafka's consumer does with a fetch: every complete batch read and CRC-checked."""
    records = MemoryRecords(raw)
    try:
        while records.has_next():
            batch = records.next_batch()
            if not batch.validate_crc():
                return False
    except CorruptRecordException:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(
    batches=st.lists(_records, min_size=1, max_size=4),
    flip=st.none() | st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    cut=st.none() | st.floats(0, 1),
)
def test_a_fetch_passes_the_walk_only_if_it_passes_aiokafkas_own_check(
    batches: list[list[tuple[bytes, bytes]]], flip: tuple[float, int] | None, cut: float | None
) -> None:
    raw = bytearray(b"".join(_batch(10 * i, recs) for i, recs in enumerate(batches)))
    if flip is not None:  # one bit flipped anywhere: header, CRC, records
        at, bit = flip
        raw[int(at * len(raw))] ^= 1 << bit
    if cut is not None:  # the broker stopped at its size limit: a partial batch at the end
        raw = raw[: int(cut * len(raw))]
    got = kafka_crc.batches_match(bytes(raw))
    if got:
        assert _aiokafka_passes(bytes(raw))
    if flip is None:
        assert got  # nothing wrong: nothing refused
    elif cut is None and not _aiokafka_passes(bytes(raw)):
        assert not got


@settings(max_examples=100, deadline=None)
@given(recs=_records, at=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_a_flipped_bit_in_what_the_crc_covers_is_caught(
    recs: list[tuple[bytes, bytes]], at: float, bit: int
) -> None:
    raw = bytearray(_batch(0, recs))
    raw[17 + int(at * (len(raw) - 17))] ^= 1 << bit  # the CRC field or anything after it
    assert not kafka_crc.batches_match(bytes(raw))
    assert not _aiokafka_passes(bytes(raw))


def test_a_legacy_message_set_is_left_to_aiokafka() -> None:
    raw = bytearray(_batch(0, [(b"k", b"v")]))
    raw[16] = 1  # magic v1
    assert not kafka_crc.batches_match(bytes(raw))


def test_a_batch_shorter_than_its_header_is_left_to_aiokafka() -> None:
    short = bytes(8) + (20).to_bytes(4, "big") + bytes(20)
    assert not kafka_crc.batches_match(short)
    assert not _aiokafka_passes(short)


def test_install_replaces_aiokafkas_fetcher_names_once_and_uninstall_gives_them_back() -> None:
    from aiokafka.consumer import fetcher

    was_installed = kafka_crc._original is not None
    kafka_crc.uninstall()
    own = (fetcher.MemoryRecords, fetcher.PartitionRecords)
    try:
        assert kafka_crc.install()
        patched = (fetcher.MemoryRecords, fetcher.PartitionRecords)
        assert kafka_crc.install()  # idempotent: the same replacement
        assert (fetcher.MemoryRecords, fetcher.PartitionRecords) == patched
        assert patched[1] is not own[1]
        assert issubclass(patched[1], own[1])
        kafka_crc.uninstall()
        assert (fetcher.MemoryRecords, fetcher.PartitionRecords) == own
    finally:
        if was_installed:
            kafka_crc.install()
