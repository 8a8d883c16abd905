"""Numbers and tenants as the API and the store see them, and the rules their bodies follow.

A **number** is a WhatsApp line the bridge calls from and answers for, with its own engine and
credentials (``POST /numbers``); a **tenant** is a customer of the platform that owns numbers,
API keys and a webhook destination (``POST /tenants``). Both are plain records here: parsing a
body into one (every refusal a :class:`~bridge.errors.BadRequest` naming its field; an engine
block's fields and their checks: ``blocks.py``), the public view of one (secrets never in it),
and the settings a number's engine is built from.

Secrets (a Graph token, an app secret, an engine token, a tenant's webhook secret) are
write-only: kept in :attr:`Number.secrets` / :attr:`Tenant.secrets`, sealed at rest by the
store, and never returned, logged or put in an event.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, EngineKind, Settings
from ..errors import BadRequest
from .blocks import apply_engine_block, engine_fields

DEFAULT_NUMBER = "default"
"""The number ``BRIDGE_ENGINE`` and its settings define at start."""

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def engine_key(number_id: str, engine_call_id: str) -> str:
    """An engine's call id made unique across numbers: each engine numbers its own calls (two
    engines may both say ``FAKE001``), so the registry and the directory index a call by its
    number too — ``numberID:id``, or the bare id on the default number (as before numbers
    existed, so a rolling upgrade finds its calls)."""
    if not number_id or number_id == DEFAULT_NUMBER:
        return engine_call_id
    return f"{number_id}:{engine_call_id}"


def new_id(prefix: str) -> str:
    """A fresh id (``num_…``, ``ten_…``, ``key_…``): unguessable, URL-safe."""
    return f"{prefix}_{secrets.token_hex(8)}"


def key_hash(key: str) -> str:
    """What the store keeps of an API key: its SHA-256 (a key is random, so no salt is
    needed; a stolen store does not give the keys away)."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def text_field(
    body: Mapping[str, Any], name: str, *, limit: int = 200, required: bool = False
) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"field {name!r} is required", code="missing_field")
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"field {name!r} must be a string of at most {limit} characters")
    return value


def parse_phone(value: object, field_name: str = "phone") -> str:
    """An E.164 number with its ``+`` (``+15550783881``), or 400 naming the field."""
    if not isinstance(value, str) or not _E164.match(value.strip()):
        raise BadRequest(
            f"field {field_name!r} must be an E.164 number such as +15550783881",
            code="invalid_phone",
        )
    return value.strip()


@dataclass
class Number:
    """A WhatsApp line: its engine, the engine's settings (``config``) and its secrets."""

    number_id: str
    phone: str
    engine: EngineKind
    tenant_id: str = ""
    label: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    """The engine block's non-secret fields, by their camelCase names."""
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    """The engine block's secret fields, by their camelCase names (write-only)."""
    recording: str = "allowed"
    created_at: float = field(default_factory=time.time)
    """When the API or the numbers file created it (Unix seconds); 0 for the default number."""
    sip_password_made: bool = False
    """Whether ``secrets["sipPassword"]`` is the one Meta made when the bridge put the number
    on its SIP road (``…/sip/enable``, ``…/sip/rotate``, a numbers file's ``sip: {enable:
    true}``) rather than one the operator gave (a ``PATCH``, the numbers file, a setting): the
    export asks a fresh bridge to do the same (``file.py``). Stored as ``sipPasswordMade``."""

    @property
    def meta_id(self) -> str:
        """Meta's ``phone_number_id`` of a Cloud API number (what its webhooks name)."""
        return (
            str(self.config.get("phoneNumberID", "")) if self.engine is EngineKind.CLOUDAPI else ""
        )

    @property
    def app_secret(self) -> str:
        """Meta's app secret of a Cloud API number (what its webhooks are signed with)."""
        return self.secrets.get("appSecret", "") if self.engine is EngineKind.CLOUDAPI else ""

    def public(self) -> dict[str, Any]:
        """The number as ``GET /numbers/{numberID}`` shows it: no secret, only which are set."""
        return {
            "numberID": self.number_id,
            "phone": self.phone,
            "engine": str(self.engine),
            "tenantID": self.tenant_id or None,
            "label": self.label,
            "recording": self.recording,
            str(self.engine): {
                **self.config,
                **{f"{name}Set": True for name in sorted(self.secrets)},
            },
            # Absent on the default number (0): the settings define it, nothing created it.
            **({"createdAt": self.created_at} if self.created_at else {}),
        }

    def engine_inputs(self) -> tuple[Any, ...]:
        """What :meth:`settings` builds the number's engine from: any change to it needs a new
        engine (a Cloud API number's phone is its SIP line's number: Meta's Request-URI user,
        the From of its calls out)."""
        line = self.phone if self.engine is EngineKind.CLOUDAPI else ""
        return (self.engine, line, self.config, self.secrets)

    def settings(self, base: Settings) -> Settings:
        """The bridge's settings with this number's engine in them: what its engine is built
        from (everything else — ICE, media, timers — is the deployment's)."""
        values: dict[str, Any] = {"engine": self.engine}
        if self.engine is EngineKind.CLOUDAPI:  # on Meta's SIP road: our From, the digest user
            values["sip_number"] = self.phone.removeprefix("+")
        for name, (setting, secret, _) in engine_fields(self.engine).items():
            value = self.secrets.get(name) if secret else self.config.get(name)
            if value is not None:
                values[setting] = value
        engine_names = {f.name for f in dataclasses.fields(base.engine)}
        sim_fields = {f.name for f in dataclasses.fields(base.sim)}
        sip_fields = {f.name for f in dataclasses.fields(base.sip)}
        engine = {k: v for k, v in values.items() if k in engine_names}
        try:
            new_engine = dataclasses.replace(_engine_base(base), **engine)
            new_sim = dataclasses.replace(
                base.sim, **{k: v for k, v in values.items() if k in sim_fields}
            )
            new_sip = dataclasses.replace(
                base.sip, **{k: v for k, v in values.items() if k in sip_fields}
            )
            new_engine.validate()
            new_sim.validate()
        except ConfigError as exc:
            raise BadRequest(f"number {self.number_id}: {exc}", code="invalid_engine") from None
        return dataclasses.replace(base, engine=new_engine, sim=new_sim, sip=new_sip)

    # -- the store's form
    def to_record(self) -> dict[str, Any]:
        return {
            "numberID": self.number_id,
            "phone": self.phone,
            "engine": str(self.engine),
            "tenantID": self.tenant_id,
            "label": self.label,
            "config": self.config,
            "secrets": self.secrets,
            "recording": self.recording,
            "createdAt": self.created_at,
            "sipPasswordMade": self.sip_password_made,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Number:
        return cls(
            number_id=str(record["numberID"]),
            phone=str(record["phone"]),
            engine=EngineKind(record["engine"]),
            tenant_id=str(record.get("tenantID") or ""),
            label=str(record.get("label") or ""),
            config=dict(record.get("config") or {}),
            secrets=dict(record.get("secrets") or {}),
            recording=str(record.get("recording") or "allowed"),
            created_at=float(record.get("createdAt") or time.time()),
            sip_password_made=bool(record.get("sipPasswordMade")),
        )


def _engine_base(base: Settings) -> Any:
    """The engine settings a number starts from: the deployment's timers and poll interval,
    none of its default number's identity or credentials."""
    keep = ("engine_poll_interval", "engine_reconnect_window")
    defaults = type(base.engine)()
    return dataclasses.replace(defaults, **{k: getattr(base.engine, k) for k in keep})


def parse_number(body: Mapping[str, Any], *, tenant_id: str) -> Number:
    """A new number from a ``POST /numbers`` body (``tenant_id``: whose it is)."""
    phone = parse_phone(body.get("phone"))
    raw_engine = body.get("engine")
    try:
        engine = EngineKind(str(raw_engine))
    except ValueError:
        choices = ", ".join(e.value for e in EngineKind)
        raise BadRequest(
            f"field 'engine' must be one of {choices}", code="invalid_engine"
        ) from None
    for other in EngineKind:
        if other is not engine and other.value in body:
            raise BadRequest(
                f"field {other.value!r} does not belong to a {engine} number", code="invalid_engine"
            )
    number = Number(
        number_id=new_id("num"),
        phone=phone,
        engine=engine,
        tenant_id=tenant_id,
        label=text_field(body, "label"),
        recording=parse_recording(body.get("recording", "allowed")),
    )
    apply_engine_block(engine, number.config, number.secrets, body.get(engine.value))
    return number


def patch_number(number: Number, body: Mapping[str, Any]) -> Number:
    """``number`` changed by a ``PATCH /numbers/{numberID}`` body (a copy; the engine and the
    owning tenant cannot change: delete and create instead)."""
    known = {"phone", "label", "recording", number.engine.value, "engine", "tenantID"}
    for name in body:
        if name not in known:
            raise BadRequest(f"field {name!r} cannot be changed on a number")
    if "engine" in body and body["engine"] != number.engine.value:
        raise BadRequest("field 'engine' cannot change: delete the number and create it again")
    if "tenantID" in body and (body["tenantID"] or "") != number.tenant_id:
        raise BadRequest("field 'tenantID' cannot change")
    changed = dataclasses.replace(number, config=dict(number.config), secrets=dict(number.secrets))
    if "phone" in body:
        changed.phone = parse_phone(body["phone"])
    if "label" in body:
        changed.label = text_field(body, "label")
    if "recording" in body:
        changed.recording = parse_recording(body["recording"])
    if number.engine.value in body:
        complete = number.number_id != DEFAULT_NUMBER  # on Meta's SIP road: no Graph token
        block = body[number.engine.value]
        apply_engine_block(number.engine, changed.config, changed.secrets, block, complete=complete)
        if isinstance(block, dict) and "sipPassword" in block:
            changed.sip_password_made = False  # the operator's from now on (or none)
    return changed


def parse_recording(value: object) -> str:
    if value not in ("allowed", "forbidden"):
        raise BadRequest("field 'recording' must be 'allowed' or 'forbidden'")
    return str(value)


def check_id(value: str, what: str) -> str:
    """A path id, or 404-worthy garbage refused early (400)."""
    if not _ID.match(value):
        raise BadRequest(f"{what} {value[:40]!r} is not an id")
    return value
