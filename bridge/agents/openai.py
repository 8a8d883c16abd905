"""OpenAI's Realtime API over a WebSocket (the GA protocol; Azure OpenAI and self-hosted
OpenAI-compatible servers such as vLLM-Omni's ``/v1/realtime`` speak it too), and the events
its relatives share (:class:`RealtimeFamily`: xAI Grok Voice in :mod:`.xai`, Azure Voice Live
in :mod:`.azure`).

The bridge is the client. It configures the session with one ``session.update`` (the app's
``session`` fields merged into the bridge's: 24 kHz ``audio/pcm`` both ways, server VAD),
streams the caller with ``input_audio_buffer.append`` and reads ``response.output_audio.delta``
(and the beta servers' ``response.audio.delta``). On a barge-in it sends
``conversation.item.truncate`` with the ``audio_end_ms`` the caller really heard, and
``response.cancel`` when the bridge heard the caller itself (the model's turn detection off:
nothing else stops the generation), or the session's ``interrupt_response`` is ``false``,
while the response was still being generated. A tool's
output or a key press goes in as an item at once, but the ``response.create`` after it waits
until the response in progress is done: the protocol has one response at a time (the function
call comes inside a response, before its ``response.done``).
"""

from __future__ import annotations

import abc
import base64
import json
from typing import Any
from urllib.parse import urlsplit

from ..errors import BadRequest
from .wire import (
    SLOT,
    Answer,
    Audio,
    Hello,
    MessageText,
    ModelError,
    ModelEvent,
    ProtocolError,
    Ready,
    SpeechStarted,
    SpeechStopped,
    Tool,
    ToolCall,
    Transcript,
    TurnDone,
    b64_audio,
    check_list,
    merge,
)

RATE = 24_000
"""``audio/pcm`` is 16-bit mono at 24 kHz only."""
SESSION_LIMIT_S = 3600.0
"""A Realtime session lasts at most 60 minutes: the connection opens a new one before, with
the session's configuration (instructions, tools) and what was said (``context``)."""

_AUDIO_DELTA = ("response.output_audio.delta", "response.audio.delta")
_AGENT_TRANSCRIPT = ("response.output_audio_transcript.done", "response.audio_transcript.done")
_AGENT_DELTA = ("response.output_audio_transcript.delta", "response.audio_transcript.delta")
SAID_ITEMS = 16
"""Replies whose transcript is being put together from its deltas at most (a server that never
ends one loses the oldest)."""
_CALLER_TRANSCRIPT = "conversation.item.input_audio_transcription.completed"
_BENIGN_CODES = {
    "response_cancel_not_active",
    "conversation_already_has_active_response",
    "item_already_truncated",
}
_BENIGN_TEXT = ("no active response", "already has an active response", "truncat")
"""The races every Realtime-like server reports as errors (xAI with its own codes: its text
is matched too); none of them ends anything."""
_SHORTHAND = {"voice": ("output", "voice"), "turn_detection": ("input", "turn_detection")}
"""Fields apps know from the beta protocol at the session's top level, moved where GA has
them (``audio.output.voice``, ``audio.input.turn_detection``)."""


def check_audio_formats(session: dict[str, Any], ours: str) -> None:
    """Refuse a session that sets the audio formats: they are the bridge's (``ours``, as the
    error says them), for every Realtime-like dialect."""
    audio = session.get("audio")
    if audio is not None and not isinstance(audio, dict):
        raise BadRequest("field 'session': audio must be an object")
    for side in ("input", "output"):
        part = (audio or {}).get(side)
        if part is not None and (not isinstance(part, dict) or "format" in part):
            raise BadRequest(f"field 'session': audio.{side}.format is the bridge's ({ours})")


def check_session(session: dict[str, Any]) -> None:
    """Refuse what the bridge must decide itself: the audio formats and the session type."""
    check_audio_formats(session, "24 kHz audio/pcm")
    check_list(session.get("tools"), "tools")
    if session.get("type", "realtime") != "realtime":
        raise BadRequest("field 'session': type must be realtime")


def openai_auth(url: str, api_key: str | None) -> dict[str, str]:
    """The key where OpenAI's sockets want it (Realtime and GPT-Live alike): ``Authorization:
    Bearer``, or Azure OpenAI's ``api-key`` on an ``*.openai.azure.com`` host."""
    if not api_key:
        return {}
    host = (urlsplit(url).hostname or "").lower()
    if host.endswith(".openai.azure.com"):
        return {"api-key": api_key}  # Azure OpenAI's header
    return {"Authorization": f"Bearer {api_key}"}


_APPEND = MessageText({"type": "input_audio_buffer.append", "event_id": SLOT, "audio": SLOT})
"""The caller's audio, as ``RealtimeFamily._client`` would write it."""


class EventIds:
    """The ``event_id`` of each client event on one connection of the OpenAI family
    (Realtime, its cousins, GPT-Live): ``evt_bridge_1``, ``evt_bridge_2``, …"""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"evt_bridge_{self.count}"


def client_event(ids: EventIds, type_: str, **fields: Any) -> dict[str, Any]:
    """A client event of ``type_`` with the connection's next ``event_id``."""
    return {"type": type_, "event_id": ids(), **fields}


def function_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    """The bridge's tools as the OpenAI family's function tools."""
    return [
        {
            "type": "function",
            "name": t.name,
            "description": t.description,
            "parameters": t.parameters,
        }
        for t in tools
    ]


class RealtimeFamily(abc.ABC):
    """What OpenAI Realtime, xAI Grok Voice and Azure Voice Live share (:class:`~.wire.ModelDialect`
    but the session object, the endpoint and the key): their client and server events, the
    response being generated (for ``response.cancel``) and the responses cut (their late audio
    dropped)."""

    provider = ""
    rate_in = RATE
    rate_out = RATE
    waits_for_hello = False
    default_url: str | None = None
    keepalive_s: float | None = None
    session_limit_s: float | None = None
    server_close_ends = False
    final_close_codes: frozenset[int] = frozenset()
    duplex_buffer_ms: int | None = None
    model_detects_speech = True
    server_cancels = True
    """The server stops its own response when its turn detection hears the caller (OpenAI's
    ``interrupt_response``, on by default); otherwise the bridge cancels it."""
    server_truncates = False
    """The server truncates the item itself on such a barge-in (Azure's ``auto_truncate``)."""

    def __init__(self) -> None:
        self._event_id = EventIds()
        self._active: str | None = None
        """The response being generated (``response.created`` → ``response.done``)."""
        self._dropped: list[str] = []
        """Responses the caller cut: what they still send is not played."""
        self._said: dict[str, str] = {}
        """Each reply item's transcript so far, from its deltas: told once, at its ``.done``
        (whose whole text wins) or, where the server sends deltas only (Azure Voice Live), at
        the ``response.done``."""
        self._asked = False
        """A ``response.create`` was sent and its ``response.created`` has not come yet."""
        self._owed = False
        """A ``response.create`` waits for the response in progress to end: one response at a
        time (a second is refused: ``conversation_already_has_active_response``)."""

    def _client(self, type_: str, **fields: Any) -> dict[str, Any]:
        return client_event(self._event_id, type_, **fields)

    @abc.abstractmethod
    def session_object(self, tools: list[Tool]) -> dict[str, Any]:
        """The ``session`` of the ``session.update`` that configures a connection."""

    function_tools = staticmethod(function_tools)

    def url_refused(self, url: str) -> str | None:
        return None  # any URL of its scheme

    def opening(self, tools: list[Tool], resume: str | None) -> list[dict[str, Any]]:
        self._active, self._dropped, self._asked, self._owed = None, [], False, False
        self._said = {}
        return [self._client("session.update", session=self.session_object(tools))]

    def audio(self, pcm: bytes) -> str:
        return _APPEND(self._event_id(), base64.b64encode(pcm).decode())

    def binary(self, data: bytes) -> list[ModelEvent]:
        raise ProtocolError("a binary frame (the protocol has none)")

    def keepalive(self) -> list[dict[str, Any]]:
        return []

    def closing(self) -> list[dict[str, Any]]:
        return []

    def parse(self, body: dict[str, Any]) -> list[ModelEvent]:
        kind = body.get("type")
        if not isinstance(kind, str):
            raise ProtocolError("a server event without a type")
        if kind in _AUDIO_DELTA:
            response = str(body.get("response_id") or "")
            if response and response in self._dropped:
                return []  # generated before the server took the cancel: nobody hears it
            return [Audio(b64_audio(body.get("delta")), str(body.get("item_id") or ""))]
        if kind == "session.updated":
            return [Ready()]
        if kind == "conversation.created":
            return [Hello()]
        if kind == "response.created":
            made = body.get("response")
            self._active = str(made.get("id") or "") if isinstance(made, dict) else ""
            self._asked = False
            return []
        if kind == "input_audio_buffer.speech_started":
            return [SpeechStarted(str(body.get("item_id") or ""))]
        if kind == "input_audio_buffer.speech_stopped":
            return [SpeechStopped()]
        if kind == "response.done":
            self._active = None
            out: list[ModelEvent] = [Transcript("agent", t) for t in self._said.values() if t]
            self._said = {}
            out.append(TurnDone())
            if self._owed:  # what waited for this response to end (a tool's output, a key)
                self._owed = False
                out.append(Answer((self._respond(),)))
            return out
        if kind in _AGENT_DELTA:
            item, delta = str(body.get("item_id") or ""), body.get("delta")
            if isinstance(delta, str):
                self._said[item] = self._said.pop(item, "") + delta
                while len(self._said) > SAID_ITEMS:
                    self._said.pop(next(iter(self._said)))
            return []
        if kind in _AGENT_TRANSCRIPT:
            text = body.get("transcript")
            so_far = self._said.pop(str(body.get("item_id") or ""), "")
            return [Transcript("agent", text if isinstance(text, str) and text else so_far)]
        if kind == _CALLER_TRANSCRIPT:
            return [Transcript("caller", str(body.get("transcript") or ""))]
        if kind == "response.function_call_arguments.done":
            raw = body.get("arguments") or "{}"
            try:  # JSON text, as the protocol says; an object as it is (as some send it)
                args = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError:
                args = {}
            return [
                ToolCall(
                    str(body.get("call_id") or ""),
                    str(body.get("name") or ""),
                    args if isinstance(args, dict) else {},
                )
            ]
        if kind == "error":
            self._asked = False  # (a refused ``response.create`` never comes as created)
            return [_error(body)]
        return []  # session.created, ping, deltas of text … nothing to do

    def cancel(self, by: str) -> list[dict[str, Any]]:
        if by == "hold" or self._active is None:
            return []
        response, self._active = self._active, None
        if response:
            self._dropped = [*self._dropped[-7:], response]
        if by == "model" and self.server_cancels:
            return []
        return [self._client("response.cancel")]

    def truncate(self, item_id: str, audio_end_ms: int, by: str = "bridge") -> list[dict[str, Any]]:
        if not item_id or (by == "model" and self.server_truncates):
            return []
        return [
            self._client(
                "conversation.item.truncate",
                item_id=item_id,
                content_index=0,
                audio_end_ms=max(0, audio_end_ms),
            )
        ]

    def tool_result(self, call: ToolCall, output: Any) -> list[dict[str, Any]]:
        item = {
            "type": "function_call_output",
            "call_id": call.call_id,
            "output": output if isinstance(output, str) else json.dumps(output),
        }
        return [self._client("conversation.item.create", item=item), *self._create()]

    def _respond(self) -> dict[str, Any]:
        self._asked = True
        return self._client("response.create")

    def _create(self) -> list[dict[str, Any]]:
        """``response.create`` now, or once the response in progress is done (``_owed``)."""
        if self._active is not None or self._asked:
            self._owed = True
            return []
        return [self._respond()]

    def turn_started(self) -> list[dict[str, Any]]:
        return []

    def turn_ended(self, answer: bool = True) -> list[dict[str, Any]]:
        # Without turn detection the client commits the buffer and asks for a response (not
        # for a turn cut short by a hold: its words stay in the conversation, unanswered).
        return [self._client("input_audio_buffer.commit"), *(self._create() if answer else [])]

    def context(self, lines: list[tuple[str, str]]) -> list[dict[str, Any]]:
        # A new session knows nothing of the old one: one system message recounts it.
        if not lines:
            return []
        said = "\n".join(
            f"{'Caller' if role == 'caller' else 'You'}: {text}" for role, text in lines
        )
        text = "The connection was reopened. The conversation so far:\n" + said
        item = {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": text}],
        }
        return [self._client("conversation.item.create", item=item)]

    def audio_stopped(self) -> list[dict[str, Any]]:
        return []  # no message for it

    def text(self, text: str) -> list[dict[str, Any]]:
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }
        return [self._client("conversation.item.create", item=item), *self._create()]


def _error(body: dict[str, Any]) -> ModelError:
    err = body.get("error")
    err = err if isinstance(err, dict) else {}
    code = str(err.get("code") or err.get("type") or "error")
    message = str(err.get("message") or "")
    benign = code in _BENIGN_CODES or any(t in message.lower() for t in _BENIGN_TEXT)
    return ModelError(code, message, benign)


class OpenAIRealtime(RealtimeFamily):
    """The OpenAI Realtime dialect (:class:`~.wire.ModelDialect`)."""

    provider = "openai-realtime"
    session_limit_s: float | None = SESSION_LIMIT_S
    final_close_codes = frozenset(range(4000, 5000))
    """OpenAI's own codes: its SDK reconnects on 1001, 1005, 1006, 1011-1013, 1015 only, and a
    4000 (``beta_api_shape_disabled``) is final; other standard codes are reopened here."""

    def __init__(self, session: dict[str, Any] | None = None) -> None:
        super().__init__()
        session = dict(session or {})
        check_session(session)
        for key, (side, name) in _SHORTHAND.items():
            if key in session:
                session = merge(session, {"audio": {side: {name: session.pop(key)}}})
        self.session = session
        turns = (
            session.get("audio", {}).get("input", {})
            if isinstance(session.get("audio"), dict)
            else {}
        )
        self.model_detects_speech = not (
            isinstance(turns, dict)
            and "turn_detection" in turns
            and turns["turn_detection"] is None
        )
        detection = turns.get("turn_detection") if isinstance(turns, dict) else None
        # Its VAD ends the response it hears the caller over unless told not to: then the
        # bridge cancels it (``interrupt_response``, on by default).
        self.server_cancels = not (
            isinstance(detection, dict) and detection.get("interrupt_response") is False
        )

    def connect(self, url: str, api_key: str | None) -> tuple[str, dict[str, str]]:
        return url, openai_auth(url, api_key)

    def session_object(self, tools: list[Tool]) -> dict[str, Any]:
        ours: dict[str, Any] = {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "turn_detection": {"type": "server_vad"},
                },
                "output": {"format": {"type": "audio/pcm", "rate": RATE}},
            },
        }
        session = merge(ours, self.session)
        if tools:
            session["tools"] = list(session.get("tools") or []) + self.function_tools(tools)
        return session
