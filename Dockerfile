# The durable proxy: ingress on :8080, step-ack callback on :9071 (both on all interfaces), admin
# API on :9070 inside the container only (loopback), LMDB in /data.
#   docker build -t durable-proxy .
#   docker run -p 8080:8080 -v proxy-data:/data -e PROXY_CALLBACK_URL=http://proxy:9071 durable-proxy \
#     --deployment http://handlers:9080
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# A fixed, unprivileged uid/gid, so a mounted volume can be chowned to match from outside.
# Not named "proxy": Debian's base-passwd already has a proxy user and group (uid/gid 13).
RUN groupadd --system --gid 10001 durable \
    && useradd --system --uid 10001 --gid durable --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin durable \
    && mkdir -p /data \
    && chown durable:durable /data

# A venv works on both bases: python:3.11-slim, and a Debian one (scripts/container_base.sh) whose
# python3 has no `python`/`pip` command and refuses system-wide pip installs (PEP 668).
RUN python3 -m venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /app
# Only what the wheel needs (see .dockerignore): the tests, examples and bench stay out.
COPY pyproject.toml README.md ./
COPY handlers_sdk ./handlers_sdk
COPY durable_core ./durable_core
COPY proxy ./proxy
RUN pip install --no-cache-dir "./[proxy]"

# Ingress and callback bind all interfaces; the admin API stays on the container's loopback (the
# HEALTHCHECK reaches it there). To publish it, set PROXY_ADMIN_HOST=0.0.0.0 and give it a token:
# mount a token file and name it in PROXY_ADMIN_TOKEN_FILE (docs/container.md); without one the
# proxy refuses to start (unless --admin-insecure).
ENV PROXY_HOST=0.0.0.0 \
    PROXY_ADMIN_HOST=127.0.0.1 \
    PROXY_DATA_DIR=/data

VOLUME /data
EXPOSE 8080 9070 9071

USER 10001:10001

# No curl in the slim image: ask the admin API with the standard library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('PROXY_ADMIN_PORT', '9070'); r = urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2); sys.exit(0 if r.status == 200 and b'ok' in r.read() else 1)"]

ENTRYPOINT ["python", "-m", "proxy"]
