"""The checkpoint codec: a partition's whole aggregation state as bytes and back.

The service (collector/aggregate/service.py) writes `PartitionState.snapshot()` to the
state topic together with the next offset, and a new owner of the partition continues from
`PartitionState.restore()` - exactly the state the previous owner had.

Format: a 4-byte length and a JSON header, then length-prefixed Arrow IPC frames (lz4). No
pickle: the state topic is readable by anything that can write to Kafka. Versions:
2 added the per-series sample ledger (series frame: first, step, count); 3 keeps counter
pane increases as 32-bit half sums (hi, lo) instead of one Int128; 4 adds the metric table
(names and label names, so restore is independent of catalogue order), the agents' unissued
seq ranges and a checkpointed idle close. Every older version stays readable.
"""

from __future__ import annotations

import io
import json
import struct
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import polars as pl

from collector.aggregate.dedup import Agent
from collector.aggregate.frames import COUNTER_PANE_SCHEMA, TWO32
from collector.aggregate.ledger import DROP_REASONS, EXCLUDE_REASONS, Site
from collector.aggregate.legacy_catalog import V3_METRICS
from collector.aggregate.registry import NO_SAMPLE
from collector.catalog import METRIC_INDEX, METRICS
from collector.errors import ProtocolError

if TYPE_CHECKING:
    from collector.aggregate.state import PartitionState

VERSION = 4
Header = dict[str, Any]


def encode(st: PartitionState) -> bytes:
    """Everything needed to continue exactly where this state is."""
    reg = st.registry
    frames: dict[str, pl.DataFrame] = {}
    n = len(reg.keys)
    frames["series"] = pl.DataFrame(
        {
            "site": reg.site_of[:n],
            "metric": reg.metric_of[:n],
            "last": reg.last_sample[:n],
            "live": reg.live[:n],
            "scale": reg.scale[:n],
            "c_has": reg.carry.has[:n],
            "c_value": reg.carry.value[:n],
            "c_time": reg.carry.time[:n],
            "c_epoch": reg.carry.epoch[:n],
            "first": reg.first_sample[:n],
            "step": reg.step[:n],
            "count": reg.sample_count[:n],
            "speed": reg.link_speed[:n],
            "tot_hi": reg.total_hi[:n],
            "tot_lo": reg.total_lo[:n],
            "labels": reg.labels_column(),
        },
    )
    for k in range(st.tiers.count):
        frames[f"cpanes_{k}"] = st.counter_panes[k]
        frames[f"gpanes_{k}"] = st.gauge_panes[k]
    for w in st.windows_s:
        frames[f"latest_c_{w}"] = st.latest_counters[w]
        frames[f"latest_g_{w}"] = st.latest_gauges[w]
    cb = _concatenated(st.counter_buffer, [np.uint32, np.int64, np.uint64, np.int64, np.uint8])
    frames["cbuf"] = pl.DataFrame({"sid": cb[0], "t": cb[1], "v": cb[2], "epoch": cb[3], "bits": cb[4]})
    gb = _concatenated(st.gauge_buffer, [np.uint32, np.int64, np.float64])
    frames["gbuf"] = pl.DataFrame({"sid": gb[0], "t": gb[1], "v": gb[2]})
    frames.update(st.periods.frames())
    agents = st.dedup.agents
    frames["agents"] = pl.DataFrame(
        {
            "agent": list(agents),
            "site": [a.site for a in agents.values()],
            "lo": [a.lo for a in agents.values()],
            "hi": [a.hi for a in agents.values()],
            "mask": [a.mask.to_bytes((a.mask.bit_length() + 7) // 8 or 1, "little") for a in agents.values()],
            "received": [a.received for a in agents.values()],
            "gaps": [[x for g in a.gaps for x in g] for a in agents.values()],
            "gap_hits": [a.gap_hits for a in agents.values()],
        },
        schema={
            "agent": pl.String,
            "site": pl.Int64,
            "lo": pl.UInt64,
            "hi": pl.UInt64,
            "mask": pl.Binary,
            "received": pl.UInt64,
            "gaps": pl.List(pl.UInt64),
            "gap_hits": pl.UInt64,
        },
    )
    header = {
        "v": VERSION,
        "partition": st.partition,
        "next_offset": st.next_offset,
        "max_event_ns": st.max_event_ns,
        "closed_ns": st.closed_ns,
        "wm_ns": st.wm_ns,
        "idle_close_ns": st.idle_close_ns,
        "pane_ns": st.pane_ns,
        "windows_s": list(st.windows_s),
        "records": st.records,
        "samples": st.samples,
        "sites": [
            [
                s.site_id,
                s.country,
                s.region,
                s.series,
                s.batches,
                s.dup_batches,
                s.samples,
                s.max_event,
                s.dropped,
                s.excluded,
            ]
            for s in reg.sites
        ],
        "free": reg.free,
        "frames": list(frames),
        "period_clock": st.periods.clock_ns,
        # the series frame's `metric` column and label tuples refer to this table, not to
        # the catalogue's order, so a catalogue change cannot relabel restored series
        "metrics": [[m.name, list(m.labels)] for m in METRICS],
    }
    out = io.BytesIO()
    h = json.dumps(header).encode()
    out.write(struct.pack("<I", len(h)))
    out.write(h)
    for f in frames.values():
        buf = io.BytesIO()
        f.write_ipc(buf, compression="lz4")
        data = buf.getvalue()
        out.write(struct.pack("<Q", len(data)))
        out.write(data)
    return out.getvalue()


def _concatenated(bufs: list[tuple[np.ndarray, ...]], dtypes: list[type]) -> list[np.ndarray]:
    if not bufs:
        return [np.zeros(0, d) for d in dtypes]
    return [np.concatenate(c) for c in zip(*bufs, strict=True)]


def read(data: bytes) -> tuple[Header, dict[str, pl.DataFrame]]:
    """The header and frames of a checkpoint; ProtocolError for a version it cannot read."""
    view = memoryview(data)
    (hl,) = struct.unpack_from("<I", view, 0)
    header = json.loads(bytes(view[4 : 4 + hl]))
    if header.get("v") not in (1, 2, 3, VERSION):
        raise ProtocolError(
            "checkpoint_version",
            f"checkpoint format v{header.get('v')} is not readable by this aggregator (reads v1..v{VERSION})",
        )
    pos = 4 + hl
    frames: dict[str, pl.DataFrame] = {}
    for name in header["frames"]:
        (fl,) = struct.unpack_from("<Q", view, pos)
        pos += 8
        frames[name] = pl.read_ipc(io.BytesIO(bytes(view[pos : pos + fl])))
        pos += fl
    return header, frames


def load(st: PartitionState, header: Header, frames: dict[str, pl.DataFrame]) -> None:
    """Fills a fresh state (made for header["partition"]) from a checkpoint's parts."""
    if header["pane_ns"] != st.pane_ns or tuple(header["windows_s"]) != st.windows_s:
        raise ProtocolError("checkpoint_settings", "checkpoint was taken with other window settings")
    reg = st.registry
    st.next_offset = header["next_offset"]
    st.max_event_ns = header["max_event_ns"]
    st.wm_ns = header["wm_ns"]
    st.closed_ns = header["closed_ns"]
    st.idle_close_ns = header.get("idle_close_ns")
    st.records = header["records"]
    st.samples = header["samples"]
    for row in header["sites"]:
        sid_, country, region, series, batches, dups, samples, max_event, dropped, *rest = row
        reg.site_index[sid_] = len(reg.sites)
        if max_event is not None:
            st.newest_events.update(len(reg.sites), max_event)
        reg.sites.append(
            Site(
                sid_,
                country,
                region,
                series,
                batches,
                dups,
                samples,
                max_event,
                {**dict.fromkeys(DROP_REASONS, 0), **dropped},
                {**dict.fromkeys(EXCLUDE_REASONS, 0), **(rest[0] if rest else {})},
            )
        )
    s = frames["series"]
    n = len(s)
    reg.grow(n)
    reg.site_of[:n] = s["site"].to_numpy()
    # v1..v3 stored positions in the catalogue of their time, without a table: read them
    # against that catalogue, frozen in legacy_catalog.py
    table = header.get("metrics") or [[name, list(labels)] for name, labels in V3_METRICS]
    remap, relabel, gone_metric = _metric_remap(table)
    raw = s["metric"].to_numpy().astype(np.int64)
    old_metric = np.clip(raw, 0, len(remap) - 1)
    reg.metric_of[:n] = np.where(remap[old_metric] >= 0, remap[old_metric], 0)
    # an index beyond the table (a damaged checkpoint) reads as a metric that is gone
    dead = gone_metric[old_metric] | (raw != old_metric)
    reg.last_sample[:n] = s["last"].to_numpy()
    reg.live[:n] = s["live"].to_numpy()
    reg.scale[:n] = s["scale"].to_numpy()
    reg.carry.has[:n] = s["c_has"].to_numpy()
    reg.carry.value[:n] = s["c_value"].to_numpy()
    reg.carry.time[:n] = s["c_time"].to_numpy()
    reg.carry.epoch[:n] = s["c_epoch"].to_numpy()
    if "step" in s.columns:
        reg.first_sample[:n] = s["first"].to_numpy()
        reg.step[:n] = s["step"].to_numpy()
        reg.sample_count[:n] = s["count"].to_numpy()
    else:
        # A v1 checkpoint has no sample ledger: it starts at each series' last sample.
        seen = reg.live[:n] & (reg.last_sample[:n] != NO_SAMPLE)
        reg.first_sample[:n] = np.where(seen, reg.last_sample[:n], 0)
        reg.sample_count[:n] = seen
    if "speed" in s.columns:  # v3
        reg.link_speed[:n] = s["speed"].to_numpy()
        reg.total_hi[:n] = s["tot_hi"].to_numpy()
        reg.total_lo[:n] = s["tot_lo"].to_numpy()
    free = list(header["free"])
    for i, labels in enumerate(s["labels"].to_list()):
        if labels is None:
            reg.keys.append(None)
        elif dead[i]:
            # the metric left the catalogue: its series are forgotten (never relabelled)
            reg.keys.append(None)
            reg.live[i] = False
            free.append(i)
        else:
            perm = relabel.get(int(old_metric[i]))
            vals = (
                tuple(labels)
                if perm is None
                else tuple(sys.intern(labels[j]) if j >= 0 else "" for j in perm)
            )
            key = (int(reg.site_of[i]), int(reg.metric_of[i]), vals)
            reg.keys.append(key)
            reg.series_key[key] = i
    reg.free = free
    st.totals_published = st.totals_frame()  # what the previous owner published last
    st.counter_panes = [_halves(frames[f"cpanes_{k}"]) for k in range(st.tiers.count)]
    st.gauge_panes = [frames[f"gpanes_{k}"] for k in range(st.tiers.count)]
    for w in st.windows_s:
        st.latest_counters[w] = frames[f"latest_c_{w}"]
        st.latest_gauges[w] = frames[f"latest_g_{w}"]
    cb = frames["cbuf"]
    if len(cb):
        st.counter_buffer = [tuple(cb[c].to_numpy() for c in ("sid", "t", "v", "epoch", "bits"))]
    gb = frames["gbuf"]
    if len(gb):
        st.gauge_buffer = [tuple(gb[c].to_numpy() for c in ("sid", "t", "v"))]
    st.periods.restore(frames, header.get("period_clock"))  # absent before periods existed
    for row in frames["agents"].iter_rows(named=True):
        flat = row.get("gaps") or []
        st.dedup.agents[row["agent"]] = Agent(
            row["site"],
            row["lo"],
            row["hi"],
            int.from_bytes(row["mask"], "little"),
            row["received"],
            [(flat[k], flat[k + 1]) for k in range(0, len(flat) - 1, 2)],
            row.get("gap_hits") or 0,
        )
    gone = [i for i in range(n) if dead[i]]
    if gone:
        st.forget_restored(gone)


def _halves(panes: pl.DataFrame) -> pl.DataFrame:
    """Counter panes of a v1/v2 checkpoint (one Int128 increase) in the current layout."""
    if "inc" not in panes.columns:
        return panes
    inc = pl.col("inc")
    return panes.select(
        "sid",
        "pane",
        hi=(inc // TWO32).cast(pl.UInt64),
        lo=(inc % TWO32).cast(pl.UInt64),
        dt="dt",
        n="n",
        resets="resets",
        wraps="wraps",
    ).cast(COUNTER_PANE_SCHEMA)  # type: ignore[arg-type]


def _metric_remap(
    table: list[list[Any]],
) -> tuple[npt.NDArray[np.int64], dict[int, list[int]], npt.NDArray[np.bool_]]:
    """A checkpoint's metric table against today's catalogue: old index -> new index (-1
    when gone), old index -> positions of today's label names in the old label tuple (only
    where they differ; -1 for a label the old entry did not have), and a mask of gone ones."""
    remap = np.full(max(1, len(table)), -1, np.int64)
    relabel: dict[int, list[int]] = {}
    for i, (name, old_labels) in enumerate(table):
        j = METRIC_INDEX.get(name)
        if j is None:
            continue
        remap[i] = j
        new_labels = list(METRICS[j].labels)
        if new_labels != list(old_labels):
            relabel[i] = [old_labels.index(n) if n in old_labels else -1 for n in new_labels]
    return remap, relabel, remap < 0
