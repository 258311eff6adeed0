"""The wire contract: generated code is fresh, columns decode exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector import wire
from collector.errors import ProtocolError
from collector.proto.telemetry.v1 import telemetry_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
U64 = st.integers(min_value=0, max_value=2**64 - 1)
I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def test_committed_generated_code_is_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), I64, U64), max_size=300))
def test_counter_columns_round_trip_exactly(rows: list[tuple[int, int, int]]) -> None:
    b = pb.Batch(agent_id="a", seq=1)
    for i, t, v in rows:
        b.counters.series_index.append(i)
        b.counters.time_unix_nano.append(t)
        b.counters.value.append(v)
    cols = wire.counter_columns(wire.parse_batch(b.SerializeToString()))
    assert cols.value.dtype == np.uint64
    assert [int(x) for x in cols.value] == [r[2] for r in rows]
    assert [int(x) for x in cols.time_unix_nano] == [r[1] for r in rows]
    assert [int(x) for x in cols.series_index] == [r[0] for r in rows]


@given(st.lists(st.floats(allow_nan=False), max_size=100), st.lists(U64, max_size=5))
def test_gauge_columns_keep_unequal_lengths_for_validation(vals: list[float], idx: list[int]) -> None:
    b = pb.Batch()
    b.gauges.value.extend(vals)
    b.gauges.series_index.extend(i % 2**32 for i in idx)
    cols = wire.gauge_columns(wire.parse_batch(b.SerializeToString()))
    assert cols.value.tolist() == vals
    assert len(cols.series_index) == len(idx)
    assert len(cols.time_unix_nano) == 0


def test_unpacked_encoding_from_a_foreign_encoder_is_accepted() -> None:
    # field 3 (value) of CounterColumns written unpacked: tag (3<<3|1) then 8 bytes, twice
    inner = bytes([0x19]) + (7).to_bytes(8, "little") + bytes([0x19]) + (2**64 - 1).to_bytes(8, "little")
    raw = bytes([0x3A, len(inner)]) + inner  # Batch.counters = field 7, wire type 2
    cols = wire.counter_columns(wire.parse_batch(raw))
    assert cols.value.tolist() == [7, 2**64 - 1]


@given(st.binary(max_size=200))
def test_random_bytes_raise_protocol_error_or_parse(data: bytes) -> None:
    try:
        b = wire.parse_batch(data)
    except ProtocolError:
        return
    wire.counter_columns(b)
    wire.gauge_columns(b)


def test_truncated_batch_is_protocol_error() -> None:
    b = pb.Batch(agent_id="agent-1", seq=5)
    b.counters.value.extend([1, 2, 3])
    with pytest.raises(ProtocolError):
        wire.parse_batch(b.SerializeToString()[:-3])
