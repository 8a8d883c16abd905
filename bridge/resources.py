"""The app's resources: one ``cleanup_ctx`` entry each, as module-level async generators.

:data:`CLEANUP_CTX` lists them in the order they are made; aiohttp closes them in reverse. Each
entry reads only what ``create_app`` or an entry before it has put in the app (its keys are
named in its docstring), so the list is the order of their dependencies:

1. :func:`http_clients` — the outgoing HTTP sessions (closed last);
2. :func:`turn_provider` — TURN credentials (made by ``create_app``, closed here);
3. :func:`whatsapp_engine` — the default number's engine, the numbers and their engines;
4. :func:`media_services` — playback, recordings, forks, agents and the app's tasks;
5. :func:`call_directory` — the directory (records the calls' last events before it closes);
6. :func:`call_webhooks` — the webhooks, the tenants' too (flush the calls' last events);
7. :func:`calls` — the call manager, inbound calls and recovery (every live call ends first);
8. :func:`call_handover` — calls moving between workers (a drain under way stops first).

Two uses run the other way, from an earlier entry to a later one, and are bound late and explicitly:
the directory reports a lost call to *recovery* (made by :func:`calls`), and recovery adopts a dead
worker's call through the *handover* (made by :func:`call_handover`). The earlier entry puts a
:class:`Later` in the app; the later one binds it. Neither is used before the app has started (the
directory's reaper waits a heartbeat TTL; recovery adopts only what the directory reports).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from aiohttp import web

from .agents import AgentService
from .api.agents import controls_for
from .api.internal import handover_sender, relay_opener
from .api.keys import (
    AGENTS,
    CATALOG,
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
    SWITCHBOARD,
    TASKS,
    TURN,
    WEBHOOKS,
)
from .api.placing import inbound_placer
from .attachments import ForkService, PlaybackService, RecordingService, dtmf_observer
from .calls import Call, CallEvents, CallManager, InboundCalls, InMemoryCallRegistry, Recovery
from .calls.following import follow_calls, follow_policy
from .calls.handover import MovedCall
from .calls.model import default_owner
from .calls.reports import start_reports
from .calls.runtime import CallRuntime
from .cluster import create_directory, internal_url_for
from .cluster.handover import Handover
from .cluster.sealing import Sealer
from .config import ShutdownCalls
from .engines import Engine, create_engine
from .errors import DirectoryUnavailable
from .http import create_http_session, create_internal_session
from .numbers.setup import start_numbers
from .rtc import SessionFactory
from .stopping import STOP, StopSignals, graceful_exit, passed_on
from .tasks import TaskSet
from .webhooks import WebhookService

log = logging.getLogger(__name__)

T = TypeVar("T")


class Later(Generic[T]):
    """A resource a later ``cleanup_ctx`` entry makes, used by an earlier one's callbacks:
    the later entry :meth:`bind`\\ s it; using it unbound is a bug, said as such."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._value: T | None = None

    def bind(self, value: T) -> None:
        self._value = value

    @property
    def bound(self) -> bool:
        return self._value is not None

    def get(self) -> T:
        if self._value is None:
            raise RuntimeError(f"{self.name} is used before the entry that makes it has run")
        return self._value


ENGINE_OVERRIDE = web.AppKey("engine_override", Engine)
"""An engine given to ``create_app`` (tests) instead of the configured one."""
WORKER_INDEX = web.AppKey("worker_index", int)
"""This worker's place among ``BRIDGE_WORKERS`` (its internal port)."""
CALL_REGISTRY = web.AppKey("call_registry", InMemoryCallRegistry)
"""The calls' records: the directory reads them, the manager keeps them."""
CALL_EVENTS = web.AppKey("call_events", CallEvents)
"""The calls' events: the directory, the webhooks and the manager's followers observe them."""
LATER_RECOVERY: web.AppKey[Later[Recovery]] = web.AppKey("later_recovery")
"""Recovery as the directory sees it (bound by :func:`calls`)."""
LATER_HANDOVER: web.AppKey[Later[Handover]] = web.AppKey("later_handover")
"""The handover as recovery sees it (bound by :func:`call_handover`)."""


async def http_clients(app: web.Application) -> AsyncIterator[None]:
    """Makes ``HTTP`` and ``INTERNAL_HTTP``."""
    app[HTTP] = create_http_session()
    app[INTERNAL_HTTP] = create_internal_session()
    try:
        yield
    finally:
        await app[HTTP].close()
        await app[INTERNAL_HTTP].close()


async def turn_provider(app: web.Application) -> AsyncIterator[None]:
    """Reads ``TURN`` (made by ``create_app``, so a bad TURN setting fails there): closes it."""
    turn = app[TURN]
    yield
    await turn.close()


async def whatsapp_engine(app: web.Application) -> AsyncIterator[None]:
    """Reads ``SETTINGS``, ``HTTP`` (and ``ENGINE_OVERRIDE``); makes ``ENGINE`` (the default
    number's), ``CATALOG`` and ``SWITCHBOARD`` (every number's engine)."""
    engine = app.get(ENGINE_OVERRIDE) or create_engine(app[SETTINGS], app[HTTP])
    await engine.start()
    app[ENGINE] = engine
    app[CATALOG], app[SWITCHBOARD] = await start_numbers(
        app[SETTINGS], engine, app[HTTP], app[METRICS]
    )
    yield
    await app[SWITCHBOARD].close()
    await app[CATALOG].close()
    await engine.close()


async def sweep_recordings(recordings: RecordingService, interval: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        # On the recordings' threads: a volume that stalls holds the sweep, never the loop.
        removed = await loop.run_in_executor(recordings.finisher, recordings.sweep)
        if removed:
            log.info("retention: deleted %d expired recordings", removed)
        await asyncio.sleep(interval)


async def media_services(app: web.Application) -> AsyncIterator[None]:
    """Reads ``SETTINGS``, ``HTTP``, ``METRICS``; makes ``PLAYBACK``, ``RECORDINGS``,
    ``FORKS``, ``AGENTS`` and ``TASKS``."""
    settings, http = app[SETTINGS], app[HTTP]
    storage = settings.storage
    recordings = RecordingService(Path(storage.data_dir), storage.recording_retention_days)
    app[PLAYBACK] = PlaybackService(storage, http)
    app[RECORDINGS] = recordings
    app[FORKS] = ForkService(storage.fork_url_allow, http)
    app[AGENTS] = AgentService(settings.agents, storage.fork_url_allow, http)
    tasks = app[TASKS] = TaskSet("app")
    tasks.spawn(app[METRICS].run_loop_lag_monitor(), "loop-lag")
    tasks.spawn(sweep_recordings(recordings, storage.retention_sweep_interval), "retention")
    yield
    await tasks.close()
    await recordings.close()  # the crashed workers' segments it was finishing


async def call_directory(app: web.Application) -> AsyncIterator[None]:
    """Reads ``SETTINGS``, ``WORKER_INDEX``, ``CALL_REGISTRY``, ``CALL_EVENTS``, ``METRICS``,
    ``SWITCHBOARD`` (its engines remember there the calls ended before they came); makes
    ``DIRECTORY`` and ``LATER_RECOVERY`` (bound by :func:`calls`)."""
    settings, metrics = app[SETTINGS], app[METRICS]
    recovery = app[LATER_RECOVERY] = Later[Recovery]("recovery")

    async def lost_call(call: Call, attachments: dict[str, Any] | None) -> None:
        # Recovery adopts the call here if it can move, else ends it (worker_lost).
        await recovery.get().lost_call(call, attachments)

    async def end_local_calls() -> None:
        if recovery.bound:  # before the calls exist there is none to end
            await recovery.get().end_local_calls_as_lost()

    directory = create_directory(
        settings.cluster,
        worker_id=default_owner(),
        internal_url=internal_url_for(settings.cluster, settings.server.port, app[WORKER_INDEX]),
        ended_ttl=settings.calls.ended_call_ttl,
        max_calls=settings.calls.max_calls,
        local_calls=app[CALL_REGISTRY].live,
        end_lost_call=lost_call,
        end_local_calls=end_local_calls,
    )
    app[CALL_EVENTS].observe(directory.observe)
    metrics.directory_up.set_function(lambda: 1.0 if directory.available else 0.0)
    app[DIRECTORY] = directory
    app[SWITCHBOARD].calls_over = directory  # every number's engine's, from now on
    try:
        await directory.start()
        yield
    finally:
        await directory.close()  # after the last events were recorded


async def call_webhooks(app: web.Application) -> AsyncIterator[None]:
    """Reads ``SETTINGS``, ``HTTP``, ``METRICS``, ``CALL_EVENTS``, ``CATALOG`` (a tenant's
    own URL gets its calls' events too); makes ``WEBHOOKS``."""
    tenants, settings = app[CATALOG].tenant_destination, app[SETTINGS].webhooks
    webhooks = app[WEBHOOKS] = WebhookService(settings, app[HTTP], app[METRICS], tenants)
    app[CALL_EVENTS].observe(webhooks.observe)
    yield
    # The calls' last events (call.ended) are queued now: flush them (bounded).
    await webhooks.close()


async def calls(app: web.Application) -> AsyncIterator[None]:
    """Reads ``SETTINGS``, ``ENGINE``, ``DIRECTORY``, ``METRICS``, ``TURN``, ``INTERNAL_HTTP``,
    ``RECORDINGS``, ``PLAYBACK``, ``AGENTS``, ``TASKS``, ``CALL_REGISTRY``, ``CALL_EVENTS``
    (and gives the agents their controls); makes ``MANAGER``,
    ``INBOUND``, ``RECOVERY`` (binding ``LATER_RECOVERY``) and ``LATER_HANDOVER`` (bound by
    :func:`call_handover`)."""
    settings, directory = app[SETTINGS], app[DIRECTORY]
    cluster = settings.cluster
    manager = CallManager(
        settings.calls,
        app[SWITCHBOARD],
        app[METRICS],
        SessionFactory(settings.media, settings.ice, app[TURN]),
        registry=app[CALL_REGISTRY],
        events=app[CALL_EVENTS],
    )
    manager.admission.tenant_calls = directory.tenant_calls  # a tenant's maxCalls, everywhere

    async def known_elsewhere(engine_call_id: str) -> bool:
        try:
            record = await directory.record_by_engine_id(engine_call_id)
        except DirectoryUnavailable:
            return True  # cannot tell: never hang up what may be another worker's call
        return record is not None and record.live and record.owner != directory.worker_id

    # Every worker polls a polled engine (ZuckZapGo, WADial) and sees each new inbound call:
    # one claims it and places it on the least-loaded worker (per number: ``polled``). A sim
    # is each worker's own; a webhook engine's new call is routed to one worker already.
    inbound = InboundCalls(
        manager,
        claim=directory.claim_engine_call,
        place=inbound_placer(directory, app[INTERNAL_HTTP], cluster.internal_secret),
        polled=manager.engine.polled,
        swap=directory.swap_engine_claim,
    )
    handover = app[LATER_HANDOVER] = Later[Handover]("handover")

    async def adopt(moved: MovedCall, carried: Callable[[CallRuntime], None]) -> Call:
        return await handover.get().adopt(moved, carried)  # a dead worker's call recovery adopts

    recordings = app[RECORDINGS]

    def finish_recording(call: Call, recording: dict[str, Any]) -> None:
        def emit(type_: str, **data: Any) -> None:
            manager.events.publish(type_, call, **data)

        recordings.finish_left(call.id, recording, emit)  # a lost call's, ended here

    recovery = Recovery(
        manager,
        known_elsewhere=known_elsewhere,
        adopt=adopt if cluster.adopt_lost_calls else None,
        offer_timeout=cluster.adopt_offer_timeout,
        finish_recording=finish_recording,
    )
    follow_policy(manager, app[CATALOG], app[RECORDINGS])  # recording allowed? Meta's files
    follow_calls(settings, manager, app[CALL_EVENTS], app[RECORDINGS], app[TASKS])
    app[CALL_EVENTS].observe(dtmf_observer(manager.find_runtime))  # keys to forks, sockets, agents
    app[AGENTS].controls = controls_for(manager, app[PLAYBACK])
    app[MANAGER], app[INBOUND], app[RECOVERY] = manager, inbound, recovery
    reports = start_reports(settings, app[METRICS].registry, app[CALL_EVENTS], manager, app[TASKS])
    app[REPORTS] = reports
    app[LATER_RECOVERY].bind(recovery)
    try:
        await manager.start()
        await recovery.start()
        yield
    finally:
        await recovery.close()
        await manager.close()  # every live call ends (with its runtime)
        await app[REPORTS].flush()  # their records are on disk


async def call_handover(app: web.Application) -> AsyncIterator[None]:
    """Calls moving between workers: a drain on SIGTERM hands them over, the calls moved here
    (``POST /call/handover``, a dead worker's that recovery adopts) are taken in. Reads
    ``SETTINGS``, ``MANAGER``, ``DIRECTORY``, ``METRICS``, ``INTERNAL_HTTP``, ``RECORDINGS``,
    ``FORKS``, ``AGENTS``, ``PLAYBACK``; makes ``HANDOVER`` (binding ``LATER_HANDOVER``) and gives
    the directory each live call's attachments for its record."""
    settings, internal_http = app[SETTINGS], app[INTERNAL_HTTP]
    cluster, manager = settings.cluster, app[MANAGER]
    handover = app[HANDOVER] = Handover(
        manager,
        app[DIRECTORY],
        app[METRICS],
        handover_sender(internal_http, cluster.internal_secret),
        app[RECORDINGS],
        app[FORKS],
        relay_opener(internal_http, cluster.internal_secret),
        agents=app[AGENTS],
        sealer=Sealer(cluster.internal_secret) if cluster.shared else None,
        playback=app[PLAYBACK],
    )
    app[LATER_HANDOVER].bind(handover)
    # From now on each record of a live call keeps what a survivor re-opens after a crash.
    app[DIRECTORY].attachments = handover.attachments
    drain = TaskSet("drain")
    if settings.calls.shutdown_calls is ShutdownCalls.HANDOVER:
        if cluster.shared:
            drain_on_sigterm(manager, handover, drain, app.get(STOP))
        else:
            log.warning(
                "BRIDGE_SHUTDOWN_CALLS=handover needs a shared call directory "
                "(BRIDGE_DIRECTORY=redis://…): one process has no other worker to hand "
                "its calls to, so SIGTERM hangs them up (as with hangup)"
            )
    yield
    await drain.close()  # a drain cut short by a second SIGTERM: the calls end next


CLEANUP_CTX = (
    http_clients,
    turn_provider,
    whatsapp_engine,
    media_services,
    call_directory,
    call_webhooks,
    calls,
    call_handover,
)
"""The entries in the order they are made (module docstring)."""


def drain_on_sigterm(
    manager: CallManager, handover: Handover, tasks: TaskSet, signals: StopSignals | None
) -> None:
    """SIGTERM drains first (``BRIDGE_SHUTDOWN_CALLS=handover``), while this worker still
    serves requests: no new calls, movable calls handed over, the others served until they
    end (bounded); then the usual graceful shutdown. A second SIGTERM stops at once, unless it
    is the first passed on again (``stopping.passed_on``). The process's ``signals`` hand
    SIGTERM to the drain once the start-up is done and begin the shutdown once
    (``StopSignals``); an app without them (a test's) takes SIGTERM here."""
    loop = asyncio.get_running_loop()
    stop = graceful_exit if signals is None else signals.stop
    draining: list[asyncio.Task[None]] = []
    first_at: list[float] = []

    async def drain_then_stop() -> None:
        try:
            manager.shutting_down = True  # new calls are refused; /readyz says so
            await handover.drain()
            await handover.wait_unmovable()
        except Exception:
            log.exception("draining")
        loop.call_soon(stop)  # not when cancelled: the shutdown is under way

    def on_sigterm() -> None:
        if draining:
            if not passed_on(first_at[0]):
                stop()  # an operator's second: the rest of the drain skipped
            return
        first_at.append(time.monotonic())
        log.warning("SIGTERM: draining (BRIDGE_SHUTDOWN_CALLS=handover)")
        draining.append(tasks.spawn(drain_then_stop(), "drain"))

    if signals is not None:
        signals.on_sigterm(on_sigterm)
        return
    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (NotImplementedError, RuntimeError):  # not the main thread (tests): no signals
        pass


async def on_shutdown(app: web.Application) -> None:
    """Not a resource: aiohttp runs this before it waits for the handlers, so SSE streams end
    and new calls are refused first (the cleanup entries run after the handlers)."""
    if MANAGER in app:
        app[MANAGER].stop_accepting()
        app[DIRECTORY].close_streams()
