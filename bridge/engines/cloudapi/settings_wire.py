"""A number's calling settings at Meta, in the bridge's camelCase and Meta's own names.

Meta keeps them under ``calling`` of ``/{PHONE_NUMBER_ID}/settings`` (Meta Cloud API Calling:
Call settings); the table of both names is docs/engines/cloudapi.md, *Settings through the
bridge*. The voicemail, icon and restriction names follow the issues' description of Meta's
2026 fields: the public references this project works from do not list them.

Meta's rules are checked before anything is sent (its own refusals are passed back too): hours
switched on name their timezone and week, at most two opening slots a day, a slot opening
before it closes, at most 20 holidays, a timezone id of the tz database. A SIP password Meta
returns is never passed on.
"""

from __future__ import annotations

import re
import zoneinfo
from collections import Counter
from collections.abc import Mapping
from typing import Any

from ...countries import COUNTRIES
from ...errors import BadRequest

SLOTS_PER_DAY = 2
HOLIDAYS = 20
_TIME = re.compile(r"^([01]\d|2[0-3])[0-5]\d$")

OURS_TO_META = {
    "status": "status",
    "callIconVisibility": "call_icon_visibility",
    "callHours": "call_hours",
    "callbackPermission": "callback_permission_status",
    "srtpKeyExchange": "srtp_key_exchange_protocol",
    "sip": "sip",
    "voicemail": "voicemail",
    "callIcons": "call_icons",
    "restrictions": "restrictions",
}
"""Top-level fields (``additionalCodecs`` goes to ``audio.additional_codecs``)."""
NAMES = {
    "timezoneID": "timezone_id",
    "weeklyOperatingHours": "weekly_operating_hours",
    "holidaySchedule": "holiday_schedule",
    "dayOfWeek": "day_of_week",
    "openTime": "open_time",
    "closeTime": "close_time",
    "startTime": "start_time",
    "endTime": "end_time",
    "requestUriUserParams": "request_uri_user_params",
    "timeoutSeconds": "timeout_seconds",
    "webhookDelivery": "webhook_delivery",
    "restrictToUserCountries": "restrict_to_user_countries",
    "restrictionsList": "restrictions_list",
}
"""Nested names; the rest (``status``, ``date``, ``hostname``, ``port``, ``servers``,
``triggers``, ``type``, ``expiration``) are the same both ways."""
TO_META = {**OURS_TO_META, **NAMES}
BACK = {v: k for k, v in TO_META.items()}


def scrubbed(value: Any, names: Mapping[str, str] | None = None, verbatim: str = "") -> Any:
    """``value`` without a key naming a password, at any depth (a SIP password Meta returns is
    never passed on), and each key renamed by ``names`` but under ``verbatim`` (the user's own
    SIP parameters, whose names are theirs)."""
    if isinstance(value, Mapping):
        return {
            (names or {}).get(k, k): v if k == verbatim else scrubbed(v, names, verbatim)
            for k, v in value.items()
            if "password" not in str(k).lower()
        }
    if isinstance(value, list):
        return [scrubbed(v, names, verbatim) for v in value]
    return value


def to_meta(patch: Mapping[str, Any]) -> dict[str, Any]:
    """A checked ``PATCH /numbers/{id}/settings`` body as Meta's ``calling`` object."""
    check(patch)
    ours = {k: v for k, v in patch.items() if k != "additionalCodecs"}
    calling = scrubbed(ours, TO_META, "requestUriUserParams")
    if "additionalCodecs" in patch:
        calling["audio"] = {"additional_codecs": list(patch["additionalCodecs"])}
    return calling


def from_meta(answer: Mapping[str, Any]) -> dict[str, Any]:
    """Meta's ``GET /{PHONE_NUMBER_ID}/settings`` answer as the bridge shows it."""
    calling = answer.get("calling")
    if not isinstance(calling, Mapping):
        return {}
    out = scrubbed(
        {k: v for k, v in calling.items() if k != "audio"}, BACK, "request_uri_user_params"
    )
    audio = calling.get("audio")
    if isinstance(audio, Mapping) and isinstance(audio.get("additional_codecs"), list):
        out["additionalCodecs"] = list(audio["additional_codecs"])
    return dict(out)


def check(patch: Mapping[str, Any]) -> None:
    """Meta's rules the schema cannot say (see the module docstring): 400 naming the field."""
    if "restrictions" in patch:
        raise _invalid("restrictions", "Meta sets a number's restrictions, they cannot be changed")
    icons = patch.get("callIcons")
    if isinstance(icons, Mapping):
        unknown = [c for c in icons.get("restrictToUserCountries") or [] if c not in COUNTRIES]
        if unknown:
            raise _invalid(
                "callIcons.restrictToUserCountries",
                f"{str(unknown[0])[:8]!r} is not an ISO 3166-1 alpha-2 country code with a "
                "WhatsApp calling code (e.g. BR, IN, US)",
            )
    hours = patch.get("callHours")
    if not isinstance(hours, Mapping):
        return
    if hours.get("status") == "ENABLED":
        missing = [k for k in ("timezoneID", "weeklyOperatingHours") if k not in hours]
        if missing:
            why = f"{' and '.join(missing)} must be given when the hours are ENABLED"
            raise _invalid("callHours", why)
    zone = hours.get("timezoneID")
    if zone is not None and zone not in zoneinfo.available_timezones():
        why = f"{str(zone)[:64]!r} is not a tz database id (e.g. America/Sao_Paulo)"
        raise _invalid("callHours.timezoneID", why)
    slots = hours.get("weeklyOperatingHours") or []
    per_day = Counter(slot.get("dayOfWeek") for slot in slots)
    for day, count in per_day.items():
        if count > SLOTS_PER_DAY:
            why = f"{count} slots on {day}; Meta takes at most {SLOTS_PER_DAY} a day"
            raise _invalid("callHours.weeklyOperatingHours", why)
    for i, slot in enumerate(slots):
        _span(slot, "openTime", "closeTime", f"callHours.weeklyOperatingHours[{i}]")
    holidays = hours.get("holidaySchedule") or []
    if len(holidays) > HOLIDAYS:
        why = f"{len(holidays)} holidays; Meta takes at most {HOLIDAYS}"
        raise _invalid("callHours.holidaySchedule", why)
    for i, day in enumerate(holidays):
        _span(day, "startTime", "endTime", f"callHours.holidaySchedule[{i}]")


def _span(item: Mapping[str, Any], start: str, end: str, where: str) -> None:
    opens, closes = str(item.get(start, "")), str(item.get(end, ""))
    if not _TIME.match(opens) or not _TIME.match(closes) or opens >= closes:
        why = f"{start} {opens!r} and {end} {closes!r} must be HHMM times, the first before"
        raise _invalid(where, f"{why} the second")


def _invalid(field: str, why: str) -> BadRequest:
    return BadRequest(f"field '{field}': {why}", code="invalid_settings")
