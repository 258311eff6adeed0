"""Forward compatibility: unknown fields at every level of a Batch are skipped, never an error.

A field added by a newer telemetry.v1 (or any other legal unknown field) must leave the
columns exactly as they were, for the ingest validation and the aggregator's decoder alike.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector import wire
from collector.aggregate.decode import decode
from collector.errors import ProtocolError
from collector.ingest.validate import Limits, validate
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.ingest_support import LEVELS, make_batch, unknown_field, with_unknown


@pytest.mark.parametrize("level", LEVELS)
def test_unknown_field_at_every_level_keeps_columns_and_validates(level: str) -> None:
    b = make_batch(series=6, points=3)
    plain = b.SerializeToString()
    raw = with_unknown(b, level, unknown_field(1000, 2, b"future"))
    assert raw != plain
    assert len(raw) > len(plain)
    parsed = wire.parse_batch(raw)
    validate(parsed, Limits(), parsed.created_unix_nano)  # raises on any rule
    ref = wire.parse_batch(plain)
    for get in (wire.counter_columns, wire.gauge_columns):
        got, want = get(parsed), get(ref)
        assert np.array_equal(got.series_index, want.series_index)
        assert np.array_equal(got.time_unix_nano, want.time_unix_nano)
        assert np.array_equal(got.value, want.value)
    d = decode(raw)  # the aggregator reads the very same bytes
    assert (d.seq, d.n_samples) == (b.seq, 18)


_wire_types = st.sampled_from([0, 1, 2, 3, 5])


# field numbers above every known one (1..10) at every level; a known number with another
# wire type is tested below
@given(
    st.lists(
        st.tuples(st.sampled_from(LEVELS), st.integers(32, 2**29 - 1), _wire_types, st.binary(max_size=40)),
        min_size=1,
        max_size=6,
    )
)
def test_any_unknown_fields_anywhere_leave_the_columns_exact(
    extra: list[tuple[str, int, int, bytes]],
) -> None:
    b = make_batch(series=4, points=2)
    want_c, want_g = wire.counter_columns(b), wire.gauge_columns(b)
    for level, number, wt, payload in extra:
        b = wire.parse_batch(with_unknown(b, level, unknown_field(number, wt, payload)))
    got_c, got_g = wire.counter_columns(b), wire.gauge_columns(b)
    assert np.array_equal(got_c.value, want_c.value)
    assert np.array_equal(got_g.value, want_g.value)
    assert np.array_equal(got_c.series_index, want_c.series_index)


@pytest.mark.parametrize("wt", [0, 5])
def test_known_column_number_with_another_wire_type_is_skipped_as_unknown(wt: int) -> None:
    b = make_batch(series=2, points=2)
    want = wire.counter_columns(b)
    # field 3 (fixed64 value) as a varint or a fixed32: the runtime keeps it as an unknown
    # field (wire type 1 would be the legal unpacked encoding of one more value)
    raw = with_unknown(b, "counters", unknown_field(3, wt, b"\x01\x02\x03\x04\x05\x06\x07\x08"))
    got = wire.counter_columns(wire.parse_batch(raw))
    assert np.array_equal(got.value, want.value)


def test_truncated_unknown_field_in_columns_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        wire.COUNTERS.decode(b"\x7a\x10abc")  # field 15, 16 bytes announced


@given(st.integers(1, 2**64 - 1), st.binary(max_size=30))
def test_peek_seq_finds_the_seq_of_a_batch_broken_after_its_header(seq: int, tail: bytes) -> None:
    head = pb.Batch(agent_id="a", seq=seq).SerializeToString()
    assert wire.peek_seq(head + b"\x0f" + tail) == seq  # 0x0f: wire type 7 does not exist
    assert wire.peek_seq(b"\x0f" + head) == 0
