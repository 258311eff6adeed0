"""Vectorised Prometheus text exposition (format 0.0.4) straight from Polars frames.

The aggregator's state has one row per series and window; building a Python object per
row (Gauge.labels().set(), or a MetricFamily.add_metric per sample) costs seconds at 100k
series. Here each family is one Polars expression: label values escaped column-wise, lines
concatenated with `concat_str`, joined once. bench/aggregate.py measures it against the
prometheus-client Gauge baseline; tests check it with `promtool check metrics` and the
prometheus-client parser.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True, slots=True)
class FamilyText:
    """What the renderer needs to know about a family."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...]


def escape_label(expr: pl.Expr) -> pl.Expr:
    """Label value escaping of the text format: backslash, double quote, line feed."""
    return (
        expr.str.replace_all("\\", "\\\\", literal=True)
        .str.replace_all('"', '\\"', literal=True)
        .str.replace_all("\n", "\\n", literal=True)
    )


# a character the text format escapes in a label value (backslash, double quote, line feed)
_TO_ESCAPE = r'[\\"\n]'


def label_text(frame: pl.DataFrame, label: str) -> pl.Expr:
    """Column `label` of `frame` as label values of the text format (null: empty). Escaped
    only when some value of the column has a character to escape: one scan of the column
    instead of three replacement passes, which site ids, link names or countries never need
    and which were a quarter of a render's CPU (docs/aggregator.md, Exposition). The same
    text either way."""
    col = pl.col(label).fill_null("")
    values = frame.get_column(label)
    if values.dtype == pl.String and not values.str.contains(_TO_ESCAPE).any():
        return col
    return escape_label(col)


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(expr: pl.Expr) -> pl.Expr:
    """Float64 -> text the Prometheus parsers read back to the same float64.

    Polars prints the shortest round-tripping representation ("1e+20", "0.1"); only the
    non-finite spellings differ from the exposition format's.
    """
    s = expr.cast(pl.Float64).cast(pl.String)
    return pl.when(s == "inf").then(pl.lit("+Inf")).when(s == "-inf").then(pl.lit("-Inf")).otherwise(s)


def render_family(fam: FamilyText, frame: pl.DataFrame) -> str:
    """HELP, TYPE and one line per row of `frame` (label columns + `value`)."""
    head = f"# HELP {fam.name} {escape_help(fam.help)}\n# TYPE {fam.name} {fam.type}\n"
    if not len(frame):
        return head
    parts: list[pl.Expr] = []
    for i, lb in enumerate(fam.labels):
        parts.append(pl.lit(("{" if i == 0 else ",") + lb + '="'))
        parts.append(label_text(frame, lb))
        parts.append(pl.lit('"'))
    if fam.labels:
        parts.append(pl.lit("}"))
    parts.append(pl.lit(" "))
    parts.append(format_value(pl.col("value")))
    if "timestamp_ms" in frame.columns:
        # optional per-sample timestamp (ms); rows without one (null) end at the value
        parts.append((pl.lit(" ") + pl.col("timestamp_ms").cast(pl.String)).fill_null(""))
    lines = frame.select(pl.concat_str([pl.lit(fam.name), *parts]).str.join("\n"))
    return head + lines.item() + "\n"


def render(
    families: Iterable[FamilyText], frames: Mapping[str, pl.DataFrame], *, skip_empty: bool = True
) -> bytes:
    """Families of type `histogram` take per-bucket counts (collector/exposition/histogram.py)."""
    from collector.exposition.histogram import render_histogram

    out: list[str] = []
    for fam in families:
        frame = frames.get(fam.name)
        if frame is None or not len(frame):
            if skip_empty:
                continue
            frame = pl.DataFrame()
        out.append(render_histogram(fam, frame) if fam.type == "histogram" else render_family(fam, frame))
    return "".join(out).encode()
