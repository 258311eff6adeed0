"""Every deploy file parses, validates against its schema, and agrees with the code.

Dockerfile (BuildKit's own parser), compose (the Compose Specification's JSON schema,
vendored in tests/schemas/), Envoy, Prometheus (promtool check config), Kubernetes
(`kubectl kustomize`, then every object against the Kubernetes OpenAPI schemas shipped by
kubernetes-validate, strict), systemd (systemd-analyze verify + security). Beyond the
schemas: every image is pinned, every command line parses with collector's own argparse,
every embedded config loads through the settings model (with the environment the file
gives it), and the ports, topics, paths and user ids the files mention are the ones the
code and the other files use.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml

from collector.cli import build_parser
from collector.config import Settings, load_settings
from collector.health_cmd import SERVICE

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
K8S = DEPLOY / "k8s"
OUR_IMAGE = "edge-collector"
IMAGE_UID = 10001


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_under_deploy_parses(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs, path


def _argv_ok(argv: list[str]) -> Any:
    """Parse a collector command line with the CLI's own parser (SystemExit = bad flag)."""
    from collector.cli import command_of

    return build_parser(command_of(argv)).parse_args(argv)


def _load(path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    with monkeypatch.context() as m:
        for k, v in env.items():
            if k.startswith("COLLECTOR_"):
                m.setenv(k, v)
        return load_settings(path)


def _port(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


# ------------------------------------------------------------------ Dockerfile


def _stages() -> list[list[Any]]:
    stages: list[list[Any]] = []
    for c in dockerfile.parse_file(str(ROOT / "deploy" / "Dockerfile")):
        if c.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(c)
    return stages


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck_per_role() -> None:
    stages = _stages()
    assert len(stages) >= 2
    final = {c.cmd: c for c in stages[-1]}
    assert final["USER"].value[0] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert final["ENTRYPOINT"].json
    assert final["ENTRYPOINT"].value == ("collector",)
    hc = final["HEALTHCHECK"].value
    assert hc[0] == "CMD"
    assert hc[1] == "collector"
    assert _argv_ok(list(hc[2:])).command == "health"  # the role comes from PID 1
    assert "--from=build" in next(c for c in stages[-1] if c.cmd == "COPY").flags
    s = Settings()
    defaults = {
        _port(s.ingest.listen),
        _port(s.ingest.metrics_listen),
        _port(s.aggregate.metrics_listen),
        _port(s.agent.metrics_listen),
    }
    assert {int(p) for p in final["EXPOSE"].value} == defaults
    for c in stages[0]:
        if c.cmd == "COPY":
            for src in c.value[:-1]:
                assert (ROOT / src).exists(), src
    env = dict(zip(final["ENV"].value[::2], final["ENV"].value[1::2], strict=True))
    assert load_settings().model_copy() is not None
    assert env["COLLECTOR_AGENT__SPOOL__DIR"].startswith("/var/lib/collector")


# ------------------------------------------------------------------ compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_compose_file_satisfies_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)  # the schema's own draft
    validator.validate(compose)
    bad = json.loads(json.dumps(compose))
    bad["services"]["ingest-1"]["restart_policy"] = "always"  # not a Compose key
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)


def _ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        n: s
        for n, s in compose["services"].items()
        if str(s.get("image", "")).split(":")[0].endswith(OUR_IMAGE)
        or "${COLLECTOR_IMAGE" in str(s.get("image", ""))
    }


def _binds(svc: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path of a service's bind mounts."""
    out = {}
    for v in svc.get("volumes", []):
        src, dst = v.split(":")[:2]
        if src.startswith("."):
            out[dst] = (COMPOSE.parent / src).resolve()
    return out


def test_compose_images_are_pinned_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = str(svc["image"])
        if name in _ours(compose):
            assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
            assert (COMPOSE.parent / svc["build"]["context"] / "deploy" / "Dockerfile").is_file()
            continue
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+(\.\d+)?", image), f"{name}: unpinned {image}"
        for host in _binds(svc).values():
            assert host.exists(), f"{name}: {host}"
    for name, svc in _ours(compose).items():
        for host in _binds(svc).values():
            assert host.exists(), f"{name}: {host}"


def _collector_argvs(svc: dict[str, Any]) -> list[list[str]]:
    cmd = svc.get("command")
    if svc.get("entrypoint") == ["/bin/sh", "-ec"]:
        return [shlex.split(ln)[1:] for ln in cmd[0].splitlines() if ln.startswith("collector ")]
    return [list(cmd)]


def test_compose_commands_parse_and_their_configs_load(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = set()
    for name, svc in _ours(compose).items():
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        binds = _binds(svc)
        for argv in _collector_argvs(svc):
            args = _argv_ok(argv)
            seen.add(args.command)
            cfg = args.sub_config or args.config
            if cfg:
                assert cfg in binds, f"{name}: {cfg} is not mounted"
                _load(binds[cfg], env, monkeypatch)
        for t in svc.get("healthcheck", {}).get("test", [])[1:2]:
            assert t == "collector", name
            hc = _argv_ok(svc["healthcheck"]["test"][2:])
            assert hc.command == "health", name
            assert hc.role in name, name
            assert (hc.sub_config or hc.config) in binds
    assert {"ingest", "aggregate", "simulate", "dev-certs"} <= seen


def test_compose_kafka_is_a_three_broker_kraft_cluster_with_the_topics_the_code_uses(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    svcs = compose["services"]
    brokers = [n for n in svcs if re.fullmatch(r"kafka-\d", n)]
    assert len(brokers) == 3
    voters = svcs["kafka-1"]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert len(voters.split(",")) == 3
    for b in brokers:
        e = svcs[b]["environment"]
        assert e["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert e["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert e["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert e["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    ingest = _load(_binds(svcs["ingest-1"])["/etc/collector/ingest.yaml"], {}, monkeypatch)
    agg = _load(_binds(svcs["aggregate-1"])["/etc/collector/aggregate.yaml"], {}, monkeypatch)
    assert (
        int(svcs["kafka-1"]["environment"]["KAFKA_MESSAGE_MAX_BYTES"])
        >= ingest.ingest.max_message_bytes + 1024
    )
    assert ingest.kafka.bootstrap_servers.split(",") == [f"{b}:9092" for b in brokers]
    script = svcs["kafka-init"]["command"][0]
    topics = dict(
        re.findall(
            r"--topic (\S+) --partitions (\d+) --replication-factor 3 "
            r"--config min.insync.replicas=2",
            script,
        )
    )
    assert set(topics) == {ingest.kafka.topic, ingest.kafka.dead_letter_topic, agg.aggregate.state_topic}
    members = [n for n in svcs if n.startswith("aggregate-")]
    assert len(members) == 2
    assert int(topics[ingest.kafka.topic]) >= len(members)
    assert int(topics[agg.aggregate.state_topic]) >= int(topics[ingest.kafka.topic])
    assert len({n for n in svcs if n.startswith("ingest-")}) == 2


def test_compose_envoy_balances_grpc_over_the_ingest_replicas_with_tls(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    svcs = compose["services"]
    envoy_svc = svcs["envoy"]
    cfg = yaml.safe_load(_binds(envoy_svc)["/etc/envoy/envoy.yaml"].read_text())
    res = cfg["static_resources"]
    clusters = {c["name"]: c for c in res["clusters"]}
    ingest = _load(_binds(svcs["ingest-1"])["/etc/collector/ingest.yaml"], {}, monkeypatch)
    (listener,) = res["listeners"]
    fc = listener["filter_chains"][0]
    assert "DownstreamTlsContext" in fc["transport_socket"]["typed_config"]["@type"]
    files = re.findall(r"filename: (\S+)", yaml.safe_dump(cfg))
    mounted = [v.split(":")[1] for v in envoy_svc["volumes"]]
    for f in files:
        assert any(f.startswith(m) for m in mounted), f
    hcm = fc["filters"][0]["typed_config"]
    for vh in hcm["route_config"]["virtual_hosts"]:
        for r in vh["routes"]:
            assert r["route"]["cluster"] in clusters
    c = clusters["ingest"]
    eps = [
        e["endpoint"]["address"]["socket_address"]
        for e in c["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert {e["address"] for e in eps} == {n for n in svcs if n.startswith("ingest-")}
    assert {e["port_value"] for e in eps} == {_port(ingest.ingest.listen)}
    assert c["health_checks"][0]["grpc_health_check"]["service_name"] == SERVICE
    assert "UpstreamTlsContext" in c["transport_socket"]["typed_config"]["@type"]
    assert listener["address"]["socket_address"]["port_value"] == 4317
    # the fleet connects to envoy and verifies that name
    fleet = _load(_binds(svcs["fleet"])["/etc/collector/fleet.yaml"], {}, monkeypatch)
    assert fleet.agent.ingest.target == "envoy:4317"
    certs_script = svcs["certs"]["command"][0]
    assert "--dns envoy" in certs_script
    assert "--dns " + c["transport_socket"]["typed_config"]["sni"] in certs_script


def test_compose_prometheus_uses_the_project_config_and_scrapes_what_runs(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    svcs = compose["services"]
    binds = _binds(svcs["prometheus"])
    assert binds["/etc/prometheus"] == (DEPLOY / "prometheus").resolve()
    targets = binds["/etc/prometheus/targets"]
    agg = _load(_binds(svcs["aggregate-1"])["/etc/collector/aggregate.yaml"], {}, monkeypatch)
    ing = _load(_binds(svcs["ingest-1"])["/etc/collector/ingest.yaml"], {}, monkeypatch)
    want = {
        "aggregate.yml": {
            f"{n}:{_port(agg.aggregate.metrics_listen)}" for n in svcs if n.startswith("aggregate-")
        },
        "ingest.yml": {f"{n}:{_port(ing.ingest.metrics_listen)}" for n in svcs if n.startswith("ingest-")},
        "alertmanager.yml": {"alertmanager:9093"},
    }
    for f, hosts in want.items():
        got = {t for g in yaml.safe_load((targets / f).read_text()) for t in g["targets"]}
        assert got == hosts, f
    am = _binds(svcs["alertmanager"])
    assert am["/etc/alertmanager/alertmanager.yml"].is_file()
    # promtool on the project's config with this deployment's targets in place
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make test` (Debian prometheus)"
    conf = tmp_path / "prometheus"
    shutil.copytree(DEPLOY / "prometheus", conf)
    shutil.rmtree(conf / "targets", ignore_errors=True)
    shutil.copytree(targets, conf / "targets")
    for cfg in (DEPLOY / "prometheus" / "prometheus.yml", conf / "prometheus.yml"):
        res = subprocess.run(
            [promtool, "check", "config", str(cfg)], capture_output=True, text=True, timeout=60, check=False
        )
        assert res.returncode == 0, res.stdout + res.stderr
    graf = _binds(svcs["grafana"])
    assert graf["/etc/grafana/provisioning"] == (ROOT / "grafana" / "provisioning").resolve()
    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    dash = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/collector.yaml").read_text())
    assert dash["providers"][0]["options"]["path"] in graf


# ------------------------------------------------------------------ Kubernetes


def _kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (kustomize) is installed by `make test`"
    res = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


@pytest.fixture(scope="module", params=["base", "overlays/example"])
def k8s(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _kustomize(K8S / request.param)


K8S_VERSION = "1.30"


def test_kubernetes_objects_validate_against_the_openapi_schemas(k8s: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in k8s}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "ServiceAccount"} <= kinds
    for d in k8s:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    dep = json.loads(json.dumps(next(d for d in k8s if d["kind"] == "Deployment")))
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def _by(k8s: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in k8s if d["kind"] == kind and d["metadata"]["name"].startswith(name))


def _container_settings(
    k8s: list[dict[str, Any]], c: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Settings]:
    args = _argv_ok(c["args"])
    env = {}
    for e in c.get("env", []):
        ref = e["valueFrom"]["configMapKeyRef"]
        env[e["name"]] = _by(k8s, "ConfigMap", ref["name"])["data"][ref["key"]]
    cfg_path = args.sub_config or args.config
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == cfg_path)
    cm = _by(k8s, "ConfigMap", f"edge-collector-{args.command}")
    f = tmp_path / mount["subPath"]
    f.write_text(cm["data"][mount["subPath"]])
    return args, _load(f, env, monkeypatch)


def test_kubernetes_workloads_agree_with_the_code(
    k8s: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deps = {d["metadata"]["name"]: d for d in k8s if d["kind"] == "Deployment"}
    assert set(deps) == {"edge-collector-ingest", "edge-collector-aggregate"}
    docs = (ROOT / "docs" / "deploy.md").read_text()
    for name, d in deps.items():
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == IMAGE_UID
        assert pod["securityContext"]["runAsNonRoot"] is True
        (c,) = pod["containers"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["resources"]["requests"]["cpu"]
        assert c["resources"]["requests"]["memory"]
        args, s = _container_settings(k8s, c, tmp_path, monkeypatch)
        assert args.command in name
        assert s.kafka.bootstrap_servers
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        ann = d["spec"]["template"]["metadata"]["annotations"]
        if args.command == "ingest":
            assert ports["grpc"] == _port(s.ingest.listen)
            assert ports["metrics"] == _port(s.ingest.metrics_listen) == int(ann["prometheus.io/port"])
            probe = _argv_ok(c["readinessProbe"]["exec"]["command"][1:])
            assert (probe.command, probe.role) == ("health", "ingest")
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert Path(s.ingest.tls_cert).parent.as_posix() in mounts  # type: ignore[arg-type]
            assert Path(s.ingest.tokens_file).parent.as_posix() in mounts  # type: ignore[arg-type]
            for v in pod["volumes"]:
                if "secret" in v:
                    assert v["secret"]["secretName"] in docs  # how to create it is documented
            pdb = _by(k8s, "PodDisruptionBudget", name)
            assert pdb["spec"]["selector"] == d["spec"]["selector"]
            svc = _by(k8s, "Service", name)
            assert {p["name"] for p in svc["spec"]["ports"]} == {"grpc", "metrics"}
        else:
            assert ports["metrics"] == _port(s.aggregate.metrics_listen)
            assert int(ann["prometheus.io/port"]) == ports["metrics"]
            for probe in ("readinessProbe", "livenessProbe"):
                assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
            assert d["spec"]["replicas"] <= 12  # the documented partitions of telemetry.v1
            assert "12 partitions" in docs


# ------------------------------------------------------------------ systemd


UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
EXAMPLES = {
    "collector-agent.service": DEPLOY / "agent.example.yaml",
    "collector-ingest.service": DEPLOY / "ingest.example.yaml",
    "collector-aggregate.service": DEPLOY / "aggregate.example.yaml",
}


def test_there_is_a_unit_for_every_role() -> None:
    assert {u.name for u in UNITS} == set(EXAMPLES)


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_unit_is_hardened_runs_the_cli_and_verifies(unit: Path, tmp_path: Path) -> None:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(unit)
    svc = cp["Service"]
    argv = svc["ExecStart"].split()
    assert argv[0] == "/opt/collector/bin/collector"
    args = _argv_ok(argv[1:])
    assert f"collector-{args.command}.service" == unit.name
    s = load_settings(EXAMPLES[unit.name])
    assert (args.sub_config or args.config).endswith(EXAMPLES[unit.name].name.replace(".example", ""))
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "DynamicUser": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "KillSignal": "SIGTERM",
        "Restart": "always",
    }.items():
        assert svc[key] == value, (unit.name, key)
    # every credential path the example config uses is loaded by the unit
    creds = {
        ln.split("=", 1)[1].split(":")[0]
        for ln in unit.read_text().splitlines()
        if ln.startswith("LoadCredential=")
    }
    live = "\n".join(ln.split("#", 1)[0] for ln in EXAMPLES[unit.name].read_text().splitlines())
    used = set(re.findall(rf"/run/credentials/{unit.name}/([\w.]+)", live))
    assert used == creds, (used, creds)
    assert s is not None
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze (Debian systemd) is on every machine make test runs on"
    local = tmp_path / unit.name
    local.write_text(unit.read_text().replace("/opt/collector/bin/collector", "/bin/true"))
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
