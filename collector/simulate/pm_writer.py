"""A TS 32.435 `measCollecFile` writer: what a gNB (or its OSS) drops into the cell source's
PM directory.

Not part of the agent (which only reads PM files, collector/agent/sources/pm_parser.py): the
simulator's PM files (collector/simulate/pm_files.py), the tests and bench/agent.py write
their files with it.
"""

from __future__ import annotations

import datetime as dt
from xml.sax.saxutils import escape, quoteattr


def render_meas_collec(
    *,
    begin: dt.datetime,
    duration_s: int,
    element: str,
    cells: dict[str, dict[str, float | int | str]],
    positional: bool = False,
    info_id: str = "NRCell",
    suspect: frozenset[str] = frozenset(),
    objects: dict[str, str] | None = None,
) -> bytes:
    """A TS 32.435 measCollecFile with one measInfo: `cells` maps a cell id to its
    measurement values (a str value is written as is: "NIL", "abc"). What a gNB writes; for
    tests, the benchmark and the simulator. `positional` picks <measTypes>/<measResults>
    instead of p-indexed elements; `suspect` lists cells flagged suspect; `objects` maps a
    key of `cells` to another measObjLdn (a gNB-level function, say)."""
    end = begin + dt.timedelta(seconds=duration_s)
    types = sorted({m for vals in cells.values() for m in vals})
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<measCollecFile xmlns="http://www.3gpp.org/ftp/specs/archive/32_series/32.435#measCollec">',
        f'<fileHeader fileFormatVersion="32.435 V10.0" vendorName="edge"><fileSender '
        f"localDn={quoteattr('ManagedElement=' + element)}/>"
        f'<measCollec beginTime="{begin.isoformat()}"/></fileHeader>',
        f"<measData><managedElement localDn={quoteattr('ManagedElement=' + element)}/>",
        f'<measInfo measInfoId={quoteattr(info_id)}><job jobId="1"/>'
        f'<granPeriod duration="PT{duration_s}S" endTime="{end.isoformat()}"/>'
        f'<repPeriod duration="PT{duration_s}S"/>',
    ]
    if positional:
        out.append(f"<measTypes>{' '.join(types)}</measTypes>")
    else:
        out.extend(f'<measType p="{i}">{t}</measType>' for i, t in enumerate(types, start=1))

    def text(v: float | int | str) -> str:
        return escape(v) if isinstance(v, str) else repr(v)

    for cell, vals in cells.items():
        ldn = (objects or {}).get(cell) or f"ManagedElement={element},GNBDUFunction=1,NRCellDU={cell}"
        out.append(f"<measValue measObjLdn={quoteattr(ldn)}>")
        if positional:
            out.append(
                "<measResults>"
                + " ".join(text(vals[t]) if t in vals else "NIL" for t in types)
                + "</measResults>"
            )
        else:
            out.extend(f'<r p="{i}">{text(vals[t])}</r>' for i, t in enumerate(types, start=1) if t in vals)
        out.append(f"<suspect>{'true' if cell in suspect else 'false'}</suspect></measValue>")
    out.append(
        f'</measInfo></measData><fileFooter><measCollec endTime="{end.isoformat()}"/>'
        "</fileFooter></measCollecFile>"
    )
    return "\n".join(out).encode()
