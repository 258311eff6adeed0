"""Regenerate the committed Python code for protos/ (run via `make proto`).

Uses the pinned grpcio-tools from the `dev` extra. The generated modules import each other
as `telemetry.v1...`; they are rewritten to live under `collector.proto`. `--check` compares
instead of writing and exits 1 when the committed code is stale (a test runs it).

Third-party protos are vendored unchanged at their canonical import path (so their
descriptors carry the names every other gNMI implementation uses); `VENDORED` maps that path
to a Python package under `collector/proto` (a directory named `github.com` cannot be one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "collector" / "proto"
# protoc's output directory of a vendored proto (its import path, "github.com" becoming
# "github/com") -> package under collector/proto (openconfig/gnmi, Apache-2.0)
VENDORED = {
    "github/com/openconfig/gnmi/proto/gnmi": "openconfig/gnmi",
    "github/com/openconfig/gnmi/proto/gnmi_ext": "openconfig/gnmi_ext",
}


def _vendored(rel: Path) -> Path:
    for src, dst in VENDORED.items():
        if rel.parent == Path(src):
            return Path(dst) / rel.name
    return rel


def generate() -> dict[Path, str]:
    from grpc_tools import protoc  # imported here: a dev-only dependency

    well_known = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(
            [
                "protoc",
                f"-I{PROTOS}",
                f"-I{well_known}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                *files,
            ]
        )
        if rc != 0:
            raise SystemExit(f"protoc failed with {rc}")
        out: dict[Path, str] = {}
        for path in sorted(Path(tmp).rglob("*")):
            if path.suffix not in (".py", ".pyi"):
                continue
            text = path.read_text()
            text = text.replace("from telemetry.", "from collector.proto.telemetry.")
            for src, dst in VENDORED.items():
                text = text.replace(
                    f"from {src.replace('/', '.')} import",
                    f"from collector.proto.{dst.replace('/', '.')} import",
                )
                text = text.replace(
                    f"'{src.replace('/', '.')}.",  # the classes' __module__
                    f"'collector.proto.{dst.replace('/', '.')}.",
                )
            out[_vendored(path.relative_to(tmp))] = text
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args()
    generated = generate()
    stale = []
    for rel, text in generated.items():
        target = OUT / rel
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(str(target.relative_to(ROOT)))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    packages = {OUT / rel.parent for rel in generated} | {OUT, OUT / "telemetry"}
    packages |= {OUT / Path(dst).parent for dst in VENDORED.values()}
    for pkg in packages:
        init = pkg / "__init__.py"
        if not init.exists():
            if args.check:
                stale.append(str(init.relative_to(ROOT)))
            else:
                init.write_text("")
    if stale:
        print("stale generated code (run `make proto`):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
