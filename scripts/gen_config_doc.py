"""Generate docs/configuration.md from the settings models (run via `make docs`).

The Field descriptions in collector/config.py and collector/*/config.py are the single
source of truth; `--check` fails when the committed page is stale (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "configuration.md"
README = ROOT / "README.md"
BEGIN, END = "<!-- config:begin -->", "<!-- config:end -->"

HEADER = """# Configuration reference

Generated from the settings models by `scripts/gen_config_doc.py`; do not edit by hand.

Settings come from one YAML file (`collector --config FILE COMMAND`) and environment
variables, which win over the file: `COLLECTOR_<SECTION>__<KEY>`, e.g.
`COLLECTOR_KAFKA__BOOTSTRAP_SERVERS=kafka-1:9092,kafka-2:9092`. Nested keys continue with
`__`. Unknown keys are errors; every error names the key and the file or variable.
`collector config --defaults` prints every default; `collector --config FILE config`
validates a file and prints the effective settings.
"""


def _default(info: Any) -> str:
    if info.default_factory is not None:
        try:
            value = info.default_factory()
        except TypeError:
            return "(computed)"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return "(section)"
    try:
        text = json.dumps(value, default=str)
    except TypeError:
        text = str(value)
    return f"`{text}`"


def _type(annotation: Any) -> str:
    plain = isinstance(annotation, type) and not getattr(annotation, "__args__", None)
    text = annotation.__name__ if plain else str(annotation)
    for noise in ("typing.", "pathlib.", "collector.", "NoneType"):
        text = text.replace(noise, "None" if noise == "NoneType" else "")
    if text.startswith("Optional[") and text.endswith("]"):
        text = text[len("Optional[") : -1] + " | None"
    return text.replace("|", "\\|")


def _rows(model: type[BaseModel], prefix: str, out: list[str], sections: list[tuple[str, type]]) -> None:
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            sections.append((f"{prefix}{name}", ann))
            continue
        desc = (info.description or "").replace("|", "\\|").replace("\n", " ")
        env = "COLLECTOR_" + f"{prefix}{name}".replace(".", "__").upper()
        out.append(f"| `{prefix}{name}` | {_type(ann)} | {_default(info)} | {desc} | `{env}` |")


def render(header: str = HEADER, level: str = "##") -> str:
    from collector.config import Settings

    lines = [header] if header else []
    sections: list[tuple[str, type]] = []
    top: list[str] = []
    _rows(Settings, "", top, sections)
    table_head = ["| key | type | default | meaning | environment |", "|---|---|---|---|---|"]
    if top:
        lines += [f"{level} Top level", "", *table_head, *top, ""]
    while sections:
        path, model = sections.pop(0)
        rows: list[str] = []
        nested: list[tuple[str, type]] = []
        _rows(model, path + ".", rows, nested)
        doc = (model.__doc__ or "").strip().split("\n")[0]
        lines += [f"{level} `{path}`", ""]
        if doc and not doc.startswith(("Usage docs", "!!!")):
            lines += [doc, ""]
        lines += [*table_head, *rows, ""]
        sections = nested + sections
    return "\n".join(lines).rstrip() + "\n"


def readme_with_tables(readme: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the {BEGIN} / {END} markers")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render(header='', level='####')}{END}{tail}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    outputs = {OUT: render(), README: readme_with_tables(README.read_text())}
    stale = [p for p, text in outputs.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(ROOT)} is stale: run `make docs`", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(outputs[p])
    return 0


if __name__ == "__main__":
    sys.exit(main())
