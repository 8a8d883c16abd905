"""Agent tokens: what a person's app presents on ``GET /agents/connect``, signed by the bridge.

A token is ``agt1.<payload>.<mac>``: the payload (base64url JSON: tenant, agent id, groups,
expiry) and its HMAC-SHA256 (RFC 2104) under a key every worker of the deployment derives
from the same secret (``BRIDGE_INTERNAL_SECRET`` in a cluster; one process keeps a random key
under ``BRIDGE_DATA_DIR``). Nothing is stored per token: a worker that never saw it issued
verifies it, and it ends at its expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadRequest, Unauthorized

PREFIX = "agt1."
AGENT_ID = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")
"""An agent's id and a group's name: short, printable, safe in a Redis key and a log line."""
MAX_GROUPS = 32
MAX_TTL = 7 * 24 * 3600
DEFAULT_TTL = 12 * 3600


@dataclass(frozen=True)
class AgentClaims:
    """Who an agent token speaks for: one agent of one tenant (``None``: the service's)."""

    tenant_id: str | None
    agent_id: str
    groups: tuple[str, ...]
    expires_at: float


def check_agent_id(value: object, field: str = "agentID") -> str:
    if not isinstance(value, str) or not AGENT_ID.match(value):
        raise BadRequest(
            f"field {field!r} must be 1-64 characters of letters, digits and ._@+-",
            code="bad_agent_id",
        )
    return value


def check_groups(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_GROUPS:
        raise BadRequest(f"field 'groups' must be a list of at most {MAX_GROUPS} names")
    return tuple(dict.fromkeys(check_agent_id(g, "groups") for g in value))


def check_ttl(value: object) -> int:
    if value is None:
        return DEFAULT_TTL
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TTL:
        raise BadRequest(f"field 'ttl' must be whole seconds from 1 to {MAX_TTL}")
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_for(secret: str, data_dir: str) -> bytes:
    """The signing key: from the cluster's shared secret, else one kept in ``data_dir``."""
    if secret:
        return hashlib.sha256(b"bridge agent tokens v1\0" + secret.encode()).digest()
    path = Path(data_dir) / "agent-token.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex())
        return key


class AgentTokens:
    """Issues and verifies agent tokens with one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, claims: AgentClaims) -> str:
        body = {
            "t": claims.tenant_id,
            "a": claims.agent_id,
            "g": list(claims.groups),
            "e": int(claims.expires_at),
        }
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{PREFIX}{payload}.{self._mac(payload)}"

    def verify(self, token: str | None, now: float | None = None) -> AgentClaims:
        """The token's claims; :class:`Unauthorized` if it is not one of ours or expired."""
        if not token or not token.startswith(PREFIX) or len(token) > 4096:
            raise Unauthorized("missing or malformed agent token", code="bad_agent_token")
        payload, _, mac = token[len(PREFIX) :].partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            raise Unauthorized("agent token not signed by this deployment", code="bad_agent_token")
        try:
            body = json.loads(_unb64(payload))
            claims = AgentClaims(
                tenant_id=body["t"],
                agent_id=str(body["a"]),
                groups=tuple(str(g) for g in body["g"]),
                expires_at=float(body["e"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise Unauthorized("malformed agent token", code="bad_agent_token") from exc
        if claims.expires_at <= (time.time() if now is None else now):
            raise Unauthorized("agent token expired", code="agent_token_expired")
        return claims


def looks_like_agent_token(token: str | None) -> bool:
    return bool(token) and str(token).startswith(PREFIX)
