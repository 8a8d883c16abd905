"""``create_app(settings)``: the aiohttp application and its app-scoped resources."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from .api import ENGINE, MANAGER, SETTINGS, error_middleware, setup_routes
from .auth import auth_middleware
from .calls import CallManager
from .config import EngineKind, Settings
from .legs import Engine, create_engine
from .rtc import restrict_host_addresses

MAX_BODY = 64 * 1024
"""Largest request body accepted (JSON bodies and SDP offers)."""


def create_app(settings: Settings, *, engine: Engine | None = None) -> web.Application:
    """Build the bridge application. ``engine`` overrides the configured one (tests)."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware(settings.api_tokens)],
        client_max_size=MAX_BODY,
    )
    app[SETTINGS] = settings
    restrict_host_addresses(settings.ice_addresses)

    eng = engine if engine is not None else create_engine(settings)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        await eng.start()
        manager = CallManager(settings, eng)
        await manager.start()
        app[ENGINE] = eng
        app[MANAGER] = manager
        try:
            yield
        finally:
            await manager.close()
            await eng.close()

    async def on_shutdown(app: web.Application) -> None:
        # End SSE streams and refuse new calls before the server waits for handlers.
        if MANAGER in app:
            app[MANAGER].shutting_down = True
            app[MANAGER].events.close()

    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(on_shutdown)
    setup_routes(app, with_sim=settings.engine is EngineKind.SIM)
    return app
