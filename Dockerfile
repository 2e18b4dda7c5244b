# Axon: one image for every service (and for the embedded single-process mode).
#   docker build -t axon:0.1.0 .
#   docker run axon:0.1.0 run-service roomserver --config /etc/axon/config.yaml
# Checked offline by tests/deploy/test_dockerfile.py (no Docker engine in CI).
# The base is pinned to a full version; production builds should also pin its digest
# (python:3.11.13-slim-bookworm@sha256:...), which cannot be resolved offline here.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Dependencies and code in one layer: `pip install .` (not editable), so the image
# holds no source tree, only the installed packages (migrations included).
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
COPY axon ./axon
RUN pip install . \
    && rm -rf /src \
    && groupadd --system --gid 10001 axon \
    && useradd --system --uid 10001 --gid axon --home-dir /var/lib/axon --shell /usr/sbin/nologin axon \
    && mkdir -p /var/lib/axon/media /etc/axon/keys \
    && chown -R axon:axon /var/lib/axon /etc/axon/keys

# Container defaults (every key can still be overridden with AXON_*; docs/config.md).
ENV AXON_LISTEN__HOST=0.0.0.0 \
    AXON_LISTEN__PORT=8008 \
    AXON_DATA_DIR=/var/lib/axon \
    AXON_MEDIA__STORE_PATH=/var/lib/axon/media \
    AXON_SIGNING_KEY_PATH=/etc/axon/keys/signing.key \
    AXON_LOGGING__FORMAT=json

WORKDIR /var/lib/axon
USER 10001:10001
EXPOSE 8008

# Liveness only (the event loop answers). Orchestrators use /ready for readiness:
# deploy/compose.yaml overrides this check, deploy/k8s sets readinessProbe/livenessProbe.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8008/health', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["axon"]
# Embedded mode by default; the cluster runs `run-service NAME --config FILE`.
CMD ["run", "--config", "/etc/axon/config.yaml"]
