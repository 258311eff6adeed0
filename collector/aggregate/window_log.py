"""Closed windows as plain records, and the window log that appends them to a file.

The per-partition state (collector/aggregate/state.py) hands every closed window to the
service's `on_window` sink; `aggregate.window_log` makes that sink a `WindowLog`, one JSON
line per (series, window end). Tests read the same records to compare with ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

import polars as pl


def window_records(
    partition: int, window_s: int, cw: pl.DataFrame, gw: pl.DataFrame
) -> list[dict[str, object]]:
    """Closed windows as plain records (the window log's lines); integers stay exact."""
    out: list[dict[str, object]] = []
    for r in cw.iter_rows(named=True):
        out.append(
            {
                "partition": partition,
                "window_s": window_s,
                "end_ns": r["end"],
                "kind": "counter",
                "site": r["site"],
                "metric": r["metric"],
                "labels": r["labels"],
                "increase": str(r["inc"]),
                "dt_ns": r["dt"],
                "n": r["n"],
                "resets": r["resets"],
                "wraps": r["wraps"],
            }
        )
    for r in gw.iter_rows(named=True):
        out.append(
            {
                "partition": partition,
                "window_s": window_s,
                "end_ns": r["end"],
                "kind": "gauge",
                "site": r["site"],
                "metric": r["metric"],
                "labels": r["labels"],
                "sum": r["sum"],
                "count": r["cnt"],
                "min": r["min"],
                "max": r["max"],
            }
        )
    return out


class WindowLog:
    """Appends every closed window to a JSON-lines file (aggregate.window_log)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: TextIO | None = None

    def __call__(self, partition: int, window_s: int, cw: pl.DataFrame, gw: pl.DataFrame) -> None:
        rows = window_records(partition, window_s, cw, gw)
        if rows:
            if self._file is None:
                self._file = open(self._path, "a", encoding="utf-8")  # noqa: SIM115 - see close()
            self._file.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
