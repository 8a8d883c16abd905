"""The one REST request of the engines reached over HTTP (``polling.py``'s ZuckZapGo and WADial,
``cloudapi/graph.py``'s Graph API): counted and timed in the engine's stats, no answer at all an
:class:`~bridge.errors.EngineUnavailable` (503); what a status means is each engine's."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ..errors import EngineUnavailable
from .base import EngineStats


async def http_json(
    http: aiohttp.ClientSession,
    stats: EngineStats,
    method: str,
    url: str,
    *,
    where: str,
    down: Callable[[str], None],
    **kwargs: Any,
) -> tuple[aiohttp.ClientResponse, str, Any]:
    """Its response, text and JSON body (``None`` when empty or not JSON); no answer at all is
    counted, told to ``down`` and raised naming ``where``."""
    stats.requests += 1
    started = time.monotonic()
    try:
        async with http.request(method, url, **kwargs) as resp:
            text = await resp.text(errors="replace")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        stats.request_errors += 1
        down(f"unreachable: {type(exc).__name__}")
        raise EngineUnavailable(f"{where} is unreachable ({type(exc).__name__})") from exc
    stats.request_seconds.observe(time.monotonic() - started)
    try:
        return resp, text, json.loads(text) if text else None
    except (ValueError, RecursionError):  # no JSON, or nested deeper than the parser goes
        return resp, text, None
