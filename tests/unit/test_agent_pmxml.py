"""The 3GPP TS 32.435 PM XML parser (collector/agent/sources/pm_parser.py) and the cell source's
file lifecycle built on it."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from collector import wire
from collector.agent.batch import BatchBuilder
from collector.agent.config import CellSourceSettings
from collector.agent.metrics import collector_for
from collector.agent.sources.cell import CellSource
from collector.agent.sources.pm_parser import (
    MEASUREMENTS,
    REASONS,
    PmFileError,
    PmSpec,
    parse_pm_bytes,
    read_pm_file,
)
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from collector.simulate.pm_writer import render_meas_collec
from tests.agent_support import SITE

NS = 10**9
ids = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=12
)
T0 = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))


def _valid(spec: PmSpec) -> st.SearchStrategy[float | int]:
    if spec.counter:
        return st.integers(0, 2**64 - 1)
    lo = -200.0 if spec.lo is None else spec.lo
    hi = 1e9 if spec.hi is None else spec.hi
    return st.one_of(st.integers(int(lo) + 1, int(hi)), st.floats(lo, hi, allow_nan=False))


@st.composite
def cell_values(draw: st.DrawFn) -> dict[str, float | int]:
    names = draw(
        st.sets(
            st.sampled_from(sorted(m for m, s in MEASUREMENTS.items() if s.bins is None)),
            min_size=1,
            max_size=8,
        )
    )  # bins (`<name>.Bin<X>`): test_cell_histograms.py
    return {n: draw(_valid(MEASUREMENTS[n])) for n in sorted(names)}


cells_st = st.dictionaries(ids, cell_values(), min_size=1, max_size=4)
offsets = st.integers(-12 * 4, 14 * 4).map(lambda q: dt.timezone(dt.timedelta(minutes=15 * q)))


@settings(max_examples=60, deadline=None)
@given(cells_st, ids, st.booleans(), st.sampled_from([60, 300, 900, 3600]), offsets)
def test_both_encodings_round_trip_with_any_timezone_offset(
    cells: dict[str, dict[str, float | int]], element: str, positional: bool, dur: int, tz: dt.timezone
) -> None:
    begin = T0.astimezone(tz)
    data = render_meas_collec(
        begin=begin, duration_s=dur, element=element, cells=cells, positional=positional
    )
    pm = parse_pm_bytes(data, "gnb1.xml")
    assert not pm.rejected
    assert not pm.unknown
    types = {m for vals in cells.values() for m in vals}
    # the positional encoding writes NIL for a measurement another cell has
    assert pm.nil == (sum(len(types - set(v)) for v in cells.values()) if positional else 0)
    got = {(v.obj.cell, v.spec.metric): v.value for v in pm.values}
    want = {
        (c, m): (float(v) if not MEASUREMENTS[m].counter else v)
        for c, vals in cells.items()
        for m, v in vals.items()
    }
    assert got == want
    assert all(isinstance(v.value, int) for v in pm.values if v.spec.counter)
    assert {v.obj.gnb for v in pm.values} == {element}
    # the same instant whatever the offset the file was written in
    t0 = int(T0.timestamp())  # 2026-11-25T00:00:00Z
    assert pm.periods == {(t0 * NS, (t0 + dur) * NS)}


def test_nil_is_not_a_value_in_both_encodings() -> None:
    cells: dict[str, dict[str, float | int | str]] = {
        "1": {"RRC.ConnMean": 4, "RRU.PrbTotDl": "NIL"},
        "2": {"RRC.ConnMean": "NIL"},
    }
    for positional in (False, True):
        pm = parse_pm_bytes(
            render_meas_collec(begin=T0, duration_s=900, element="g", cells=cells, positional=positional),
            "f.xml",
        )
        assert [(v.obj.cell, v.spec.metric, v.value) for v in pm.values] == [("1", "RRC.ConnMean", 4.0)]
        # positional: cell 2's missing RRU.PrbTotDl is written as NIL too
        assert (pm.nil, dict(pm.rejected)) == (3 if positional else 2, {})


def test_suspect_values_are_kept_and_counted() -> None:
    pm = parse_pm_bytes(
        render_meas_collec(
            begin=T0,
            duration_s=900,
            element="g",
            suspect=frozenset({"2"}),
            cells={"1": {"RRC.ConnMean": 4}, "2": {"RRC.ConnMean": 5, "DRB.PdcpSduVolumeDL": 9}},
        ),
        "f.xml",
    )
    assert sorted((v.obj.cell, v.spec.metric, v.suspect) for v in pm.values) == [
        ("1", "RRC.ConnMean", False),
        ("2", "DRB.PdcpSduVolumeDL", True),
        ("2", "RRC.ConnMean", True),
    ]
    assert pm.suspect == 2
    assert "2 values flagged suspect" in pm.summary()


BAD = [
    ("RRC.ConnMean", "abc", "not_a_number"),
    ("RRC.ConnMean", "NaN", "not_finite"),
    ("L1M.SS-RSRP", "-INF", "not_finite"),
    ("DRB.PdcpSduVolumeDL", "INF", "not_finite"),
    ("DRB.PdcpSduVolumeDL", "-1", "negative"),
    ("MM.HoExeIntraReq", str(2**64), "counter_overflow"),
    ("MM.HoExeIntraReq", "1e30", "counter_overflow"),
    ("DRB.PdcpSduVolumeUL", "1.5", "fractional_counter"),
    ("RRU.PrbTotDl", "100.5", "out_of_range"),
    ("RRU.PrbTotUl", "-0.5", "negative"),
    ("CELL.Availability", "250", "out_of_range"),
    ("RRC.ConnMax", "-3", "negative"),
]


@pytest.mark.parametrize("positional", [False, True])
@pytest.mark.parametrize(("meas", "text", "reason"), BAD)
def test_a_bad_value_rejects_that_value_only(meas: str, text: str, reason: str, positional: bool) -> None:
    assert reason in REASONS
    cells: dict[str, dict[str, float | int | str]] = {
        "1": {meas: text, "RRU.PrbAvailDl": 273},
        "2": {meas: 7, "RRU.PrbAvailDl": 273},
    }
    pm = parse_pm_bytes(
        render_meas_collec(begin=T0, duration_s=900, element="g", cells=cells, positional=positional), "A.xml"
    )
    assert dict(pm.rejected) == {reason: 1}
    assert sorted((v.obj.cell, v.spec.metric) for v in pm.values) == sorted(
        [("1", "RRU.PrbAvailDl"), ("2", meas), ("2", "RRU.PrbAvailDl")]
    )
    assert meas in pm.summary()
    assert reason in pm.summary()


def test_unknown_index_and_extra_results_reject_those_values_only() -> None:
    data = render_meas_collec(
        begin=T0, duration_s=900, element="g", cells={"1": {"RRC.ConnMean": 3, "RRU.PrbTotDl": 50}}
    )
    bad = data.replace(b'<r p="2">50</r>', b'<r p="2">50</r><r p="9">1</r>')
    assert bad != data
    pm = parse_pm_bytes(bad, "f.xml")
    assert dict(pm.rejected) == {"unknown_index": 1}
    assert len(pm.values) == 2
    pos = render_meas_collec(
        begin=T0,
        duration_s=900,
        element="g",
        positional=True,
        cells={"1": {"RRC.ConnMean": 3, "RRU.PrbTotDl": 50}},
    )
    extra = pos.replace(b"<measResults>3 50</measResults>", b"<measResults>3 50 8</measResults>")
    assert extra != pos
    pm = parse_pm_bytes(extra, "f.xml")
    assert dict(pm.rejected) == {"result_count": 1}
    assert len(pm.values) == 2
    fewer = pos.replace(b"<measResults>3 50</measResults>", b"<measResults>3</measResults>")
    pm = parse_pm_bytes(fewer, "f.xml")  # a missing trailing result is simply absent
    assert [(v.spec.metric, v.value) for v in pm.values] == [("RRC.ConnMean", 3.0)]


def test_unknown_measurements_are_counted_not_sent() -> None:
    pm = parse_pm_bytes(
        render_meas_collec(
            begin=T0,
            duration_s=900,
            element="g",
            cells={"1": {"RRC.ConnMean": 3, "VS.Vendor.Thing": 5, "RRU.PrbTotDl.Foo": 2}},
        ),
        "f.xml",
    )
    assert [v.spec.metric for v in pm.values] == ["RRC.ConnMean"]
    # RRU.PrbTotDl has no sub-counters: RRU.PrbTotDl.Foo is not taken for it
    assert dict(pm.unknown) == {"VS.Vendor.Thing": 1, "RRU.PrbTotDl.Foo": 1}


def test_subcounters_are_summed_unless_the_total_is_there() -> None:
    subs = {
        "RRC.ConnEstabAtt.mo-Data": 40,
        "RRC.ConnEstabAtt.emergency": 2,
        "RRC.ConnEstabSucc.mo-Data": 39,
        "DRB.PdcpSduVolumeDL.5QI9": 100,
        "DRB.PdcpSduVolumeDL.5QI1": 5,
    }
    pm = parse_pm_bytes(render_meas_collec(begin=T0, duration_s=900, element="g", cells={"1": subs}), "f.xml")
    assert {v.spec.metric: v.value for v in pm.values} == {
        "RRC.ConnEstabAtt": 42,
        "RRC.ConnEstabSucc": 39,
        "DRB.PdcpSduVolumeDL": 105,
    }
    with_total = {**subs, "RRC.ConnEstabAtt": 50}
    pm = parse_pm_bytes(
        render_meas_collec(begin=T0, duration_s=900, element="g", cells={"1": with_total}), "f.xml"
    )
    assert {v.spec.metric: v.value for v in pm.values}["RRC.ConnEstabAtt"] == 50
    big = {"MM.HoExeIntraReq.a": 2**63, "MM.HoExeIntraReq.b": 2**63}
    pm = parse_pm_bytes(render_meas_collec(begin=T0, duration_s=900, element="g", cells={"1": big}), "f.xml")
    assert (pm.values, dict(pm.rejected)) == ([], {"counter_overflow": 1})


def test_gnb_level_functions_get_a_function_label_never_a_cell() -> None:
    pm = parse_pm_bytes(
        render_meas_collec(
            begin=T0,
            duration_s=900,
            element="gNB-7",
            cells={
                "17": {"DRB.PdcpSduVolumeDL": 5},
                "cuup": {"DRB.PdcpSduVolumeDL": 9},
                "cu": {"RRC.ConnMean": 3},
                "1": {"DRB.PdcpSduVolumeDL": 1},
            },
            objects={
                "cuup": "ManagedElement=gNB-7,GNBCUUPFunction=1",
                "cu": "ManagedElement=gNB-7,GNBCUCPFunction=1,NRCellCU=17",
                "1": "GNBDUFunction=1,NRCellDU=1",
            },
        ),
        "f.xml",
    )
    labels = sorted((tuple(sorted(v.obj.labels().items())), v.spec.metric, v.value) for v in pm.values)
    assert labels == [
        ((("cell", "1"), ("gnb", "gNB-7")), "DRB.PdcpSduVolumeDL", 1),
        ((("cell", "17"), ("gnb", "gNB-7")), "DRB.PdcpSduVolumeDL", 5),
        ((("cell", "17"), ("gnb", "gNB-7")), "RRC.ConnMean", 3.0),
        ((("function", "GNBCUUPFunction=1"), ("gnb", "gNB-7")), "DRB.PdcpSduVolumeDL", 9),
    ]


_DTD = (
    '<?xml version="1.0" encoding="{enc}"?><!DOCTYPE m [<!ENTITY a "{payload}">]>'
    '<measCollecFile><fileHeader><measCollec beginTime="2026-11-25T09:00:00Z"/>'
    "</fileHeader>&a;</measCollecFile>"
)
_EXTERNAL = '<?xml version="1.0" encoding="{enc}"?><!DOCTYPE m SYSTEM "file:///etc/passwd"><measCollecFile/>'


@pytest.mark.parametrize("enc", ["UTF-8", "UTF-16", "UTF-16-LE", "UTF-16-BE"])
@pytest.mark.parametrize("template", [_DTD, _EXTERNAL])
def test_dtd_and_entities_are_refused_in_any_encoding(enc: str, template: str) -> None:
    text = template.format(enc=enc.split("-LE")[0].split("-BE")[0], payload="x" * 10)
    codec = {"UTF-8": "utf-8", "UTF-16": "utf-16", "UTF-16-LE": "utf-16-le", "UTF-16-BE": "utf-16-be"}[enc]
    data = text.encode(codec)
    if codec in ("utf-16-le", "utf-16-be"):  # no BOM: the declaration names the encoding
        data = ("\ufeff" + text).encode(codec)
    assert b"<!DOCTYPE" not in data or codec == "utf-8"  # a byte search would miss UTF-16
    with pytest.raises(PmFileError, match="not allowed") as ei:
        parse_pm_bytes(data, "evil.xml")
    assert "evil.xml" in str(ei.value)


def test_billion_laughs_is_refused() -> None:
    lol = (
        '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "lol">'
        + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
        + "]><measCollecFile>&i;</measCollecFile>"
    )
    with pytest.raises(PmFileError, match="not allowed"):
        parse_pm_bytes(lol.encode(), "lol.xml")


def test_utf16_file_without_dtd_is_read() -> None:
    text = render_meas_collec(
        begin=T0, duration_s=900, element="g", cells={"1": {"RRC.ConnMean": 4}}
    ).decode()
    data = text.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    assert [v.value for v in parse_pm_bytes(data, "u16.xml").values] == [4.0]


@settings(max_examples=60, deadline=None)
@given(cells_st, st.data())
def test_damaged_pm_file_raises_error_naming_the_file_or_rejects_values(
    cells: dict[str, dict[str, float | int]], data: st.DataObject
) -> None:
    good = render_meas_collec(begin=T0, duration_s=900, element="gnb-7", cells=cells)
    how = data.draw(st.sampled_from(["truncate", "flip", "garbage"]))
    if how == "truncate":
        bad = good[: data.draw(st.integers(0, len(good) - 1))]
    elif how == "flip":
        i = data.draw(st.integers(0, len(good) - 1))
        bad = good[:i] + bytes([data.draw(st.integers(0, 255))]) + good[i + 1 :]
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


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<measCollecFile><fileHeader/></measCollecFile>", "beginTime missing"),
        (b"<other/>", "not <measCollecFile>"),
        (b"<measCollecFile", "not well-formed"),
        (
            b'<measCollecFile><fileHeader><measCollec beginTime="2026-11-25T09:00:00Z"/></fileHeader>'
            b'<measData><measInfo><granPeriod duration="PT900S" endTime="yesterday"/></measInfo>'
            b"</measData></measCollecFile>",
            "not an xs:dateTime",
        ),
    ],
)
def test_structural_problems_are_named(body: bytes, problem: str) -> None:
    with pytest.raises(PmFileError, match=problem) as ei:
        parse_pm_bytes(body, "x.xml")
    assert "x.xml" in str(ei.value)


def test_gzip_file_is_read(tmp_path: Path) -> None:
    p = tmp_path / "a.xml.gz"
    p.write_bytes(
        gzip.compress(
            render_meas_collec(begin=T0, duration_s=60, element="g", cells={"1": {"RRC.ConnMax": 7}})
        )
    )
    assert [v.value for v in read_pm_file(p).values] == [7.0]
    (tmp_path / "b.xml.gz").write_bytes(b"not gzip")
    with pytest.raises(PmFileError, match=r"b\.xml\.gz"):
        read_pm_file(tmp_path / "b.xml.gz")


# --- the cell source: lifecycle, per-value counting, splitting -----------------------------
def _drop(
    pm: Path, name: str, begin: dt.datetime, cells: dict[str, dict[str, float | int | str]], **kw: object
) -> None:
    (pm / name).write_bytes(
        render_meas_collec(begin=begin, duration_s=900, element="gNB-Tokyo-1", cells=cells, **kw)
    )  # type: ignore[arg-type]
    old = time.time() - 60
    os.utime(pm / name, (old, old))


def _source(pm: Path, **kw: object) -> tuple[CellSource, CollectorRegistry]:
    src = CellSource(CellSourceSettings(enabled=True, pm_dir=pm, settle_s=1), **kw)  # type: ignore[arg-type]
    reg = CollectorRegistry()
    collector_for(reg).add_source("a", "cell", src.stats)
    return src, reg


async def test_files_move_to_done_only_after_their_batch_is_spooled(tmp_path: Path) -> None:
    pm = tmp_path / "pm"
    pm.mkdir()
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    for k in range(2):
        _drop(
            pm,
            f"A{k}.xml",
            t0 + dt.timedelta(minutes=15 * k),
            {"101": {"DRB.PdcpSduVolumeDL": 1000 + k, "RRU.PrbTotDl": 40 + k}},
        )
    (pm / "broken.xml").write_bytes(b"<measCollecFile><oops")
    os.utime(pm / "broken.xml", (time.time() - 60,) * 2)
    src, reg = _source(pm)
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    # broken: failed/ at once (nothing of it is in a batch); good ones wait for the spool
    assert [p.name for p in (pm / "failed").iterdir()] == ["broken.xml"]
    assert sorted(p.name for p in pm.glob("*.xml")) == ["A0.xml", "A1.xml"]
    # "crash" before the batch was spooled: the next collection reads them again
    b2 = BatchBuilder("a", SITE, "boot")
    await src.collect(b2, time.time_ns())
    assert len(b2) == len(b) == 4
    src.committed()
    assert sorted(p.name for p in (pm / "done").iterdir()) == ["A0.xml", "A1.xml"]
    batch = wire.parse_batch(b2.build(1, 1).SerializeToString())
    cols = wire.delta_columns(batch)
    begin0 = int(t0.timestamp()) * NS
    p = 900 * NS
    assert sorted(
        zip(cols.start_unix_nano.tolist(), cols.time_unix_nano.tolist(), cols.value.tolist(), strict=True)
    ) == [(begin0, begin0 + p, 1000), (begin0 + p, begin0 + 2 * p, 1001)]  # own periods, no sum
    vdef = next(s for s in batch.series if s.metric == "DRB.PdcpSduVolumeDL")
    assert (vdef.kind, vdef.counter_bits, vdef.start_time_unix_nano, vdef.scale) == (
        pb.DELTA,
        0,
        0,
        125_000.0,
    )
    assert {lab.name: lab.value for lab in vdef.labels} == {"cell": "101", "gnb": "gNB-Tokyo-1"}
    pg = wire.period_gauge_columns(batch)
    assert sorted(pg.value.tolist()) == [40.0, 41.0]
    text = generate_latest(reg).decode()
    assert 'collector_agent_pm_files_total{agent_id="a",result="failed",source="cell"} 1.0' in text
    assert 'collector_agent_pm_values_total{agent_id="a",result="accepted",source="cell"} 8.0' in text


async def test_bad_values_are_counted_by_reason_and_logged_once_per_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pm = tmp_path / "pm"
    pm.mkdir()
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    _drop(
        pm,
        "bad.xml",
        t0,
        {
            "1": {"RRC.ConnMean": "abc", "RRU.PrbTotDl": 120, "DRB.PdcpSduVolumeDL": -5, "RRC.ConnMax": 9},
            "2": {"RRC.ConnMean": "NIL", "RRC.ConnMax": 3},
        },
        suspect=frozenset({"2"}),
    )
    src, reg = _source(pm)
    b = BatchBuilder("a", SITE, "boot")
    with caplog.at_level("WARNING"):
        await src.collect(b, time.time_ns())
    src.committed()
    assert len(b) == 2  # the two good RRC.ConnMax values
    lines = [r.getMessage() for r in caplog.records if "bad.xml" in r.getMessage()]
    assert len(lines) == 1
    assert "not_a_number" in lines[0]
    assert "out_of_range" in lines[0]
    assert "negative" in lines[0]
    text = generate_latest(reg).decode()
    for reason in ("not_a_number", "out_of_range", "negative"):
        assert (
            f'collector_agent_pm_values_rejected_total{{agent_id="a",reason="{reason}",source="cell"}} 1.0'
        ) in text
    assert 'collector_agent_pm_values_total{agent_id="a",result="nil",source="cell"} 1.0' in text
    assert 'collector_agent_pm_values_total{agent_id="a",result="suspect",source="cell"} 1.0' in text
    assert [p.name for p in (pm / "done").iterdir()] == ["bad.xml"]


async def test_a_repeated_file_is_counted_and_moved_to_done_without_being_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pm = tmp_path / "pm"
    pm.mkdir()
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    cells: dict[str, dict[str, float | int | str]] = {"1": {"MM.HoExeIntraReq": 5}}
    src, reg = _source(pm)
    sent = []
    for name, k in (("new.xml", 2), ("again.xml", 2), ("older.xml", 0)):
        _drop(pm, name, t0 + dt.timedelta(minutes=15 * k), cells)
        b = BatchBuilder("a", SITE, "boot")
        with caplog.at_level("INFO"):
            await src.collect(b, time.time_ns())
        src.committed()
        sent.append(len(b))
    # the repeat is recognised by the agent: not sent again; the older period is sent
    assert sent == [1, 0, 1]
    assert {k: v for k, v in src.stats.pm_files.items() if v} == {"done": 1, "repeated": 1, "older": 1}
    assert sorted(p.name for p in (pm / "done").iterdir()) == ["again.xml", "new.xml", "older.xml"]
    assert any(
        "again.xml" in r.getMessage()
        and "repeated file" in r.getMessage()
        and "1 values already sent" in r.getMessage()
        for r in caplog.records
    )
    text = generate_latest(reg).decode()
    assert 'collector_agent_pm_values_total{agent_id="a",result="repeated",source="cell"} 1.0' in text
    assert 'collector_agent_pm_files_total{agent_id="a",result="repeated",source="cell"} 1.0' in text


async def test_a_repeat_is_recognised_after_a_restart_and_only_new_groups_are_sent(tmp_path: Path) -> None:
    pm = tmp_path / "pm"
    pm.mkdir()
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    _drop(pm, "A.xml", t0, {"1": {"MM.HoExeIntraReq": 5, "RRC.ConnMean": 3.0}})
    src, _ = _source(pm)
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    src.committed()
    assert len(b) == 2
    assert (pm / ".collector-pm-sent").is_file()
    # a new agent process over the same directory: the ledger survived
    _drop(pm, "A-again.xml", t0, {"1": {"MM.HoExeIntraReq": 5, "RRC.ConnMean": 3.0}})
    _drop(
        pm,
        "A-more.xml",
        t0,
        {"1": {"MM.HoExeIntraReq": 5, "RRC.ConnMean": 3.0}, "2": {"MM.HoExeIntraReq": 7}},
    )
    src2, _ = _source(pm)
    b2 = BatchBuilder("a", SITE, "boot")
    await src2.collect(b2, time.time_ns())
    src2.committed()
    cols = wire.delta_columns(wire.parse_batch(b2.build(1, 1).SerializeToString()))
    assert cols.value.tolist() == [7]  # cell 2 only: cell 1's group was sent before
    assert src2.stats.pm_values["repeated"] == 4
    assert src2.stats.pm_files["repeated"] == 1
    assert sorted(p.name for p in (pm / "done").iterdir()) == ["A-again.xml", "A-more.xml", "A.xml"]


async def test_a_crash_before_the_spool_write_sends_the_file_again(tmp_path: Path) -> None:
    pm = tmp_path / "pm"
    pm.mkdir()
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    _drop(pm, "A.xml", t0, {"1": {"MM.HoExeIntraReq": 5}})
    _drop(pm, "A-copy.xml", t0, {"1": {"MM.HoExeIntraReq": 5}})
    src, _ = _source(pm)
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    assert len(b) == 1  # the copy in the same batch is a repeat of the first
    # the process dies before the batch reached the spool (no committed())
    src2, _ = _source(pm)
    b2 = BatchBuilder("a", SITE, "boot")
    await src2.collect(b2, time.time_ns())
    assert len(b2) == 1  # nothing was recorded as sent: sent again, not lost
    src2.committed()
    assert len(list((pm / "done").iterdir())) == 2
    assert not list(pm.glob("*.xml"))


async def test_a_torn_or_foreign_ledger_file_does_not_stop_the_source(tmp_path: Path) -> None:
    pm = tmp_path / "pm"
    pm.mkdir()
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    ledger = pm / ".collector-pm-sent"
    for junk in (b"not a ledger", None):
        if junk is not None:
            ledger.write_bytes(junk)
        else:  # a torn last record after a valid one
            ledger.write_bytes(ledger.read_bytes() + b"\x01\x02\x03")
        _drop(
            pm,
            f"A{len(junk or b'')}.xml",
            t0 + dt.timedelta(minutes=15 if junk else 30),
            {"1": {"MM.HoExeIntraReq": 5}},
        )
        src, _ = _source(pm)
        b = BatchBuilder("a", SITE, "boot")
        await src.collect(b, time.time_ns())
        src.committed()
        assert len(b) == 1
    # the rewritten ledger still knows both periods
    src, _ = _source(pm)
    for k, name in ((15, "B1.xml"), (30, "B2.xml")):
        _drop(pm, name, t0 + dt.timedelta(minutes=k), {"1": {"MM.HoExeIntraReq": 5}})
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    src.committed()
    assert len(b) == 0
    assert src.stats.pm_files["repeated"] == 2


async def test_the_ledger_is_never_read_as_a_pm_file_whatever_the_pattern(tmp_path: Path) -> None:
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    _drop(tmp_path, "A.xml", t0, {"1": {"MM.HoExeIntraReq": 5}})
    src = CellSource(CellSourceSettings(enabled=True, pm_dir=tmp_path, settle_s=0, pattern="*"))
    for _ in range(2):
        b = BatchBuilder("a", SITE, "boot")
        await src.collect(b, time.time_ns())
        src.committed()
        os.utime(tmp_path / ".collector-pm-sent", (time.time() - 60,) * 2)
    assert (tmp_path / ".collector-pm-sent").is_file()
    assert not (tmp_path / "failed").exists()
    assert src.stats.pm_files["failed"] == 0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sets(st.sampled_from("123"), min_size=1), st.booleans()),
        min_size=1,
        max_size=10,
    )
)
def test_every_group_is_spooled_exactly_once_whatever_the_repeats_and_crashes(
    deliveries: list[tuple[int, set[str], bool]],
) -> None:
    """Files of periods 0..3 with some of cells 1..3, each delivery spooled or 'crashed'
    (the batch never reached the spool, the agent restarts): every (cell, period) delivered
    reaches the spool exactly once."""
    import asyncio
    import tempfile

    async def run() -> None:
        with tempfile.TemporaryDirectory() as d:
            pm = Path(d)
            t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)
            src, _ = _source(pm)
            spooled: list[tuple[str, int]] = []
            for i, (period, cells, crash) in enumerate(deliveries):
                _drop(
                    pm,
                    f"F{i}.xml",
                    t0 + dt.timedelta(minutes=15 * period),
                    {c: {"MM.HoExeIntraReq": int(c)} for c in sorted(cells)},
                )
                b = BatchBuilder("a", SITE, "boot")
                await src.collect(b, time.time_ns())
                got = [
                    (lab.value, int(t))
                    for batch in [wire.parse_batch(b.build(1, 1).SerializeToString())]
                    for si, t in zip(
                        wire.delta_columns(batch).series_index.tolist(),
                        wire.delta_columns(batch).time_unix_nano.tolist(),
                        strict=True,
                    )
                    for lab in batch.series[si].labels
                    if lab.name == "cell"
                ]
                if crash:
                    src, _ = _source(pm)  # restart: the unspooled batch is gone
                    continue
                src.committed()
                spooled.extend(got)
            # the files of crashed deliveries are still in pm_dir: the next scan sends them
            b = BatchBuilder("a", SITE, "boot")
            await src.collect(b, time.time_ns())
            src.committed()
            batch = wire.parse_batch(b.build(1, 1).SerializeToString())
            cols = wire.delta_columns(batch)
            spooled += [
                (lab.value, int(t))
                for si, t in zip(cols.series_index.tolist(), cols.time_unix_nano.tolist(), strict=True)
                for lab in batch.series[si].labels
                if lab.name == "cell"
            ]
            assert not list(pm.glob("*.xml"))
            assert len(spooled) == len(set(spooled))  # never twice
            end0 = int(t0.timestamp() + 900) * NS
            assert set(spooled) == {
                (c, end0 + p * 900 * NS) for p, cells, _ in deliveries for c in cells
            }  # nothing lost

    asyncio.run(run())


async def test_a_backlog_is_split_across_batches_under_max_batch_bytes(tmp_path: Path) -> None:
    pm = tmp_path / "pm"
    pm.mkdir()
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=30)
    cells: dict[str, dict[str, float | int | str]] = {
        str(c): {"DRB.PdcpSduVolumeDL": c, "DRB.PdcpSduVolumeUL": 1, "RRC.ConnMean": 2, "RRU.PrbTotDl": 3}
        for c in range(300)
    }
    for k in range(8):
        _drop(pm, f"F{k}.xml", t0 + dt.timedelta(minutes=15 * k), cells)
    limit = 64 * 1024
    src, _ = _source(pm, max_batch_bytes=limit)
    sizes, total = [], 0
    for _ in range(100):
        b = BatchBuilder("a", SITE, "boot")
        await src.collect(b, time.time_ns())
        total += len(b)
        if len(b):
            sizes.append(len(b.build_bytes(1, 1)))
        src.committed()
        if not src.backlog:
            break
    assert total == 8 * 300 * 4  # nothing lost, nothing twice
    assert len(sizes) > 2
    assert max(sizes) <= limit
    assert len(list((pm / "done").iterdir())) == 8


async def test_values_outside_the_accepted_times_are_rejected_or_the_file_fails(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cells: dict[str, dict[str, float | int | str]] = {"1": {"RRC.ConnMax": 3}}
    _drop(tmp_path, "old.xml", now - dt.timedelta(days=8), cells)
    _drop(tmp_path, "future.xml", now + dt.timedelta(hours=2), cells)
    _drop(tmp_path, "ok.xml", now - dt.timedelta(minutes=30), cells)
    src, _ = _source(tmp_path)
    b = BatchBuilder("a", SITE, "boot")
    await src.collect(b, time.time_ns())
    src.committed()
    assert len(b) == 1
    assert sorted(p.name for p in (tmp_path / "failed").iterdir()) == ["future.xml", "old.xml"]
    assert [p.name for p in (tmp_path / "done").iterdir()] == ["ok.xml"]
