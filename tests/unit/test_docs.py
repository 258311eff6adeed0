"""Generated documentation stays in step with the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_and_readme_tables_are_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_config_doc.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_setting_has_a_description() -> None:
    from pydantic import BaseModel

    from collector.config import Settings

    missing: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            ann = info.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
            elif not (info.description or "").strip():
                missing.append(prefix + name)

    walk(Settings, "")
    assert missing == []


def test_grafana_provisioning_is_valid_and_points_at_the_dashboards() -> None:
    import yaml

    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (prom,) = ds["datasources"]
    assert prom["type"] == "prometheus"
    assert prom["uid"] == "edge-prometheus"
    dash = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/collector.yaml").read_text())
    (provider,) = dash["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].endswith("/dashboards")
    import json

    dashboards = sorted((ROOT / "grafana/dashboards").glob("*.json"))
    assert len(dashboards) >= 5  # the provisioned folder is not empty (tests/unit/test_dashboards.py)
    for f in dashboards:  # every dashboard uses that datasource
        text = json.dumps(json.loads(f.read_text()))
        assert prom["uid"] in text, f.name
