"""What the OpenAI Realtime family shares: the client and server events of OpenAI's Realtime
API (:mod:`.openai`), xAI Grok Voice (:mod:`.xai`) and Azure Voice Live (:mod:`.azure`) —
:class:`RealtimeFamily`, each dialect's base, with the response being generated (for
``response.cancel``), the responses cut (their late audio dropped), a reply's transcript put
together from its deltas, and the one response at a time the protocol allows (a tool's output
or a key press goes in as an item at once, the ``response.create`` after it once the response
in progress is done) — and the client events' ids and function tools GPT-Live
(:mod:`.openai_live`) writes alike.
"""

from __future__ import annotations

import abc
import base64
import json
from typing import Any

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
    recap,
)

RATE = 24_000
"""``audio/pcm`` is 16-bit mono at 24 kHz only."""
_AUDIO_DELTA = ("response.output_audio.delta", "response.audio.delta")
_AGENT_TRANSCRIPT = ("response.output_audio_transcript.done", "response.audio_transcript.done")
_AGENT_DELTA = ("response.output_audio_transcript.delta", "response.audio_transcript.delta")
SAID_ITEMS = 16
"""Replies whose transcript is being put together from its deltas at most (a server that never
ends one loses the oldest)."""
CALLING_RESPONSES = 16
"""Responses whose function calls wait for their answers at most (one whose calls are never
answered is forgotten, the oldest first)."""
_CALLER_TRANSCRIPT = "conversation.item.input_audio_transcription.completed"
_BENIGN_CODES = {
    "response_cancel_not_active",
    "conversation_already_has_active_response",
    "item_already_truncated",
}
_BENIGN_TEXT = ("no active response", "already has an active response", "truncat")
"""The races every Realtime-like server reports as errors (xAI with its own codes: its text
is matched too); none of them ends anything."""


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
    but the session object, the endpoint and the key; :class:`~.capabilities.Unfinished`):
    their client and server events, the response being generated (for ``response.cancel``) and
    the responses cut (their late audio dropped)."""

    provider = ""
    rate_in = RATE
    rate_out = RATE
    waits_for_hello = False
    default_url: str | None = None
    keepalive_s: float | None = None
    session_limit_s: float | None = None
    server_close_ends = False
    final_close_codes: frozenset[int] = frozenset()
    streams_up = False
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
        the ``response.done`` — or as far as it came when the socket closes first
        (:meth:`finish`)."""
        self._asked = False
        """A ``response.create`` was sent and its ``response.created`` has not come yet."""
        self._owed = False
        """A ``response.create`` waits for the response in progress to end: one response at a
        time (a second is refused: ``conversation_already_has_active_response``)."""
        self._calls: dict[str, set[str]] = {}
        """Each response's function calls not answered yet (parallel tool calls): the
        ``response.create`` after their answers waits for the last of them."""

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
        self._said, self._calls = {}, {}
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
            made = body.get("response")
            if isinstance(made, dict) and self._calls.get(str(made.get("id") or "")):
                self._owed = False  # its last call's answer asks for the next response
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
            self._asks(str(body.get("response_id") or self._active or ""), body.get("call_id"))
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

    def finish(self) -> list[ModelEvent]:
        # The socket closed with replies whose ``.done`` (``response.done``) never came: what
        # they said so far is told, so the next session's history holds it.
        said, self._said = self._said, {}
        return [Transcript("agent", t) for t in said.values() if t]

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
        # The model goes on once every call of the response that made this one is answered
        # (parallel tool calls): sent after the first, it would answer without the others.
        others = self._answered(call.call_id)
        return [self._client("conversation.item.create", item=item), *self._create(others)]

    def _asks(self, response: str, call_id: Any) -> None:
        """``response`` made the function call ``call_id`` (:data:`CALLING_RESPONSES`)."""
        self._calls.setdefault(response, set()).add(str(call_id or ""))
        while len(self._calls) > CALLING_RESPONSES:
            self._calls.pop(next(iter(self._calls)))

    def _answered(self, call_id: str) -> bool:
        """``call_id`` is answered: whether other calls of its response still wait."""
        for response, waiting in self._calls.items():
            if call_id in waiting:
                waiting.discard(call_id)
                if waiting:
                    return True
                del self._calls[response]
                break
        return False

    def _respond(self) -> dict[str, Any]:
        self._asked = True
        return self._client("response.create")

    def _create(self, later: bool = False) -> list[dict[str, Any]]:
        """``response.create`` now, or once the response in progress is done (``_owed``);
        ``later``: not now, the last answer of a response's calls asks for it."""
        if later:
            return []
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
        text = recap(lines)
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
