"""Agent -> real ingest (TLS / mTLS, bearer token) -> real Tansu broker: every batch once."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from collector import wire
from collector.agent.config import (
    AgentSettings,
    CellSourceSettings,
    LinkSourceSettings,
    ServerSourceSettings,
)
from collector.agent.pipeline import AgentPipeline
from collector.agent.sources import collect_once
from collector.agent.sources.cell import CellSource
from collector.agent.sources.link import LinkSource
from collector.agent.sources.server import ServerSource
from collector.broker import EmbeddedBroker
from collector.devcerts import DevCerts
from collector.proto.telemetry.v1 import telemetry_pb2 as pb
from collector.simulate.pm_writer import render_meas_collec
from tests.agent_support import SITE, agent_tls, topic_batches
from tests.ingest_support import ingest_settings, started, token_for

ROUNDS = 60  # x 2 sources = 120 batches, plus one of cell KPIs


@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls-gzip"])
async def test_agent_batches_land_in_topic_exactly_once_and_spool_empties(
    broker: EmbeddedBroker, topic: str, certs: DevCerts, tmp_path: Path, mtls: bool
) -> None:
    extra = {"client_ca": str(certs.ca)} if mtls else {}
    server = await started(ingest_settings(tmp_path, certs, broker.bootstrap, topic, **extra))
    client = {"client_cert": str(certs.client_cert), "client_key": str(certs.client_key)} if mtls else {}
    spool = tmp_path / "spool"
    settings = AgentSettings.model_validate(
        {
            "ingest": agent_tls(
                certs,
                f"127.0.0.1:{server.port}",
                token_for(SITE.site_id),
                server_name="localhost",
                compression="gzip" if mtls else "none",
                **client,
            ),
            "spool": {"dir": str(spool)},
        }
    )
    reg = CollectorRegistry()
    agent_id = f"agent-{uuid.uuid4().hex[:8]}"
    link = LinkSource(LinkSourceSettings(adapter="synthetic", options={"links": 20}, exclude=[]))
    host = ServerSource(ServerSourceSettings(host="edge-1"))
    pm = tmp_path / "pm"
    pm.mkdir()
    begin = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=20)
    (pm / "A1.xml").write_bytes(
        render_meas_collec(
            begin=begin,
            duration_s=900,
            element="gNB-Tokyo-1",
            cells={str(c): {"DRB.PdcpSduVolumeDL": 1000 + c, "RRU.PrbTotDl": 40} for c in range(3)},
        )
    )
    cell = CellSource(CellSourceSettings(enabled=True, pm_dir=pm, settle_s=0))
    try:
        async with AgentPipeline(
            settings, agent_id=agent_id, site=SITE, boot_id="boot-1", spool_dir=spool, registry=reg
        ) as p:
            seqs = [await collect_once(cell, p)]
            for _ in range(ROUNDS):
                for src in (link, host):
                    seq = await collect_once(src, p)
                    assert seq is not None
                    seqs.append(seq)
            assert await p.wait_drained(30.0), p.stats
            st = p.stats
            assert (st.acked, st.rejected, st.dropped_total) == (len(seqs), 0, 0)
            assert st.oldest_unacked_age_s == 0.0
            text = generate_latest(reg).decode()
            assert f'collector_agent_spool_batches{{agent_id="{agent_id}"}} 0.0' in text
    finally:
        await server.stop()
    got = await topic_batches(broker.bootstrap, topic, len(seqs))
    mine = [b for b in got if b.agent_id == agent_id]
    per_seq = Counter(b.seq for b in mine)
    assert sorted(per_seq) == seqs == list(range(1, len(seqs) + 1))
    assert set(per_seq.values()) == {1}  # each exactly once
    assert {b.key for b in mine} == {SITE.site_id.encode()}
    assert not list(spool.glob("*.seg"))
    # cell KPIs from the PM file, link optical readings and declared counter widths end to end
    cells = pb.Batch.FromString(next(b.value for b in mine if b.seq == 1))
    assert {s.metric for s in cells.series} == {"DRB.PdcpSduVolumeDL", "RRU.PrbTotDl"}
    assert sorted(wire.delta_columns(cells).value.tolist()) == [1000, 1001, 1002]  # per period
    sample = pb.Batch.FromString(next(b.value for b in mine if b.seq == 2))
    assert any(s.metric == "link_optical_rx_power_dbm" for s in sample.series)
    assert all(s.counter_bits == 64 for s in sample.series if s.kind == pb.COUNTER)


async def test_wrong_token_keeps_batches_spooled_until_fixed(
    broker: EmbeddedBroker, topic: str, certs: DevCerts, tmp_path: Path
) -> None:
    server = await started(ingest_settings(tmp_path, certs, broker.bootstrap, topic))
    spool = tmp_path / "spool"
    try:
        bad = AgentSettings.model_validate(
            {
                "ingest": agent_tls(
                    certs, f"127.0.0.1:{server.port}", "not-a-token", server_name="localhost"
                ),
                "spool": {"dir": str(spool)},
            }
        )
        async with AgentPipeline(bad, agent_id="agent-tok", site=SITE, boot_id="b", spool_dir=spool) as p:
            b = p.new_builder()
            link = LinkSource(LinkSourceSettings(adapter="synthetic", options={"links": 2}))
            await link.collect(b, time.time_ns())
            seq = await p.submit(b)
            assert not await p.wait_drained(1.5)
            assert p.stats.stream_failures >= 1
            assert p.stats.rejected == 0  # a bad token is not a bad batch: nothing discarded
        good = bad.model_copy(
            update={"ingest": bad.ingest.model_copy(update={"token": token_for(SITE.site_id)})}
        )
        async with AgentPipeline(good, agent_id="agent-tok", site=SITE, boot_id="b2", spool_dir=spool) as p2:
            assert await p2.wait_drained(20.0)
            assert p2.stats.acked == 1
    finally:
        await server.stop()
    got = await topic_batches(broker.bootstrap, topic, 1)
    assert [(b.agent_id, b.seq) for b in got] == [("agent-tok", seq)]


def test_cell_settings_default_off() -> None:
    assert CellSourceSettings().enabled is False


async def test_batch_refused_by_real_ingest_is_moved_aside_and_the_rest_flows(
    broker: EmbeddedBroker, topic: str, certs: DevCerts, tmp_path: Path
) -> None:
    from collector.agent.batch import SiteInfo, counter_def, gauge_def

    server = await started(ingest_settings(tmp_path, certs, broker.bootstrap, topic))
    spool = tmp_path / "spool"
    settings = AgentSettings.model_validate(
        {
            "ingest": agent_tls(
                certs, f"127.0.0.1:{server.port}", token_for(SITE.site_id), server_name="localhost"
            ),
            "spool": {"dir": str(spool)},
        }
    )
    try:
        async with AgentPipeline(
            settings, agent_id="agent-rej", site=SITE, boot_id="b", spool_dir=spool
        ) as p:
            good1 = p.new_builder()
            good1.counter(
                counter_def("link_in_octets", {"link": "a", "media": "copper"}, unit="bytes"),
                time.time_ns(),
                1,
            )
            bad = p.new_builder()
            bad.counter(counter_def("link in octets!", {"link": "a"}, unit="bytes"), time.time_ns(), 1)
            seqs = [await p.submit(good1), await p.submit(bad)]
            # a batch claiming another site than the token's
            other = p.new_builder()
            other.site = SiteInfo("us-dallas-01", "US", "us-south", "America/Chicago")
            other.gauge(
                gauge_def("link_oper_up", {"link": "a", "media": "copper"}, unit="bool"), time.time_ns(), 1.0
            )
            seqs.append(await p.submit(other))
            good2 = p.new_builder()
            good2.counter(
                counter_def("link_in_octets", {"link": "a", "media": "copper"}, unit="bytes"),
                time.time_ns(),
                2,
            )
            seqs.append(await p.submit(good2))
            assert await p.wait_drained(20.0), p.stats
            assert (p.stats.acked, p.stats.rejected) == (2, 2)
    finally:
        await server.stop()
    rejected = {f.name: f.read_text() for f in (spool / "rejected").glob("*.json")}
    assert sorted(rejected) == [f"{seqs[1]:020d}.json", f"{seqs[2]:020d}.json"]
    assert "INVALID_ARGUMENT" in rejected[f"{seqs[1]:020d}.json"]
    assert "metric" in rejected[f"{seqs[1]:020d}.json"]
    assert "PERMISSION_DENIED" in rejected[f"{seqs[2]:020d}.json"]
    got = await topic_batches(broker.bootstrap, topic, 2)
    assert sorted(b.seq for b in got if b.agent_id == "agent-rej") == [seqs[0], seqs[3]]
