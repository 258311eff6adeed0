"""Deploy files of the agent: the example config loads, the systemd unit is hardened."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

from collector.agent.main import build_sources, site_of
from collector.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "collector-agent.service"


def test_example_config_loads_and_builds_every_source() -> None:
    s = load_settings(ROOT / "deploy" / "agent.example.yaml")
    a = s.agent
    assert site_of(a).site_id == "jp-tokyo-01"
    assert a.ingest.token_file == Path("/run/credentials/collector-agent.service/token")
    assert a.spool.dir == Path("/var/lib/collector-agent/spool")
    assert [src.name for src in build_sources(a)] == ["server", "link", "cell"]
    assert a.spool.max_age_s < s.ingest.max_past_age_s


def test_systemd_unit_is_hardened_and_verifies(tmp_path: Path) -> None:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(UNIT)
    svc = cp["Service"]
    assert svc["ExecStart"].split()[1:] == ["agent", "--config", "/etc/collector-agent/agent.yaml"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "DynamicUser": "yes",
        "StateDirectory": "collector-agent",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "SystemCallFilter": "@system-service",
        "KillSignal": "SIGTERM",
    }.items():
        assert svc[key] == value, key
    assert svc["LoadCredential"].startswith("token:")
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return  # the static checks above still ran
    local = tmp_path / UNIT.name
    local.write_text(UNIT.read_text().replace("/opt/collector/bin/collector", "/bin/true"))
    res = subprocess.run(
        [tool, "verify", str(local)], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stderr
    sec = subprocess.run(
        [tool, "security", "--offline=yes", "--threshold=30", str(local)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sec.returncode == 0, sec.stdout[-2000:]
