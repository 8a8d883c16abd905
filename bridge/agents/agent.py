"""One model connector on one call: an attachment of the call's runtime (kind ``agent``).

The agent opens its model's WebSocket (:mod:`.openai`, :mod:`.gemini` say how), streams what
the caller says up (the bus's 16 kHz downlink, resampled to the model's rate by
libswresample through :class:`~bridge.audio.Resampler`) and plays what the model says into
the call as one bus source (resampled to 16 kHz, reframed to 20 ms, bounded like every other
source). It acts on the model's signals:

* a speech start while its voice plays is a barge-in unless the :class:`~.echo.EchoGuard`
  finds it is its own voice coming back: the queued voice is dropped at once (the next bus
  tick is silence) and the model is told how much the caller heard (``audio_end_ms``);
* a dropped or closing socket (``goAway``, a server close, a network error) is reopened,
  with the resumption handle where the protocol has one, within ``retries`` attempts while
  the call goes on; then ``agent.failed`` and the service's fallback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from ..attachments.base import AttachmentHost
from ..attachments.speech import SpeechDetector, VadUnavailable
from ..attachments.wire import OutgoingQueue
from ..audio import SAMPLE_RATE, Resampler
from ..errors import CallStateError
from ..http import RedirectRefused
from ..media import BusFrame
from ..tasks import TaskSet
from . import events
from .echo import EchoGuard
from .tools import CallControls
from .voice import AgentVoice
from .wire import (
    Audio,
    GoAway,
    Interrupted,
    ModelDialect,
    ModelError,
    ModelEvent,
    ProtocolError,
    Ready,
    Resumable,
    SpeechStarted,
    SpeechStopped,
    Tool,
    ToolCall,
    Transcript,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
"""Seconds to open the model's socket and have its session configured."""
BACKOFF = (0.0, 0.3, 1.0, 2.0, 4.0)
"""Seconds before each reconnection attempt (the last repeats), each but the first drawn
between half and all of it so a restarted server is not hit by every call at once."""
CONTEXT_LINES = 20
"""Transcript lines kept to tell a new session what was said."""
UP_QUEUE = 50
"""Caller frames waiting for a slow model socket (1 s) before the oldest go."""

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
    ) -> None:
        self.id = agent_id or "ag_" + secrets.token_hex(8)
        self.resumed = agent_id is not None
        """Opened again on this worker for a call moved here (a handover)."""
        self.host = host
        self.bus = host.bus
        self.dialect = dialect
        self.url = url
        self._key = api_key  # never logged, never in a snapshot or an event
        self.tools = tools
        self.retries = retries
        self._on_tool = on_tool
        self._on_failed = on_failed
        self.state = "connecting"
        self.guard = EchoGuard()
        self.voice = AgentVoice(dialect.rate_out, self.bus.stats)
        self._up = Resampler(dialect.rate_in) if dialect.rate_in != SAMPLE_RATE else None
        self._out = OutgoingQueue(max_audio=UP_QUEUE, max_control=500, drop_oldest_audio=True)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks = TaskSet(f"agent[{self.id}]")
        self._ready = asyncio.Event()
        self._stopping = False
        self._resume: str | None = resume
        self.request: dict[str, Any] = {}
        """The request that made it (key included: for a handover only, never shown)."""
        self.controls: CallControls | None = None
        self.pending: dict[str, ToolCall] = {}
        """The model's tool calls waiting for the app's answer."""
        self.reconnects = 0
        self.interruptions = 0
        self.model_errors = 0
        self.said: deque[tuple[str, str]] = deque(maxlen=CONTEXT_LINES)
        """The last transcript lines: told to a new session that cannot resume the old one."""
        self.caller_speaking = False
        self.detector = None if dialect.model_detects_speech else _detector()
        """The bridge's own VAD (the ``vad`` extra) when the model's turn detection is off."""

    # -- what the call and the API see
    def snapshot(self) -> dict[str, Any]:
        return {
            "agentID": self.id,
            "provider": self.dialect.provider,
            "url": _shown(self.url),
            "state": self.state,
            "reconnects": self.reconnects,
            "interruptions": self.interruptions,
        }

    def _emit(self, type_: str, **data: Any) -> None:
        self.host.emit(type_, agentID=self.id, provider=self.dialect.provider, **data)

    # -- audio
    def _caller(self, frame: BusFrame) -> None:
        """A frame from the WhatsApp user: to the echo guard, then up to the model."""
        self.guard.heard(frame.pcm)
        if self.detector is not None:
            self._detected(frame)
        if self._ws is None or self.state != "connected":
            return  # while reconnecting the caller is not queued up (it would arrive late)
        pcm = frame.pcm if self._up is None else self._up.resample_array(frame.pcm, SAMPLE_RATE)
        if pcm.size:
            self._out.put_audio(json.dumps(self.dialect.audio(pcm.astype("<i2").tobytes())))

    def _sent(self, frame: BusFrame) -> None:
        self.guard.played(frame.pcm)

    def barge_in(self, why: str) -> None:
        """Stop the voice now and tell the model what was heard."""
        item, heard, dropped = self.voice.cut()
        self.interruptions += 1
        self.send(self.dialect.truncate(item, heard))
        self._emit(
            events.INTERRUPTED, itemID=item or None, heardMs=heard, droppedMs=dropped, by=why
        )

    # -- the caller's turns, as the model or the bridge hears them
    def _speech_started(self, by: str) -> None:
        verdict = self.guard.decide()
        playing = self.voice.playing
        self.caller_speaking = not verdict.echo
        self._emit(
            events.SPEECH_STARTED,
            echo=verdict.echo,
            callerDbfs=verdict.caller_dbfs,
            agentDbfs=verdict.agent_dbfs,
            agentPlaying=playing,
            by=by,
        )
        if self.caller_speaking and by == "bridge":
            self.send(self.dialect.turn_started())
        if playing and self.caller_speaking:
            self.barge_in(by)

    def _speech_stopped(self, by: str) -> None:
        if self.caller_speaking and by == "bridge":
            self.send(self.dialect.turn_ended())
        self.caller_speaking = False
        self._emit(events.SPEECH_STOPPED, by=by)

    def _detected(self, frame: BusFrame) -> None:
        """The bridge's own speech detection, when the model's is off."""
        assert self.detector is not None
        change = self.detector.feed(frame.pcm)
        if change is True:
            self._speech_started("bridge")
        elif change is False:
            self._speech_stopped("bridge")

    # -- the model's events
    async def _handle(self, event: ModelEvent) -> None:
        if isinstance(event, Audio):
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
        elif isinstance(event, Resumable):
            self._resume = event.handle
        elif isinstance(event, Ready):
            self._ready.set()
        elif isinstance(event, GoAway):
            log.info(
                "call %s: agent %s: the model will close (goAway %s)",
                self.host.call_id,
                self.id,
                event.time_left,
            )
            if self._ws is not None:
                self._tasks.spawn(self._ws.close(), "goaway")
        elif isinstance(event, ModelError):
            # The first at WARNING, the rest at INFO: a server repeating itself floods no log.
            level = logging.INFO if self.model_errors else logging.WARNING
            self.model_errors += 1
            log.log(
                level,
                "call %s: agent %s: the model reported %s: %s",
                self.host.call_id,
                self.id,
                event.code,
                event.message[:200],
            )

    def send(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            self._out.put_control(json.dumps(message))

    def dtmf(self, digit: str, duration_ms: int) -> None:
        """The caller pressed a key: the model is told in words."""
        if self.state == "connected":
            self.send(self.dialect.text(f"The caller pressed the key {digit}."))

    # -- the connection
    async def open(self, http: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
        url, headers = self.dialect.connect(self.url, self._key)
        ws = await http.ws_connect(
            url,
            headers=headers,
            heartbeat=20,
            max_msg_size=16 << 20,
            timeout=aiohttp.ClientWSTimeout(ws_close=2),
        )
        self._ready.clear()
        for message in self.dialect.opening(self.tools, self._resume):
            await ws.send_str(json.dumps(message))
        try:
            await asyncio.wait_for(self._read_until_ready(ws), CONNECT_TIMEOUT)
        except BaseException:
            await ws.close()
            raise
        return ws

    async def _read_until_ready(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not self._ready.is_set():
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError("the model closed before its session was ready")
            for event in await self._message(msg.data):
                if isinstance(event, ModelError):  # it refused the session: no use waiting
                    raise ConnectionError(f"the model refused the session ({event.code})")

    async def start(self, http: aiohttp.ClientSession) -> None:
        """Connect (raises on failure: the API answers the request), then run."""
        ws = await asyncio.wait_for(self.open(http), CONNECT_TIMEOUT)
        if self._stopping:  # stopped, or the call ended, while it connected
            await ws.close()
            raise CallStateError(f"the agent was stopped or call {self.host.call_id} ended")
        self._ws = ws
        self.state = "connected"
        self.bus.add_downlink_tap(self._caller)
        self.bus.add_uplink_tap(self._sent)
        self.bus.add_source(self.voice.source)
        self._emit(events.CONNECTED, **({"resumed": True} if self.resumed else {}))
        self._tasks.spawn(self._run(http), "run")

    async def _message(self, data: str) -> list[ModelEvent]:
        try:
            body = json.loads(data)
            if not isinstance(body, dict):
                raise ProtocolError("not an object")
            parsed = self.dialect.parse(body)
        except (ValueError, ProtocolError) as exc:
            log.info("call %s: agent %s: unreadable message (%s)", self.host.call_id, self.id, exc)
            return []
        for event in parsed:
            await self._handle(event)
        return parsed

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async def send(message: bytes | str) -> None:
            await ws.send_str(message if isinstance(message, str) else message.decode())

        sender = self._tasks.spawn(self._out.run(send, lambda: ws.closed), "sender")
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    await self._message(msg.data)
        finally:
            sender.cancel()

    async def _run(self, http: aiohttp.ClientSession) -> None:
        while not self._stopping:
            assert self._ws is not None
            try:
                await self._serve(self._ws)
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                # Its type only: an aiohttp error's text may hold the URL, and a URL a key.
                kind = type(exc).__name__
                log.info("call %s: agent %s: socket error %s", self.host.call_id, self.id, kind)
            if self._stopping:
                return
            self.state = "reconnecting"
            why = f"closed ({self._ws.close_code})" if self._ws.close_code else "dropped"
            log.warning(
                "call %s: agent %s: the model's socket %s; reconnecting",
                self.host.call_id,
                self.id,
                why,
            )
            self._ws = await reopen(self, http)
            if self._ws is None:
                self.state = "failed"
                self._detach()
                self._emit(events.FAILED, reason="reconnect_failed", attempts=self.retries)
                await self._on_failed(self, "reconnect_failed")
                return
            # What was queued for the old socket (a truncate of its items) means nothing now.
            self._out = OutgoingQueue(max_audio=UP_QUEUE, max_control=500, drop_oldest_audio=True)
            if self._resume is None:
                self.send(self.dialect.context(list(self.said)))
            self.state = "connected"
            self.reconnects += 1
            self._emit(events.RECONNECTED, resumed=self._resume is not None)

    def export(self) -> dict[str, Any]:
        """What another worker needs to open the agent again (a handover): the request, key
        included — it travels only between workers, on the internal API that
        ``BRIDGE_INTERNAL_SECRET`` guards — the agent's id and the resumption handle."""
        return {**self.request, "agentID": self.id, "resume": self._resume}

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _detach(self) -> None:
        self.bus.remove_downlink_tap(self._caller)
        self.bus.remove_uplink_tap(self._sent)
        self.bus.remove_source(self.voice.source)

    def call_state(self, state: str, end_reason: str | None) -> None:
        pass  # the runtime closes the agent with the call

    async def close(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.state = "stopped"
        self._detach()
        if self._ws is not None and not self._ws.closed:
            await self._out.drain(0.2)
            await self._ws.close()
        self.host.detach(self)
        await self._tasks.close()


async def reopen(
    agent: Agent, http: aiohttp.ClientSession
) -> aiohttp.ClientWebSocketResponse | None:
    """The retry policy: ``agent.retries`` attempts, :data:`BACKOFF` apart, while the agent
    is not stopping; ``None`` when none succeeded."""
    where = f"call {agent.host.call_id}: agent {agent.id}"
    for attempt in range(agent.retries):
        delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        if agent.stopping:
            return None
        try:
            return await asyncio.wait_for(agent.open(http), CONNECT_TIMEOUT)
        except (aiohttp.ClientError, OSError, TimeoutError, RedirectRefused) as exc:
            log.info("%s: reconnect %d failed: %s", where, attempt + 1, type(exc).__name__)
    log.warning("%s: the model could not be reached again after %d attempts", where, agent.retries)
    return None


def _detector() -> SpeechDetector | None:
    try:
        return SpeechDetector()
    except VadUnavailable as exc:
        log.warning("the model's turn detection is off and the bridge's is unavailable: %s", exc)
        return None


def _shown(url: str) -> str:
    """The URL as snapshots show it: no query (a ``key=`` there is a secret)."""
    return url.split("?", 1)[0]
