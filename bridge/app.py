"""``create_app(settings)``: the aiohttp application and its app-scoped resources."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from .api import setup_routes
from .api.auth import auth_middleware
from .api.engine import authenticates_itself
from .api.errors import BODY_TIMEOUT, error_middleware
from .api.internal import handover_sender, relay_opener
from .api.keys import (
    DIRECTORY,
    ENGINE,
    FORKS,
    HANDOVER,
    HTTP,
    INBOUND,
    INTERNAL_HTTP,
    MANAGER,
    METRICS,
    PLAYBACK,
    RECORDINGS,
    RECOVERY,
    REPORTS,
    SETTINGS,
    TASKS,
    TURN,
    WEBHOOKS,
)
from .api.limits import cors_middleware, cors_on_prepare, rate_limit_middleware
from .api.routing import inbound_placer, routing_middleware
from .attachments import ForkService, PlaybackService, RecordingService, dtmf_observer
from .attachments.speech import start_speech_activity
from .calls import Call, CallEvents, CallManager, InboundCalls, InMemoryCallRegistry, Recovery
from .calls.handover import MovedCall
from .calls.model import default_owner
from .calls.reports import start_reports
from .calls.runtime import CallRuntime
from .cluster import create_directory, internal_url_for
from .cluster.handover import Handover
from .config import Settings, ShutdownCalls
from .engines import Engine, PolledEngine, create_engine
from .errors import DirectoryUnavailable, NotFound
from .http import create_http_session, create_internal_session
from .metrics import Metrics
from .rtc import SessionFactory, create_turn_provider, restrict_host_addresses, set_gather_timeout
from .rtc.counters import RtcCollector
from .startup import prepare_data_dir, web_dir
from .tasks import TaskSet
from .webhooks import WebhookService

log = logging.getLogger(__name__)

MAX_BODY = 48 * 1024 * 1024
"""Largest request body aiohttp reads (uploads, ``audioBase64``); JSON routes cap their own
bodies at 64 KiB (``api.errors.read_json``)."""


async def sweep_recordings(recordings: RecordingService, interval: float) -> None:
    while True:
        removed = recordings.sweep()
        if removed:
            log.info("retention: deleted %d expired recordings", removed)
        await asyncio.sleep(interval)


def drain_on_sigterm(manager: CallManager, handover: Handover, tasks: TaskSet) -> None:
    """SIGTERM drains first (``BRIDGE_SHUTDOWN_CALLS=handover``), while this worker still
    serves requests: no new calls, movable calls handed over, the others served until they
    end (bounded); then the usual graceful shutdown. A second SIGTERM stops at once."""
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task[None]] = []

    async def drain_then_stop() -> None:
        try:
            manager.shutting_down = True  # new calls are refused; /readyz says so
            await handover.drain()
            await handover.wait_unmovable()
        except Exception:
            log.exception("draining")
        loop.call_soon(_graceful_exit)  # not when cancelled: the shutdown is under way

    def on_sigterm() -> None:
        if draining:
            _graceful_exit()
        log.warning("SIGTERM: draining (BRIDGE_SHUTDOWN_CALLS=handover)")
        draining.append(tasks.spawn(drain_then_stop(), "drain"))

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (NotImplementedError, RuntimeError):  # not the main thread (tests): no signals
        pass


def _graceful_exit() -> None:
    raise web.GracefulExit()


def create_app(
    settings: Settings, *, engine: Engine | None = None, worker_index: int = 0
) -> web.Application:
    """Build the bridge application. ``engine`` overrides the configured one (tests);
    ``worker_index`` is this worker's place among ``BRIDGE_WORKERS`` (its internal port).

    Raises :class:`~bridge.startup.StartupError` when the packaged browser client is missing
    or ``BRIDGE_DATA_DIR`` is not writable."""
    server, storage, cluster = settings.server, settings.storage, settings.cluster
    static = web_dir()
    prepare_data_dir(storage.data_dir)
    middlewares = [
        cors_middleware(server.cors_origins),
        error_middleware,
        # Signed engine webhooks (Meta's) carry their signature, never our token.
        auth_middleware(
            server.api_tokens,
            authenticates_itself=authenticates_itself,
            internal_secret=cluster.internal_secret,
        ),
        rate_limit_middleware(server.rate_limit, server.rate_burst, by_token=server.auth_enabled),
    ]
    if cluster.shared:
        middlewares.append(routing_middleware(cluster.internal_secret))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    app[BODY_TIMEOUT] = server.body_timeout
    restrict_host_addresses(settings.ice.ice_addresses)
    set_gather_timeout(settings.ice.ice_gather_timeout)
    turn = create_turn_provider(settings.ice)

    metrics = Metrics()
    metrics.registry.register(RtcCollector())  # UDP drops, WebRTC failures by reason
    app[METRICS] = metrics
    # The calls' record and their events exist before the directory and the webhooks that
    # read and observe them; the manager made last runs them.
    registry = InMemoryCallRegistry(settings.calls.ended_call_ttl)
    events = CallEvents()

    # App-scoped resources: one cleanup_ctx entry each, created in this order and closed in
    # reverse (aiohttp runs the entries' ends backwards): a drain still under way stops
    # first (no call moves while the calls end), the calls end (their last events queued),
    # the webhooks flush them, the directory records them, then the app's tasks stop, the
    # engine and the TURN provider close, and the HTTP clients last.

    async def http_clients(app: web.Application) -> AsyncIterator[None]:
        app[HTTP] = create_http_session()
        app[INTERNAL_HTTP] = create_internal_session()
        try:
            yield
        finally:
            await app[HTTP].close()
            await app[INTERNAL_HTTP].close()

    async def turn_provider(app: web.Application) -> AsyncIterator[None]:
        app[TURN] = turn
        yield
        await turn.close()

    async def whatsapp_engine(app: web.Application) -> AsyncIterator[None]:
        eng = engine if engine is not None else create_engine(settings, app[HTTP])
        await eng.start()
        app[ENGINE] = eng
        yield
        await eng.close()

    async def media_services(app: web.Application) -> AsyncIterator[None]:
        http = app[HTTP]
        recordings = RecordingService(Path(storage.data_dir), storage.recording_retention_days)
        app[PLAYBACK] = PlaybackService(storage, http)
        app[RECORDINGS] = recordings
        app[FORKS] = ForkService(storage.fork_url_allow, http)
        tasks = app[TASKS] = TaskSet("app")
        tasks.spawn(metrics.run_loop_lag_monitor(), "loop-lag")
        tasks.spawn(sweep_recordings(recordings, storage.retention_sweep_interval), "retention")
        yield
        await tasks.close()

    async def call_directory(app: web.Application) -> AsyncIterator[None]:
        async def lost_call(call: Call) -> None:
            # The reaper waits a heartbeat TTL after start-up: the calls exist by then.
            # Recovery adopts the call here if it can move, else ends it (worker_lost).
            await app[RECOVERY].lost_call(call)

        async def end_local_calls() -> None:
            if RECOVERY in app:  # before the calls exist there is none to end
                await app[RECOVERY].end_local_calls_as_lost()

        directory = create_directory(
            cluster,
            worker_id=default_owner(),
            internal_url=internal_url_for(cluster, server.port, worker_index),
            ended_ttl=settings.calls.ended_call_ttl,
            max_calls=settings.calls.max_calls,
            local_calls=registry.live,
            end_lost_call=lost_call,
            end_local_calls=end_local_calls,
        )
        events.observe(directory.observe)
        metrics.directory_up.set_function(lambda: 1.0 if directory.available else 0.0)
        app[DIRECTORY] = directory
        try:
            await directory.start()
            yield
        finally:
            await directory.close()  # after the last events were recorded

    async def call_webhooks(app: web.Application) -> AsyncIterator[None]:
        webhooks = app[WEBHOOKS] = WebhookService(settings.webhooks, app[HTTP], metrics)
        events.observe(webhooks.observe)
        yield
        # The calls' last events (call.ended) are queued now: flush them (bounded).
        await webhooks.close()

    async def calls(app: web.Application) -> AsyncIterator[None]:
        eng, directory = app[ENGINE], app[DIRECTORY]
        manager = CallManager(
            settings.calls,
            eng,
            metrics,
            SessionFactory(settings.media, settings.ice, turn),
            registry=registry,
            events=events,
        )

        async def known_elsewhere(engine_call_id: str) -> bool:
            try:
                record = await directory.record_by_engine_id(engine_call_id)
            except DirectoryUnavailable:
                return True  # cannot tell: never hang up what may be another worker's call
            return record is not None and record.live and record.owner != directory.worker_id

        # Every worker polls a polled engine (ZuckZapGo, WADial) and sees every new inbound
        # call: one claims it and places it on the least-loaded worker. The simulator is each
        # worker's own; a webhook engine's new call is routed to one worker before it exists.
        polled = isinstance(eng, PolledEngine)
        inbound = InboundCalls(
            manager,
            claim=directory.claim_engine_call if polled else None,
            place=inbound_placer(directory, app[INTERNAL_HTTP], cluster.internal_secret)
            if polled
            else None,
        )

        async def adopt(moved: MovedCall) -> Call:
            # A dead worker's call recovery adopts (the handover exists by then, as above).
            return await app[HANDOVER].adopt(moved)

        recovery = Recovery(
            manager,
            known_elsewhere=known_elsewhere,
            adopt=adopt if cluster.adopt_lost_calls else None,
            offer_timeout=cluster.adopt_offer_timeout,
        )
        follow_calls(manager, app[RECORDINGS], app[TASKS])
        events.observe(dtmf_observer(manager.find_runtime))  # keys to forks, sockets
        app[MANAGER], app[INBOUND], app[RECOVERY] = manager, inbound, recovery
        app[REPORTS] = start_reports(settings, metrics.registry, events, manager, app[TASKS])
        try:
            await manager.start()
            await recovery.start()
            yield
        finally:
            await recovery.close()
            await manager.close()  # every live call ends (with its runtime)
            await app[REPORTS].flush()  # their records are on disk

    async def call_handover(app: web.Application) -> AsyncIterator[None]:
        """Calls moving between workers: a drain on SIGTERM hands them over, the calls moved
        here (``POST /call/handover``, a dead worker's that recovery adopts) are taken in."""
        manager, internal_http = app[MANAGER], app[INTERNAL_HTTP]
        handover = app[HANDOVER] = Handover(
            manager,
            app[DIRECTORY],
            metrics,
            handover_sender(internal_http, cluster.internal_secret),
            app[RECORDINGS],
            app[FORKS],
            relay_opener(internal_http, cluster.internal_secret),
        )
        drain = TaskSet("drain")
        if settings.calls.shutdown_calls is ShutdownCalls.HANDOVER:
            if cluster.shared:
                drain_on_sigterm(manager, handover, drain)
            else:
                log.warning(
                    "BRIDGE_SHUTDOWN_CALLS=handover needs a shared call directory "
                    "(BRIDGE_DIRECTORY=redis://…): one process has no other worker to hand "
                    "its calls to, so SIGTERM hangs them up (as with hangup)"
                )
        yield
        await drain.close()  # a drain cut short by a second SIGTERM: the calls end next

    def follow_calls(manager: CallManager, recordings: RecordingService, tasks: TaskSet) -> None:
        """What the settings start on every answered call: a recording, speech events."""
        if storage.record_all:

            def record_every_call(type_: str, call: Call) -> None:
                runtime = manager.find_runtime(call.id)
                if type_ == "call.active" and runtime is not None:
                    tasks.spawn(recordings.start(runtime), f"record:{call.id}")

            events.listen(record_every_call)
        if settings.media.speech_events:
            loop = asyncio.get_running_loop()

            def hear_who_talks(type_: str, call: Call) -> None:
                runtime = manager.find_runtime(call.id)
                if type_ == "call.active" and runtime is not None:
                    loop.call_soon(start_speech, runtime, call)

            def start_speech(runtime: CallRuntime, call: Call) -> None:
                if call.live and not runtime.closed:
                    start_speech_activity(runtime, lambda now: setattr(call, "speaking", now))

            events.listen(hear_who_talks)

    async def on_shutdown(app: web.Application) -> None:
        # Not a resource: aiohttp runs this before it waits for the handlers, so SSE streams
        # end and new calls are refused first (the cleanup entries run after the handlers).
        if MANAGER in app:
            app[MANAGER].stop_accepting()
            app[DIRECTORY].close_streams()

    app.on_response_prepare.append(cors_on_prepare(server.cors_origins))
    app.cleanup_ctx.extend(
        [
            http_clients,
            turn_provider,
            whatsapp_engine,
            media_services,
            call_directory,
            call_webhooks,
            calls,
            call_handover,
        ]
    )
    app.on_shutdown.append(on_shutdown)
    setup_routes(app)
    index = static / "index.html"

    async def demo_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(index)

    # The page and its scripts (web/__init__.py only makes the directory a package).
    files = {f.name: f for f in static.iterdir() if f.suffix in (".html", ".js")}

    async def web_file(request: web.Request) -> web.FileResponse:
        # The packaged files only, by name: no directory walk, and a 404 with the JSON body.
        path = files.get(request.match_info["filename"])
        if path is None:
            raise NotFound(f"no file {request.match_info['filename'][:80]!r} under /web/")
        return web.FileResponse(path)

    app.router.add_get("/", demo_page)
    app.router.add_get("/web/{filename}", web_file)
    return app
