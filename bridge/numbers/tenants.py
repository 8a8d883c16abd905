"""Tenants: the platform's customers. A tenant owns numbers, API keys (only their hashes are
kept) and a webhook destination with its own Standard Webhooks secret (write-only)."""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import webhook_secret_ok
from ..errors import BadRequest
from .blocks import http_url
from .model import key_hash, new_id, parse_recording, text_field


@dataclass
class ApiKey:
    """One of a tenant's API keys: only its hash is kept."""

    key_id: str
    hash: str
    created_at: float = field(default_factory=time.time)


@dataclass
class Tenant:
    """A customer of the platform: its numbers, keys, webhook and limits."""

    tenant_id: str
    name: str
    webhook_url: str = ""
    max_calls: int = 0
    """Live calls it may have at once (0: no limit of its own)."""
    recording: str = "allowed"
    keys: list[ApiKey] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    """``webhookSecret`` (write-only)."""
    created_at: float = field(default_factory=time.time)

    @property
    def webhook_secret(self) -> str:
        return self.secrets.get("webhookSecret", "")

    def public(self) -> dict[str, Any]:
        return {
            "tenantID": self.tenant_id,
            "name": self.name,
            "webhookURL": self.webhook_url or None,
            "webhookSecretSet": bool(self.webhook_secret),
            "maxCalls": self.max_calls or None,
            "recording": self.recording,
            "keys": [{"keyID": k.key_id, "createdAt": k.created_at} for k in self.keys],
            "createdAt": self.created_at,
        }

    def new_key(self) -> tuple[ApiKey, str]:
        """A new API key: its record (kept) and the key itself (shown once)."""
        key_id = new_id("key")
        key = f"bt_{key_id}_{secrets.token_urlsafe(24)}"
        record = ApiKey(key_id=key_id, hash=key_hash(key))
        self.keys.append(record)
        return record, key

    def to_record(self) -> dict[str, Any]:
        return {
            "tenantID": self.tenant_id,
            "name": self.name,
            "webhookURL": self.webhook_url,
            "maxCalls": self.max_calls,
            "recording": self.recording,
            "keys": [dataclasses.asdict(k) for k in self.keys],
            "secrets": self.secrets,
            "createdAt": self.created_at,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Tenant:
        return cls(
            tenant_id=str(record["tenantID"]),
            name=str(record.get("name") or ""),
            webhook_url=str(record.get("webhookURL") or ""),
            max_calls=int(record.get("maxCalls") or 0),
            recording=str(record.get("recording") or "allowed"),
            keys=[ApiKey(**k) for k in record.get("keys") or []],
            secrets=dict(record.get("secrets") or {}),
            created_at=float(record.get("createdAt") or time.time()),
        )


TENANT_FIELDS = ("name", "webhookURL", "webhookSecret", "maxCalls", "recording")
"""A tenant's fields, as the API names them (its keys are not among them)."""


def tenant_values(tenant: Tenant) -> dict[str, Any]:
    """Each of :data:`TENANT_FIELDS`' value (``webhookSecret``'s too: compared, never shown)."""
    return {
        "name": tenant.name,
        "webhookURL": tenant.webhook_url,
        "webhookSecret": tenant.webhook_secret,
        "maxCalls": tenant.max_calls,
        "recording": tenant.recording,
    }


def changed_tenant_fields(before: Tenant, after: Tenant) -> list[str]:
    """The fields whose value differs between two versions of a tenant."""
    old, new = tenant_values(before), tenant_values(after)
    return [name for name in TENANT_FIELDS if old[name] != new[name]]


def apply_tenant_fields(tenant: Tenant, body: Mapping[str, Any]) -> None:
    """``name``, ``webhookURL``, ``webhookSecret``, ``maxCalls``, ``recording`` from a body."""
    for name in body:
        if name not in TENANT_FIELDS:
            known = sorted(TENANT_FIELDS)
            raise BadRequest(f"field {name!r} is not a tenant field (known: {known})")
    if "name" in body:
        tenant.name = text_field(body, "name", required=True)
        if not tenant.name.strip():
            raise BadRequest("field 'name' must not be empty", code="missing_field")
    if "webhookURL" in body:
        url = body["webhookURL"]
        if url is not None and (not isinstance(url, str) or not http_url(url)):
            raise BadRequest("field 'webhookURL' must be an http(s) URL")
        tenant.webhook_url = url or ""
    if "webhookSecret" in body:
        secret = body["webhookSecret"]
        if secret is not None and (not isinstance(secret, str) or not webhook_secret_ok(secret)):
            raise BadRequest(
                "field 'webhookSecret' must be a Standard Webhooks secret (whsec_ + base64)"
            )
        if secret:
            tenant.secrets["webhookSecret"] = secret
        else:
            tenant.secrets.pop("webhookSecret", None)
    if "maxCalls" in body:
        cap = body["maxCalls"]
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise BadRequest("field 'maxCalls' must be a non-negative integer")
        tenant.max_calls = cap or 0
    if "recording" in body:
        tenant.recording = parse_recording(body["recording"])
    if tenant.webhook_url and not tenant.webhook_secret:
        raise BadRequest(
            "field 'webhookSecret' is required with 'webhookURL' (events are always signed)",
            code="missing_field",
        )


def parse_tenant(body: Mapping[str, Any]) -> Tenant:
    """A new tenant from a ``POST /tenants`` body."""
    if "name" not in body:
        raise BadRequest("field 'name' is required", code="missing_field")
    tenant = Tenant(tenant_id=new_id("ten"), name="")
    apply_tenant_fields(tenant, body)
    return tenant
