"""Whether each number can work: its engine's own health, and for a Cloud API number whether
Meta takes its Graph token (``GET /{PHONE_NUMBER_ID}``: a refused token is Meta's error 190).
Checked when the number is created and every :data:`INTERVAL`; shown on
``GET /numbers/{numberID}`` as ``health`` and as ``bridge_number_up{number}``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp

from ..engines import Engine
from .model import Number

log = logging.getLogger(__name__)

INTERVAL = 180.0
"""Seconds between two checks of every number."""
TIMEOUT = aiohttp.ClientTimeout(total=5)
FIRST_ANSWER = 2.0
"""Seconds a new number's engine has to answer before its first check counts it down."""


async def probe_graph(http: aiohttp.ClientSession, number: Number) -> tuple[bool, str]:
    """Ask Meta for the number's node with its token: ``(ok, reason)``."""
    base = str(number.config.get("graphURL") or "https://graph.facebook.com/v23.0")
    url = f"{base.rstrip('/')}/{number.meta_id}"
    headers = {"Authorization": f"Bearer {number.secrets.get('accessToken', '')}"}
    try:
        async with http.get(url, params={"fields": "id"}, headers=headers, timeout=TIMEOUT) as resp:
            if resp.status < 400:
                return True, "Graph API accepts the token"
            try:
                error = (await resp.json(content_type=None)).get("error") or {}
            except (ValueError, aiohttp.ContentTypeError, AttributeError):
                error = {}
            return False, f"Meta refused: {resp.status} {error.get('code', '')} " + str(
                error.get("message", "")
            )[:200].strip()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return False, f"Graph API unreachable ({type(exc).__name__})"


async def check(engine: Engine | None, number: Number, http: Any) -> dict[str, Any]:
    """One number's health as ``GET /numbers/{id}`` shows it."""
    if engine is None:
        return {"ok": False, "reason": "its engine is not running here", "checkedAt": time.time()}
    if number.meta_id and number.secrets.get("accessToken") and http is not None:
        ok, reason = await probe_graph(http, number)
    else:
        # A number just made: give its engine its first answer (a polled engine's first
        # listing) before judging it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_ANSWER):
                await engine.startup_calls()
        try:
            async with asyncio.timeout(5):
                health = await engine.health()
            ok, reason = health.up, health.detail or ("up" if health.up else "down")
        except Exception as exc:  # an engine's health must not break the listing
            ok, reason = False, f"health check failed: {type(exc).__name__}"
    return {"ok": ok, "reason": reason, "checkedAt": time.time()}
