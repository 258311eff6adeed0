"""The hand-written wire codec (collector/wire.py) against the protobuf runtime.

Every primitive and every key is checked byte for byte against what `SerializeToString()`
writes, so the codec cannot drift from the generated contract.
"""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given
from hypothesis import strategies as st

from collector import wire
from collector.agent.batch import BatchBuilder, counter_def, delta_def, gauge_def
from collector.errors import ProtocolError
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.agent_support import SITE
from tests.ingest_support import unknown_field

U64 = st.integers(0, 2**64 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
U32 = st.integers(0, 2**32 - 1)
F64 = st.floats(allow_nan=False)


@given(U64)
def test_varint_round_trips_and_matches_the_runtime(n: int) -> None:
    raw = wire.encode_varint(n)
    assert wire.varint_size(n) == len(raw)
    assert wire.read_varint(raw + b"\x01", 0) == (n, len(raw))
    assert wire.read_varint(b"\x00" + raw, 1) == (n, len(raw) + 1)
    if n:  # Ack.seq is a uint64 (field 1): the runtime writes key 0x08 then the varint
        assert pb.Ack(seq=n).SerializeToString() == b"\x08" + raw


@given(U64)
def test_a_truncated_varint_is_a_protocol_error(n: int) -> None:
    raw = wire.encode_varint(n)
    for cut in range(len(raw)):
        with pytest.raises(ProtocolError, match="truncated varint"):
            wire.read_varint(raw[:cut], 0)


def test_a_varint_longer_than_ten_bytes_is_a_protocol_error() -> None:
    assert wire.read_varint(b"\xff" * 9 + b"\x01", 0) == (2**64 - 1, 10)
    with pytest.raises(ProtocolError, match="too long"):
        wire.read_varint(b"\xff" * 10 + b"\x01", 0)


def _batch_with(name: str) -> pb.Batch:
    """A Batch with only field `name` set to a value the runtime writes."""
    fd = pb.Batch.DESCRIPTOR.fields_by_name[name]
    b = pb.Batch()
    if fd.type == FieldDescriptor.TYPE_STRING:
        setattr(b, name, "x")
    elif fd.type == FieldDescriptor.TYPE_MESSAGE:
        if fd.is_repeated:
            getattr(b, name).add()
        else:
            getattr(b, name).SetInParent()
    else:
        setattr(b, name, 1)
    return b


@pytest.mark.parametrize("name", [f.name for f in pb.Batch.DESCRIPTOR.fields])
def test_every_batch_field_has_the_key_the_runtime_writes(name: str) -> None:
    f = getattr(wire.BATCH, name)
    assert f.number == pb.Batch.DESCRIPTOR.fields_by_name[name].number
    raw = _batch_with(name).SerializeToString()
    assert raw.startswith(f.key_bytes)
    assert wire.read_varint(raw, 0) == (f.key, len(f.key_bytes))


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (wire.COUNTERS, pb.CounterColumns),
        (wire.GAUGES, pb.GaugeColumns),
        (wire.DELTAS, pb.DeltaColumns),
        (wire.PERIOD_GAUGES, pb.PeriodGaugeColumns),
    ],
)
def test_column_keys_are_the_packed_keys_the_runtime_writes(layout: wire.ColumnLayout, message: type) -> None:
    assert [f.name for f in layout.fields] == [f.name for f in message.DESCRIPTOR.fields]
    for f in layout.fields:
        m = message()
        getattr(m, f.name).append(1)
        raw = m.SerializeToString()
        assert raw.startswith(f.key_bytes)
        assert f.wire_type == wire.WIRE_LEN
        assert len(raw) == len(f.key_bytes) + 1 + layout.dtypes[layout.slot[f.number]].itemsize


@given(st.integers(1, 2**29 - 1), st.binary(max_size=300))
def test_len_delimited_size_is_the_length_written(number: int, payload: bytes) -> None:
    key = number << 3 | wire.WIRE_LEN
    f = wire.Field("x", number, wire.WIRE_LEN, key, wire.encode_varint(key))
    raw = f.len_delimited(payload)
    assert f.len_delimited_size(len(payload)) == len(raw)
    assert wire.skip_field(raw, len(f.key_bytes), wire.WIRE_LEN) == len(raw)
    assert raw.endswith(payload)


@given(st.integers(1, 2**29 - 1), st.sampled_from([0, 1, 2, 3, 5]), st.binary(max_size=40))
def test_skip_field_ends_exactly_after_any_field_and_refuses_a_truncated_one(
    number: int, wire_type: int, payload: bytes
) -> None:
    raw = unknown_field(number, wire_type, payload)
    key_len = wire.varint_size(number << 3 | wire_type)
    assert wire.skip_field(raw + b"tail", key_len, wire_type, number) == len(raw)
    for cut in range(key_len, len(raw)):
        with pytest.raises(ProtocolError):
            wire.skip_field(raw[:cut], key_len, wire_type, number)


def test_skip_field_refuses_an_invalid_wire_type_and_a_mismatched_group_end() -> None:
    with pytest.raises(ProtocolError, match="invalid wire type 7"):
        wire.skip_field(b"\x00", 0, 7)
    with pytest.raises(ProtocolError, match="mismatched group end"):
        wire.skip_field(wire.encode_varint(9 << 3 | 4), 0, wire.WIRE_GROUP_START, 8)


samples = st.lists(st.tuples(U32, I64, U64, F64), max_size=40)
periods = st.lists(st.tuples(U32, I64, I64, U64, F64), max_size=40)


@given(samples)
def test_sample_columns_encode_as_the_runtime_does_and_decode_back(
    rows: list[tuple[int, int, int, float]],
) -> None:
    idx = [r[0] for r in rows]
    t = [r[1] for r in rows]
    cv = [r[2] for r in rows]
    gv = [r[3] for r in rows]
    c = pb.CounterColumns(series_index=idx, time_unix_nano=t, value=cv)
    g = pb.GaugeColumns(series_index=idx, time_unix_nano=t, value=gv)
    assert wire.encode_columns(idx, t, cv, gauge=False) == c.SerializeToString()
    assert wire.encode_columns(idx, t, gv, gauge=True) == g.SerializeToString()
    got_c = wire.COUNTERS.decode(c.SerializeToString())
    got_g = wire.GAUGES.decode(g.SerializeToString())
    assert [a.tolist() for a in got_c] == [idx, t, cv]
    assert [a.tolist() for a in got_g] == [idx, t, gv]
    assert [a.dtype for a in got_c] == [np.uint32, np.int64, np.uint64]
    assert got_g[2].dtype == np.float64


@given(periods)
def test_period_columns_encode_as_the_runtime_does_and_decode_back(
    rows: list[tuple[int, int, int, int, float]],
) -> None:
    idx, start, end, dv, gv = ([r[k] for r in rows] for k in range(5))
    d = pb.DeltaColumns(series_index=idx, start_time_unix_nano=start, time_unix_nano=end, value=dv)
    g = pb.PeriodGaugeColumns(series_index=idx, start_time_unix_nano=start, time_unix_nano=end, value=gv)
    assert wire.encode_period_columns(idx, start, end, dv, gauge=False) == d.SerializeToString()
    assert wire.encode_period_columns(idx, start, end, gv, gauge=True) == g.SerializeToString()
    assert [a.tolist() for a in wire.DELTAS.decode(d.SerializeToString())] == [idx, start, end, dv]
    assert [a.tolist() for a in wire.PERIOD_GAUGES.decode(g.SerializeToString())] == [idx, start, end, gv]


@given(samples, st.integers(0, 39))
def test_split_and_repeated_columns_decode_as_one(rows: list[tuple[int, int, int, float]], cut: int) -> None:
    idx = [r[0] for r in rows]
    t = [r[1] for r in rows]
    v = [r[2] for r in rows]
    raw = wire.encode_columns(idx[:cut], t[:cut], v[:cut], gauge=False) + wire.encode_columns(
        idx[cut:], t[cut:], v[cut:], gauge=False
    )
    parsed = pb.CounterColumns.FromString(raw)  # the runtime concatenates repeated fields
    got = wire.COUNTERS.decode(raw)
    assert [a.tolist() for a in got] == [
        list(parsed.series_index),
        list(parsed.time_unix_nano),
        list(parsed.value),
    ]


@given(st.binary(max_size=60))
def test_column_decoding_of_any_bytes_gives_arrays_or_a_protocol_error(raw: bytes) -> None:
    try:
        got = wire.COUNTERS.decode(raw)
    except ProtocolError:
        return
    assert [a.dtype for a in got] == [np.uint32, np.int64, np.uint64]


scalar_rows = st.lists(
    st.tuples(
        st.sampled_from(["counter", "gauge", "delta", "period_gauge"]),
        st.integers(0, 2),
        st.integers(-(2**63), 2**63 - 3),  # a period ends 0..2 ns after its start
        U64,
        F64,
    ),
    max_size=30,
)


@given(
    scalar_rows,
    st.integers(1, 2**64 - 1),
    I64.filter(bool),  # build_bytes always writes created_unix_nano; the runtime omits a zero
    st.text(max_size=8),
    st.text(max_size=8),
    st.none() | st.tuples(st.integers(1, 2**63), st.integers(1, 2**63)),
)
def test_build_bytes_is_byte_for_byte_serialize_to_string(
    rows: list[tuple[str, int, int, int, float]],
    seq: int,
    created: int,
    agent: str,
    boot: str,
    unissued: tuple[int, int] | None,
) -> None:
    def fill(b: BatchBuilder) -> BatchBuilder:
        for kind, k, t, v, g in rows:
            labels = {"link": f"et-{k}"}
            if kind == "counter":
                b.counter(
                    counter_def("link_in_octets", labels, unit="bytes", bits=64, start_time_unix_nano=k), t, v
                )
            elif kind == "gauge":
                b.gauge(gauge_def("link_rx_power_dbm", labels, unit="dBm", scale=0.5), t, g)
            elif kind == "delta":
                b.delta(delta_def("cell_pm_count", labels, unit="1"), t, t + k, v)
            else:
                b.period_gauge(gauge_def("cell_pm_mean", labels, unit="1"), t, t + k, g)
        return b

    want = fill(BatchBuilder(agent, SITE, boot, unissued)).build(seq, created).SerializeToString()
    assert fill(BatchBuilder(agent, SITE, boot, unissued)).build_bytes(seq, created) == want
