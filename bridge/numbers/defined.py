"""Who defines a number's fields, and a tenant's: the operator or the API — one rule for every
field.

A value the operator sets — a setting in the environment (the default number's) or an entry of
``BRIDGE_NUMBERS_FILE`` — wins over one the API stored. The API refuses (``409
defined_by_operator``, naming where the operator set it) to store a value for a field the
operator defines for that number, so a restart never silently changes it back or keeps it; a
field the operator left unset is the API's, and its stored value is used. A stored value that
differs from the operator's (stored before the operator set it) is ignored, said once at
WARNING naming the number and the field, never the value. A number or tenant the numbers file
declares is the operator's itself: the API may not delete it (:func:`refuse_delete`), as the
file would make it again at the next start.

Fields are named as the API names them: ``phone``, ``label``, ``recording``, and an engine
block's ``cloudapi.sipPassword``, ``cloudapi.sipCert`` …; a tenant's ``name``, ``webhookURL``,
``webhookSecret``, ``maxCalls``, ``recording`` (the operator defines a tenant in the numbers
file alone).

The default number is the settings' (:func:`settings_fields`): its engine is built from them at
start, so its engine block and phone are always theirs — except ``cloudapi.sipPassword`` while
``BRIDGE_SIP_PASSWORD`` is unset (its engine takes a new password live) — and its ``label`` and
``recording`` (``BRIDGE_RECORDING_POLICY``, ``api`` by default) are the API's unless set.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import EngineKind, RecordingSetting, Settings, env_name
from ..errors import Conflict
from .blocks import engine_fields
from .model import DEFAULT_NUMBER, Number
from .tenants import TENANT_FIELDS

log = logging.getLogger(__name__)

TOP_FIELDS = ("phone", "label", "recording")
"""A number's fields outside its engine block that the API can change."""

FILE = "BRIDGE_NUMBERS_FILE"

SIP_PASSWORD = "cloudapi.sipPassword"
MADE = "sipPasswordMade"
"""Beside a stored ``cloudapi.sipPassword``: Meta made it for the bridge (``Number.
sip_password_made``); it goes where the password goes."""


@dataclass(frozen=True)
class Source:
    """Where the operator defines a field: a setting or the numbers file's entry."""

    name: str
    """``BRIDGE_SIP_PASSWORD``, ``BRIDGE_NUMBERS_FILE (numbers[2])`` …"""
    fixed: bool = False
    """Always the operator's, set or not (the default number's engine is built from the
    settings at start)."""

    @property
    def in_file(self) -> bool:
        """An entry of the numbers file (else a setting)."""
        return self.name.startswith(FILE)

    def refusal(self, record: str, field: str) -> str:
        """Why the API may not store ``field`` of ``record`` (``number lab``, ``tenant acme``)."""
        if self.fixed:
            return (
                f"field {field!r} of {record} comes from {self.name}: the default "
                f"number's engine is built from the settings; change {self.name} instead"
            )
        how = "remove it from" if self.in_file else "unset"
        return (
            f"field {field!r} of {record} is set by {self.name}, which wins over the "
            f"API: {how} {self.name} to manage it through the API"
        )


Defined = dict[str, Source]
"""The fields the operator defines for one number, and where."""
ENTRY = "(entry)"
"""The key a numbers-file entry is recorded under itself, whatever fields it names (none: a
tenant's entry of ``tenantID`` alone): the file declares the record (:func:`refuse_delete`).
No field has this name."""


def settings_fields(settings: Settings) -> Defined:
    """The default number's fields the settings define (see the module docstring)."""
    engine = settings.engine.engine
    out: Defined = {"phone": Source(env_name("sip_number"), fixed=True)}
    for name, (setting, _, _) in engine_fields(engine).items():
        out[f"{engine}.{name}"] = Source(env_name(setting), fixed=True)
    if engine is EngineKind.CLOUDAPI:
        if settings.sip.sip_password:
            out["cloudapi.sipPassword"] = Source(env_name("sip_password"))
        else:  # Meta's password through sip/enable, sip/rotate or a PATCH: the API's
            del out["cloudapi.sipPassword"]
    if settings.storage.recording_policy is not RecordingSetting.API:
        out["recording"] = Source(env_name("recording_policy"))
    return out


def file_fields(entry: Mapping[str, Any], where: str) -> Defined:
    """The fields one numbers-file entry names (``where``: ``numbers[2]``)."""
    source = Source(f"{FILE} ({where})")
    out = {ENTRY: source} | {name: source for name in TOP_FIELDS if name in entry}
    engine = str(entry.get("engine") or "")
    block = entry.get(engine)
    if isinstance(block, dict):
        out.update({f"{engine}.{name}": source for name in block})
    return out


def field_value(number: Number, field: str) -> Any:
    """One field's value (``None``: unset)."""
    if field in TOP_FIELDS:
        return getattr(number, field)
    _, _, name = field.partition(".")
    secret = engine_fields(number.engine).get(name, ("", False, False))[1]
    return (number.secrets if secret else number.config).get(name)


def set_field(number: Number, field: str, value: Any) -> None:
    """Set one field's value (``None``: unset an engine block's field)."""
    if field in TOP_FIELDS:
        setattr(number, field, value)
        return
    _, _, name = field.partition(".")
    holder = number.secrets if engine_fields(number.engine)[name][1] else number.config
    if value is None:
        holder.pop(name, None)
    else:
        holder[name] = value


def with_changes(current: Number, changed: Number, fields: Iterable[str]) -> Number:
    """``current`` with ``fields`` as ``changed`` has them: a change decided on an older view
    put on the record as it is now (another worker's change of other fields is kept)."""
    merged = dataclasses.replace(
        current, config=dict(current.config), secrets=dict(current.secrets)
    )
    for field in fields:
        _copy_field(merged, changed, field)
    return merged


def _copy_field(target: Number, source: Number, field: str) -> None:
    """One field of ``source`` onto ``target`` (the SIP password with who made it)."""
    set_field(target, field, field_value(source, field))
    if field == SIP_PASSWORD:
        target.sip_password_made = source.sip_password_made


def keep_unset(known: Number, number: Number, defined: Mapping[str, Source]) -> None:
    """``number`` as the operator declares it, keeping what ``known`` (its stored version)
    has on every field the operator left unset (the API's to manage)."""
    if known.engine is not number.engine:
        return  # another engine: nothing of the old block applies
    for field in changed_fields(known, number):
        if field not in defined:
            _copy_field(number, known, field)


def changed_fields(before: Number, after: Number) -> list[str]:
    """The fields whose value differs between two versions of a number."""
    names = list(TOP_FIELDS) + [f"{after.engine}.{name}" for name in engine_fields(after.engine)]
    return [f for f in names if field_value(before, f) != field_value(after, f)]


def refuse_defined(record: str, defined: Mapping[str, Source], fields: Iterable[str]) -> None:
    """``Conflict`` for the first of ``fields`` the operator defines for ``record`` (``number
    lab``, ``tenant acme``)."""
    for field in fields:
        source = defined.get(field)
        if source is not None:
            raise Conflict(source.refusal(record, field), code="defined_by_operator")


def refuse_delete(record: str, defined: Mapping[str, Source]) -> None:
    """``Conflict`` when the numbers file declares ``record`` (``number lab``): deleted through
    the API, the file would make it again at the next start."""
    entry = next((s.name for s in defined.values() if s.in_file), "")
    if entry:
        raise Conflict(
            f"{record} is declared in {entry}, which wins over the API: it cannot be deleted "
            f"through the API (it would come back at the next start); remove it from {FILE}, "
            "then, once restarted without it, delete it through the API",
            code="defined_by_operator",
        )


def tenant_file_fields(entry: Mapping[str, Any], where: str) -> Defined:
    """The fields of a tenant one numbers-file entry names (``where``: ``tenants[0]``): the
    tenants' side of the one rule (a tenant's keys are never the file's)."""
    source = Source(f"{FILE} ({where})")
    return {ENTRY: source} | {name: source for name in TENANT_FIELDS if name in entry}


# -- the default number's stored fields (the store's record under ``default``)
def stored_fields(record: Mapping[str, Any], engine: EngineKind) -> dict[str, Any]:
    """What the API stored for the default number, by field name (with :data:`MADE` beside
    its SIP password, when Meta made it)."""
    out = {name: record[name] for name in ("label", "recording") if record.get(name) is not None}
    if record.get(MADE):
        out[MADE] = True
    known = engine_fields(engine)
    for name, value in (record.get("secrets") or {}).items():
        if name in known:  # a secret of another engine (BRIDGE_ENGINE changed since): unused
            out[f"{engine}.{name}"] = value
    return out


def default_record(stored: Mapping[str, Any], engine: EngineKind) -> dict[str, Any]:
    """The default number's record for the store from its stored fields."""
    record: dict[str, Any] = {"numberID": DEFAULT_NUMBER, "secrets": {}}
    for field, value in stored.items():
        if field in TOP_FIELDS or field == MADE:
            record[field] = value
        else:
            record["secrets"][field.removeprefix(f"{engine}.")] = value
    return record


def overlay(default: Number, stored: Mapping[str, Any], defined: Mapping[str, Source]) -> Number:
    """The default number with the stored value of every field the operator left unset."""
    out = dataclasses.replace(default, config=dict(default.config), secrets=dict(default.secrets))
    for field, value in stored.items():
        if field not in defined and field != MADE:
            set_field(out, field, value)
    out.sip_password_made = bool(stored.get(MADE)) and SIP_PASSWORD not in defined
    return out


def differing(
    default: Number, stored: Mapping[str, Any], defined: Mapping[str, Source]
) -> list[str]:
    """The stored fields the operator defines with another value (theirs is used)."""
    return [f for f, v in stored.items() if f in defined and field_value(default, f) != v]


def overlaid(
    default: Number, stored: Mapping[str, Any], defined: Mapping[str, Source], said: set[str]
) -> Number:
    """The settings' number as the one rule makes it: :func:`overlay` (what the API stored
    used where the settings leave the field unset), a stored value that differs from the
    operator's said once at WARNING (``said``: the fields said already)."""
    for field in differing(default, stored, defined):
        if field not in said:
            said.add(field)
            log.warning(
                "number %s: the %s stored through the API differs from %s, which is used (the "
                "operator's value wins; the stored one is ignored)",
                default.number_id,
                field,
                defined[field].name,
            )
    return overlay(default, stored, defined)
