"""A checkpoint written before a catalogue change restores correctly: metrics reordered, a
metric's label names reordered, a metric added since, one removed since. The windows closed
after the restore equal those of a run that never restarted (for every metric both
catalogues know), and a removed metric's series are forgotten, never relabelled.

The old build is a real separate process whose catalogue is changed before the aggregator
modules are imported (their tables are built at import), like an older release.
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

from collector.aggregate.config import AggregateSettings
from collector.aggregate.state import PartitionState
from collector.aggregate.window_log import window_records
from collector.catalog import METRICS
from tests.aggregate_support import NS, T0, SeriesDef, catalog_batches, make_batch

REPO = Path(__file__).resolve().parents[2]
ADDED_SINCE = METRICS[-1].name  # unknown to the old build
CFG = AggregateSettings(allowed_lateness_s=10, site_idle_s=30, windows_s=(10, 60))

OLD_BUILD = textwrap.dedent("""
    import dataclasses, struct, sys
    import collector.catalog as cat
    old = [m for m in reversed(cat.METRICS) if m.name != ADDED_SINCE]
    old = [dataclasses.replace(m, labels=tuple(reversed(m.labels))) if m.name == "link_in_octets"
           else m for m in old]
    old.insert(3, cat.MetricSpec("legacy_octets", cat.Domain.LINK, cat.Kind.COUNTER, "bytes",
                                 ("link", "media"), "removed since"))
    cat.METRICS = tuple(old)
    # the old build's catalogue module: its derived tables follow its METRICS
    cat.METRIC_INDEX = {m.name: i for i, m in enumerate(cat.METRICS)}
    cat.LABEL_NAMES = tuple(sorted({n for m in cat.METRICS for n in m.labels}))
    from collector.aggregate.config import AggregateSettings
    from collector.aggregate.state import PartitionState
    data = open(sys.argv[1], "rb").read()
    st = PartitionState(0, AggregateSettings(allowed_lateness_s=10, site_idle_s=30,
                                             windows_s=(10, 60)))
    pos = off = 0
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        st.add(off, data[pos + 4:pos + 4 + n])
        pos += 4 + n
        off += 1
    st.advance()
    open(sys.argv[2], "wb").write(st.snapshot())
""")


def test_checkpoint_from_before_a_catalogue_change_restores(tmp_path: Path) -> None:
    batches = catalog_batches("jp-1", "JP", "Kanto", n_batches=8, per_batch_s=10)
    legacy = [
        make_batch(
            agent="agent-legacy",
            seq=i + 1,
            site="jp-1",
            series=[SeriesDef("legacy_octets", {"link": "x", "media": "optical"})],
            counters=[(0, T0 + (i * 10 + k) * NS, 100 * (i * 10 + k)) for k in range(10)],
        )
        for i in range(8)
    ]
    first = [b for pair in zip(batches[:4], legacy[:4], strict=True) for b in pair]
    second = [b for pair in zip(batches[4:], legacy[4:], strict=True) for b in pair]
    (tmp_path / "first.bin").write_bytes(b"".join(struct.pack("<I", len(b)) + b for b in first))
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"ADDED_SINCE = {ADDED_SINCE!r}\n" + OLD_BUILD,
            str(tmp_path / "first.bin"),
            str(tmp_path / "ckpt.bin"),
        ],
        check=True,
        cwd=REPO,
        timeout=120,
    )

    def run(st: PartitionState, recs: list[bytes], off: int) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        st.on_window = lambda p, w, cw, gw: out.extend(window_records(p, w, cw, gw))
        for i, r in enumerate(recs):
            st.add(off + i, r)
        st.advance(3600 * NS)  # close everything
        return out

    restored = PartitionState.restore((tmp_path / "ckpt.bin").read_bytes(), CFG)
    got = run(restored, second, len(first))
    ref = PartitionState(0, CFG)
    for i, r in enumerate(first):
        ref.add(i, r)
    ref.advance()
    want = run(ref, second, len(first))

    def key(r: dict[str, object]) -> tuple:
        return tuple(sorted((k, str(v)) for k, v in r.items()))

    def known(rs: list[dict[str, object]]) -> set[tuple]:
        # windows the old build could not have built completely: the metric added since
        return {key(r) for r in rs if r["metric"] != ADDED_SINCE}

    assert known(got) == known(want)
    assert len(known(got)) > 100
    assert {r["metric"] for r in got} >= {m.name for m in METRICS} - {ADDED_SINCE}
    assert not [r for r in got if r["metric"] == "legacy_octets"]  # unknown today: dropped
    # link_in_octets' labels were stored in the other order: restored by name
    li = [r for r in got if r["metric"] == "link_in_octets"]
    assert li
    assert all("link=link0" in str(r["labels"]) for r in li)
    assert all("media=media0" in str(r["labels"]) for r in li)
    # the metric added since starts from the restart: its windows are those of its samples
    assert [r for r in got if r["metric"] == ADDED_SINCE]


V3 = Path(__file__).resolve().parents[1] / "data" / "checkpoint_v3"


def test_checkpoint_v3_of_the_last_release_restores(tmp_path: Path) -> None:
    """A v3 checkpoint written by the last release that wrote v3 (counter panes as half sums,
    no metric table: make_fixture.py in the fixture's directory) restores into the v4 build:
    the windows it closes over the rest of the stream and the corrected totals equal those of
    that release running without a restart."""
    expected = json.loads(gzip.decompress((V3 / "expected.json.gz").read_bytes()))
    st = PartitionState.restore((V3 / "ckpt.bin").read_bytes(), CFG)
    data = (V3 / "second.bin").read_bytes()
    recs = []
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        recs.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    off = st.next_offset
    assert off is not None
    got: list[dict[str, object]] = []
    st.on_window = lambda p, w, cw, gw: got.extend(window_records(p, w, cw, gw))
    for i, r in enumerate(recs):
        st.add(off + i, r)
    st.advance()
    tf = st.totals_frame()
    totals = []
    for sid, hi, lo, created in zip(tf["sid"], tf["hi"], tf["lo"], tf["created"], strict=True):
        key = st.registry.keys[sid]
        assert key is not None
        site, metric, labels = key
        totals.append(
            {
                "site": st.sites[site].site_id,
                "metric": METRICS[metric].name,
                "labels": list(labels),
                "total": str((int(hi) << 32) + int(lo)),
                "created": int(created),
            }
        )
    st.advance(3600 * NS)

    def canon(rows: list[dict[str, object]]) -> list[str]:
        # the window log lists every label name the catalogue has (empty when unset); a
        # catalogue that gained a label name since shows one more empty one: not a change
        def labels(v: object) -> str:
            return ",".join(p for p in str(v).split(",") if not p.endswith("="))

        return sorted(
            json.dumps({**r, **({"labels": labels(r["labels"])} if "labels" in r else {})}, sort_keys=True)
            for r in rows
        )

    assert len(expected["windows"]) > 1000
    assert len(expected["totals"]) > 50
    assert canon(got) == canon(expected["windows"])
    assert canon(totals) == canon(expected["totals"])
