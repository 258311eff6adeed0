"""BatchBuilder.build_bytes encodes the same Batch as build() (the agent's fast path)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from collector import wire
from collector.agent.batch import BatchBuilder, counter_def, gauge_def
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.agent_support import SITE

rows = st.lists(
    st.tuples(
        st.booleans(),
        st.integers(0, 3),
        st.integers(-(2**63), 2**63 - 1),
        st.integers(0, 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=True),
    ),
    max_size=30,
)


def _fill(b: BatchBuilder, data: list[tuple[bool, int, int, int, float]], vec: int) -> None:
    cdefs = [
        counter_def(
            "link_in_octets",
            {"link": f"et-{k}", "media": "optical"},
            unit="bytes",
            bits=32 if k % 2 else 64,
            start_time_unix_nano=k,
        )
        for k in range(4)
    ]
    gdefs = [
        gauge_def("link_optical_rx_power_dbm", {"link": f"et-{k}"}, unit="dBm", scale=0.5) for k in range(4)
    ]
    for is_counter, k, t, v, g in data:
        if is_counter:
            b.counter(cdefs[k], t, v)
        else:
            b.gauge(gdefs[k], t, g)
    if vec:
        idx = np.arange(vec) % 4
        b.counter_columns(
            cdefs, idx, np.arange(vec, dtype=np.int64), np.arange(vec, dtype=np.uint64) * np.uint64(2**40)
        )
        b.gauge_columns(gdefs, idx, np.arange(vec, dtype=np.int64), np.linspace(-3, 3, vec))


@given(
    rows, st.integers(0, 5), st.integers(1, 2**64 - 1), st.integers(-(2**63), 2**63 - 1), st.text(max_size=8)
)
def test_build_bytes_equals_build(
    data: list[tuple[bool, int, int, int, float]], vec: int, seq: int, created: int, agent: str
) -> None:
    a = BatchBuilder(agent, SITE, "boot-x")
    b = BatchBuilder(agent, SITE, "boot-x")
    _fill(a, data, vec)
    _fill(b, data, vec)
    want = a.build(seq, created)
    raw = b.build_bytes(seq, created)
    got = pb.Batch.FromString(raw)
    assert got == want
    assert len(b) == 0  # reset like build()
    for cols in (wire.counter_columns, wire.gauge_columns):
        x, y = cols(got), cols(want)
        assert np.array_equal(x.series_index, y.series_index)
        assert np.array_equal(x.value, y.value)
