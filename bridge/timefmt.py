"""The one wall-clock time format of the API, events, sidecars and logs: ISO 8601 UTC."""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime


def iso_utc(ts: float) -> str:
    """``2026-11-22T03:16:27.123Z`` (milliseconds, UTC)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_utc_or_none(ts: float | None) -> str | None:
    return None if ts is None else iso_utc(ts)


def parse_iso_utc(text: str) -> float:
    """Inverse of :func:`iso_utc`; also reads whole seconds (sidecars of older versions)."""
    whole, _, frac = text.removesuffix("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds + (float("0." + frac) if frac else 0.0)
