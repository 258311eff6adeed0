"""Prometheus histogram families (text format 0.0.4) from per-bucket counts in a Polars frame.

A small addition to collector/exposition/render.py, which dispatches families of type
`histogram` here. The input is what a source measured: one row per histogram (its label
columns) and bucket, with `le` (the bucket's upper bound, Float64, +inf for the open top
bucket) and `value` (the count *in* that bucket, not cumulative). The output is a real
histogram family:

* `<name>_bucket{..., le="x"}`: cumulative counts (observations <= x), ascending `le`, always
  ending with `le="+Inf"` (added as the total when the input has no open bucket);
* every histogram of the family gets the same bounds (the union of the family's bounds), so
  `sum by (le)` across histograms (cells, sites, countries) stays a valid histogram, and a
  bound a histogram did not report gets the cumulative count below it;
* `<name>_count`: the total (= the +Inf bucket); `<name>_sum` only when the frame has a `sum`
  column (a distribution of binned reports has no exact sum, so none is made up).

Rows with a null or NaN `le`, or a negative or null count, are left out (the caller counts
them); equal bounds of one histogram are added up. An optional `timestamp_ms` column
(per histogram) is rendered on every sample of that histogram.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from collector.exposition.render import FamilyText, escape_help, format_value, label_text

_ORDER = "__order"


def cumulative(frame: pl.DataFrame, labels: Sequence[str]) -> pl.DataFrame:
    """Per-bucket counts -> one row per histogram and bound of the family's union of bounds:
    label columns, `le`, `value` = observations <= le (cumulative), plus `timestamp_ms` when
    given. The +Inf bound is always present and equals the histogram's total."""
    keys = list(labels)
    ts = "timestamp_ms" in frame.columns
    f = frame.filter(
        pl.col("le").is_not_null()
        & ~pl.col("le").is_nan()
        & pl.col("value").is_not_null()
        & (pl.col("value") >= 0)
    )
    if not len(f):
        return pl.DataFrame(
            schema={
                **{k: pl.String for k in keys},
                "le": pl.Float64,
                "value": pl.Float64,
                **({"timestamp_ms": pl.Int64} if ts else {}),
            }
        )
    f = f.with_columns(pl.col("le").cast(pl.Float64), pl.col("value").cast(pl.Float64))
    aggs = [pl.col("value").sum()]
    if ts:
        aggs.append(pl.col("timestamp_ms").max())
    if not keys:  # one histogram: a constant key keeps the code below uniform
        f = f.with_columns(pl.lit("").alias(_ORDER))
        return cumulative(f, [_ORDER]).drop(_ORDER)
    per = f.group_by([*keys, "le"]).agg(aggs).sort([*keys, "le"])
    per = per.with_columns(pl.col("value").cum_sum().over(keys))  # rows are in `le` order
    groups = per.group_by(keys).agg(*([pl.col("timestamp_ms").max()] if ts else []))
    bounds = pl.concat([per.select("le"), pl.DataFrame({"le": [float("inf")]})]).unique()
    grid = groups.join(bounds, how="cross").sort("le")
    # cumulative count at each bound = that of the largest reported bound <= it (0 below all)
    out = grid.join_asof(
        per.select(*keys, "le", "value").sort("le"),
        on="le",
        by=keys,
        strategy="backward",
        check_sortedness=False,
    )  # both sorted by le
    return out.with_columns(pl.col("value").fill_null(0.0)).sort([*keys, "le"])


def render_histogram(fam: FamilyText, frame: pl.DataFrame) -> str:
    """HELP, TYPE histogram, then per histogram its buckets (ascending) and `_count`."""
    head = f"# HELP {fam.name} {escape_help(fam.help)}\n# TYPE {fam.name} histogram\n"
    if not len(frame):
        return head
    keys = list(fam.labels)
    buckets = cumulative(frame, keys)
    if not len(buckets):
        return head
    ts = "timestamp_ms" in buckets.columns

    def label_parts(extra: pl.Expr | None) -> list[pl.Expr]:
        parts: list[pl.Expr] = []
        for i, lb in enumerate(keys):
            parts += [
                pl.lit(("{" if i == 0 else ",") + lb + '="'),
                label_text(frame, lb),  # (frame: every label value the lines below carry)
                pl.lit('"'),
            ]
        if extra is not None:
            parts += [pl.lit(',le="' if keys else '{le="'), extra, pl.lit('"')]
        if keys or extra is not None:
            parts.append(pl.lit("}"))
        return parts

    def line(suffix: str, extra: pl.Expr | None) -> pl.Expr:
        parts = [pl.lit(fam.name + suffix), *label_parts(extra), pl.lit(" "), format_value(pl.col("value"))]
        if ts:
            parts.append((pl.lit(" ") + pl.col("timestamp_ms").cast(pl.String)).fill_null(""))
        return pl.concat_str(parts)

    rank = pl.col("le").rank("ordinal").cast(pl.Int64)
    b = buckets.with_columns((rank.over(keys) if keys else rank).alias(_ORDER))
    b = b.select(*keys, _ORDER, text=line("_bucket", format_value(pl.col("le"))))
    totals = buckets.filter(pl.col("le") == float("inf"))
    parts = [b, totals.select(*keys, pl.lit(1 << 40, pl.Int64).alias(_ORDER), text=line("_count", None))]
    if "sum" in frame.columns:
        sums = frame.group_by(keys).agg(pl.col("sum").cast(pl.Float64).first())
        if ts:
            sums = sums.join(totals.select(*keys, "timestamp_ms"), on=keys, how="inner")
        sums = sums.rename({"sum": "value"})
        parts.append(
            sums.select(*keys, pl.lit((1 << 40) + 1, pl.Int64).alias(_ORDER), text=line("_sum", None))
        )
    lines = pl.concat(parts, how="vertical_relaxed").sort([*keys, _ORDER])
    return head + "\n".join(lines["text"].to_list()) + "\n"


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over one histogram's cumulative buckets (le, count),
    for readers of /metrics without a Prometheus (the `collector run` view): linear
    interpolation inside the bucket holding the rank; None without reports or +Inf bucket."""
    b = sorted(buckets)
    if len(b) < 2 or b[-1][0] != float("inf") or b[-1][1] <= 0 or not 0 <= q <= 1:
        return None
    rank = q * b[-1][1]
    i = next(i for i, (_, v) in enumerate(b) if v >= rank)
    if i == len(b) - 1:
        return b[-2][0]
    if i == 0 and b[0][0] <= 0:
        return b[0][0]
    start, count = (b[i - 1][0], b[i][1] - b[i - 1][1]) if i else (0.0, b[i][1])
    if i:
        rank -= b[i - 1][1]
    return start + (b[i][0] - start) * (rank / count) if count else b[i][0]
