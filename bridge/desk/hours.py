"""Opening hours of a route: a weekly table in a time zone, read against an injectable clock.

``{"timezone": "Europe/Paris", "weekly": {"mon": [["09:00", "17:30"]], …}, "closed": [steps]}``:
a day missing from ``weekly`` is closed all day; a span ``["22:00", "02:00"]`` runs past
midnight into the next day. Outside the spans the route runs ``closed`` instead of its steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import BadRequest

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


def _minutes(value: object, field: str) -> int:
    if not isinstance(value, str) or not CLOCK.match(value):
        raise BadRequest(f'field {field!r} must be a time of day "HH:MM"', code="bad_hours")
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


@dataclass(frozen=True)
class Hours:
    """See the module docstring. ``spans[day]``: ``(start, end)`` in minutes of that day."""

    timezone: str
    spans: dict[int, tuple[tuple[int, int], ...]]

    def open_at(self, epoch: float) -> bool:
        local = datetime.fromtimestamp(epoch, ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        for start, end in self.spans.get(day, ()):
            if start <= minute < end if start < end else minute >= start:
                return True
        for start, end in self.spans.get((day - 1) % 7, ()):
            if end <= start and minute < end:  # yesterday's span past midnight
                return True
        return False


def parse_hours(body: object) -> Hours:
    if not isinstance(body, dict):
        raise BadRequest("field 'hours' must be an object", code="bad_hours")
    zone = body.get("timezone")
    try:
        if not isinstance(zone, str) or not zone:
            raise ZoneInfoNotFoundError
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(
            "field 'hours.timezone' must be an IANA time zone", code="bad_hours"
        ) from None
    weekly = body.get("weekly")
    if not isinstance(weekly, dict) or not weekly:
        raise BadRequest("field 'hours.weekly' must map days (mon…sun) to spans", code="bad_hours")
    spans: dict[int, tuple[tuple[int, int], ...]] = {}
    for day, value in weekly.items():
        if day not in DAYS:
            raise BadRequest(f"field 'hours.weekly' has no day {day[:10]!r}", code="bad_hours")
        if not isinstance(value, list) or len(value) > 8:
            raise BadRequest(f"field 'hours.weekly.{day}' must be a list of spans")
        parsed = []
        for span in value:
            if not isinstance(span, list) or len(span) != 2:
                raise BadRequest(f'field \'hours.weekly.{day}\' spans are ["HH:MM", "HH:MM"]')
            start, end = (_minutes(t, f"hours.weekly.{day}") for t in span)
            if start == end:
                raise BadRequest(f"field 'hours.weekly.{day}' has an empty span")
            parsed.append((start, end))
        spans[DAYS.index(day)] = tuple(parsed)
    return Hours(zone, spans)


def hours_json(body: dict[str, Any]) -> dict[str, Any]:
    """What is stored and shown of an ``hours`` object (its checked fields only)."""
    return {k: body[k] for k in ("timezone", "weekly", "closed") if k in body}
