"""HTTP and WebSocket handlers; the only place domain errors become HTTP responses."""

from __future__ import annotations

from aiohttp import web

from . import (
    agents,
    call_buttons,
    calls,
    desk,
    engine,
    health,
    internal,
    media,
    metrics,
    number_settings,
    number_sip,
    numbers,
    permissions,
    schema,
    sim,
    streams,
    trunks,
    webrtc,
)
from .errors import error_middleware
from .keys import ENGINE, MANAGER, SETTINGS


def setup_routes(app: web.Application) -> None:
    """Register every route (the engine's answer 404 when the engine cannot serve them)."""
    app.router.add_routes(health.routes)
    app.router.add_routes(schema.routes)
    app.router.add_routes(metrics.routes)
    app.router.add_routes(webrtc.routes)
    app.router.add_routes(engine.routes)
    app.router.add_routes(media.routes)
    app.router.add_routes(streams.routes)
    app.router.add_routes(agents.routes)
    app.router.add_routes(sim.routes)
    app.router.add_routes(permissions.routes)
    app.router.add_routes(calls.routes)
    app.router.add_routes(internal.routes)
    app.router.add_routes(numbers.routes)
    app.router.add_routes(number_settings.routes)
    app.router.add_routes(number_sip.routes)
    app.router.add_routes(call_buttons.routes)
    app.router.add_routes(desk.routes)
    app.router.add_routes(trunks.routes)


__all__ = ["ENGINE", "MANAGER", "SETTINGS", "error_middleware", "setup_routes"]
