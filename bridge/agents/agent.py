"""One model connector on one call: an attachment of the call's runtime (kind ``agent``).

The agent's :class:`~.connection.ModelConnection` keeps the model's WebSocket open
(:mod:`.openai`, :mod:`.xai`, :mod:`.azure`, :mod:`.gemini`, :mod:`.deepgram`,
:mod:`.elevenlabs`, :mod:`.ultravox`, :mod:`.openai_live` say how to speak it; reconnects
and resumption are the connection's); the agent is what the call hears and says through it.
It streams what the caller says up (the bus's 16 kHz downlink, resampled to the model's rate
by libswresample through :class:`~bridge.audio.Resampler`; as is for a 16 kHz model) and plays
what the model says into the call as one bus source (resampled to 16 kHz where it is not,
reframed to 20 ms, bounded like every other source). It acts on the model's signals:

* a speech start while its voice plays is a barge-in unless the :class:`~.echo.EchoGuard`
  finds it is its own voice coming back: the queued voice is dropped at once (the next bus
  tick is silence), the response still being generated is cancelled where the model does not
  stop it itself (``agent.interrupted`` ``cancelled``) and the model is told how much the
  caller heard (``audio_end_ms``);
* on hold (:meth:`Agent.held`) the caller is neither heard nor spoken to: nothing goes up to
  the model, the voice stops as on a barge-in (``agent.interrupted`` ``by: "hold"``, the model
  told what was heard) and what the model says meanwhile is dropped and truncated at 0 ms, so
  its conversation holds only what the caller heard; both resume with the call (a turn the
  bridge's own turn detection opened on the model is ended at the hold, and a model deciding
  the turns itself is told the caller's audio stopped: :mod:`.turns`);
* a socket it cannot reopen ends in ``agent.failed`` and the service's fallback.

A full-duplex model (the dialect's ``duplex_buffer_ms``: GPT-Live) has no barge-in: it hears
the caller over itself and stops by itself. Its stream plays through the one receiver
(:class:`~.voice.StreamedSource`), and the caller starting to speak never cuts it. Where the
dialect ``streams_up`` (GPT-Live, Ultravox) the caller goes up without a pause: silence in its
gaps and on hold (:class:`~.uplink.ContinuousUplink`).
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from ..attachments.base import AttachmentHost
from ..audio import FRAME_MS, SAMPLE_RATE, Resampler
from ..errors import CallStateError
from ..http import display_url
from ..media import BusFrame
from ..tasks import CloseOnce, TaskSet
from . import events
from .connection import ModelConnection, Stopped
from .echo import EchoGuard
from .tools import CallControls, ToolCalls
from .turns import CallerTurns
from .uplink import ContinuousUplink
from .voice import AgentVoice
from .wire import (
    Audio,
    Interrupted,
    ModelDialect,
    ModelEvent,
    SpeechStarted,
    SpeechStopped,
    Tool,
    ToolCall,
    ToolCancelled,
    Transcript,
)

log = logging.getLogger(__name__)

CONTEXT_LINES = 20
"""Transcript lines kept to tell a new session what was said."""

ToolHandler = Callable[["Agent", ToolCall], Coroutine[Any, Any, None]]
Failed = Callable[["Agent", str], Coroutine[Any, Any, None]]


class Agent:
    """A realtime model talking on a call. See the module docstring."""

    kind = "agent"
    wants_media = True

    def __init__(
        self,
        host: AttachmentHost,
        dialect: ModelDialect,
        url: str,
        api_key: str | None,
        *,
        tools: list[Tool],
        retries: int,
        on_tool: ToolHandler,
        on_failed: Failed,
        agent_id: str | None = None,
        resume: str | None = None,
        context: list[tuple[str, str]] | None = None,
    ) -> None:
        self.id = agent_id or "ag_" + secrets.token_hex(8)
        self.resumed = agent_id is not None
        """Opened again on this worker for a call moved here (a handover or an adoption)."""
        self.host = host
        self.bus = host.bus
        self.dialect = dialect
        self.url = url
        where = f"call {host.call_id}: agent {self.id}"
        self.model = ModelConnection(
            dialect,
            url,
            api_key,
            tools=tools,
            retries=retries,
            where=where,
            handle=self._handle,
            resume=resume,
            quiet=lambda: not (self.voice.playing or self.turns.speaking),
        )
        self._on_tool = on_tool
        self._on_failed = on_failed
        self.guard = EchoGuard()
        self.voice = AgentVoice(
            dialect.rate_out, self.bus.stats, stream_ms=dialect.duplex_buffer_ms, where=where
        )
        self.uplink = (
            ContinuousUplink(self._send_up, dialect.rate_in, where) if dialect.streams_up else None
        )
        """Silence in the caller's gaps, for a model that wants audio without a pause."""
        self._up = Resampler(dialect.rate_in) if dialect.rate_in != SAMPLE_RATE else None
        self._tasks = TaskSet(f"agent[{self.id}]")
        self._closing: CloseOnce[None] = CloseOnce(f"agent[{self.id}]:close")
        self.request: dict[str, Any] = {}
        """The request that made it, ``apiKey`` only when the request gave one (a handover
        carries it sealed: ``cluster/sealing.py``; never shown)."""
        self.controls: CallControls | None = None
        self.tool_calls = ToolCalls(self._tool_result, self.model.current)
        self.interruptions = 0
        self.said: deque[tuple[str, str]] = deque(context or (), maxlen=CONTEXT_LINES)
        """The last transcript lines: told to a new session that cannot resume the old one."""
        self.on_hold = self.bus.conference.held
        """The call is held: the caller is neither heard nor spoken to (:meth:`held`)."""
        self.turns = CallerTurns(dialect, self.send)
        """The caller's turns as the model or the bridge hears them (whether the caller is
        speaking), as the bridge tells them (the model's detection off), and the caller's
        audio stopping as the model is told it."""

    @property
    def state(self) -> str:
        """``connecting``, ``connected``, ``reconnecting``, ``failed`` or ``stopped``."""
        return self.model.state

    # -- what the call and the API see
    def snapshot(self) -> dict[str, Any]:
        return {
            "agentID": self.id,
            "provider": self.dialect.provider,
            "url": display_url(self.url),
            "state": self.state,
            "reconnects": self.model.reconnects,
            "interruptions": self.interruptions,
            "callerAudioDroppedMs": self.model.out.audio_dropped * FRAME_MS,
            "modelMessagesDropped": self.model.out.control_dropped,
        }

    def _emit(self, type_: str, **data: Any) -> None:
        self.host.emit(type_, agentID=self.id, provider=self.dialect.provider, **data)

    # -- audio
    def _caller(self, frame: BusFrame) -> None:
        """A frame from the WhatsApp user: to the echo guard, then up to the model."""
        if self.on_hold:
            return  # a held caller is not heard (nor is the hold's silence a turn)
        self.guard.heard(frame)
        change = self.turns.feed(frame.pcm)  # the bridge's VAD, where the model's is off
        if change is not None:
            (self._speech_started if change else self._speech_stopped)("bridge")
        pcm = frame.pcm if self._up is None else self._up.resample_array(frame.pcm, SAMPLE_RATE)
        if pcm.size:
            self._send_up(pcm.astype("<i2", copy=False).tobytes())  # (int16 already: no copy)
            if self.uplink is not None:
                self.uplink.sent()

    def _send_up(self, pcm: bytes) -> None:
        # Nothing queued while reconnecting after a drop (it would come late), but kept for
        # the next session in a planned end's gap (``ends.py``); a slow socket's drop counted.
        if self.model.takes_audio and not self.model.send_audio(pcm):
            self.bus.stats.agent_frames_dropped += 1

    def _sent(self, frame: BusFrame) -> None:
        self.guard.played(frame)

    def barge_in(self, why: str) -> None:
        """Stop the voice now, cancel the response nobody will hear (where the model does not
        stop it itself) and tell the model what was heard."""
        cut, dropped = self.voice.cut()  # (the item heard first, then any queued after it)
        item, heard = cut[0] if cut else ("", 0)
        self.interruptions += 1
        cancel = self.dialect.cancel(why)
        self.send(cancel + [m for i, ms in cut for m in self.dialect.truncate(i, ms, why)])
        self._emit(
            events.INTERRUPTED,
            itemID=item or None,
            heardMs=heard,
            droppedMs=dropped,
            by=why,
            cancelled=bool(cancel),
        )

    def held(self, held: bool) -> None:
        """The call was put on hold or taken off it (``FollowsHold``; module docstring)."""
        if held == self.on_hold:
            return
        self.on_hold = held
        if held:
            if self.turns.cut():  # a turn it told the model of
                self._emit(events.SPEECH_STOPPED, by="bridge")
            if self.voice.playing:
                self.barge_in("hold")

    # -- the caller's turns, as the model or the bridge hears them
    def _speech_started(self, by: str) -> None:
        verdict = self.guard.decide()
        playing = self.voice.playing
        speaking = self.turns.speaking = not verdict.echo
        self._emit(
            events.SPEECH_STARTED,
            echo=verdict.echo,
            callerDbfs=verdict.caller_dbfs,
            agentDbfs=verdict.agent_dbfs,
            agentPlaying=playing,
            by=by,
        )
        if speaking and by == "bridge":
            self.turns.started()
        if playing and speaking and self.dialect.duplex_buffer_ms is None:
            self.barge_in(by)  # (a full-duplex model stops by itself: module docstring)
        elif speaking:
            # Nothing plays yet, but an answer may be on its way: it would come too late
            # (cancelled where the model does not stop it itself: xAI, the bridge's VAD).
            self.send(self.dialect.cancel(by))

    def _speech_stopped(self, by: str) -> None:
        if by == "bridge":
            self.turns.ended()
        self.turns.speaking = False
        self._emit(events.SPEECH_STOPPED, by=by)

    # -- the model's events (the connection keeps its own)
    async def _handle(self, event: ModelEvent) -> None:
        if isinstance(event, Audio):
            if self.on_hold:
                if event.item_id and event.item_id == self.voice.item:
                    # More of the item the caller was hearing when the hold came (its queue
                    # had just run dry): cut it where the caller's hearing stopped.
                    self.barge_in("hold")
                elif self.voice.drop(event.item_id):  # the first of this item: none heard
                    self.send(self.dialect.truncate(event.item_id, 0))
            else:
                self.voice.push(event.pcm, event.item_id)
        elif isinstance(event, SpeechStarted):
            self._speech_started("model")
        elif isinstance(event, SpeechStopped):
            self._speech_stopped("model")
        elif isinstance(event, Interrupted):
            if self.voice.playing:
                self.barge_in("model")
        elif isinstance(event, Transcript):
            if event.text:
                self._emit(events.TRANSCRIPT, role=event.role, text=event.text[:4000])
                self.said.append((event.role, event.text[:500]))
        elif isinstance(event, ToolCall):
            self._tasks.spawn(self._on_tool(self, event), f"tool-{event.name[:20]}")
        elif isinstance(event, ToolCancelled):  # (the app is told of those it was asked)
            for call in self.tool_calls.withdraw(event.call_ids, self.model.where):
                self._emit(events.TOOL_CANCELLED, toolCallID=call.call_id, name=call.name)

    def _tool_result(self, call: ToolCall, output: Any) -> None:
        self.send(self.dialect.tool_result(call, output))

    def send(self, messages: list[dict[str, Any]]) -> None:
        self.model.send(messages)

    def dtmf(self, digit: str, duration_ms: int) -> None:
        """The caller pressed a key: the model is told in words (a held caller's is not heard)."""
        if self.state == "connected" and not self.on_hold:
            self.send(self.dialect.text(f"The caller pressed the key {digit}."))

    # -- life
    async def start(self, http: aiohttp.ClientSession) -> None:
        """Connect (raises on failure: the API answers the request), then run."""
        try:
            await self.model.start(http, self._reconnected, self._ended)
        except Stopped:  # stopped, or the call ended, while it connected
            raise CallStateError(
                f"the agent was stopped or call {self.host.call_id} ended"
            ) from None
        self._rates()
        self.bus.add_downlink_tap(self._caller)
        self.bus.add_uplink_tap(self._sent)
        self.bus.add_source(self.voice.source)
        if self.uplink is not None:
            self.uplink.start()
        if self.resumed and not self.model.resumed and self.said:
            self.send(self.dialect.context(list(self.said)))  # a new session: what was said
        self._emit(events.CONNECTED, **({"resumed": True} if self.resumed else {}))

    def _rates(self) -> None:
        """Resample at the rates the session was opened with: an ElevenLabs agent's formats
        are its own, told when it connects (before the voice is on the bus)."""
        if self.voice.rate != self.dialect.rate_out:
            self.voice = AgentVoice(self.dialect.rate_out, self.bus.stats)
        if self.dialect.rate_in != SAMPLE_RATE:
            self._up = Resampler(self.dialect.rate_in)

    def _reconnected(self, resumed: bool) -> None:
        # The calls the old session made wait no more: a new session never asked for them
        # (an answer the app still sends is ``404``; a bridge tool's is dropped: ``answer``).
        self.tool_calls.pending.clear()
        if not resumed:
            self.send(self.dialect.context(list(self.said)))
        self.turns.reopened()  # the caller talking on: its turn's end goes to this session
        self._emit(events.RECONNECTED, resumed=resumed)

    async def _ended(self, reason: str) -> None:
        """The model's socket will not be opened again (``ModelConnection.start``)."""
        if reason == "ended_by_model":
            # Its own goodbye: the agent is done, as if stopped through the API, and the call
            # stays up (the app hangs up on this event, or gives the model ``hangup``).
            await self.close(stop=reason)
            return
        self._detach()
        refused = {"code": self.model.failure} if self.model.failure else {}
        self._emit(events.FAILED, reason=reason, attempts=self.model.retries, **refused)
        await self._on_failed(self, reason)

    def export(self) -> dict[str, Any]:
        """What another worker needs to open the agent again (a handover, a crash adoption):
        the request (its ``apiKey``, when it had one, is sealed by the cluster before it
        leaves this process), the agent's id, the resumption handle and the last lines said
        (for a new session when the protocol cannot resume)."""
        return {
            **self.request,
            "agentID": self.id,
            "resume": self.model.resume,
            "context": [list(line) for line in self.said],
        }

    def _detach(self) -> None:
        if self.uplink is not None:
            self.uplink.stop()
        self.bus.remove_downlink_tap(self._caller)
        self.bus.remove_uplink_tap(self._sent)
        self.bus.remove_source(self.voice.source)

    def call_state(self, state: str, end_reason: str | None) -> None:
        pass  # the runtime closes the agent with the call

    async def close(self, stop: str | None = None) -> None:
        """Off the call (idempotent; concurrent callers share one teardown, which runs to its
        end even if a caller is cancelled: ``tasks.CloseOnce``). A ``stop`` (the API's ``""``,
        ``transferred``, ``ended_by_model``) is told as ``agent.stopped`` once the teardown is
        over, by the teardown: the first close's only (a call's end is no stop)."""
        await self._closing.run(lambda: self._teardown(stop))

    async def _teardown(self, stop: str | None) -> None:
        if self.model.connected:
            self.turns.cut()  # the caller's turn and audio end with the session
        self._detach()
        await self.model.close()
        self.host.detach(self)
        await self._tasks.close()  # (a tool's task that asked for this close among them)
        if stop is not None:
            self._emit(events.STOPPED, **({"reason": stop} if stop else {}))
