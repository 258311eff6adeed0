"""Settings: file + environment, errors that name the key and the source."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector.config import load_settings
from collector.errors import ConfigError


def test_defaults_load_without_a_file() -> None:
    s = load_settings()
    assert s.kafka.topic == "telemetry.v1"
    assert s.ingest.plaintext is False


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("kafka:\n  topic: from-file\n  client_id: file-client\n")
    monkeypatch.setenv("COLLECTOR_KAFKA__TOPIC", "from-env")
    s = load_settings(f)
    assert s.kafka.topic == "from-env"
    assert s.kafka.client_id == "file-client"


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("ingest:\n  max_seriess: 3\n")
    with pytest.raises(ConfigError, match=r"unknown setting.*c\.yaml.*ingest\.max_seriess"):
        load_settings(f)


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_INGEST__MAX_SERIES", "lots")
    with pytest.raises(ConfigError, match=r"COLLECTOR_INGEST__MAX_SERIES.*ingest\.max_series"):
        load_settings()


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("kafka:\n  topic: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+:\d+"):
        load_settings(f)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml")


def test_kafka_request_smaller_than_an_ingest_message_names_the_key_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Otherwise every large batch would be answered UNAVAILABLE and retried forever.
    f = tmp_path / "c.yaml"
    f.write_text("ingest:\n  max_message_bytes: 4194304\nkafka:\n  max_request_size: 4194304\n")
    with pytest.raises(ConfigError) as err:
        load_settings(f)
    assert "kafka.max_request_size" in str(err.value)
    assert str(f) in str(err.value)
    monkeypatch.setenv("COLLECTOR_KAFKA__MAX_REQUEST_SIZE", "2000000")
    with pytest.raises(ConfigError, match="COLLECTOR_KAFKA__MAX_REQUEST_SIZE"):
        load_settings(tmp_path / "c.yaml")
    monkeypatch.setenv("COLLECTOR_KAFKA__MAX_REQUEST_SIZE", str(4194304 + 1024))
    assert load_settings(f).kafka.max_request_size == 4194304 + 1024


def _agent_config(tmp_path: Path, link_options: str) -> Path:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent:
  agent_id: jp-test-01-edge1
  site: {{site_id: jp-test-01, country: JP, timezone: Asia/Tokyo}}
  ingest: {{target: "127.0.0.1:1"}}
  spool: {{dir: {tmp_path / "spool"}}}
  metrics_listen: ""
  sources:
    server: {{enabled: false}}
    cell: {{enabled: false}}
    link:
      adapter: snmp
      options: {link_options}
""")
    return cfg


def _run_agent(cfg: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    return subprocess.run(
        [sys.executable, "-m", "collector", "agent", "--config", str(cfg), "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**environ, **env},
    )


def test_adapter_option_error_names_the_key_and_the_file(tmp_path: Path) -> None:
    # Adapter options are checked when the agent builds its sources, after the file was
    # loaded: the error still names the file, and the key down to the target's entry.
    cfg = _agent_config(
        tmp_path,
        '{targets: [{address: "127.0.0.1:161", community: x}, '
        '{address: "127.0.0.1:162", community: x, retriez: 3}]}',
    )
    out = _run_agent(cfg)
    assert out.returncode == 2, out.stderr
    assert f"in {cfg} at agent.sources.link.options.targets[1].retriez" in out.stderr
    assert "config error" in out.stderr


def test_adapter_secret_error_names_the_key_and_the_file(tmp_path: Path) -> None:
    cfg = _agent_config(
        tmp_path, '{targets: [{address: "127.0.0.1:161", community_env: NO_SUCH_VARIABLE_FOR_TEST}]}'
    )
    out = _run_agent(cfg)
    assert out.returncode == 2, out.stderr
    assert f"in {cfg} at agent.sources.link.options.targets[0].community_env" in out.stderr


def test_adapter_option_error_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    cfg = _agent_config(tmp_path, '{targets: [{address: "127.0.0.1:161", community: x}]}')
    env = "COLLECTOR_AGENT__SOURCES__LINK__OPTIONS"
    out = _run_agent(
        cfg, **{env: '{"targets": [{"address": "127.0.0.1:161", "community": "x", "interval_s": "often"}]}'}
    )
    assert out.returncode == 2, out.stderr
    assert f"in environment variable {env} at agent.sources.link.options.targets[0].interval_s" in out.stderr
    assert str(cfg) not in out.stderr


def test_collector_config_checks_device_adapter_options_and_names_the_file(tmp_path: Path) -> None:
    cfg = _agent_config(
        tmp_path,
        '{targets: [{address: "127.0.0.1:161", community: x}, '
        '{address: "127.0.0.1:162", community: x, retriez: 3}]}',
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    out = subprocess.run(
        [sys.executable, "-m", "collector", "--config", str(cfg), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
    )
    assert out.returncode == 2, out.stderr
    assert f"in {cfg} at agent.sources.link.options.targets[1].retriez" in out.stderr
    # secrets are the agent host's business: an unset variable is not an error here
    good = _agent_config(
        tmp_path, '{targets: [{address: "127.0.0.1:161", community_env: NO_SUCH_VARIABLE_FOR_TEST}]}'
    )
    out = subprocess.run(
        [sys.executable, "-m", "collector", "--config", str(good), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    ("yaml", "key"),
    [
        (
            "ingest:\n  max_message_bytes: {n}\nkafka:\n  max_request_size: 2147483647\n",
            "ingest.max_message_bytes",
        ),
        ("agent:\n  ingest:\n    max_batch_bytes: {n}\n", "agent.ingest.max_batch_bytes"),
    ],
)
def test_a_message_limit_past_what_grpc_can_carry_names_the_key_and_file(
    tmp_path: Path, yaml: str, key: str
) -> None:
    # gRPC's message limits are 32-bit: a bigger agent limit failed every stream attempt with
    # an OverflowError deep in grpcio, retried forever.
    f = tmp_path / "c.yaml"
    f.write_text(yaml.format(n=2**31))
    with pytest.raises(ConfigError) as err:
        load_settings(f)
    assert f"{f} at {key}" in str(err.value)
    f.write_text(yaml.format(n=2**30))
    load_settings(f)
