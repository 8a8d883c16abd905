"""``CallRuntime``: the one owner of everything a live call has in this process.

A runtime is created with its call and closed when the call ends. It owns, in the order they
come to life, and its children act:

1. the call's :class:`~bridge.media.CallBus` (16 kHz mono PCM, both directions);
2. :attr:`~CallRuntime.media`, the WhatsApp side (:mod:`.engine_media`): the engine's own leg
   when it has one in this process, and the engine media pump, opened once the call is active
   and something uses the bus;
3. :attr:`~CallRuntime.participants` (:mod:`.participants`): the browsers' WebRTC sessions, one
   per participant, their roles and hand-offs (who hears whom is the bus's conference);
4. :attr:`~CallRuntime.forwarding` (:mod:`.forwarding`): when Opus goes untouched between the
   WhatsApp leg and the agent's browser;
5. :attr:`~CallRuntime.dtmf` (:mod:`.dtmf`), :attr:`~CallRuntime.hold` (:mod:`.hold`, with its
   music) and :attr:`~CallRuntime.bands` (:mod:`.bands`, the quality bands reported);
6. :attr:`~CallRuntime.report` (:mod:`.live_report`, while call reports are on): the call's
   timeline and media watchdog, sampled by :meth:`CallRuntime.sample_report` once a second and
   handed on, to be stored as the call's record, as the last step of :meth:`close`;
7. the attachments: playbacks, the recorder, media forks, PCM sockets, agents;

and the task that ends the call when the bridge decides so (:meth:`CallRuntime.end_soon`: one
at a time, so a call is ended once). Attachments come and go through the runtime, which is also
where ``transport`` is computed. :meth:`close` is idempotent and tears the children down in
reverse order, the way aiortc's ``RTCPeerConnection.close`` closes its transceivers, transports
and SCTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..attachments.base import Attachment
from ..engines import Engine
from ..engines.base import OpusEngine
from ..errors import BridgeError, CallStateError
from ..media import CallBus, Role
from ..metrics import Metrics
from ..tasks import CloseOnce, TaskSet
from .bands import QualityBands
from .dtmf import CallDtmf
from .engine_media import EngineMedia
from .events import CallEvents
from .forwarding import Forwarding
from .hold import Hold
from .live_report import LiveReport, OpenReport
from .model import Call, Controls
from .participants import Participants

log = logging.getLogger(__name__)

MediaLost = Callable[["CallRuntime", BaseException | None], None]
"""Told when the engine media ended by itself (the manager decides what the call does)."""

EndCall = Callable[[], Coroutine[Any, Any, None]]
"""The manager's decision to end a call (hang up on the engine, then end it), run by
:meth:`CallRuntime.end_soon`."""


class CallRuntime:
    """The media runtime of one live call. See the module docstring."""

    def __init__(
        self,
        call: Call,
        engine: Engine,
        events: CallEvents,
        metrics: Metrics,
        on_media_lost: MediaLost,
        open_report: OpenReport | None = None,
    ) -> None:
        self.call = call
        self.engine = engine
        self.events = events
        self.metrics = metrics
        self._tasks = TaskSet(f"call[{call.id[:12]}]")
        self.bus = CallBus(call.id)
        # The call's controls as they were (a new call: neither), kept from now on by the bus
        # and the conference; the call reads them back through this runtime.
        self.bus.muted = call.muted
        if call.held:
            self.bus.conference.set_held(True)
        call.controls = self
        self.attachments: dict[str, Attachment] = {}
        self.media = EngineMedia(
            call,
            engine,
            self.bus,
            self._tasks,
            wanted=self._media_wanted,
            on_lost=lambda exc: on_media_lost(self, exc),
            on_opened=self.update_pass_through,
            on_whatsapp_dtmf=lambda digit, ms: self.dtmf.on_whatsapp(digit, ms),
        )
        bitrate = engine.opus_bitrate if isinstance(engine, OpusEngine) else None
        self.participants = Participants(
            call,
            self.bus,
            metrics,
            self.emit,
            self._participants_changed,
            lambda *press: self.dtmf.on_browser(*press),
            bitrate,
        )
        self.forwarding = Forwarding(self.bus, self.participants.sessions)
        self.dtmf = CallDtmf(call, self.bus, self.media, metrics, self.emit, self._tasks)
        self.hold = Hold(
            self.bus,
            self.emit,
            self.attachments.values,
            lambda: self.call.live and not self.closed,
        )
        self.bands = QualityBands(self.emit)
        self.report: LiveReport | None = open_report(call) if open_report is not None else None
        self.final_stats: dict[str, Any] | None = None
        """The media numbers as the call ended (set by :meth:`close`)."""
        self._end_task: asyncio.Task[None] | None = None
        self.moving = False
        """It moves to another worker (``letting_go.py`` ``standing_still``): nothing new
        begins on it here meanwhile (:meth:`check_staying`)."""
        self.answering = asyncio.Lock()
        """Held while the manager answers the call: a second answer waits and shares it."""
        self._closing: CloseOnce[None] = CloseOnce(f"call[{call.id[:12]}]:close")
        self._end_closes = False
        """The end task awaits the close (:meth:`close`): the teardown must not cancel it."""

    @property
    def call_id(self) -> str:
        return self.call.id

    @property
    def closed(self) -> bool:
        """Whether the close has begun (nothing is attached or run from then on)."""
        return self._closing.started

    def emit(self, type_: str, **data: Any) -> None:
        """Publish an event about this call (attachments use it through ``AttachmentHost``)."""
        self.events.publish(type_, self.call, **data)

    def check_staying(self) -> None:
        """409 ``moving`` while the call moves to another worker: what would begin here now (a
        phone rung, a transfer) would be left behind, or hung up, as the call goes."""
        if self.moving:
            raise CallStateError(
                f"call {self.call.id} is moving to another worker: ask again", code="moving"
            )

    # -- attachments
    def attach(self, attachment: Attachment) -> None:
        """Adopt an attachment; it is closed with the call unless it detaches first."""
        if self.closed or not self.call.live:
            raise CallStateError(f"call {self.call.id} has ended")
        self.attachments[attachment.id] = attachment
        self.update_transport()
        if attachment.wants_media:
            self.media.wake()

    def detach(self, attachment: Attachment) -> None:
        """An attachment ended (by itself or stopped); forget it."""
        if self.attachments.pop(attachment.id, None) is not None:
            self.update_transport()

    async def close_attachment(self, attachment: Attachment) -> None:
        """Close one attachment (it detaches itself): a failure it names (a full disk) said at
        WARNING without a traceback, anything else with one; never raised."""
        try:
            await attachment.close()
        except BridgeError as exc:
            log.warning("call %s: closing %s: %s", self.call.id, attachment.kind, exc)
        except Exception:
            log.exception("call %s: closing %s", self.call.id, attachment.kind)

    def attached(self, kind: str) -> list[Any]:
        """This call's attachments of one kind, oldest first."""
        return [a for a in self.attachments.values() if a.kind == kind]

    def key_pressed(self, participant_id: str, digit: str, duration_ms: int) -> None:
        """A PCM socket's client pressed a key (``AttachmentHost``): as the agent's."""
        self.dtmf.on_browser(participant_id, Role.AGENT, digit, duration_ms)

    def state_changed(self) -> None:
        """The call changed state: tell the attachments that follow it (PCM sockets)."""
        reason = str(self.call.end_reason) if self.call.end_reason else None
        for attachment in list(self.attachments.values()):
            attachment.call_state(str(self.call.state), reason)

    def _media_wanted(self) -> bool:
        return bool(self.bus.users) or any(a.wants_media for a in self.attachments.values())

    # -- what depends on who is on the call
    @property
    def transport(self) -> str | None:
        """``webrtc`` while a peer connection is up, else ``websocket`` while a PCM socket is."""
        if self.participants.connected:
            return "webrtc"
        if self.attached("socket"):
            return "websocket"
        return None

    def update_transport(self) -> None:
        transport = self.transport
        if transport != self.call.transport:
            self.call.transport = transport
            self.emit("call.transport")

    def update_pass_through(self) -> None:
        """Rewire pass-through for the current WhatsApp leg and agent (``forwarding.py``)."""
        leg, participants = self.media.webrtc_leg, self.participants
        phone = participants.lone_phone(leg.codec) if leg is not None else None
        self.forwarding.update(leg, participants.agent, phone)

    def _participants_changed(self) -> None:
        self.update_transport()
        self.update_pass_through()
        self.media.wake()

    # -- mute (the one copy: the bus acts on it) and hold (``hold.py``), read by the Call
    @property
    def muted(self) -> bool:
        return self.bus.muted

    @property
    def held(self) -> bool:
        return self.hold.held

    def set_muted(self, muted: bool) -> None:
        """Mute or unmute what the browsers send WhatsApp (``call.muted`` / ``call.unmuted``,
        on a change only: as hold, a repeated mute is no news)."""
        if muted == self.bus.muted:
            return
        self.bus.muted = muted
        self.emit("call.muted" if muted else "call.unmuted")

    def set_held(self, held: bool) -> None:
        """Hold or resume the WhatsApp peer, the music left as it is (``Hold.set_state``)."""
        self.hold.set_state(held)

    # -- stats
    def stats_json(self) -> dict[str, Any]:
        """This call's media numbers (``GET /call/{callID}/stats``)."""
        session = self.participants.agent
        return {
            "callID": self.call.id,
            "state": str(self.call.state),
            "webrtc": session.stats_json() if session is not None else None,
            "bus": self.bus.stats.as_json(),
            "leg": self.media.leg_json(),
        }

    def retire_counters(self) -> None:
        """Move this call's counters into the ended totals (when the call leaves the live set,
        before teardown, so no scrape misses them)."""
        self.metrics.ended_totals.add_bus(self.bus.stats)
        leg = self.media.webrtc_leg
        if leg is not None:
            self.metrics.ended_totals.receive["whatsapp"].merge(leg.receive_stats)
        self.participants.retire_counters()

    def sample_report(self, now: float) -> None:
        """A second of the call's legs on its report (the reports' sampler, once a second)."""
        if self.report is not None and not self.closed:
            self.report.sample(self, now)

    # -- ending
    @property
    def ending(self) -> bool:
        """The bridge is ending this call (its end task runs)."""
        return self._end_task is not None

    def end_soon(self, end: EndCall, name: str, *, after: float = 0.0) -> None:
        """Run ``end`` — the manager's decision to hang up and end this call (a time limit, lost
        media) — as this call's end task, after ``after`` seconds (a grace for the engine's
        own report; the call is not :attr:`ending` meanwhile). One end at a time: while one
        runs, others are ignored; nothing runs once the call ended or the runtime closed."""
        if self.closed or self._tasks.closed or not self.call.live:
            return
        if after > 0:
            self._tasks.spawn(self._end_after(end, name, after), f"{name}:grace")
        elif self._end_task is None:
            self._end_task = self._tasks.spawn(self._run_end(end), name)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` as this call's own task: cancelled when the call closes (nothing
        runs once it closed)."""
        if self.closed or self._tasks.closed:
            work.close()
            return
        self._tasks.spawn(work, name)

    async def _end_after(self, end: EndCall, name: str, after: float) -> None:
        await asyncio.sleep(after)
        self.end_soon(end, name)

    async def _run_end(self, end: EndCall) -> None:
        try:
            await end()
        finally:
            self._end_task = None

    async def close(self, ended: dict[str, Any] | None = None) -> None:
        """Close every child in reverse order of creation (idempotent): attachments,
        participants, tasks, DTMF, the engine media, the engine's leg, the bus, and last the
        report, with the attachments' and sessions' last events in it (``ended``: the data
        ``call.ended`` is published with when the call ended here, its record's last event;
        ``None``: the call goes on elsewhere). One teardown, whoever asks and however often
        (the call's end and a shutdown's, a handover's): every caller waits for its end, and it
        runs to that end even if a caller is cancelled meanwhile (``tasks.CloseOnce``); the
        first caller's ``ended`` is the record's. It cancels the runtime's tasks, the end task
        too unless the end task is waiting for it."""
        if asyncio.current_task() is self._end_task:
            self._end_closes = True
        if not self._closing.started:
            self.media.stop()
        await self._closing.run(lambda: self._teardown(ended))

    async def _teardown(self, ended: dict[str, Any] | None) -> None:
        started = time.monotonic()
        self.state_changed()  # sockets say "ended" before they go
        agents = self.attached("agent")
        try:
            for attachment in reversed(list(self.attachments.values())):
                await self.close_attachment(attachment)
            self.attachments.clear()
            # One child that fails to close stops none after it (the engine media's socket).
            await self._close_child("its WebRTC sessions", self.participants.close)
            spared = self._end_task if self._end_closes else None
            await self._close_child("its tasks", lambda: self._tasks.close(spare=spared))
            self.dtmf.close()
            await self._close_child("its engine media", self.media.close)
        finally:
            await self.media.release()
            await self.bus.aclose()
            self.final_stats = self.stats_json()
            # The call keeps its controls as they were, not this runtime; nothing of its
            # media is up here any more (its sessions' last states change no transport).
            self.call.controls = Controls(muted=self.muted, held=self.held)
            if self.call.agents is not None:  # and its agents as they ended (not none)
                shown = [agent.snapshot() for agent in agents]
                self.call.agents = lambda: shown
            self.call.transport = None
            self.participants.forget()
            self.media.forget()
            self._close_report(ended)
        log.debug("call %s: runtime closed in %.3f s", self.call.id, time.monotonic() - started)

    async def _close_child(self, what: str, close: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await close()
        except Exception:
            log.exception("call %s: closing %s", self.call.id, what)

    def _close_report(self, ended: dict[str, Any] | None) -> None:
        if self.report is None:
            return
        try:
            self.report.close(ended)
        except Exception:  # a record that cannot be made must not stop the call's close
            log.exception("call %s: closing its report", self.call.id)


def runtime_of(call: Call) -> CallRuntime | None:
    """A call's runtime in this process while the runtime lives, its close included: the
    call's controls are its runtime until the close has torn every child down
    (``Call.controls``)."""
    controls = call.controls
    return controls if isinstance(controls, CallRuntime) else None
