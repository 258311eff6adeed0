# syntax=docker/dockerfile:1
# One image for every role; the command picks it:
#   docker run IMAGE ingest | aggregate | agent | simulate | run | broker | config | health
# Build:   docker build -t edge-collector:0.1.0 .
#          docker build --build-arg EXTRAS=embedded -t edge-collector:0.1.0-embedded .
#            (adds the Tansu broker for `collector run` / `collector broker`; x86-64 only)
# The image runs as the unprivileged user `collector` (uid/gid 10001), writes only to
# /var/lib/collector (spools, the run work dir) and reads its config from /etc/collector.
# docs/deploy.md explains the volumes, ports and healthchecks of each role.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with the package and its pinned dependencies --------------------
FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/collector
COPY pyproject.toml constraints.txt README.md ./
COPY collector ./collector
RUN /opt/collector/bin/pip install -c constraints.txt ".${EXTRAS:+[$EXTRAS]}" \
 && /opt/collector/bin/collector --help >/dev/null

# ---- runtime: the virtualenv, a non-root user, nothing else ------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="edge-telemetry-collector" \
      org.opencontainers.image.description="Edge telemetry collector: gRPC ingest into Kafka, Polars aggregation, Prometheus exposition" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 collector \
 && useradd --system --uid 10001 --gid collector --home-dir /var/lib/collector \
      --no-create-home --shell /usr/sbin/nologin collector \
 && install -d -o collector -g collector -m 0750 /var/lib/collector /var/lib/collector/spool \
 && install -d -m 0755 /etc/collector \
 && install -d -o collector -g collector -m 0750 /etc/collector/tls
COPY --from=build /opt/collector /opt/collector
ENV PATH=/opt/collector/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    COLLECTOR_AGENT__SPOOL__DIR=/var/lib/collector/spool
WORKDIR /var/lib/collector
USER 10001:10001
# ingest gRPC, ingest /metrics, aggregate /metrics + /healthz, agent /metrics
EXPOSE 4317 9464 9465 9466
VOLUME ["/var/lib/collector"]
# Per role: `collector health` probes the role PID 1 runs (gRPC health of the ingest,
# /healthz of the aggregator, /metrics of the agent) on loopback.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["collector", "health"]
# exec form: the role is PID 1 and gets SIGTERM directly (graceful stop, spools kept)
ENTRYPOINT ["collector"]
CMD ["--help"]
