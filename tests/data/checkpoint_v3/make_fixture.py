"""Writes this directory's fixture with the build given on the command line (run once, with
the last release writing checkpoint v3 on sys.path: main at f035d8e). Not part of the tests.

  ckpt.bin       the v3 checkpoint after the first half of the records
  second.bin     the second half (u32 length-prefixed records)
  expected.json.gz  windows closed by that build over the second half without a restart, and
                 the corrected totals at the end, by (site, metric, labels)
"""

from __future__ import annotations

import gzip
import json
import struct
import sys
from pathlib import Path

from collector.aggregate.config import AggregateSettings
from collector.aggregate.service import window_records
from collector.aggregate.state import CHECKPOINT_VERSION, PartitionState
from collector.catalog import METRICS
from tests.aggregate_support import NS, catalog_batches

OUT = Path(sys.argv[1])
CFG = AggregateSettings(allowed_lateness_s=10, site_idle_s=30, windows_s=(10, 60))
assert CHECKPOINT_VERSION == 3
recs = [
    b
    for pair in zip(
        catalog_batches("jp-1", "JP", "Kanto", n_batches=8, per_batch_s=10),
        catalog_batches("us-1", "US", "Oregon", n_batches=8, per_batch_s=10),
        strict=True,
    )
    for b in pair
]
half = len(recs) // 2
st = PartitionState(0, CFG)
st.add_many([(i, r, None) for i, r in enumerate(recs[:half])])
st.advance()
(OUT / "ckpt.bin").write_bytes(st.snapshot())
(OUT / "second.bin").write_bytes(b"".join(struct.pack("<I", len(r)) + r for r in recs[half:]))
wins: list[dict[str, object]] = []
st.on_window = lambda p, w, cw, gw: wins.extend(window_records(p, w, cw, gw))
for i, r in enumerate(recs[half:]):
    st.add(half + i, r)
st.advance()
totals = []
tf = st.totals_frame()  # before the final close, which expires every series
for sid, hi, lo, created in zip(tf["sid"], tf["hi"], tf["lo"], tf["created"], strict=True):
    site, metric, labels = st.keys[sid]
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
(OUT / "expected.json.gz").write_bytes(
    gzip.compress(json.dumps({"windows": wins, "totals": totals}, sort_keys=True).encode(), mtime=0)
)
print(len(wins), "windows", len(totals), "totals")
