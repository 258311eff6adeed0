"""The 3GPP TS 32.435 PM XML reader and the cell source built on it."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector import wire
from collector.agent.batch import BatchBuilder
from collector.agent.config import CellSourceSettings
from collector.agent.sources.cell import (
    PM_MEASUREMENTS,
    CellSource,
    PmFileError,
    parse_pm_bytes,
    read_pm_file,
    render_meas_collec,
)
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from tests.agent_support import SITE

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.",
              min_size=1, max_size=12)
values = st.one_of(st.integers(0, 2**53), st.floats(-200, 1e9, allow_nan=False))
cells_st = st.dictionaries(ids, st.dictionaries(st.sampled_from(sorted(PM_MEASUREMENTS)), values,
                                                min_size=1), min_size=1, max_size=5)
T0 = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))


@given(cells_st, ids, st.booleans(), st.sampled_from([60, 300, 900]))
def test_pm_file_round_trip(cells: dict[str, dict[str, float | int]], element: str,
                            positional: bool, dur: int) -> None:
    data = render_meas_collec(begin=T0, duration_s=dur, element=element, cells=cells,
                              positional=positional)
    pm = parse_pm_bytes(data, "gnb1.xml")
    got = {(v.cell, v.meas_type): v.value for _, v in pm}
    want = {(c, m): v for c, vals in cells.items() for m, v in vals.items()}
    assert got == want
    assert {v.gnb for _, v in pm} == {element}
    (period,) = pm.periods
    assert period.end_unix_nano - period.begin_unix_nano == dur * 10**9
    assert period.begin_unix_nano == int(T0.timestamp()) * 10**9


@given(cells_st, st.data())
def test_damaged_pm_file_raises_error_naming_the_file(cells: dict[str, dict[str, float | int]],
                                                      data: st.DataObject) -> None:
    good = render_meas_collec(begin=T0, duration_s=900, element="gnb-7", cells=cells)
    how = data.draw(st.sampled_from(["truncate", "flip", "garbage"]))
    if how == "truncate":
        bad = good[: data.draw(st.integers(0, len(good) - 1))]
    elif how == "flip":
        i = data.draw(st.integers(0, len(good) - 1))
        bad = good[:i] + bytes([data.draw(st.integers(0, 255))]) + good[i + 1:]
    else:
        bad = data.draw(st.binary(max_size=200))
    name = "/pm/A20261125.0900+0900-0915+0900_gnb-7.xml"
    err = None
    try:
        parse_pm_bytes(bad, name)
    except PmFileError as exc:  # any other exception fails the test
        err = str(exc)
    if how != "flip":  # a flipped byte may leave a valid file (e.g. inside a value)
        assert err is not None
    if err is not None:
        assert name in err


@pytest.mark.parametrize(("body", "problem"), [
    (b"<measCollecFile><fileHeader/></measCollecFile>", "beginTime missing"),
    (b"<other/>", "not <measCollecFile>"),
    (b"<measCollecFile", "not well-formed"),
    (b'<!DOCTYPE x [<!ENTITY a "b">]><measCollecFile/>', "DTD"),
])
def test_specific_problems_are_named(body: bytes, problem: str) -> None:
    with pytest.raises(PmFileError, match=problem) as ei:
        parse_pm_bytes(body, "x.xml")
    assert "x.xml" in str(ei.value)


def test_result_count_mismatch_is_an_error() -> None:
    data = render_meas_collec(begin=T0, duration_s=900, element="g", positional=True,
                              cells={"1": {"RRU.PrbTotDl": 50, "RRC.ConnMean": 3}})
    bad = data.replace(b"<measResults>3 50</measResults>", b"<measResults>3</measResults>")
    assert bad != data
    with pytest.raises(PmFileError, match="1 results for 2"):
        parse_pm_bytes(bad, "f.xml")


async def test_cell_source_sends_per_period_deltas_not_a_running_sum_and_moves_files(tmp_path: Path) -> None:
    pm = tmp_path / "pm"
    pm.mkdir()
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    for k in range(2):
        begin = t0 + dt.timedelta(minutes=15 * k)
        (pm / f"A{k}.xml").write_bytes(render_meas_collec(
            begin=begin, duration_s=900, element="gNB-Tokyo-1",
            cells={"101": {"DRB.PdcpSduVolumeDL": 1000 + k, "RRU.PrbTotDl": 40 + k,
                           "MM.HoExeIntraReq": 5}}))
    (pm / "broken.xml").write_bytes(b"<measCollecFile><oops")
    old = time.time() - 60
    for f in pm.iterdir():
        os.utime(f, (old, old))
    src = CellSource(CellSourceSettings(enabled=True, pm_dir=pm, settle_s=1))
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    batch = wire.parse_batch(b.build(1, 1).SerializeToString())
    series = list(batch.series)
    assert not len(wire.counter_columns(batch))
    cols = wire.delta_columns(batch)
    vol = sorted((int(s), int(t), int(v)) for i, s, t, v in zip(
        cols.series_index, cols.start_unix_nano, cols.time_unix_nano, cols.value, strict=True)
        if series[i].metric == "DRB.PdcpSduVolumeDL")
    begin0 = int(t0.timestamp()) * 10**9
    p = 900 * 10**9
    assert vol == [(begin0, begin0 + p, 1000), (begin0 + p, begin0 + 2 * p, 1001)]  # own periods
    vdef = next(s for s in series if s.metric == "DRB.PdcpSduVolumeDL")
    assert vdef.kind == pb.DELTA
    assert (vdef.counter_bits, vdef.start_time_unix_nano) == (0, 0)
    assert vdef.scale == 125_000.0
    assert {lab.name: lab.value for lab in vdef.labels} == {"cell": "101", "gnb": "gNB-Tokyo-1"}
    prb = next(s for s in series if s.metric == "RRU.PrbTotDl")
    assert (prb.unit, prb.scale) == ("ratio", 0.01)
    assert sorted(p.name for p in (pm / "done").iterdir()) == ["A0.xml", "A1.xml"]
    assert [p.name for p in (pm / "failed").iterdir()] == ["broken.xml"]
    assert (src.files_done, src.files_failed, src.stats.errors) == (2, 1, 1)


def test_gzip_file_is_read(tmp_path: Path) -> None:
    import gzip

    p = tmp_path / "a.xml.gz"
    p.write_bytes(gzip.compress(render_meas_collec(begin=T0, duration_s=60, element="g",
                                                   cells={"1": {"RRC.ConnMax": 7}})))
    assert [v.value for _, v in read_pm_file(p)] == [7]
    (tmp_path / "b.xml.gz").write_bytes(b"not gzip")
    with pytest.raises(PmFileError, match=r"b\.xml\.gz"):
        read_pm_file(tmp_path / "b.xml.gz")


async def test_files_the_ingest_would_refuse_for_their_times_go_to_failed(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cells = {"1": {"RRC.ConnMax": 3}}
    (tmp_path / "old.xml").write_bytes(render_meas_collec(
        begin=now - dt.timedelta(days=8), duration_s=900, element="g", cells=cells))
    (tmp_path / "future.xml").write_bytes(render_meas_collec(
        begin=now + dt.timedelta(hours=2), duration_s=900, element="g", cells=cells))
    (tmp_path / "ok.xml").write_bytes(render_meas_collec(
        begin=now - dt.timedelta(minutes=30), duration_s=900, element="g", cells=cells))
    src = CellSource(CellSourceSettings(enabled=True, pm_dir=tmp_path, settle_s=0))
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    assert len(b) == 1
    assert sorted(p.name for p in (tmp_path / "failed").iterdir()) == ["future.xml", "old.xml"]
    assert [p.name for p in (tmp_path / "done").iterdir()] == ["ok.xml"]
