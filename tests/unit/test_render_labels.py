"""Label values in the vectorised exposition: escaped exactly when they need it.

`render.label_text` skips the escaping passes for a column none of whose values has a
backslash, a double quote or a line feed; these tests read the text back with
prometheus-client's parser and compare it with the always-escaping spelling.
"""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from collector.exposition.histogram import render_histogram
from collector.exposition.render import FamilyText, escape_label, label_text, render_family

# plain characters, the three the text format escapes, and a few that it does not
_VALUE = st.none() | st.text(alphabet=st.sampled_from('ab-_.:/ é漢\\"\n{}=,'), max_size=6)
_ROWS = st.lists(st.tuples(_VALUE, _VALUE, st.integers(0, 10**6)), min_size=1, max_size=12)


def _frame(rows: list[tuple[str | None, str | None, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"site": [r[0] for r in rows], "link": [r[1] for r in rows], "value": [float(r[2]) for r in rows]},
        schema={"site": pl.String, "link": pl.String, "value": pl.Float64},
    )


@settings(max_examples=200, deadline=None)
@given(_ROWS)
def test_label_values_read_back_as_written(rows: list[tuple[str | None, str | None, int]]) -> None:
    fam = FamilyText("x_bytes", "gauge", "h", ("site", "link"))
    text = render_family(fam, _frame(rows))
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert [(s.labels["site"], s.labels["link"], s.value) for s in samples] == [
        (a or "", b or "", float(v)) for a, b, v in rows
    ]


@settings(max_examples=200, deadline=None)
@given(_ROWS)
def test_label_text_is_the_escaped_spelling(rows: list[tuple[str | None, str | None, int]]) -> None:
    frame = _frame(rows)
    for label in ("site", "link"):
        got = frame.select(label_text(frame, label)).to_series().to_list()
        want = frame.select(escape_label(pl.col(label).fill_null(""))).to_series().to_list()
        assert got == want


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_VALUE, st.integers(0, 1000)), min_size=1, max_size=6))
def test_histogram_label_values_read_back_as_written(rows: list[tuple[str | None, int]]) -> None:
    fam = FamilyText("x_seconds", "histogram", "h", ("cell",))
    cells = list(dict.fromkeys(r[0] or "" for r in rows))  # one histogram per distinct value
    frame = pl.DataFrame(
        {
            "cell": [c for c in cells for _ in (0, 1)],
            "le": [b for _ in cells for b in (1.0, float("inf"))],
            "value": [float(n) for i, _ in enumerate(cells) for n in (rows[i][1], 1)],
        }
    )
    text = render_histogram(fam, frame)
    seen = {
        s.labels["cell"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "x_seconds_count"
    }
    assert seen == set(cells)
