"""The snmp and gnmi examples of deploy/agent.example.yaml and docs/agent.md are valid
adapter options (validated by the adapters' own option models)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.agent.config import LinkSourceSettings
from collector.agent.sources.devices import validate_options
from collector.agent.sources.gnmi import GnmiOptions
from collector.agent.sources.snmp import SnmpOptions
from collector.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MODELS: dict[str, Any] = {"snmp": SnmpOptions, "gnmi": GnmiOptions}


def example_blocks() -> dict[str, dict[str, Any]]:
    text = (ROOT / "deploy" / "agent.example.yaml").read_text()
    out: dict[str, dict[str, Any]] = {}
    for name, body in re.findall(r"# --- example: (\w+)[^\n]*\n(.*?)(?=\s*# --- )", text, re.S):
        lines = [ln.split("# ", 1)[1] if "# " in ln else "" for ln in body.splitlines()]
        out[name] = yaml.safe_load("\n".join(lines))
    return out


def doc_blocks() -> dict[str, dict[str, Any]]:
    text = (ROOT / "docs" / "agent.md").read_text()
    out = {}
    for body in re.findall(r"```yaml\n(.*?)```", text, re.S):
        doc = yaml.safe_load(body)
        link = (doc.get("sources") or {}).get("link") if isinstance(doc, dict) else None
        if link and link.get("adapter") in MODELS:
            out[link["adapter"]] = link
    return out


@pytest.mark.parametrize("where", ["deploy", "docs"])
def test_device_examples_are_valid(where: str) -> None:
    blocks = example_blocks() if where == "deploy" else doc_blocks()
    assert set(blocks) == {"snmp", "gnmi"}
    for name, block in blocks.items():
        settings = LinkSourceSettings.model_validate(block)
        assert settings.adapter == name
        opts = validate_options(MODELS[name], dict(settings.options))
        assert opts.targets


def test_a_bad_example_would_fail() -> None:
    with pytest.raises(ConfigError, match=r"targets\[0\]\.version"):
        validate_options(SnmpOptions, {"targets": [{"address": "r1", "version": "4"}]})
