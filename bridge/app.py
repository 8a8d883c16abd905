"""``create_app(settings)``: the aiohttp application and its app-scoped resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from .api import ENGINE, MANAGER, SETTINGS, error_middleware, setup_routes
from .auth import auth_middleware
from .calls import CallManager
from .config import EngineKind, Settings
from .legs import Engine, create_engine
from .limits import cors_middleware, rate_limit_middleware
from .metrics import Metrics
from .rtc import create_turn_provider, restrict_host_addresses, set_gather_timeout
from .tasks import TaskSet

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
"""The browser client and demo page (served at ``/`` and ``/web/``)."""

MAX_BODY = 64 * 1024
"""Largest request body accepted (JSON bodies and SDP offers)."""


def create_app(settings: Settings, *, engine: Engine | None = None) -> web.Application:
    """Build the bridge application. ``engine`` overrides the configured one (tests)."""
    app = web.Application(
        middlewares=[
            cors_middleware(settings.cors_origins),
            error_middleware,
            auth_middleware(settings.api_tokens),
            rate_limit_middleware(settings.rate_limit, settings.rate_burst),
        ],
        client_max_size=MAX_BODY,
    )
    app[SETTINGS] = settings
    restrict_host_addresses(settings.ice_addresses)
    set_gather_timeout(settings.ice_gather_timeout)

    eng = engine if engine is not None else create_engine(settings)
    turn = create_turn_provider(settings)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        metrics = Metrics()
        tasks = TaskSet("app")
        await eng.start()
        manager = CallManager(settings, eng, metrics=metrics, turn=turn)
        await manager.start()
        tasks.spawn(metrics.run_loop_lag_monitor(), "loop-lag")
        app[ENGINE] = eng
        app[MANAGER] = manager
        try:
            yield
        finally:
            await manager.close()
            await tasks.close()
            await eng.close()

    async def on_shutdown(app: web.Application) -> None:
        # End SSE streams and refuse new calls before the server waits for handlers.
        if MANAGER in app:
            app[MANAGER].shutting_down = True
            app[MANAGER].events.close()

    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(on_shutdown)
    setup_routes(app, with_sim=settings.engine is EngineKind.SIM)
    if WEB_DIR.is_dir():
        index = WEB_DIR / "index.html"

        async def demo_page(request: web.Request) -> web.FileResponse:
            return web.FileResponse(index)

        app.router.add_get("/", demo_page)
        app.router.add_static("/web/", WEB_DIR, follow_symlinks=False)
    return app
