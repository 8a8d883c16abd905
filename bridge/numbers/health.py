"""Whether each number can work: its engine's own health, and for a Cloud API number whether
Meta takes its Graph token (``GET /{PHONE_NUMBER_ID}``: a refused token is Meta's error 190).
Checked at start (one number after another), as soon as its engine is built or rebuilt on a
worker, and every :data:`INTERVAL`; shown on ``GET /numbers/{numberID}`` as ``health`` and as
``bridge_number_up{number}``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import aiohttp

from ..engines import Engine
from ..metrics import Metrics
from ..tasks import TaskPerKey, TaskSet
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


class Checks:
    """Every number's last check — what ``GET /numbers/{id}`` shows — and the checks under way
    (a number's engine, just built, is checked in a task of its owner's; who asks for the
    number's health meanwhile waits for that check rather than making another)."""

    def __init__(self, tasks: TaskSet) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self._running = TaskPerKey[str](tasks, "health")

    def shown(self, number_id: str) -> dict[str, Any]:
        return self.results.get(number_id) or {"ok": None, "reason": "not checked yet"}

    def record(self, number: Number, result: dict[str, Any], metrics: Metrics | None) -> None:
        """Keep a check's result; a change is logged once (WARNING when it goes bad)."""
        before = self.results.get(number.number_id)
        self.results[number.number_id] = result
        if metrics is not None:
            metrics.number_up.labels(number.number_id).set(1.0 if result["ok"] else 0.0)
        if not result["ok"] and (before is None or before["ok"]):
            log.warning("number %s (%s): %s", number.number_id, number.phone, result["reason"])
        elif result["ok"] and before is not None and not before["ok"]:
            log.info("number %s (%s): healthy again", number.number_id, number.phone)

    def start(self, number_id: str, check: Coroutine[Any, Any, None]) -> None:
        """Check a number now, in the owner's task set (its engine was just built)."""
        self._running.start(number_id, check)

    async def done(self, number_id: str, check: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """The number checked: the check under way awaited (shielded: the caller going away
        does not end it; ended as its engine is retired, the next one's), else ``check()``
        made now when it has none yet."""
        while (task := self._running.get(number_id)) is not None and not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if not task.cancelled() or (me is not None and me.cancelling()):
                    raise  # the caller's own cancellation
        if number_id not in self.results:
            await check()

    async def forever(
        self,
        engines: Callable[[], Mapping[str, Engine]],
        check: Callable[[str], Coroutine[Any, Any, None]],
    ) -> None:
        """Every number with an engine at start (the default one too), one after another,
        then every :data:`INTERVAL`."""
        while True:
            for number_id in list(engines()):
                if number_id in engines():
                    try:
                        await check(number_id)
                    except Exception:  # a bug in one number's check must not stop the others'
                        log.exception("number %s: health check failed", number_id)
            await asyncio.sleep(INTERVAL)

    def forget(self, number_id: str) -> None:
        """The number's engine retired (deleted, or rebuilt): its check under way ends, about
        an engine gone (its answer would be dropped), not asking Meta on for up to 5 s."""
        self.results.pop(number_id, None)
        self._running.cancel(number_id)
