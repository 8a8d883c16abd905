"""``create_app(settings)``: the aiohttp application and its app-scoped resources."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .api import ENGINE, MANAGER, SETTINGS, error_middleware, setup_routes
from .api.keys import FORKS, PLAYBACK, RECORDINGS
from .auth import auth_middleware
from .bus import CallBus
from .calls import Call, CallManager
from .config import EngineKind, Settings
from .forks import ForkService
from .legs import Engine, create_engine
from .limits import cors_middleware, cors_on_prepare, rate_limit_middleware
from .metrics import Metrics
from .playback import PlaybackService
from .recording import RecordingService
from .rtc import create_turn_provider, restrict_host_addresses, set_gather_timeout
from .startup import prepare_data_dir, web_dir
from .tasks import TaskSet

log = logging.getLogger(__name__)

MAX_BODY = 48 * 1024 * 1024
"""Largest request body aiohttp reads (uploads, ``audioBase64``); JSON routes cap their own
bodies at 64 KiB (``api.errors.read_json``)."""


def bus_of_live(manager: CallManager) -> Callable[[str], CallBus | None]:
    """The bus of a live call (``None`` for unknown or ended calls)."""

    def bus_of(call_id: str) -> CallBus | None:
        media = manager.media(call_id)
        call = manager.registry.get(call_id)
        return media.bus if media is not None and call is not None and call.live else None

    return bus_of


def publish_to(manager: CallManager) -> Callable[..., None]:
    """Publish an event about a call by its id."""

    def publish(type_: str, call_id: str, **data: Any) -> None:
        call = manager.registry.get(call_id)
        if call is not None:
            manager.events.publish(type_, call, **data)

    return publish


def media_services(
    settings: Settings, manager: CallManager, tasks: TaskSet
) -> tuple[PlaybackService, RecordingService]:
    """Playback and recording, wired to the manager's buses and events."""
    bus_of, publish = bus_of_live(manager), publish_to(manager)
    playback = PlaybackService(settings, bus_of, publish)
    recordings = RecordingService(
        Path(settings.data_dir), settings.recording_retention_days, bus_of, publish
    )

    def on_event(type_: str, call: Call) -> None:
        if type_ == "call.active" and settings.record_all and call.id not in recordings.active:
            recordings.start(call.id)
        elif type_ == "call.ended" and call.id in recordings.active:
            tasks.spawn(recordings.stop(call.id), f"record-stop:{call.id}")

    manager.events.listen(on_event)
    return playback, recordings


async def sweep_recordings(recordings: RecordingService, interval: float) -> None:
    while True:
        removed = recordings.sweep()
        if removed:
            log.info("retention: deleted %d expired recordings", removed)
        await asyncio.sleep(interval)


def create_app(settings: Settings, *, engine: Engine | None = None) -> web.Application:
    """Build the bridge application. ``engine`` overrides the configured one (tests).

    Raises :class:`~bridge.startup.StartupError` when the packaged browser client is missing
    or ``BRIDGE_DATA_DIR`` is not writable."""
    static = web_dir()
    prepare_data_dir(settings.data_dir)
    app = web.Application(
        middlewares=[
            cors_middleware(settings.cors_origins),
            error_middleware,
            auth_middleware(settings.api_tokens),
            rate_limit_middleware(
                settings.rate_limit, settings.rate_burst, by_token=settings.auth_enabled
            ),
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
        playback, recordings = media_services(settings, manager, tasks)
        forks = ForkService(settings.fork_url_allow, bus_of_live(manager), publish_to(manager))

        def stop_forks(type_: str, call: Call) -> None:
            if type_ == "call.ended" and any(f.call_id == call.id for f in forks.forks.values()):
                tasks.spawn(forks.stop_call(call.id), f"forks:{call.id}")

        manager.events.listen(stop_forks)
        await manager.start()
        tasks.spawn(metrics.run_loop_lag_monitor(), "loop-lag")
        tasks.spawn(sweep_recordings(recordings, settings.retention_sweep_interval), "retention")
        app[ENGINE] = eng
        app[MANAGER] = manager
        app[PLAYBACK] = playback
        app[RECORDINGS] = recordings
        app[FORKS] = forks
        try:
            yield
        finally:
            await manager.close()
            await forks.close()
            await tasks.close()
            await playback.close()
            await eng.close()

    async def on_shutdown(app: web.Application) -> None:
        # End SSE streams and refuse new calls before the server waits for handlers.
        if MANAGER in app:
            app[MANAGER].shutting_down = True
            app[MANAGER].events.close()

    app.on_response_prepare.append(cors_on_prepare(settings.cors_origins))
    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(on_shutdown)
    setup_routes(app, with_sim=settings.engine is EngineKind.SIM)
    index = static / "index.html"

    async def demo_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(index)

    app.router.add_get("/", demo_page)
    app.router.add_static("/web/", static, follow_symlinks=False)
    return app
