"""From generated blocks to telemetry.v1 batches, in delivery order with injected faults.

Part of `collector simulate`: the model (generator.py) says what every sample is; this module
cuts a block into batches of about `batch_samples` samples (whole ticks of a site, or a slice
of its series for one tick when a site has more series than that), decides which batches are
sent twice (duplicates, same agent_id and seq) or held back (late), and encodes them.

The fast path (`encode`) writes the Batch bytes directly: the per-site series tables are
serialised once per boot epoch and reused, sample columns go through `wire.encode_columns`,
and the pieces are concatenated as protobuf fields (concatenated fields parse as one
message). `fill_builder` puts the same samples into an agent `BatchBuilder` for mode 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from collector import wire
from collector.agent.batch import BatchBuilder, SeriesDef, counter_def, gauge_def
from collector.simulate.generator import Block, FleetGenerator
from collector.simulate.noise import SITE_KEY
from collector.simulate.topology import FleetModel, SimSite


@dataclass(frozen=True, slots=True)
class Chunk:
    """A slice of a site's series that travels together: counter and gauge row ranges."""

    index: int
    counter_lo: int
    counter_hi: int
    gauge_lo: int
    gauge_hi: int

    @property
    def n_series(self) -> int:
        return self.counter_hi - self.counter_lo + self.gauge_hi - self.gauge_lo


@dataclass(slots=True)
class PlannedBatch:
    """One batch to deliver: which samples, and how (normal, duplicate, late)."""

    site: SimSite
    chunk: Chunk
    epoch: int
    seq: int
    block: Block
    ticks: npt.NDArray[np.int64]  # block-local tick indices
    kind: str = "normal"
    value: bytes | None = None
    original: PlannedBatch | None = None  # for a duplicate: the batch it repeats

    @property
    def version(self) -> int:
        """Discontinuities of the site so far (keys the series table: start times)."""
        return int(self.block.version[self.site.index, self.ticks[0]])

    @property
    def samples(self) -> int:
        return self.chunk.n_series * len(self.ticks)

    @property
    def t_min(self) -> int:
        return int(self.block.t[self.site.index, self.ticks[0]])

    @property
    def t_max(self) -> int:
        return int(self.block.t[self.site.index, self.ticks[-1]])


@dataclass
class _Held:
    batch: PlannedBatch
    release_ns: int


@dataclass
class Planner:
    """Cuts blocks into batches and injects duplicates and late deliveries."""

    model: FleetModel
    gen: FleetGenerator
    ticks_per_batch: int
    chunks: list[list[Chunk]] = field(default_factory=list)
    _held: list[list[_Held]] = field(default_factory=list)
    _tables: dict[tuple[int, int, int], bytes] = field(default_factory=dict)
    _defs: dict[tuple[int, int, int], list[SeriesDef]] = field(default_factory=dict)
    _prefix: list[bytes] = field(default_factory=list)
    _site_field: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        m = self.model
        # A batch carries `limit` series for `ticks_per_batch` ticks: about `batch_samples`
        # samples with a series table of `limit` entries.
        limit = max(1, m.settings.batch_samples // self.ticks_per_batch)
        for st in m.sites:
            # Split the concatenation [counters..., gauges...] into runs of `limit` series.
            out = []
            nc = st.counter_hi - st.counter_lo
            for j, lo in enumerate(range(0, st.n_series, limit)):
                hi = min(lo + limit, st.n_series)
                out.append(
                    Chunk(
                        j,
                        st.counter_lo + min(lo, nc),
                        st.counter_lo + min(hi, nc),
                        st.gauge_lo + max(lo - nc, 0),
                        st.gauge_lo + max(hi - nc, 0),
                    )
                )
            self.chunks.append(out)
            self._held.append([])
            self._prefix.append(wire.BATCH.agent_id.len_delimited(st.agent_id.encode()))
            self._site_field.append(wire.BATCH.site.len_delimited(st.info.to_pb().SerializeToString()))

    @staticmethod
    def ticks_per_batch_for(model: FleetModel, paced: bool) -> int:
        """Ticks per batch: `batch_ticks`, and when the run is paced in wall time at most
        about one wall second of simulated time."""
        s = model.settings
        tpb = s.batch_ticks
        if paced:
            tpb = min(tpb, max(1, int(s.acceleration / model.interval_s)))
        return tpb

    # --- planning ------------------------------------------------------------------------

    def plan(self, block: Block) -> Iterator[PlannedBatch]:
        """Batches of a block in delivery order. Block boundaries must fall on multiples of
        `ticks_per_batch` so the cut does not depend on the block size."""
        m = self.model
        tpb = self.ticks_per_batch
        n = block.n_ticks
        for g0 in range(0, n, tpb):
            for st in m.sites:
                i = st.index
                local = np.arange(g0, min(g0 + tpb, n))
                local = local[block.present[i, local]]
                if len(local):
                    # A batch carries one boot_id and one start time per series: cut at
                    # restarts and counter clears.
                    ver = block.version[i, local]
                    cuts = np.flatnonzero(np.diff(ver)) + 1
                    for part in np.split(local, cuts):
                        epoch = int(block.epoch[i, part[0]])
                        for ch in self.chunks[i]:
                            yield from self._deliver(st, ch, epoch, block, part)
                # Late batches come out once the site's event time has moved far enough.
                held = self._held[i]
                if held:
                    now = int(block.t[i, min(g0 + tpb, n) - 1])
                    due = [h for h in held if h.release_ns <= now]
                    if due:
                        self._held[i] = [h for h in held if h.release_ns > now]
                        for h in due:
                            yield h.batch

    def _deliver(
        self, st: SimSite, ch: Chunk, epoch: int, block: Block, ticks: npt.NDArray[np.int64]
    ) -> Iterator[PlannedBatch]:
        m = self.model
        s = m.settings
        state = self.gen.sites[st.index]
        state.seq += 1
        b = PlannedBatch(st, ch, epoch, state.seq, block, ticks)
        key = SITE_KEY + st.index * 16
        tick = int(block.ticks[ticks[0]]) * 4096 + ch.index % 4096
        u_late, u_dup = (float(x) for x in m.noise.u([key + 6, key + 7], [tick])[:, 0])
        if u_late < s.late_probability:
            b.kind = "late"
            self._held[st.index].append(_Held(b, b.t_max + round(s.late_delay_s * 1e9)))
            return
        yield b
        if u_dup < s.duplicate_probability:
            yield PlannedBatch(st, ch, epoch, b.seq, block, ticks, "duplicate", original=b)

    def flush(self) -> Iterator[PlannedBatch]:
        """Everything still held back (end of the run)."""
        for i, held in enumerate(self._held):
            self._held[i] = []
            for h in held:
                yield h.batch

    # --- encoding ------------------------------------------------------------------------

    def series_defs(self, b: PlannedBatch) -> list[SeriesDef]:
        """SeriesDefs of a batch's chunk in table order (counters, then gauges)."""
        ch = b.chunk
        key = (b.site.index, ch.index, b.version)
        defs = self._defs.get(key)
        if defs is None:
            m = self.model
            starts = b.block.start[ch.counter_lo : ch.counter_hi, b.ticks[0]].tolist()
            defs = [
                counter_def(
                    c.metric, c.labels, unit=c.unit, bits=c.bits, start_time_unix_nano=st, scale=c.scale
                )
                for c, st in zip(m.counters[ch.counter_lo : ch.counter_hi], starts, strict=True)
            ]
            defs += [
                gauge_def(g.metric, g.labels, unit=g.unit, scale=g.scale)
                for g in m.gauges[ch.gauge_lo : ch.gauge_hi]
            ]
            self._defs[key] = defs
            # Definitions of older versions are no longer needed (a late batch rebuilds its own).
            for old in [k for k in self._defs if k[0] == key[0] and k[2] < key[2] - 2]:
                del self._defs[old]
                self._tables.pop(old, None)
        return defs

    def _table(self, b: PlannedBatch) -> bytes:
        key = (b.site.index, b.chunk.index, b.version)
        raw = self._tables.get(key)
        if raw is None:
            series = wire.BATCH.series
            raw = b"".join(series.len_delimited(d.to_pb().SerializeToString()) for d in self.series_defs(b))
            self._tables[key] = raw
        return raw

    def columns(
        self, b: PlannedBatch
    ) -> tuple[tuple[npt.NDArray, npt.NDArray, npt.NDArray], tuple[npt.NDArray, npt.NDArray, npt.NDArray]]:
        """(series index, time, value) of the counter and gauge samples, tick-major."""
        ch = b.chunk
        nc = ch.counter_hi - ch.counter_lo
        ng = ch.gauge_hi - ch.gauge_lo
        nt = len(b.ticks)
        t = b.block.t[b.site.index, b.ticks]
        c_idx = np.tile(np.arange(nc, dtype=np.uint32), nt)
        g_idx = np.tile(np.arange(nc, nc + ng, dtype=np.uint32), nt)
        if nt == 1:
            k = int(b.ticks[0])
            cv = b.block.values[ch.counter_lo : ch.counter_hi, k]
            gv = b.block.gauges[ch.gauge_lo : ch.gauge_hi, k]
        else:
            cv = b.block.values[ch.counter_lo : ch.counter_hi][:, b.ticks].T.ravel()
            gv = b.block.gauges[ch.gauge_lo : ch.gauge_hi][:, b.ticks].T.ravel()
        return ((c_idx, np.repeat(t, nc), cv), (g_idx, np.repeat(t, ng), gv))

    def encode(self, b: PlannedBatch) -> bytes:
        """The Batch bytes (what an agent would send), cached on the batch for resends."""
        if b.value is not None:
            return b.value
        if b.original is not None:
            b.value = self.encode(b.original)
            return b.value
        f = wire.BATCH
        i = b.site.index
        (ci, ct, cv), (gi, gt, gv) = self.columns(b)
        out = [
            self._prefix[i],
            f.seq.varint(b.seq),
            self._site_field[i],
            f.boot_id.len_delimited(self.gen.sites[i].boot_ids[b.epoch].encode()),
            f.created_unix_nano.sfixed64(int(b.t_max)),
            self._table(b),
        ]
        if len(cv):
            out.append(f.counters.len_delimited(wire.encode_columns(ci, ct, cv, gauge=False)))
        if len(gv):
            out.append(f.gauges.len_delimited(wire.encode_columns(gi, gt, gv, gauge=True)))
        b.value = b"".join(out)
        return b.value

    def fill_builder(self, b: PlannedBatch, builder: BatchBuilder) -> None:
        """Put the batch's samples into an agent BatchBuilder (mode 1)."""
        defs = self.series_defs(b)
        (ci, ct, cv), (gi, gt, gv) = self.columns(b)
        if len(cv):
            builder.counter_columns(defs, ci, ct, cv)
        if len(gv):
            builder.gauge_columns(defs, gi, gt, gv)
