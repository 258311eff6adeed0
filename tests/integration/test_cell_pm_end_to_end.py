"""PM files end to end with the shipped example config's source mix.

`collector agent` configured from deploy/agent.example.yaml (server + link + cell/pm_xml
sources; only addresses, paths and intervals changed) -> ingest over TLS -> Tansu -> the
aggregator: while the same site's live host and link samples keep its watermark at "now",
TS 32.435 files whose periods ended minutes ago publish the cell metrics computed from the
files' values, a repeated file is recognised by the agent and not sent again (the aggregator
sees no duplicate), an older file does not change what is published, and no sample is
dropped late.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from collector.aggregate.service import Aggregator
from collector.broker import EmbeddedBroker
from collector.config import load_settings
from collector.devcerts import DevCerts
from collector.monitoring import LocalPrometheus, find_binary, prometheus_config
from collector.simulate.pm_writer import render_meas_collec
from tests.agent_support import agent_tls, write_yaml
from tests.aggregate_support import http_request
from tests.ingest_support import ingest_settings, started, token_for
from tests.procs import collector_process
from tests.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
GNB = "gNB-Tokyo-1"
PERIOD_S = 900


CUUP = "cuup"  # the key of the gNB-level object in _cells
OBJECTS = {CUUP: f"ManagedElement={GNB},GNBCUUPFunction=1"}


def _cells(k: int) -> dict[str, dict[str, float | int | str]]:
    """The values of period k (k = 0 newest) of two cells and the gNB's CU-UP function, as
    a gNB would write them (TS 28.552 names and units), with one bad value."""
    out: dict[str, dict[str, float | int | str]] = {}
    for c, cell in enumerate(("101", "102")):
        v: dict[str, float | int | str] = {
            "DRB.PdcpSduVolumeDL": 9000 + 1000 * c + 7 * k,  # Mbit in the period
            "DRB.PdcpSduVolumeUL": 1200 + 100 * c + k,
            "DRB.UEThpDl": 85_000.5 + c,  # kbit/s
            "DRB.UEThpUl": 12_000.0 + c,
            "RRC.ConnMean": 37 + c,
            "RRC.ConnMax": 60 + c,
            "RRC.ConnEstabAtt.mo-Data": 500 + c,  # per cause: summed
            "RRC.ConnEstabAtt.mo-Signalling": 80,
            "RRC.ConnEstabSucc.mo-Data": 495 + c - k,
            "RRC.ConnEstabSucc.mo-Signalling": 80,
            "MM.HoExeIntraReq": 120 + c,
            "MM.HoExeIntraSucc": 114 + c - k,
            "MM.HoExeInterReq": 30 + c,
            "MM.HoExeInterSucc": 27,
            "RRU.CellUnavailableTime": 45 * c,  # seconds of the period
            "L1M.SS-RSRP": -88.5 - c,
            "VS.Vendor.Counter": 3,  # not accepted: counted, not sent
            # SS-RSRP distribution: UE reports per bin (bin X = TS 38.133 RSRP_X), one bin
            # split per SSB beam (summed), and SINR bins on cell 101 only
            "L1M.SS-RSRP.Bin58": 3 + k,
            "L1M.SS-RSRP.Bin60": 20 + c,
            "L1M.SS-RSRP.Bin61": 10,
            "L1M.SS-RSRP.Bin62.0": 4,
            "L1M.SS-RSRP.Bin62.1": 6 + c,
            "L1M.SS-RSRP.Bin70": 2 + c,
            "L1M.SS-RSRP.Bin126": 1,
        }
        if c == 0:
            v.update({"L1M.SS-SINR.Bin60": 5, "L1M.SS-SINR.Bin80": 7 + k, "L1M.SS-SINR.Bin127": 1})
        if c == 0:  # PRB use in percent
            v.update({"RRU.PrbTotDl": 61.5 - k, "RRU.PrbTotUl": 22.0})
        else:  # PRB use as mean used / available PRBs
            v.update(
                {
                    "RRU.PrbUsedDl": 150.5 - k,
                    "RRU.PrbAvailDl": 273,
                    "RRU.PrbUsedUl": 40,
                    "RRU.PrbAvailUl": 273,
                    "RRC.ConnMax": "abc",
                }
            )
        out[cell] = v
    out[CUUP] = {"DRB.PdcpSduVolumeDL": 12_345 + k}
    return out


Key = tuple[str, tuple[tuple[str, str], ...]]
# distribution -> (histogram family, upper bound of bin X)
BINS = {
    "L1M.SS-RSRP.Bin": ("edge_cell_ss_rsrp_report_dbm", lambda x: -156.0 + x if x < 126 else math.inf),
    "L1M.SS-SINR.Bin": ("edge_cell_ss_sinr_report_db", lambda x: -23.0 + 0.5 * x if x < 127 else math.inf),
}


def _bins(v: dict[str, Any]) -> dict[str, dict[float, int]]:
    """distribution -> {upper bound: reports} of one object's file values (SSBs summed)."""
    out: dict[str, dict[float, int]] = {}
    for m, n in v.items():
        base, sep, rest = m.partition(".Bin")
        if sep and base + sep in BINS:
            le = BINS[base + sep][1](int(rest.split(".")[0]))
            out.setdefault(base + sep, {}).setdefault(le, 0)
            out[base + sep][le] += n
    return out


def _cumulative(cells: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """distribution -> cell -> [(le, reports <= le)] at the bounds every cell of the family
    gets (the union of their bounds, +Inf)."""
    per = {c: _bins(v) for c, v in cells.items()}
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for dist in BINS:
        have = {c: b[dist] for c, b in per.items() if dist in b}
        bounds = sorted({le for b in have.values() for le in b} | {math.inf})
        out[dist] = {
            c: [(le, float(sum(n for x, n in b.items() if x <= le))) for le in bounds]
            for c, b in have.items()
        }
    return out


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus 2.x's histogram_quantile (promql/quantile.go bucketQuantile) over
    cumulative buckets ending with +Inf: linear interpolation inside the bucket."""
    rank = q * buckets[-1][1]
    b = next(i for i, (_, v) in enumerate(buckets) if v >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, count = 0.0, buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (buckets[b][0] - start) * (rank / count)


def _expected(cells: dict[str, dict[str, Any]]) -> dict[Key, float]:
    """Cell metric -> value, computed from the file values alone (units: TS 28.552)."""
    want: dict[Key, float] = {}
    for cell, v in cells.items():
        base: tuple[tuple[str, str], ...] = (("gnb", GNB), ("window", "15m"))
        base += (("function", "GNBCUUPFunction=1"),) if cell == CUUP else (("cell", cell),)

        def put(name: str, value: float, *extra: tuple[str, str], base: Any = base) -> None:
            want[(name, tuple(sorted((*base, *extra))))] = value

        if cell == CUUP:
            put(
                "edge_cell_throughput_bytes_per_second",
                v["DRB.PdcpSduVolumeDL"] * 125_000 / PERIOD_S,
                ("direction", "dl"),
            )
            continue
        for d, m in (("dl", "DL"), ("ul", "UL")):
            put(
                "edge_cell_throughput_bytes_per_second",
                v[f"DRB.PdcpSduVolume{m}"] * 125_000 / PERIOD_S,
                ("direction", d),
            )
            put(
                "edge_cell_user_throughput_bytes_per_second",
                v[f"DRB.UEThp{m.title()}"] * 125,
                ("direction", d),
                ("stat", "avg"),
            )
            if f"RRU.PrbTot{m.title()}" in v:
                put(
                    "edge_cell_prb_utilization_ratio",
                    v[f"RRU.PrbTot{m.title()}"] * 0.01,
                    ("direction", d),
                    ("stat", "avg"),
                )
            else:
                put(
                    "edge_cell_prb_utilization_ratio",
                    v[f"RRU.PrbUsed{m.title()}"] / v[f"RRU.PrbAvail{m.title()}"],
                    ("direction", d),
                    ("stat", "avg"),
                )
        put("edge_cell_connected_users", v["RRC.ConnMean"], ("stat", "avg"))
        if not isinstance(v["RRC.ConnMax"], str):  # "abc" is rejected, that value only
            put("edge_cell_connected_users_peak", v["RRC.ConnMax"], ("stat", "max"))
        att = v["RRC.ConnEstabAtt.mo-Data"] + v["RRC.ConnEstabAtt.mo-Signalling"]
        ok = v["RRC.ConnEstabSucc.mo-Data"] + v["RRC.ConnEstabSucc.mo-Signalling"]
        put("edge_cell_rrc_connection_attempts_per_second", att / PERIOD_S)
        put("edge_cell_rrc_setup_success_ratio", ok / att)
        put("edge_cell_handover_attempts_per_second", v["MM.HoExeIntraReq"] / PERIOD_S)
        put("edge_cell_handover_success_ratio", v["MM.HoExeIntraSucc"] / v["MM.HoExeIntraReq"])
        put("edge_cell_inter_gnb_handover_attempts_per_second", v["MM.HoExeInterReq"] / PERIOD_S)
        put("edge_cell_inter_gnb_handover_success_ratio", v["MM.HoExeInterSucc"] / v["MM.HoExeInterReq"])
        put("edge_cell_availability_ratio", 1 - v["RRU.CellUnavailableTime"] / PERIOD_S, ("stat", "avg"))
        put("edge_cell_ss_rsrp_dbm", v["L1M.SS-RSRP"], ("stat", "avg"))
    for dist, per_cell in _cumulative(cells).items():
        fam = BINS[dist][0]
        for cell, buckets in per_cell.items():
            base = (("cell", cell), ("gnb", GNB), ("window", "15m"))
            for le, n in buckets:
                want[
                    (fam + "_bucket", tuple(sorted((*base, ("le", "+Inf" if le == math.inf else repr(le))))))
                ] = n
            want[(fam + "_count", base)] = buckets[-1][1]
    return want


def _values(cells: dict[str, dict[str, Any]]) -> int:
    """Samples the agent sends for a file: sub-counters summed, bad and unknown left out."""
    n = 0
    for v in cells.values():
        names = {
            m.rsplit(".", 1)[0] if m.startswith("RRC.ConnEstab") or (".Bin" in m and m.count(".") == 3) else m
            for m, x in v.items()
            if not isinstance(x, str) and not m.startswith("VS.")
        }
        n += len(names)
    return n


def _published(text: str) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("edge_cell_"):
                labels = tuple(
                    sorted(
                        (k, v) for k, v in s.labels.items() if k not in ("site", "country", "region") and v
                    )
                )
                out[(s.name, labels)] = s.value
    return out


def _sample(text: str, name: str, **labels: str) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return float("nan")


def _write(pm: Path, name: str, k: int, newest_end: dt.datetime) -> None:
    begin = newest_end - dt.timedelta(seconds=PERIOD_S * (k + 1))
    path = pm / name
    tmp = pm / f".{name}.part"
    tmp.write_bytes(
        render_meas_collec(
            begin=begin,
            duration_s=PERIOD_S,
            element=GNB,
            cells=_cells(k),
            positional=k % 2 == 1,
            objects=OBJECTS,
        )
    )
    old = time.time() - 60  # settled
    os.utime(tmp, (old, old))
    tmp.rename(path)


def _agent_config(tmp: Path, certs: DevCerts, ingest_port: int) -> Path:
    cfg: dict[str, Any] = yaml.safe_load((REPO / "deploy/agent.example.yaml").read_text())
    a = cfg["agent"]
    a["ingest"] = agent_tls(
        certs, f"127.0.0.1:{ingest_port}", token_for(a["site"]["site_id"]), server_name="localhost"
    )
    a["spool"].update(dir=str(tmp / "spool"), max_bytes=64 * 1024 * 1024)
    a["metrics_listen"] = "127.0.0.1:0"
    src = a["sources"]
    assert {n for n, s in src.items() if s.get("enabled")} == {"server", "link", "cell"}
    assert src["cell"]["adapter"] == "pm_xml"
    for name in ("server", "link", "cell"):
        src[name]["interval_s"] = 1  # the example's mix, faster
    src["cell"]["pm_dir"] = str(tmp / "pm")
    return write_yaml(tmp / "agent.yaml", cfg)


async def test_example_config_publishes_pm_cell_metrics_while_live_data_flows(
    broker: EmbeddedBroker, topic: str, certs: DevCerts, tmp_path: Path
) -> None:
    server = await started(ingest_settings(tmp_path, certs, broker.bootstrap, topic))
    settings = load_settings(
        kafka={"topic": topic, "dead_letter_topic": f"{topic}.dlq"},
        aggregate={
            "metrics_listen": "127.0.0.1:0",
            "group_id": f"g-{topic}",
            "state_topic": f"{topic}.state",
            "checkpoint_interval_s": 0.5,
            "session_timeout_ms": 3000,
            "heartbeat_interval_ms": 500,
        },
    )
    pm = tmp_path / "pm"
    pm.mkdir()
    # Periods end on a 15-min boundary at least 5 minutes ago: the file "arrives late".
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    newest_end = (now - dt.timedelta(minutes=5)).replace(second=0)
    newest_end -= dt.timedelta(minutes=newest_end.minute % 15)
    agent = collector_process(
        ["agent", "--config", str(_agent_config(tmp_path, certs, server.port))], tmp_path / "agent.log"
    )
    async with Aggregator(settings, bootstrap=broker.bootstrap, registry=CollectorRegistry()) as agg:
        try:
            await agent.start()
            text = ""

            async def scrape() -> str:
                nonlocal text
                status, _, body = await http_request(agg.metrics_port)
                assert status == 200
                text = body.decode()
                return text

            # live host data flows first: the site's watermark is at "now"
            async def live() -> bool:
                return "edge_host_cpu_utilization_ratio{" in await scrape()

            assert await eventually(live, 90, step=0.25), text[-3000:]
            # period k=1 (older) and k=0 (newest) arrive minutes after their periods
            _write(pm, "A1.xml", 1, newest_end)
            _write(pm, "A0.xml", 0, newest_end)
            want = _expected(_cells(0))

            async def cells_published() -> bool:
                got = _published(await scrape())
                return all(k in got for k in want)

            assert await eventually(cells_published, 90, step=0.25), text[-3000:]
            got = _published(text)
            for key, value in want.items():
                assert abs(got[key] - value) <= 1e-12 * abs(value), (key, got[key], value)
            await _check_quantiles_on_a_real_prometheus(agg.metrics_port, tmp_path, _cells(0))
            received = _sample(text, "collector_site_samples_received_total", site="jp-tokyo-01")
            # a repeated file (same periods, another name) and an older one (k=2)
            shutil.copy(pm / "done" / "A0.xml", pm / "A0-again.xml")
            os.utime(pm / "A0-again.xml", (time.time() - 60, time.time() - 60))
            _write(pm, "A2.xml", 2, newest_end)
            n_values = _values(_cells(0))
            n_older = _values(_cells(2))
            agent_text = ""

            async def settled() -> bool:
                nonlocal agent_text
                t = await scrape()
                agent_text = (await http_request(int(agent.field("port"))))[2].decode()
                return (
                    _sample(agent_text, "collector_agent_pm_files_total", result="repeated") == 1
                    and _sample(t, "collector_site_samples_received_total", site="jp-tokyo-01")
                    >= received + n_older
                )

            assert await eventually(settled, 90, step=0.25), text[-3000:]
            # the repeat never left the agent: no duplicate at the aggregator
            assert _sample(agent_text, "collector_agent_pm_values_total", result="repeated") == n_values
            assert (
                _sample(text, "collector_site_samples_dropped_total", site="jp-tokyo-01", reason="duplicate")
                == 0
            )
            got = _published(text)
            for key, value in want.items():  # still the newest period's figures
                assert abs(got[key] - value) <= 1e-12 * abs(value), (key, got[key], value)
            for reason in ("late", "too_old", "overlap", "rejected", "unknown_metric", "duplicate"):
                assert (
                    _sample(text, "collector_site_samples_dropped_total", site="jp-tokyo-01", reason=reason)
                    == 0
                ), reason
            assert sorted(p.name for p in (pm / "done").iterdir()) == [
                "A0-again.xml",
                "A0.xml",
                "A1.xml",
                "A2.xml",
            ]
            # live data kept flowing all along
            assert "edge_host_cpu_utilization_ratio{" in text
            # the agent's own account: one bad value per file, vendor counters not accepted
            files = {
                r: _sample(agent_text, "collector_agent_pm_files_total", result=r)
                for r in ("done", "repeated", "older", "failed")
            }
            assert files == {"done": 2, "repeated": 1, "older": 1, "failed": 0}
            assert _sample(agent_text, "collector_agent_pm_values_rejected_total", reason="not_a_number") == 4
            assert (
                _sample(agent_text, "collector_agent_pm_values_total", result="unknown_measurement") == 4 * 2
            )
            print("\ncell metric | expected | published")
            for key in sorted(want):
                print(f"{key[0]}{dict(key[1])} | {want[key]!r} | {got[key]!r}")
        finally:
            assert await agent.terminate() == 0, agent.log()
            await server.stop()


async def _check_quantiles_on_a_real_prometheus(
    port: int, tmp: Path, cells: dict[str, dict[str, Any]]
) -> None:
    """A real Prometheus scrapes the aggregator: histogram_quantile() over the cell histograms
    (per cell, and summed over cells by le) equals the quantile computed from the file's bins."""
    binary = find_binary("prometheus")
    assert binary, "prometheus missing: make setup-test installs Debian's prometheus package"
    cfg = prometheus_config({"aggregate": [f"127.0.0.1:{port}"]}, tmp / "prom", scrape_interval="1s")
    cum = _cumulative(cells)
    rsrp = cum["L1M.SS-RSRP.Bin"]
    summed = [(le, rsrp["101"][i][1] + rsrp["102"][i][1]) for i, (le, _) in enumerate(rsrp["101"])]
    checks = [
        (
            'histogram_quantile(0.5, edge_cell_ss_rsrp_report_dbm_bucket{cell="101", window="15m"})',
            _quantile(0.5, rsrp["101"]),
        ),
        (
            'histogram_quantile(0.95, edge_cell_ss_rsrp_report_dbm_bucket{cell="102", window="15m"})',
            _quantile(0.95, rsrp["102"]),
        ),
        (
            'histogram_quantile(0.9, sum by (le) (edge_cell_ss_rsrp_report_dbm_bucket{window="15m"}))',
            _quantile(0.9, summed),
        ),
        (
            'histogram_quantile(0.5, edge_cell_ss_sinr_report_db_bucket{cell="101", window="15m"})',
            _quantile(0.5, cum["L1M.SS-SINR.Bin"]["101"]),
        ),
    ]
    async with LocalPrometheus(binary, cfg, tmp / "prom") as prom:
        got: dict[str, float] = {}

        async def answered() -> bool:
            for expr, _ in checks:
                r = await asyncio.to_thread(prom.query, expr)
                if not r:
                    return False
                got[expr] = float(r[0]["value"][1])
            return True

        assert await eventually(answered, 60, step=0.25), got
    print("\nhistogram_quantile | expected | Prometheus")
    for expr, want in checks:
        print(f"{expr} | {want!r} | {got[expr]!r}")
        assert math.isfinite(want)
        assert abs(got[expr] - want) <= 1e-9 * max(1.0, abs(want)), (expr, got[expr], want)
