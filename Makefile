# The handful of verbs a newcomer needs. `make run` and `make test` are the README's two commands.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Each command the tests run, with the Debian package that provides it (command:package).
DEB_CMDS := prometheus:prometheus promtool:prometheus prometheus-alertmanager:prometheus-alertmanager \
  amtool:prometheus-alertmanager socat:socat snmpd:snmpd snmpbulkwalk:snmp tmux:tmux \
  kubectl:kubernetes-client fiu-run:fiu-utils fiu-ctrl:fiu-utils
APT_STAMP := $(VENV)/.apt-ok
# The suite (all but the fault suite, which runs beside it) runs in parallel worker processes
# (pytest-xdist; a file's tests share a worker): most tests wait on real servers (Tansu, gRPC,
# Prometheus), so 2 workers + the fault suite fit a 2-core machine. `make test
# PYTEST_WORKERS=0` runs it in one process; PYTEST_ARGS instead runs one pytest with them.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: run test lint lock proto docs dashboards bench bench-full setup setup-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Installs the exact versions of constraints.txt (a dependency missing from it, e.g. one
# just added to pyproject.toml, installs unpinned until `make lock` records it).
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[embedded,test,dev]'
	touch $@

# Debian packages the tests use (a real Prometheus, promtool, Alertmanager, socat, net-snmp's
# snmpd and snmpget/snmpbulkwalk, tmux for the live view of `collector run` read from a real
# terminal, kubectl for `kubectl kustomize` of deploy/k8s, libfiu's fiu-run/fiu-ctrl for the
# fault suite's failing disk); `apt-get update` once, only when something is missing, and
# only the packages of the missing commands: a command already on the machine from another
# package (e.g. a kubectl from Google's repository) is used as it is - installing Debian's over
# it would conflict.
$(APT_STAMP): | $(PY)
	@missing=""; pkgs=""; for cp in $(DEB_CMDS); do b=$${cp%%:*}; p=$${cp#*:}; \
	  command -v $$b >/dev/null 2>&1 && continue; missing="$$missing $$b"; \
	  case " $$pkgs " in *" $$p "*) ;; *) pkgs="$$pkgs $$p";; esac; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages ($$missing missing):$$pkgs"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs >/dev/null; \
	fi
	touch $@

setup: $(STAMP)

setup-test: $(STAMP) $(APT_STAMP)

## The main job: embedded broker + ingest + aggregator + simulated JP/US fleet + /metrics.
run: setup
	$(VENV)/bin/collector run

## Install everything the tests need, then run them. Exit code 5 (no tests ran) fails.
## The fault suite (tests/faults, mostly waiting on its processes' faults) runs in a second
## pytest beside the rest so the whole stays in CI's 10-minute budget; both exit codes count.
## With PYTEST_ARGS set, one pytest runs exactly what they select.
test: setup-test
	$(PY) scripts/gen_proto.py --check
	$(PY) scripts/gen_config_doc.py --check
	$(PY) scripts/gen_dashboards.py --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@if [ -n "$(PYTEST_ARGS)" ]; then \
	  $(VENV)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc; \
	fi; \
	ftmp=$$(mktemp -d); \
	echo "fault suite (pytest -m faults) runs beside the rest; its output follows the rest's"; \
	$(VENV)/bin/pytest -p no:cacheprovider -m faults --basetemp=$$ftmp/tmp tests/faults \
	  > $$ftmp/faults.log 2>&1 & fpid=$$!; \
	trap 'kill $$fpid 2>/dev/null; rm -rf $$ftmp' INT TERM; \
	$(VENV)/bin/pytest -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile -m "not faults"; rc=$$?; \
	wait $$fpid; frc=$$?; \
	echo "---------------- fault suite (pytest -m faults) ----------------"; cat $$ftmp/faults.log; \
	rm -rf $$ftmp; \
	fail=0; \
	for r in "suite $$rc" "faults $$frc"; do set -- $$r; \
	  if [ $$2 -eq 5 ]; then echo "pytest ($$1) collected no tests: failing" >&2; fail=1; \
	  elif [ $$2 -ne 0 ]; then echo "pytest ($$1) failed: exit $$2" >&2; fail=1; fi; \
	done; exit $$fail

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## Refresh constraints.txt: the newest versions pyproject.toml allows, for Python 3.11 on x86-64 Linux.
lock: setup
	$(VENV)/bin/uv pip compile pyproject.toml --extra embedded --extra test --extra dev \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --no-header \
	  --annotation-style line -o constraints.txt

proto: setup
	$(PY) scripts/gen_proto.py

## Regenerate the Grafana dashboards (grafana/dashboards/*.json) from scripts/gen_dashboards.py.
dashboards: setup
	$(PY) scripts/gen_dashboards.py

## Regenerate docs/configuration.md (settings models) and docs/metrics.md (aggregator outputs).
docs: setup
	$(PY) scripts/gen_config_doc.py
	$(PY) scripts/gen_metrics_doc.py

bench: setup
	$(PY) bench/ingest.py --quick
	$(PY) bench/aggregate.py --samples 200000 --rounds 1 --series-exposed 20000
	$(PY) bench/agent.py --quick
	$(PY) bench/scrape.py --quick
	$(PY) bench/simulate.py --quick
	$(PY) bench/capacity.py --quick
	$(PY) bench/e2e.py --quick

bench-full: setup
	$(PY) bench/ingest.py
	$(PY) bench/aggregate.py
	$(PY) bench/agent.py
	$(PY) bench/scrape.py
	$(PY) bench/simulate.py
	$(PY) bench/capacity.py --checkpoint-interval 60 --produce-timeout 120 --prom-scrapes 6
	$(PY) bench/e2e.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
