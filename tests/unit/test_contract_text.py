"""The .proto states the contract's limits: every `[setting]=value` in it is the default of
that ingest setting, and every validation limit setting is stated there."""

from __future__ import annotations

import re
from pathlib import Path

from collector.config import IngestSettings
from collector.ingest import validate

PROTO = Path(__file__).resolve().parents[2] / "protos" / "telemetry" / "v1" / "telemetry.proto"
STATED = re.compile(r"\[([a-z_]+)\]=(\d+)")


def test_every_limit_stated_in_the_proto_is_the_settings_default() -> None:
    text = PROTO.read_text()
    stated = STATED.findall(text)
    assert len(stated) >= 12
    defaults = IngestSettings()
    for name, value in stated:
        assert float(getattr(defaults, name)) == float(value), name


def test_every_validation_limit_is_stated_in_the_proto() -> None:
    stated = {name for name, _ in STATED.findall(PROTO.read_text())}
    limits = set(validate.Limits.__dataclass_fields__)
    assert limits <= stated, limits - stated
    assert {
        "max_concurrent_streams",
        "max_streams_per_site",
        "max_inflight_per_site",
        "stream_idle_timeout_s",
        "retry_after_ms",
    } <= stated


def test_fixed_identifier_rules_match_the_validator() -> None:
    text = PROTO.read_text()
    assert validate.MAX_ID_LENGTH == 64
    assert "1..64 characters, [A-Za-z0-9][A-Za-z0-9._:-]*" in text
    assert validate.ID_RE.pattern == r"[A-Za-z0-9][A-Za-z0-9._:-]*\Z"
    assert validate.METRIC_RE.pattern == r"[A-Za-z_][A-Za-z0-9_.:-]*\Z"
    assert validate.LABEL_NAME_RE.pattern == r"[A-Za-z_][A-Za-z0-9_]*\Z"
    assert validate.MAX_UNIT_LENGTH == 32
    assert "at most 32 characters of [A-Za-z0-9_/%.-]" in text
