"""Secrets a call's directory record carries sealed: an agent's ``apiKey``, the URL of an
agent or a media fork when it holds credentials or a query (Gemini's ``?key=``, an app's
``?token=``: the snapshots show these URLs cut before them for that reason), an agent's last
transcript lines (what the caller said) and a Twilio fork's custom parameters.

A call's record in the shared directory holds what another worker needs to re-open the call's
attachments after a crash (``CallRecord.attachments``), and a drained call travels the same way
on the internal API. A secret must reach the adopter but never be readable in Redis, in a
Redis dump, on the wire between instances or in a log: it is sealed with AES-256-GCM (NIST
SP 800-38D) under a key derived by HKDF-SHA256 (RFC 5869) from ``BRIDGE_INTERNAL_SECRET``, the
secret every instance of a cluster already shares. The associated data binds a sealed value to
its call, attachment and field, so it cannot be copied into another call's record. An agent
that used the configured default key stores none: the adopter uses its own default.

Rotating ``BRIDGE_INTERNAL_SECRET`` leaves the values sealed under the old one unreadable: those
attachments are not resumed (logged), the calls go on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from ..calls.moved import MovedCall
from ..sealer import NONCE, PREFIX, SealBroken, Sealer

__all__ = ["NONCE", "PREFIX", "MovedSecrets", "SealBroken", "Sealer", "open_parts", "seal_parts"]

log = logging.getLogger(__name__)

AGENT_ID = "agentID"
"""The field that names an exported agent (``Agent.export``)."""
FORK_ID = "streamId"
"""The field that names an exported media fork (``Fork.export``)."""
SEALED = {
    "apiKey": "sealedKey",
    "url": "sealedURL",
    "context": "sealedContext",
    "customParameters": "sealedParameters",
}
"""Each field that may hold a secret, and the field its sealed value goes in: an agent's key,
a URL with credentials, an agent's last transcript lines (what the caller said: personal data
that has no business in Redis in the clear), a Twilio fork's custom parameters (where apps put
their tokens)."""
JSON_FIELDS = {"context", "customParameters"}
"""Sealed fields whose value is not a string: sealed as their JSON."""


def _secret(field: str, value: Any) -> bool:
    """Whether ``value`` of ``field`` must travel sealed: a key always, a URL when it holds
    credentials or a query (where keys and tokens ride), transcript lines and custom
    parameters when there are any."""
    if field in JSON_FIELDS:
        return isinstance(value, list | dict) and bool(value)
    if not isinstance(value, str) or not value:
        return False
    if field != "url":
        return True
    parts = urlsplit(value)
    return bool(parts.query or parts.username or parts.password)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SealBroken("a sealed value that is not the JSON it should be") from exc


def _context(call_id: str, part: dict[str, Any], id_field: str, field: str) -> str:
    """What a sealed value is bound to: its call, attachment and field (it opens for no
    other). A key's context is ``call/agent`` (the first format, kept)."""
    where = f"{call_id}/{part.get(id_field)}"
    return where if field == "apiKey" else f"{where}/{field}"


def seal_parts(
    sealer: Sealer | None, call_id: str, parts: list[dict[str, Any]], id_field: str
) -> list[dict[str, Any]]:
    """Exported attachments (``Agent.export``, ``Fork.export``: each named by ``id_field``)
    with each secret field (:data:`SEALED`) replaced by its sealed value (as they are without
    a sealer: one process, nothing leaves it)."""
    if sealer is None:
        return parts
    sealed = []
    for part in parts:
        secret = [f for f in SEALED if _secret(f, part.get(f))]
        if secret:
            plain, part = part, {k: v for k, v in part.items() if k not in secret}
            for field in secret:
                context = _context(call_id, part, id_field, field)
                value = plain[field]
                text = json.dumps(value) if field in JSON_FIELDS else value
                part[SEALED[field]] = sealer.seal(text, context)
        sealed.append(part)
    return sealed


def open_parts(
    sealer: Sealer | None, call_id: str, parts: list[dict[str, Any]], id_field: str
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """The attachments with their sealed fields opened back, and those whose secrets do not
    open here, each with why (they are not resumed)."""
    opened: list[dict[str, Any]] = []
    refused: list[tuple[dict[str, Any], str]] = []
    for part in parts:
        sealed = {f: s for f, s in SEALED.items() if part.get(s) is not None}
        if not sealed:
            opened.append(part)
            continue
        plain = {k: v for k, v in part.items() if k not in sealed.values()}
        try:
            if sealer is None:
                raise SealBroken("no BRIDGE_INTERNAL_SECRET to open it with")
            for field, where in sealed.items():
                context = _context(call_id, plain, id_field, field)
                text = sealer.open(str(part[where]), context)
                plain[field] = _json(text) if field in JSON_FIELDS else text
        except SealBroken as exc:
            refused.append((part, str(exc)))
            continue
        opened.append(plain)
    return opened, refused


class MovedSecrets:
    """A moved call's secrets (agents' keys, URLs with a query): sealed whenever they leave
    this worker (a drain's ``POST /call/handover``, a directory record's attachments) and
    opened where the call arrives. Without a sealer they travel as given."""

    def __init__(self, sealer: Sealer | None) -> None:
        self._sealer = sealer

    def seal_parts(self, call_id: str, parts: dict[str, Any]) -> dict[str, Any]:
        """Exported attachments (``{agents, forks, …}``) with the agents' and forks' sealed."""
        parts["agents"] = seal_parts(self._sealer, call_id, parts["agents"], AGENT_ID)
        parts["forks"] = seal_parts(self._sealer, call_id, parts["forks"], FORK_ID)
        return parts

    def seal(self, moved: MovedCall) -> MovedCall:
        return replace(
            moved,
            agents=seal_parts(self._sealer, moved.call_id, moved.agents, AGENT_ID),
            forks=seal_parts(self._sealer, moved.call_id, moved.forks, FORK_ID),
        )

    def open(self, moved: MovedCall) -> MovedCall:
        """The sealed secrets opened; an agent or a fork whose secret does not open (sealed
        under another ``BRIDGE_INTERNAL_SECRET``) is not resumed, with a WARNING."""
        opened: dict[str, list[dict[str, Any]]] = {}
        for kind, parts, id_field in (
            ("agent", moved.agents, AGENT_ID),
            ("media fork", moved.forks, FORK_ID),
        ):
            opened[kind], refused = open_parts(self._sealer, moved.call_id, parts, id_field)
            for part, why in refused:
                log.warning(
                    "call %s: %s %s not resumed: its secrets do not open here (%s)",
                    moved.call_id,
                    kind,
                    part.get(id_field),
                    why,
                    extra={"call_id": moved.call_id},
                )
        return replace(moved, agents=opened["agent"], forks=opened["media fork"])
