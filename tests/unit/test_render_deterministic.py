"""A /metrics body is a function of the published state: two builds of one state give the
same bytes (scrapes can be diffed; a cached body and a rebuilt one agree)."""

from __future__ import annotations

from collector.aggregate.outputs import FAMILIES, build_frames
from collector.exposition.render import FamilyText, render
from tests.unit.test_aggregate_outputs_gather import _views

_FAMILY_TEXT = tuple(FamilyText(f.name, f.type, f.help, f.labels) for f in FAMILIES)


def test_one_state_renders_one_body() -> None:
    """Families built by group-bys and by joins on label columns keep their input's order
    (Polars' parallel hash tables otherwise order groups differently from build to build)."""
    views = list(_views())  # every catalogue family, several partitions
    bodies = {render(_FAMILY_TEXT, build_frames(views)) for _ in range(6)}
    assert len(bodies) == 1
    stamped = {
        render(_FAMILY_TEXT, build_frames(views, timestamps=True, total_timestamps=True)) for _ in range(6)
    }
    assert len(stamped) == 1
