"""BatchBuilder: series table dedup, scalar and vectorised columns agree."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from collector import wire
from collector.agent.batch import BatchBuilder, SiteInfo, counter_def, gauge_def

SITE = SiteInfo("jp-tokyo-01", "JP", "Kanto", "Asia/Tokyo")


def test_equal_series_share_one_index_and_build_resets() -> None:
    b = BatchBuilder("agent-1", SITE, "boot-a")
    d = counter_def("link_in_octets", {"link": "et-0/0/1", "media": "optical"}, unit="bytes")
    b.counter(d, 10, 5)
    b.counter(counter_def("link_in_octets", {"media": "optical", "link": "et-0/0/1"}, unit="bytes"), 20, 7)
    b.gauge(gauge_def("link_oper_up", {"link": "et-0/0/1"}, unit="bool"), 20, 1.0)
    batch = wire.parse_batch(b.build(seq=3, created_unix_nano=99).SerializeToString())
    assert len(batch.series) == 2
    assert batch.seq == 3
    assert batch.site.country == "JP"
    assert list(batch.counters.series_index) == [0, 0]
    assert list(batch.gauges.series_index) == [1]
    assert len(b) == 0
    assert b.series_count == 0


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2**64 - 1)), min_size=1, max_size=50))
def test_vectorised_counters_match_scalar_ones(rows: list[tuple[int, int]]) -> None:
    defs = [counter_def("c", {"i": str(k)}, unit="bytes") for k in range(3)]
    scalar = BatchBuilder("a", SITE, "b")
    for t, (k, v) in enumerate(rows):
        scalar.counter(defs[k], t, v)
    vec = BatchBuilder("a", SITE, "b")
    for d in defs:  # same table order as the scalar path may differ: compare resolved series
        vec.series_index(d)
    for d in defs:
        scalar.series_index(d)
    vec.counter_columns(
        defs,
        np.array([k for k, _ in rows]),
        np.arange(len(rows), dtype=np.int64),
        np.array([v for _, v in rows], dtype=np.uint64),
    )
    a = scalar.build(1, 0)
    b = vec.build(1, 0)

    def resolved(batch):  # type: ignore[no-untyped-def]
        cols = wire.counter_columns(batch)
        names = [dict((lb.name, lb.value) for lb in s.labels)["i"] for s in batch.series]
        return [
            (names[i], int(t), int(v))
            for i, t, v in zip(cols.series_index, cols.time_unix_nano, cols.value, strict=True)
        ]

    assert resolved(a) == resolved(b)
