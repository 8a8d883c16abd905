"""Health routes (open): liveness and readiness."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from ..cluster import Directory
from ..engines import StandingEngine
from ..errors import DirectoryUnavailable
from .keys import DIRECTORY, ENGINE, MANAGER, SETTINGS

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when the engine is reachable, there is room for calls and we are not stopping.
    A number whose business-initiated calling Meta paused is named in ``numbers.paused``;
    readiness stays up (the other numbers, and calls to it, still work)."""
    manager = request.app[MANAGER]
    settings = request.app[SETTINGS]
    health = await request.app[ENGINE].health()
    live = len(manager.live_calls())
    reasons = []
    if not health.up:
        reasons.append(f"engine down: {health.detail}")
    directory = request.app[DIRECTORY]
    if live >= settings.calls.max_calls and not await _room_elsewhere(directory):
        reasons.append(f"at capacity: {live}/{settings.calls.max_calls} calls")
    if manager.shutting_down:
        reasons.append("shutting down")
    if not directory.available:
        reasons.append(f"call directory (Redis) unreachable: {directory.detail}")
    body = {
        "ready": not reasons,
        "reasons": reasons,
        "engine": {"name": request.app[ENGINE].name, "up": health.up, "detail": health.detail},
        "calls": {"live": live, "max": settings.calls.max_calls},
        "numbers": {"paused": _paused(manager.engine.engines)},
        "directory": {
            "shared": directory.shared,
            "up": directory.available,
            "detail": directory.detail,
            "worker": directory.worker_id,
        },
    }
    return web.json_response(body, status=200 if not reasons else 503)


async def _room_elsewhere(directory: Directory) -> bool:
    """Whether another worker sharing the directory has room: new calls placed here go there,
    so a full worker alone does not make the instance unready (workers share one port, and a
    probe reaches any of them)."""
    if not directory.shared or not directory.available:
        return False
    try:
        workers = await directory.workers()
    except DirectoryUnavailable:
        return False
    return any(w.has_room for w in workers if w.id != directory.worker_id)


def _paused(engines: Mapping[str, object]) -> list[dict[str, object]]:
    paused = []
    for number_id, engine in sorted(engines.items()):
        pause = engine.calling_pause() if isinstance(engine, StandingEngine) else None
        if pause is not None:
            paused.append(
                {"numberID": number_id, "reason": pause["reason"], "until": pause["until"]}
            )
    return paused
