# Container image of the bridge. Build from the repository root:
#   docker build -t webrtc-bridge:0.1.0 .
# Run (host networking: the media ports are the host's):
#   docker run --network host -e BRIDGE_API_TOKENS=… -e BRIDGE_PUBLIC_IP=203.0.113.10 \
#     -v bridge-data:/var/lib/bridge webrtc-bridge:0.1.0
# tests/deploy/test_deploy.py replays these steps (wheel, fresh venv, unprivileged user, read-only
# working directory, the ENV below) and lints this file.

# --- builder: the wheel (bridge/, and web/ as the package bridge.web) ---
FROM python:3.11.11-slim-bookworm AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY web ./web
COPY pipecat_whatsapp_bridge ./pipecat_whatsapp_bridge
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- runtime: the wheel and its dependencies, nothing else ---
FROM python:3.11.11-slim-bookworm
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/bridge bridge \
    && mkdir -p /var/lib/bridge/media \
    && chown -R 10001:10001 /var/lib/bridge

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BRIDGE_HOST=0.0.0.0 \
    BRIDGE_PORT=8080 \
    BRIDGE_DATA_DIR=/var/lib/bridge \
    BRIDGE_MEDIA_DIR=/var/lib/bridge/media \
    BRIDGE_RTP_PORTS=10000-20000

# Recordings and uploaded audio: mount a volume here (owned by uid 10001).
VOLUME ["/var/lib/bridge"]

# HTTP API, and the UDP range every ICE socket binds in (BRIDGE_RTP_PORTS).
EXPOSE 8080/tcp
EXPOSE 10000-20000/udp

# The working directory stays root-owned and read-only for the bridge: it writes only to
# BRIDGE_DATA_DIR.
WORKDIR /app
USER 10001:10001

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BRIDGE_PORT', '8080'), timeout=2)"]

ENTRYPOINT ["webrtc-bridge"]
