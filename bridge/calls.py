"""Calls: the ``Call`` model and its state machine, the registry, events, and the manager.

``Call`` is the record a client sees (and that a shared directory could hold); its media
runtime (bus, WebRTC session, engine leg) lives beside it in :class:`CallManager`, owned by
the process that carries the call (``Call.owner``).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import re
import socket
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .bus import CallBus
from .config import Settings
from .errors import (
    AtCapacity,
    BadOffer,
    BadRequest,
    CallNotFound,
    CallStateError,
    EngineCallNotFound,
    EngineError,
    ShuttingDown,
)
from .legs import Engine, EngineEvent, EngineEventKind, LegPump, LegStats
from .metrics import MediaTotals, Metrics, estimate_mos
from .rtc import TurnProvider, WebRTCSession, create_turn_provider, server_rtc_configuration
from .rtc.sdp import validate_offer
from .tasks import TaskSet

log = logging.getLogger(__name__)


class CallState(enum.StrEnum):
    CALLING = "calling"
    RINGING = "ringing"
    ACTIVE = "active"
    ENDED = "ended"


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class EndReason(enum.StrEnum):
    HANGUP = "hangup"  # we hung up an active call
    REMOTE_HANGUP = "remote_hangup"  # the WhatsApp peer hung up
    CANCELED = "canceled"  # we hung up our outbound call before it was answered
    DECLINED = "declined"  # we declined an inbound call
    REMOTE_CANCELED = "remote_canceled"  # the caller gave up before we answered
    REJECTED = "rejected"  # the peer did not take our call
    BUSY = "busy"  # refused: the bridge was at capacity
    FAILED = "failed"  # the engine or the media failed
    NO_ANSWER = "no_answer"  # our outbound call rang past BRIDGE_RING_TIMEOUT
    MISSED = "missed"  # an inbound call rang past BRIDGE_RING_TIMEOUT unanswered
    MAX_DURATION = "max_duration"  # the call reached BRIDGE_MAX_CALL_DURATION
    SHUTDOWN = "shutdown"  # the bridge shut down and hung up
    HANDOVER = "handover"  # the bridge shut down and left the WhatsApp call up


_TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.CALLING: frozenset({CallState.RINGING, CallState.ACTIVE, CallState.ENDED}),
    CallState.RINGING: frozenset({CallState.ACTIVE, CallState.ENDED}),
    CallState.ACTIVE: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}

_PHONE_RE = re.compile(r"^\+?(\d{6,15})(@s\.whatsapp\.net)?$")


def normalize_phone(raw: object) -> str:
    """E.164 digits from ``5521…``, ``+5521…`` or ``5521…@s.whatsapp.net``."""
    if not isinstance(raw, str):
        raise BadRequest("phone must be a string of digits", code="invalid_phone")
    m = _PHONE_RE.match(raw.strip())
    if m is None:
        raise BadRequest(
            f"phone {raw[:40]!r} is not a phone number: give 6-15 digits with the country code, "
            "optionally with a leading + or as a …@s.whatsapp.net JID",
            code="invalid_phone",
        )
    return m.group(1)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def default_owner() -> str:
    """This process's identity as a call owner."""
    return os.environ.get("BRIDGE_WORKER_ID") or f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Call:
    """One WhatsApp call as the API shows it."""

    id: str
    peer: str
    direction: Direction
    owner: str
    engine_call_id: str
    state: CallState
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: EndReason | None = None
    muted: bool = False
    transport: str | None = None
    webrtc_state: str | None = None
    final_stats: dict[str, Any] | None = field(default=None, repr=False)
    mono_created: float = field(default_factory=time.monotonic, repr=False)
    mono_answered: float | None = field(default=None, repr=False)

    @property
    def live(self) -> bool:
        return self.state is not CallState.ENDED

    def transition(self, new: CallState, reason: EndReason | None = None) -> None:
        """Move to ``new`` or raise :class:`CallStateError` if the state machine forbids it."""
        if new not in _TRANSITIONS[self.state]:
            raise CallStateError(f"call {self.id} is {self.state}; it cannot become {new}")
        self.state = new
        now = time.time()
        if new is CallState.ACTIVE:
            self.answered_at = now
            self.mono_answered = time.monotonic()
        elif new is CallState.ENDED:
            self.ended_at = now
            self.end_reason = reason or EndReason.FAILED

    def snapshot(self) -> dict[str, Any]:
        return {
            "callID": self.id,
            "peer": self.peer,
            "direction": str(self.direction),
            "state": str(self.state),
            "transport": self.transport,
            "webrtc": {"state": self.webrtc_state} if self.webrtc_state else None,
            "muted": self.muted,
            "metadata": self.metadata,
            "createdAt": _iso(self.created_at),
            "answeredAt": _iso(self.answered_at),
            "endedAt": _iso(self.ended_at),
            "endReason": str(self.end_reason) if self.end_reason else None,
        }


class CallRegistry(Protocol):
    """Where calls are looked up; in memory today, a shared directory later."""

    def add(self, call: Call) -> None: ...
    def get(self, call_id: str) -> Call | None: ...
    def by_engine_id(self, engine_call_id: str) -> Call | None: ...
    def live(self) -> list[Call]: ...
    def ended(self, call: Call) -> None: ...
    def sweep(self) -> int: ...


class InMemoryCallRegistry:
    """Calls of this process. Ended calls stay readable for ``ended_ttl`` seconds."""

    def __init__(self, ended_ttl: float = 900.0, max_ended: int = 100_000) -> None:
        self.ended_ttl = ended_ttl
        self.max_ended = max_ended
        self._live: dict[str, Call] = {}
        self._ended: OrderedDict[str, Call] = OrderedDict()
        self._by_engine: dict[str, str] = {}

    def add(self, call: Call) -> None:
        self._live[call.id] = call
        self._by_engine[call.engine_call_id] = call.id

    def get(self, call_id: str) -> Call | None:
        return self._live.get(call_id) or self._ended.get(call_id)

    def by_engine_id(self, engine_call_id: str) -> Call | None:
        call_id = self._by_engine.get(engine_call_id)
        return self._live.get(call_id) if call_id else None

    def live(self) -> list[Call]:
        return list(self._live.values())

    def ended(self, call: Call) -> None:
        self._live.pop(call.id, None)
        if self._by_engine.get(call.engine_call_id) == call.id:
            del self._by_engine[call.engine_call_id]
        self._ended[call.id] = call
        while len(self._ended) > self.max_ended:
            self._ended.popitem(last=False)

    def sweep(self, now: float | None = None) -> int:
        """Forget ended calls older than the TTL; returns how many."""
        now = time.time() if now is None else now
        removed = 0
        while self._ended:
            call = next(iter(self._ended.values()))
            if call.ended_at is not None and now - call.ended_at < self.ended_ttl:
                break
            self._ended.popitem(last=False)
            removed += 1
        return removed


@dataclass(frozen=True)
class CallEvent:
    type: str
    call: dict[str, Any]
    at: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        body = {"type": self.type, "callID": self.call["callID"], "at": self.at, "call": self.call}
        body.update(self.data)
        return json.dumps(body)


class CallEvents:
    """Fan-out of call events to subscribers, each with a bounded queue (oldest dropped)."""

    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._subscribers: set[_Subscription] = set()
        self._listeners: list[Callable[[str, Call], None]] = []
        self._closed = False

    def listen(self, listener: Callable[[str, Call], None]) -> None:
        """Call ``listener(type, call)`` synchronously on every event (in-process features)."""
        self._listeners.append(listener)

    def publish(self, type_: str, call: Call, **data: Any) -> None:
        event = CallEvent(type_, call.snapshot(), _iso(time.time()) or "", data)
        for sub in self._subscribers:
            sub.put(event)
        for listener in self._listeners:
            try:
                listener(type_, call)
            except Exception:
                log.exception("event listener failed on %s", type_)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[_Subscription]:
        sub = _Subscription(self.queue_size)
        if self._closed:
            sub.close()
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def close(self) -> None:
        """End every subscription (at shutdown)."""
        self._closed = True
        for sub in self._subscribers:
            sub.close()


class _Subscription:
    def __init__(self, size: int) -> None:
        self._queue: deque[CallEvent | None] = deque()
        self._size = size
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, event: CallEvent | None) -> None:
        if len(self._queue) >= self._size:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        self._ready.set()

    def close(self) -> None:
        self.put(None)

    async def get(self, timeout: float) -> CallEvent | None:
        """Next event; ``None`` at close. Raises ``TimeoutError`` after ``timeout``."""
        if not self._queue:
            self._ready.clear()
            await asyncio.wait_for(self._ready.wait(), timeout)
        event = self._queue.popleft()
        if event is None:
            self._queue.appendleft(None)
        return event


@dataclass
class CallMedia:
    """The media runtime of one call in this process."""

    bus: CallBus
    session: WebRTCSession | None = None
    leg: LegPump | None = None
    sockets: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _offer_result(exc: BaseException) -> str:
    """A bounded label for a failed offer."""
    if isinstance(exc, BadOffer):
        return "bad_offer"
    if isinstance(exc, CallNotFound):
        return "not_found"
    if isinstance(exc, CallStateError):
        return "conflict"
    if isinstance(exc, AtCapacity | ShuttingDown):
        return "capacity"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"


class CallManager:
    """Runs calls: drives the engine, the state machine, the bus and the WebRTC sessions."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        registry: CallRegistry | None = None,
        events: CallEvents | None = None,
        owner: str | None = None,
        session_factory: Callable[..., WebRTCSession] = WebRTCSession,
        metrics: Metrics | None = None,
        turn: TurnProvider | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.registry: CallRegistry = registry or InMemoryCallRegistry(settings.ended_call_ttl)
        self.events = events or CallEvents()
        self.owner = owner or default_owner()
        self._session_factory = session_factory
        self._media: dict[str, CallMedia] = {}
        self._dialling = 0  # dials in flight hold a capacity slot
        self._ending: set[str] = set()  # calls the watchdog is already ending
        self._tasks = TaskSet("calls")
        self.shutting_down = False
        self.turn = turn or create_turn_provider(settings)
        self.metrics = metrics or Metrics()
        self.metrics.attach_media(self.media_totals, self._engine_stats)
        self.metrics.sessions_active.set_function(self._live_sessions)
        self.metrics.calls_max.set(settings.max_calls)

    # -- lifecycle
    async def start(self) -> None:
        self._tasks.spawn(self._consume_engine_events(), "engine-events")
        self._tasks.spawn(self._sweep_loop(), "sweeper")
        self._tasks.spawn(self._quality_loop(), "quality")
        self._tasks.spawn(self._watchdog(), "watchdog")

    async def close(self) -> None:
        """Hang up every live call, close every peer connection, stop every task."""
        self.shutting_down = True
        results = await asyncio.gather(
            *(self._shutdown_call(c) for c in self.registry.live()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Exception):
                log.error("ending a call at shutdown", exc_info=result)
        await self._tasks.close()
        await self.turn.close()
        self.events.close()

    async def _hangup_quietly(self, engine_call_id: str) -> None:
        try:
            await asyncio.wait_for(self.engine.hangup(engine_call_id), 2.0)
        except (EngineError, TimeoutError, ConnectionError) as exc:
            log.info("hanging up engine call %s: %s", engine_call_id, exc)

    async def _shutdown_call(self, call: Call) -> None:
        if self.settings.shutdown_calls == "keep":
            await self._end(call, EndReason.HANDOVER)
            return
        try:
            await asyncio.wait_for(self.engine.hangup(call.engine_call_id), 2.0)
        except (EngineError, TimeoutError, ConnectionError) as exc:
            log.info("call %s: hangup at shutdown: %s", call.id, exc)
        await self._end(call, EndReason.SHUTDOWN)

    async def _watchdog(self, interval: float = 0.25) -> None:
        """Enforce the time limits: ringing, call duration, WebRTC connect and media."""
        st = self.settings
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for call in self.registry.live():
                if call.id in self._ending:
                    continue
                reason = None
                if call.state in (CallState.CALLING, CallState.RINGING):
                    if now - call.mono_created > st.ring_timeout:
                        reason = (
                            EndReason.NO_ANSWER
                            if call.direction is Direction.OUTBOUND
                            else EndReason.MISSED
                        )
                elif (
                    st.max_call_duration
                    and call.mono_answered is not None
                    and now - call.mono_answered > st.max_call_duration
                ):
                    reason = EndReason.MAX_DURATION
                if reason is not None:
                    self._ending.add(call.id)
                    self._tasks.spawn(self._end_by_bridge(call, reason), f"limit:{call.id}")
                    continue
                media = self._media.get(call.id)
                session = media.session if media is not None else None
                if session is None or session.state in ("closed", "failed"):
                    continue
                if session.state != "connected":
                    if now - session.offered_at > st.connect_timeout:
                        session.fail(f"not connected within {st.connect_timeout:g} s")
                elif now - (session.last_media or session.connected_at or now) > st.media_timeout:
                    session.fail(f"no RTP for {st.media_timeout:g} s")

    async def _end_by_bridge(self, call: Call, reason: EndReason) -> None:
        try:
            if not call.live:
                return
            log.info("call %s: ending (%s)", call.id, reason, extra={"call_id": call.id})
            await self._hangup_quietly(call.engine_call_id)
            await self._end(call, reason)
        finally:
            self._ending.discard(call.id)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(60)
            self.registry.sweep()

    # -- queries
    def get(self, call_id: str) -> Call:
        call = self.registry.get(call_id) if isinstance(call_id, str) else None
        if call is None:
            raise CallNotFound(f"no call {str(call_id)[:64]!r}")
        return call

    def live_calls(self) -> list[Call]:
        return self.registry.live()

    def media(self, call_id: str) -> CallMedia | None:
        return self._media.get(call_id)

    def check_capacity(self) -> None:
        if self.shutting_down:
            raise ShuttingDown("the bridge is shutting down")
        if len(self.registry.live()) + self._dialling >= self.settings.max_calls:
            raise AtCapacity(f"the bridge carries its maximum of {self.settings.max_calls} calls")

    # -- call control
    async def make(self, phone: str, metadata: dict[str, Any] | None = None) -> Call:
        digits = normalize_phone(phone)
        self.check_capacity()
        self._dialling += 1
        try:
            engine_id = await self.engine.dial(digits)
        finally:
            self._dialling -= 1
        if self.shutting_down:
            await self._hangup_quietly(engine_id)
            raise ShuttingDown("the bridge is shutting down")
        call = Call(
            id=uuid.uuid4().hex,
            peer=f"{digits}@s.whatsapp.net",
            direction=Direction.OUTBOUND,
            owner=self.owner,
            engine_call_id=engine_id,
            state=CallState.CALLING,
            metadata=metadata or {},
        )
        self._add(call)
        log.info(
            "call %s: dialled %s (engine id %s)",
            call.id,
            call.peer,
            engine_id,
            extra={"call_id": call.id},
        )
        return call

    def _add(self, call: Call) -> None:
        self.registry.add(call)
        self.metrics.calls_started.labels(str(call.direction)).inc()
        bus = CallBus(call.id)
        bus.muted = call.muted
        bus.on_user = lambda: self._wake_leg(call)
        self._media[call.id] = CallMedia(bus=bus)
        self._count_active()
        self.events.publish("call.created", call)

    async def answer(self, call_id: str) -> Call:
        call = self.get(call_id)
        if call.direction is not Direction.INBOUND or call.state is not CallState.RINGING:
            raise CallStateError(
                f"call {call.id} is {call.direction} and {call.state}; only a ringing inbound "
                "call can be answered"
            )
        await self.engine.answer(call.engine_call_id)
        if call.state is CallState.RINGING:
            self._activate(call)
        return call

    async def hangup(self, call_id: str) -> Call:
        call = self.get(call_id)
        if not call.live:
            raise CallStateError(f"call {call.id} has already ended ({call.end_reason})")
        try:
            await self.engine.hangup(call.engine_call_id)
        except EngineCallNotFound:
            log.info("call %s: engine no longer knew it", call.id, extra={"call_id": call.id})
        if not call.live:
            return call
        if call.state is CallState.ACTIVE:
            reason = EndReason.HANGUP
        elif call.direction is Direction.INBOUND:
            reason = EndReason.DECLINED
        else:
            reason = EndReason.CANCELED
        await self._end(call, reason)
        return call

    def set_muted(self, call_id: str, muted: bool) -> Call:
        call = self.get(call_id)
        if not call.live:
            raise CallStateError(f"call {call.id} has ended")
        call.muted = muted
        media = self._media.get(call.id)
        if media is not None:
            media.bus.muted = muted
        self.events.publish("call.muted" if muted else "call.unmuted", call)
        return call

    # -- engine events
    async def _consume_engine_events(self) -> None:
        while True:
            event = await self.engine.events.get()
            try:
                await self._on_engine_event(event)
            except Exception:
                log.exception("handling engine event %s", event)

    async def _on_engine_event(self, event: EngineEvent) -> None:
        if event.kind is EngineEventKind.INCOMING:
            await self._incoming(event)
            return
        call = self.registry.by_engine_id(event.engine_call_id)
        if call is None:
            log.debug("engine event for an unknown or ended call: %s", event)
            return
        if event.kind is EngineEventKind.RINGING and call.state is CallState.CALLING:
            call.transition(CallState.RINGING)
            self.events.publish("call.ringing", call)
        elif event.kind is EngineEventKind.ANSWERED and call.state in (
            CallState.CALLING,
            CallState.RINGING,
        ):
            self._activate(call)
        elif event.kind is EngineEventKind.ENDED:
            if call.state is CallState.ACTIVE:
                reason = EndReason.REMOTE_HANGUP
            elif call.direction is Direction.INBOUND:
                reason = EndReason.REMOTE_CANCELED
            else:
                reason = EndReason.REJECTED
            if event.reason in EndReason.__members__.values():
                reason = EndReason(event.reason)
            await self._end(call, reason)

    async def _incoming(self, event: EngineEvent) -> None:
        if self.registry.by_engine_id(event.engine_call_id) is not None:
            return  # already known (a webhook and a poll can both report it)
        peer = event.peer or "unknown"
        call = Call(
            id=uuid.uuid4().hex,
            peer=peer,
            direction=Direction.INBOUND,
            owner=self.owner,
            engine_call_id=event.engine_call_id,
            state=CallState.RINGING,
        )
        try:
            self.check_capacity()
        except (AtCapacity, ShuttingDown) as exc:
            log.warning("declining inbound call from %s: %s", peer, exc.message)
            try:
                await self.engine.hangup(event.engine_call_id)
            except EngineError as err:
                log.info("declining inbound call: %s", err)
            return
        self._add(call)
        log.info("call %s: inbound from %s is ringing", call.id, peer, extra={"call_id": call.id})

    def _activate(self, call: Call) -> None:
        call.transition(CallState.ACTIVE)
        log.info("call %s: active", call.id, extra={"call_id": call.id})
        self.events.publish("call.active", call)
        self._tasks.spawn(self._ensure_leg(call), f"leg:{call.id}")

    def update_transport(self, call: Call) -> None:
        """``webrtc`` while a peer connection is up, else ``websocket`` while a PCM socket is."""
        media = self._media.get(call.id)
        transport = None
        if media is not None:
            session = media.session
            if session is not None and session.state not in ("closed", "failed"):
                transport = "webrtc"
            elif media.sockets:
                transport = "websocket"
        if transport != call.transport:
            call.transport = transport
            self.events.publish("call.transport", call)

    def attach_socket(self, call_id: str, delta: int) -> None:
        """A PCM WebSocket joined (+1) or left (-1) the call."""
        call = self.registry.get(call_id)
        media = self._media.get(call_id)
        if call is None or media is None:
            return
        media.sockets = max(0, media.sockets + delta)
        self.update_transport(call)

    def _wake_leg(self, call: Call) -> None:
        """A first bus user arrived (browser, socket, playback): open the engine leg if due."""
        if self._wants_media(call) and not self._tasks.closed:
            self._tasks.spawn(self._ensure_leg(call), f"leg:{call.id}")

    def _wants_media(self, call: Call) -> bool:
        # Engines whose media socket also carries call state (WADial) open it as soon as the
        # call exists; the others once it is answered.
        if self.engine.media_before_answer:
            return call.live
        return call.state is CallState.ACTIVE

    async def _ensure_leg(self, call: Call) -> None:
        """Open the engine media for an active call that has a bus user (idempotent)."""
        media = self._media.get(call.id)
        if media is None:
            return
        async with media.lock:
            if media.leg is not None or not self._wants_media(call) or not media.bus.users:
                return
            try:
                channel = await self.engine.open_media(call.engine_call_id)
            except (EngineError, ConnectionError) as exc:
                log.warning(
                    "call %s: cannot open engine media: %s",
                    call.id,
                    exc,
                    extra={"call_id": call.id},
                )
                self._leg_closed(call, exc)  # a call that cannot carry audio is failed
                return
            if not self._wants_media(call):
                await channel.close()
                return
            media.leg = LegPump(
                media.bus, channel, on_closed=lambda exc: self._leg_closed(call, exc)
            )
            media.leg.start()

    def _leg_closed(self, call: Call, exc: BaseException | None) -> None:
        """The engine media ended by itself (after any reconnects the channel made)."""
        log.info("call %s: engine media closed (%s)", call.id, exc, extra={"call_id": call.id})
        if call.live and not self.shutting_down:
            self._tasks.spawn(self._fail_without_media(call), f"media-lost:{call.id}")

    async def _fail_without_media(self, call: Call, grace: float = 2.0) -> None:
        # The engine usually reports the call's end right after closing its media; give
        # that report a moment to arrive so the end reason stays accurate.
        await asyncio.sleep(grace)
        if not call.live:
            return
        log.warning(
            "call %s: engine media lost for good, hanging up", call.id, extra={"call_id": call.id}
        )
        try:
            await self.engine.hangup(call.engine_call_id)
        except (EngineError, ConnectionError) as exc:
            log.info("call %s: hangup after media loss: %s", call.id, exc)
        await self._end(call, EndReason.FAILED)

    async def _end(self, call: Call, reason: EndReason) -> None:
        if not call.live:
            return
        call.transition(CallState.ENDED, reason)
        self.registry.ended(call)
        log.info("call %s: ended (%s)", call.id, reason, extra={"call_id": call.id})
        media = self._media.pop(call.id, None)
        self.metrics.calls_ended.labels(str(call.direction), str(reason)).inc()
        if call.answered_at is not None and call.ended_at is not None:
            self.metrics.call_duration.observe(call.ended_at - call.answered_at)
        self._count_active()
        if media is not None:
            call.final_stats = self._stats_json(call, media)
            self.metrics.ended_totals.add_bus(media.bus.stats)
            if media.session is not None:
                self._absorb_session(media.session)
        try:
            if media is not None:
                # Teardown runs to completion even if the caller is cancelled meanwhile.
                await asyncio.shield(self._teardown(call, media))
        finally:
            self.events.publish("call.ended", call)

    async def _teardown(self, call: Call, media: CallMedia) -> None:
        try:
            if media.session is not None:
                await media.session.close()
                call.webrtc_state = "closed"
        finally:
            try:
                if media.leg is not None:
                    await media.leg.close()
            finally:
                await media.bus.aclose()

    # -- metrics and per-call stats
    def _count_active(self) -> None:
        live = self.registry.live()
        for direction in Direction:
            count = sum(1 for c in live if c.direction is direction)
            self.metrics.calls_active.labels(str(direction)).set(count)

    def _live_sessions(self) -> int:
        return sum(
            1
            for m in self._media.values()
            if m.session is not None and m.session.state not in ("closed", "failed")
        )

    def _absorb_session(self, session: WebRTCSession) -> None:
        """Keep a retiring session's jitter-buffer counters in the ended totals."""
        jitter = session.jitter_buffer
        if jitter is not None:
            t = self.metrics.ended_totals
            t.jitter_underruns += jitter.stats.underruns
            t.jitter_overflow_drops += jitter.stats.overflow_drops
            t.jitter_latency_drops += jitter.stats.latency_drops

    def media_totals(self) -> MediaTotals:
        """Bus and jitter-buffer counters of every call, ended ones included."""
        ended = self.metrics.ended_totals
        out = MediaTotals(
            jitter_underruns=ended.jitter_underruns,
            jitter_overflow_drops=ended.jitter_overflow_drops,
            jitter_latency_drops=ended.jitter_latency_drops,
        )
        out.add_bus(ended.bus)
        for media in self._media.values():
            out.add_bus(media.bus.stats)
            jitter = media.session.jitter_buffer if media.session is not None else None
            if jitter is not None:
                out.jitter_underruns += jitter.stats.underruns
                out.jitter_overflow_drops += jitter.stats.overflow_drops
                out.jitter_latency_drops += jitter.stats.latency_drops
                out.jitter_depth += len(jitter)
        return out

    def _engine_stats(self) -> tuple[str, LegStats, bool]:
        up = getattr(self.engine, "up", True)
        return self.engine.name, self.engine.stats, bool(up)

    async def _quality_loop(self) -> None:
        """Sample every live session's RTP/RTCP statistics into the metrics."""
        m = self.metrics
        while True:
            await asyncio.sleep(self.settings.stats_interval)
            worst = 5.0
            for media in list(self._media.values()):
                session = media.session
                if session is None or session.state != "connected":
                    continue
                try:
                    q = await session.sample_quality()
                except Exception:
                    log.exception("sampling WebRTC stats of call %s", media.bus.call_id)
                    continue
                if q is None:
                    continue
                m.rtp_packets.labels("uplink").inc(q.uplink_packets)
                m.rtp_lost.labels("uplink").inc(q.uplink_lost)
                m.rtp_jitter.labels("uplink").observe(q.uplink_jitter_s)
                m.rtp_packets.labels("downlink").inc(q.downlink_packets)
                m.rtp_lost.labels("downlink").inc(q.downlink_lost)
                if q.downlink_jitter_s is not None:
                    m.rtp_jitter.labels("downlink").observe(q.downlink_jitter_s)
                if q.rtt_s is not None:
                    m.rtt.observe(q.rtt_s)
                jitter = max(q.uplink_jitter_s, q.downlink_jitter_s or 0.0)
                session.mos = estimate_mos(q.loss_fraction, jitter, q.rtt_s)
                m.mos.observe(session.mos)
                worst = min(worst, session.mos)
            m.mos_current.set(worst)

    def stats(self, call_id: str) -> dict[str, Any]:
        """One call's numbers as JSON (for support cases)."""
        call = self.get(call_id)
        media = self._media.get(call.id)
        if media is None:
            return call.final_stats or {"callID": call.id, "state": str(call.state)}
        return self._stats_json(call, media)

    def _stats_json(self, call: Call, media: CallMedia) -> dict[str, Any]:
        b = media.bus.stats
        return {
            "callID": call.id,
            "state": str(call.state),
            "webrtc": media.session.stats_json() if media.session is not None else None,
            "bus": {
                "uplinkFrames": b.uplink_frames,
                "downlinkFrames": b.downlink_frames,
                "downlinkPlayed": b.downlink_played,
                "uplinkDroppedOverflow": b.uplink_dropped_overflow,
                "uplinkDiscardedInactive": b.uplink_discarded_inactive,
                "badFrames": b.bad_frames,
                "uplinkTransitP50Ms": _ms(b.uplink_transit.quantile(0.5)),
                "uplinkTransitP99Ms": _ms(b.uplink_transit.quantile(0.99)),
                "downlinkTransitP50Ms": _ms(b.downlink_transit.quantile(0.5)),
                "downlinkTransitP99Ms": _ms(b.downlink_transit.quantile(0.99)),
            },
            "leg": {"engine": self.engine.name, "open": media.leg is not None},
        }

    # -- WebRTC
    async def webrtc_offer(self, call_id: str, sdp: str) -> str:
        """Answer a browser's offer for a call, replacing any previous peer connection."""
        started = time.monotonic()
        try:
            answer = await self._webrtc_offer(call_id, sdp)
        except BaseException as exc:
            self.metrics.offers.labels(_offer_result(exc)).inc()
            raise
        self.metrics.offers.labels("answered").inc()
        self.metrics.offer_to_answer.observe(time.monotonic() - started)
        return answer

    async def _webrtc_offer(self, call_id: str, sdp: str) -> str:
        call = self.get(call_id)
        if not call.live:
            raise CallStateError(f"call {call.id} has ended; start a new call")
        validate_offer(sdp)  # before any socket or peer connection exists
        media = self._media[call.id]
        if media.session is None:
            sessions = sum(1 for m in self._media.values() if m.session is not None)
            if self.shutting_down:
                raise ShuttingDown("the bridge is shutting down")
            if sessions >= self.settings.max_calls:
                raise AtCapacity("the bridge carries its maximum of WebRTC sessions")
        old, media.session = media.session, None
        if old is not None:
            self._absorb_session(old)
            await old.close()
        grant = await self.turn.grant(f"bridge-{call.id[:12]}")
        configuration = server_rtc_configuration(self.settings, grant)
        session = self._session_factory(
            call.id, media.bus, self.settings, self._on_webrtc_state, configuration
        )
        media.session = session
        try:
            answer = await session.accept_offer(sdp)
        except BaseException:
            if media.session is session:
                media.session = None
                call.webrtc_state = None
                self.update_transport(call)
            await asyncio.shield(session.close())  # also when the request is cancelled
            raise
        if not call.live or media.session is not session:
            # The call ended, or another offer replaced us, while we gathered.
            await session.close()
            raise CallStateError(f"call {call.id} changed while the offer was answered")
        call.webrtc_state = session.state
        self.update_transport(call)
        self.events.publish("webrtc.offer", call)
        if self._wants_media(call):
            self._tasks.spawn(self._ensure_leg(call), f"leg:{call.id}")
        return answer

    def _on_webrtc_state(self, session: WebRTCSession, state: str) -> None:
        call = self.registry.get(session.call_id)
        media = self._media.get(session.call_id)
        if call is None or media is None or media.session is not session:
            return  # a replaced session's last words
        self.metrics.webrtc_states.labels(state).inc()
        if state in ("failed", "closed"):
            self.update_transport(call)
        if state == "connected" and session.connected_at is not None:
            self.metrics.offer_to_connected.observe(session.connected_at - session.offered_at)
        call.webrtc_state = state
        reason = getattr(session, "failure_reason", None) if state == "failed" else None
        if reason:
            self.events.publish("webrtc.state", call, reason=reason)
        else:
            self.events.publish("webrtc.state", call)

    async def webrtc_close(self, call_id: str) -> Call:
        """Close the call's peer connection if any (idempotent); the WhatsApp call stays up."""
        call = self.get(call_id)
        media = self._media.get(call.id)
        if media is not None and media.session is not None:
            session, media.session = media.session, None
            self._absorb_session(session)
            await session.close()
            call.webrtc_state = "closed"
            self.events.publish("webrtc.state", call)
            self.update_transport(call)
        return call
