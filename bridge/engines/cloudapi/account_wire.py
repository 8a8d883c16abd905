"""Meta's webhooks about a business number rather than a call, as typed models.

Two fields of ``whatsapp_business_account`` webhooks (Meta's Webhooks reference):
``account_update`` (``ACCOUNT_VIOLATION`` with ``violation_info``, or ``ACCOUNT_RESTRICTION``
with ``restriction_info``, a list of ``{restriction_type, expiration}`` in Unix seconds) and
``account_settings_update`` (``phone_number_settings: {phone_number_id, calling}``). Other
``account_update`` events are read and ignored; an item without the documented shape is counted
as malformed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .webhook import changes, text, unix_time

ACCOUNT_UPDATE = "account_update"
SETTINGS_UPDATE = "account_settings_update"
CALLING_RESTRICTION = "RESTRICTED_BUSINESS_INITIATED_CALLING"


@dataclass(frozen=True)
class AccountNotice:
    """One thing Meta says about a number: a ``warning``, a ``restriction`` (calling
    paused, ``until`` in Unix seconds or ``None``) or ``settings`` (its calling settings)."""

    kind: str
    phone: str = ""
    """The number it is about (digits, as Meta writes ``phone_number``), when Meta names it."""
    meta_id: str = ""
    """Meta's ``phone_number_id``, when Meta names it."""
    violation: str = ""
    restriction: str = ""
    until: int | None = None
    calling: Mapping[str, Any] = field(default_factory=dict)


def _digits(value: Any) -> str:
    digits = text(value).lstrip("+")
    return digits if digits.isdigit() else ""


def account_notices(body: Mapping[str, Any]) -> tuple[list[AccountNotice], int]:
    """The number notices of a webhook body, in order, and how many items were malformed."""
    out: list[AccountNotice] = []
    bad = 0
    for name, value in changes(body, ACCOUNT_UPDATE, SETTINGS_UPDATE):
        if not isinstance(value, dict):
            bad += 1
            continue
        read = _account_update(value) if name == ACCOUNT_UPDATE else _settings(value)
        if read is None:
            bad += 1
        else:
            out.extend(read)
    return out, bad


def _account_update(value: dict[str, Any]) -> list[AccountNotice] | None:
    event = value.get("event")
    if not isinstance(event, str) or not event:
        return None
    phone = _digits(value.get("phone_number"))
    if event == "ACCOUNT_VIOLATION":
        info = value.get("violation_info")
        kind = info.get("violation_type") if isinstance(info, dict) else None
        return [AccountNotice("warning", phone, violation=str(kind or "UNSPECIFIED")[:100])]
    if event != "ACCOUNT_RESTRICTION":
        return []  # about the business, not calling: nothing for the bridge to do
    infos = value.get("restriction_info")
    if not isinstance(infos, list):
        return None
    out = []
    for info in infos:
        if not isinstance(info, dict) or not isinstance(info.get("restriction_type"), str):
            return None
        until = unix_time(info.get("expiration"))
        kind = str(info["restriction_type"])[:100]
        out.append(AccountNotice("restriction", phone, restriction=kind, until=until))
    return out


def settings_restrictions(calling: Mapping[str, Any]) -> list[AccountNotice]:
    """The restrictions Meta lists in a number's calling settings (its read-only
    ``restrictions.restrictions_list`` of ``{type, expiration}``, as the issues describe Meta's
    2026 settings); malformed items are skipped, as Meta's settings are only read here."""
    block = calling.get("restrictions")
    items = block.get("restrictions_list") if isinstance(block, Mapping) else None
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("type"), str):
            until = unix_time(item.get("expiration"))
            out.append(AccountNotice("restriction", restriction=item["type"][:100], until=until))
    return out


def _settings(value: dict[str, Any]) -> list[AccountNotice] | None:
    if value.get("type") != "phone_number_settings":
        return []  # settings of something else
    settings = value.get("phone_number_settings")
    if not isinstance(settings, dict):
        return None
    calling = settings.get("calling")
    meta_id = _digits(settings.get("phone_number_id"))
    if not isinstance(calling, dict):
        return []  # another kind of number setting changed
    return [AccountNotice("settings", meta_id=meta_id, calling=calling)]
