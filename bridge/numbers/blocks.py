"""Each engine's block of a number (``"cloudapi": {…}``, ``"zuckzapgo": {…}``…): its fields, the
setting each one fills, which are secrets and which are required, and the checks a body's block
goes through (every refusal a :class:`~bridge.errors.BadRequest` naming its field)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..config import CloudMedia, CloudSignalling, EngineKind, SimPeer
from ..errors import BadRequest
from ..http import url_parts

_META_ID = re.compile(r"^[0-9]{1,32}$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
HTTP_URL = re.compile(r"^https?://[^\s/]+\S*$")


def http_url(value: str) -> bool:
    """Whether ``value`` is an http(s) URL the bridge can go out to: the pattern, and
    :func:`~bridge.http.url_parts` can read it (``http://[::1`` matched the pattern, and each
    event of a tenant with that webhook URL then failed in the webhooks' observer)."""
    return bool(HTTP_URL.match(value)) and url_parts(value) is not None


# Each engine's block: its fields, by camelCase name, with the setting each one fills.
# ``(setting, secret, required)``.
_BLOCKS: dict[EngineKind, dict[str, tuple[str, bool, bool]]] = {
    EngineKind.CLOUDAPI: {
        "phoneNumberID": ("cloudapi_phone_number_id", False, True),
        "accessToken": ("engine_token", True, True),
        "appSecret": ("cloudapi_app_secret", True, True),
        "verifyToken": ("cloudapi_verify_token", True, True),
        "graphURL": ("engine_url", False, False),
        "signalling": ("cloudapi_signalling", False, False),
        "media": ("cloudapi_media", False, False),
        "sipPassword": ("sip_password", True, False),
        "sipHostname": ("sip_hostname", False, False),
        "sipCert": ("sip_cert", False, False),
        "sipKey": ("sip_key", False, False),
        "sipKeyPassword": ("sip_key_password", True, False),
    },
    EngineKind.ZUCKZAPGO: {
        "url": ("engine_url", False, True),
        "token": ("engine_token", True, True),
    },
    EngineKind.WADIAL: {
        "url": ("engine_url", False, True),
        "apiKey": ("engine_token", True, True),
        "sessionID": ("engine_session", False, True),
    },
    EngineKind.SIM: {
        "peer": ("sim_peer", False, False),
        "answerDelay": ("sim_answer_delay", False, False),
        "echoDelay": ("sim_echo_delay", False, False),
        "toneHz": ("sim_tone_hz", False, False),
        "hangupAfter": ("sim_hangup_after", False, False),
    },
}


def engine_fields(engine: EngineKind) -> Mapping[str, tuple[str, bool, bool]]:
    """An engine block's fields by camelCase name: ``(setting, secret, required)``."""
    return _BLOCKS[engine]


def _coerce(engine: EngineKind, name: str, value: Any) -> Any:
    """One engine-block field checked for its type (400 naming it otherwise)."""
    where = f"{engine}.{name}"
    if name == "signalling":
        try:
            return str(CloudSignalling(value))
        except ValueError:
            raise BadRequest(f"field {where!r} must be 'graph' or 'sip'") from None
    if name == "media":
        try:
            return str(CloudMedia(value))
        except ValueError:
            raise BadRequest(f"field {where!r} must be 'dtls' or 'sdes'") from None
    if name == "peer":
        try:
            return str(SimPeer(value))
        except ValueError:
            choices = ", ".join(p.value for p in SimPeer)
            raise BadRequest(f"field {where!r} must be one of {choices}") from None
    if name in ("answerDelay", "echoDelay", "toneHz", "hangupAfter"):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise BadRequest(f"field {where!r} must be a non-negative number")
        return float(value)
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise BadRequest(f"field {where!r} must be a non-empty string", code="invalid_engine")
    if name in ("url", "graphURL") and not http_url(value):
        raise BadRequest(f"field {where!r} must be an http(s) URL", code="invalid_engine")
    if name == "sipHostname" and not _HOSTNAME.match(value):
        raise BadRequest(f"field {where!r} must be a DNS host name", code="invalid_engine")
    if name == "phoneNumberID" and not _META_ID.match(value):
        raise BadRequest(f"field {where!r} must be Meta's numeric id", code="invalid_engine")
    return value


def apply_engine_block(
    engine: EngineKind,
    config: dict[str, Any],
    secrets: dict[str, str],
    block: object,
    *,
    complete: bool = True,
) -> None:
    """Fill a number's ``config`` and ``secrets`` from its ``engine``'s block (a PATCH merges
    into what is there). 400 naming the field for an unknown field, a bad value or, with
    ``complete``, a missing one (the default number's block is the settings', which say what
    it needs)."""
    fields = _BLOCKS[engine]
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise BadRequest(f"field {str(engine)!r} must be an object", code="invalid_engine")
    for name, value in block.items():
        if name not in fields:
            known = ", ".join(fields)
            raise BadRequest(
                f"field '{engine}.{name}' is not a {engine} setting (known: {known})",
                code="invalid_engine",
            )
        _, secret, required = fields[name]
        if value is None and not (secret and required):  # an optional field (or secret) goes
            (secrets if secret else config).pop(name, None)
            continue
        coerced = _coerce(engine, name, value)
        if secret:
            secrets[name] = coerced
        else:
            config[name] = coerced
    if engine is EngineKind.CLOUDAPI and ("sipCert" in config) != ("sipKey" in config):
        raise BadRequest(
            "fields 'cloudapi.sipCert' and 'cloudapi.sipKey' go together", code="invalid_engine"
        )
    if "sipKeyPassword" in secrets and "sipKey" not in config:
        raise BadRequest(
            "field 'cloudapi.sipKeyPassword' is the passphrase of 'cloudapi.sipKey': name it",
            code="invalid_engine",
        )
    if "sipCert" in config and "sipHostname" not in config:
        raise BadRequest(
            "field 'cloudapi.sipCert' is the certificate of 'cloudapi.sipHostname': name it",
            code="invalid_engine",
        )
    for name, (_, secret, required) in fields.items():
        present = name in (secrets if secret else config)
        if complete and required and not present:
            raise BadRequest(
                f"field '{engine}.{name}' is required for a {engine} number",
                code="missing_field",
            )
