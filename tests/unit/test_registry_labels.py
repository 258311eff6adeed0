"""The registry: the checkpoint's labels column (SeriesRegistry.labels_column) against the
per-series construction it replaces (the same values, nulls for free ids, [] for a series
without entity labels, and the cache dropped whenever a series comes or goes), and a table's
packed lookup entries."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.aggregate.registry import N_CODES, SeriesRegistry, Table, unpacked

_labels = st.lists(st.text(max_size=6), max_size=4).map(tuple)
_keys = st.lists(st.none() | _labels, max_size=40)


def _reference(keys: list[tuple[str, ...] | None]) -> pl.Series:
    return pl.Series("labels", [list(k) if k is not None else None for k in keys], dtype=pl.List(pl.String))


def _registry(keys: list[tuple[str, ...] | None]) -> SeriesRegistry:
    reg = SeriesRegistry(10_000)
    reg.site("jp-site-000", "JP", "Kanto")
    reg.keys = [None if k is None else (0, 0, k) for k in keys]
    reg.free = [i for i, k in enumerate(keys) if k is None]
    reg.series_key = {k: i for i, k in enumerate(reg.keys) if k is not None}
    return reg


@settings(max_examples=200, deadline=None)
@given(keys=_keys)
def test_the_labels_column_is_the_per_series_one(keys: list[tuple[str, ...] | None]) -> None:
    got = _registry(keys).labels_column()
    assert got.dtype == pl.List(pl.String)
    assert got.to_list() == _reference(keys).to_list()


@settings(max_examples=50, deadline=None)
@given(keys=_keys, more=_labels)
def test_the_cached_column_follows_new_and_released_series(
    keys: list[tuple[str, ...] | None], more: tuple[str, ...]
) -> None:
    reg = _registry([k for k in dict.fromkeys(keys)])  # series keys are distinct
    reg.grow(len(reg.keys))
    assert (
        reg.labels_column().to_list() == _reference([None if k is None else k[2] for k in reg.keys]).to_list()
    )
    if (0, 0, more) in reg.series_key:
        return
    sid = reg._reserve((0, 0, more))  # a new series (ids are reused first)
    reg._init_new([sid])
    now = [None if k is None else k[2] for k in reg.keys]
    assert reg.labels_column().to_list() == _reference(now).to_list()
    reg.release(np.array([sid]))
    after = [None if k is None else k[2] for k in reg.keys]
    assert reg.labels_column().to_list() == _reference(after).to_list()


@settings(max_examples=100, deadline=None)
@given(
    entries=st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.sampled_from([32, 64]), st.integers(0, N_CODES - 1)),
        max_size=50,
    )
)
def test_a_tables_packed_entries_unpack_to_its_columns(entries: list[tuple[int, int, int]]) -> None:
    """The one-gather lookup of a poll's samples (Table.packed) gives back each entry's series
    id, counter width and code, at the widest ids too."""
    table = Table(
        np.array([e[2] for e in entries], np.int8),
        np.array([e[0] for e in entries], np.uint32),
        np.zeros(len(entries), np.int64),
        np.array([e[1] for e in entries], np.uint8),
    )
    sid, bits, code = unpacked(table.packed)
    for got, want in ((sid, table.sid), (bits, table.bits), (code, table.code)):
        assert got.dtype == want.dtype
        assert np.array_equal(got, want)
