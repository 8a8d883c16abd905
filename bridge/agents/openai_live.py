"""OpenAI GPT-Live (``wss://api.openai.com/v1/live/sessions``): a full-duplex voice model with its
own protocol, not Realtime's (the OpenAI GPT-Live API).

The bridge is the client. It sends one ``session.start`` (the app's ``session`` merged into the
bridge's: ``audio.format`` named explicitly as ``audio/pcm`` at 16 kHz, the same both ways —
the bus's own rate, nothing resampled; ``model`` ``gpt-live-1.1`` unless the app names one) and
waits for ``session.started``. From then on the caller goes up without a pause
(``session.input_audio.append``, silence in its gaps: the agent's ``duplex_buffer_ms``) and
the model's one continuous stream (``session.output_audio.delta``, its silences included) is
played through the one receiver, at the delay its jitter needs (``agents/voice.py``). There is
no barge-in signal: the model hears the caller over itself and its stream turns silent; nothing
is cancelled, truncated or flushed.

Transcripts come as fragments on the session's timeline with no turn boundaries; a role's turn
closes when the other role speaks after it or the same role resumes after :data:`TURN_GAP_MS`
(as pipecat and LiveKit group them), and a caller's new turn is reported as the caller starting
to speak (``agent.speech.started``, which never cuts the model's voice), its close as the
caller stopping (``agent.speech.stopped``: a renewal waits for it).

Tools run in the Responses delegation the app gives in ``session.delegation`` (the bridge adds
its ``bridgeTools`` there): the function calls of a backend response are handed on once its
nested ``response.completed`` came, each answered with ``response.item.create``, and
``response.create`` follows the last answer. A client delegation
(``session.delegation.created`` with target ``client``) goes to the app as a tool call named
:data:`CLIENT_DELEGATION`; its answer is spoken through ``session.commentary.append``.

A session ends with ``session.close``. Its ``expires_at`` (from ``session.started``) is the
session's cap: the connection opens a new session before it, with what was said as
``input``; a session the server ends as ``expired`` anyway is reopened the same way. The turns
a session leaves open when its socket closes (a renewal, a drop) are closed then
(:meth:`OpenAILive.finish`): the caller's turn is told stopped, each turn's transcript is told,
and the next session's ``input`` holds them (a new session's timeline starts again at 0, so a
turn cannot be carried on into it).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import BadRequest
from .openai import openai_auth
from .realtime import EventIds, client_event, function_tools
from .wire import (
    SLOT,
    Audio,
    GoAway,
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
    b64_audio,
    check_list,
    merge,
    recap,
)

RATE = 16_000
PCM16 = {"type": "audio/pcm", "rate": RATE}
DEFAULT_URL = "wss://api.openai.com/v1/live/sessions"
DEFAULT_MODEL = "gpt-live-1.1"
_APPEND = MessageText({"type": "session.input_audio.append", "audio": SLOT})
"""The caller's audio (its base64)."""
BUFFER_MS = 100
"""The most delay the model's stream may wait in the receiver
(``BRIDGE_AGENT_OPENAI_LIVE_BUFFER_MS`` sets it): the stream is real time, so its voice is gone
within it after the stream turns silent."""
TURN_GAP_MS = 800
"""Session-timeline quiet after which a role's next fragment begins a new turn."""
CLIENT_DELEGATION = "client_delegation"
"""The tool name under which a client delegation reaches the app (``agent.tool_call``)."""
APPEND_CHARS = 1500
"""Characters in one ``*.append`` (the protocol's cap is 500 tokens: about 2,000)."""
HISTORY_TURNS = 40
HISTORY_CHARS = 16_000
"""What a new session is told of the old one (``input``: ≤128 messages, ≤8,192 tokens)."""
MAX_INPUT = 128
"""Messages a session's ``input`` holds at most: the app's own first, what was said after
them, the oldest of it left out where both do not fit."""
SESSION_FIELDS = {"model", "instructions", "audio", "delegation", "input", "store"}
_ROLES = {"caller": ("user", "input_text"), "agent": ("assistant", "output_text")}


def check_session(session: dict[str, Any]) -> None:
    """Refuse what the bridge decides (the audio format) and what the server's strict schema
    would refuse anyway (an unknown field), before any socket opens."""
    unknown = sorted(set(session) - SESSION_FIELDS)
    if unknown:
        raise BadRequest(f"field 'session': GPT-Live has no {', '.join(unknown)}")
    audio = session.get("audio")
    if audio is not None and not isinstance(audio, dict):
        raise BadRequest("field 'session': audio must be an object")
    if "format" in (audio or {}):
        raise BadRequest("field 'session': audio.format is the bridge's (16 kHz audio/pcm)")
    delegation = session.get("delegation")
    if delegation is not None and not isinstance(delegation, dict):
        raise BadRequest("field 'session': delegation must be an object or null")
    responses = (delegation or {}).get("responses")
    if isinstance(responses, dict):
        check_list(responses.get("tools"), "delegation.responses.tools")
    given = session.get("input")
    check_list(given, "input")  # (a new session's history joins it)
    if given is not None and len(given) > MAX_INPUT:
        raise BadRequest(f"field 'session': input holds at most {MAX_INPUT} messages")


class OpenAILive:
    """The OpenAI GPT-Live dialect (:class:`~.wire.ModelDialect`, :class:`~.capabilities.Remembers`,
    :class:`~.capabilities.Unfinished`)."""

    provider = "openai-live"
    rate_in = RATE
    rate_out = RATE
    model_detects_speech = True
    waits_for_hello = False
    default_url: str | None = DEFAULT_URL
    keepalive_s: float | None = None
    streams_up = True
    """It runs on a clock: the caller continuously, silence in the gaps."""
    server_close_ends = False
    final_close_codes: frozenset[int] = frozenset()
    """It says goodbye first (``session.closed``): a close without one is a drop."""
    session_limit_s: float | None = None
    """Set from each session's ``expires_at`` (module docstring)."""

    def __init__(self, session: dict[str, Any] | None = None, buffer_ms: int = BUFFER_MS) -> None:
        session = dict(session or {})
        check_session(session)
        self.session = _unset(session)
        """Without its ``null``s: the strict schema wants an unset field omitted (a ``null``
        is refused; ``delegation: null`` is its omission)."""
        self.duplex_buffer_ms: int | None = buffer_ms
        self.history: list[tuple[str, str]] = []
        """Closed turns, ``(role, text)`` in the agent's roles: a new session's ``input``."""
        self._turn: dict[str, list[Any]] = {}
        """Each role's open turn: ``[text, end_ms]``."""
        self._found: list[ToolCall] = []
        """Function calls of the backend response still running (handed on at its end: the
        nested streaming events name no response)."""
        self._unanswered: set[str] = set()
        """Function calls of finished backend responses not answered yet."""
        self._client_delegations: set[str] = set()
        self._event_id = EventIds()

    def url_refused(self, url: str) -> str | None:
        # Its endpoint takes no query (the service refuses the handshake): a Realtime URL's
        # ``?model=`` is the mistake to name.
        if "model" in parse_qs(urlsplit(url).query):
            return "openai-live takes its model in session.model, not the url's ?model="
        return None

    def remember(self, lines: list[tuple[str, str]]) -> None:
        self.history = []
        for role, text in lines:
            self._remember(role, text)

    def connect(self, url: str, api_key: str | None) -> tuple[str, dict[str, str]]:
        return url, openai_auth(url, api_key)

    def _client(self, type_: str, **fields: Any) -> dict[str, Any]:
        return client_event(self._event_id, type_, **fields)

    def opening(self, tools: list[Tool], resume: str | None) -> list[dict[str, Any]]:
        self._turn, self._found, self._unanswered = {}, [], set()
        self._client_delegations = set()
        ours: dict[str, Any] = {"audio": {"format": dict(PCM16)}}
        session = merge({"model": DEFAULT_MODEL}, merge(self.session, ours))
        if tools:
            delegation = session.get("delegation") or {}
            responses = delegation.get("responses")
            if delegation.get("type") != "responses" or not isinstance(responses, dict):
                raise BadRequest(
                    "bridgeTools need session.delegation of type responses (GPT-Live's tools "
                    "live in its Responses backend)"
                )
            responses["tools"] = [*(responses.get("tools") or []), *function_tools(tools)]
        if self.history:  # a new session: what was said, after what the app gave
            given = list(session.get("input") or [])  # (its instructions, its context: kept)
            room = MAX_INPUT - len(given)
            said = [_message(role, text) for role, text in self.history][-room:] if room else []
            session["input"] = [*given, *said]
        return [self._client("session.start", session=session)]

    def audio(self, pcm: bytes) -> str:
        return _APPEND(base64.b64encode(pcm).decode())

    def binary(self, data: bytes) -> list[ModelEvent]:
        raise ProtocolError("a binary frame (the protocol has none)")

    def keepalive(self) -> list[dict[str, Any]]:
        return []

    def closing(self) -> list[dict[str, Any]]:
        return [self._client("session.close")]

    def parse(self, body: dict[str, Any]) -> list[ModelEvent]:
        kind = body.get("type")
        if not isinstance(kind, str):
            raise ProtocolError("a server event without a type")
        if kind == "session.output_audio.delta":
            return [Audio(b64_audio(body.get("delta")))]
        if kind == "session.input_transcript.delta":
            return self._fragment("caller", body)
        if kind == "session.output_transcript.delta":
            return self._fragment("agent", body)
        if kind == "session.started":
            self._started(body.get("session"))
            return [Ready()]
        if kind == "response.event":
            nested = body.get("event")
            return self._backend(nested) if isinstance(nested, dict) else []
        if kind == "session.delegation.created":
            return self._delegated(body.get("delegation"), body.get("offset_ms"))
        if kind == "session.closed":
            reason = str(body.get("reason") or "")
            # Expired before the bridge renewed it: the connection opens the next session.
            return [GoAway(time_left="expired")] if reason == "expired" else []
        if kind == "error":
            err = body.get("error")
            err = err if isinstance(err, dict) else {}
            code = str(err.get("code") or err.get("type") or "error")
            return [ModelError(code, str(err.get("message") or ""))]
        return []  # session.updated, session.usage.updated, info, *.appended …

    def _started(self, session: Any) -> None:
        expires = session.get("expires_at") if isinstance(session, dict) else None
        if isinstance(expires, int | float) and not isinstance(expires, bool):
            self.session_limit_s = max(0.0, float(expires) - time.time())
        else:
            self.session_limit_s = None

    def _fragment(self, role: str, body: dict[str, Any]) -> list[ModelEvent]:
        text = body.get("delta")
        if not isinstance(text, str):
            raise ProtocolError("a transcript delta without its text")
        start, end = _ms(body.get("start_ms")), _ms(body.get("end_ms"))
        out: list[ModelEvent] = []
        other = "agent" if role == "caller" else "caller"
        if other in self._turn and start >= self._turn[other][1]:
            out += self._close(other)
        turn = self._turn.get(role)
        if turn is not None and start - turn[1] >= TURN_GAP_MS:
            out += self._close(role)
            turn = None
        if turn is None:
            self._turn[role] = [text, end]
            if role == "caller":
                out.append(SpeechStarted())
        else:
            turn[0] += text
            turn[1] = max(turn[1], end)
        return out

    def finish(self) -> list[ModelEvent]:
        # No fragment of this session will close its open turns: closed here, the oldest
        # first, so the caller's words are told and the next session's ``input`` holds them.
        out: list[ModelEvent] = []
        for role in sorted(self._turn, key=lambda r: self._turn[r][1]):
            out += self._close(role)
        return out

    def _close(self, role: str) -> list[ModelEvent]:
        # The caller's turn is over: said as the caller stopping (once a turn, as it started).
        over: list[ModelEvent] = [SpeechStopped()] if role == "caller" else []
        text = str(self._turn.pop(role)[0]).strip()
        if not text:
            return over
        self._remember(role, text)
        return [*over, Transcript(role, text)]

    def _remember(self, role: str, text: str) -> None:
        self.history = [*self.history[-(HISTORY_TURNS - 1) :], (role, text)]
        while sum(len(t) for _, t in self.history) > HISTORY_CHARS and len(self.history) > 1:
            self.history.pop(0)

    def _backend(self, event: dict[str, Any]) -> list[ModelEvent]:
        """A nested Responses streaming event of the delegation backend."""
        kind = event.get("type")
        response = event.get("response")
        if kind == "response.output_item.done":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                self._found.append(_function_call(item))
            return []
        if kind == "response.completed":
            calls, self._found = self._found, []
            self._unanswered |= {call.call_id for call in calls}
            return list(calls)
        if kind in ("response.failed", "response.incomplete"):
            self._found = []
            error = response.get("error") if isinstance(response, dict) else None
            message = str(error.get("message") or "") if isinstance(error, dict) else ""
            return [ModelError(f"delegation_{kind.rsplit('.', 1)[1]}", message)]
        return []

    def _delegated(self, delegation: Any, offset_ms: Any) -> list[ModelEvent]:
        if not isinstance(delegation, dict) or delegation.get("target") != "client":
            return []  # the Responses backend works on it (its calls come as response.event)
        delegation_id = str(delegation.get("id") or "")
        if not delegation_id:
            raise ProtocolError("a client delegation without its id")
        self._client_delegations.add(delegation_id)
        return [ToolCall(delegation_id, CLIENT_DELEGATION, {"offsetMs": _ms(offset_ms)})]

    def tool_result(self, call: ToolCall, output: Any) -> list[dict[str, Any]]:
        text = output if isinstance(output, str) else json.dumps(output)
        if call.call_id in self._client_delegations:
            self._client_delegations.discard(call.call_id)
            # The first part answers the delegation; the rest is commentary of none (whether
            # an answered delegation stays live, its id valid again, is not public).
            return [
                self._client(
                    "session.commentary.append",
                    delegation_id=call.call_id if at == 0 else None,
                    content=part,
                )
                for at, part in enumerate(_parts(text))
            ]
        item = {"type": "function_call_output", "call_id": call.call_id, "output": text}
        out = [self._client("response.item.create", item=item)]
        self._unanswered.discard(call.call_id)
        if not self._unanswered:  # every call of the finished responses answered: continue
            out.append(self._client("response.create"))
        return out

    def truncate(self, item_id: str, audio_end_ms: int, by: str = "bridge") -> list[dict[str, Any]]:
        return []  # no truncate: the model heard the caller over itself

    def cancel(self, by: str) -> list[dict[str, Any]]:
        return []  # no cancel for speech: the model stops by itself

    def turn_started(self) -> list[dict[str, Any]]:
        return []

    def turn_ended(self, answer: bool = True) -> list[dict[str, Any]]:
        return []

    def audio_stopped(self) -> list[dict[str, Any]]:
        return []  # no message for it

    def text(self, text: str) -> list[dict[str, Any]]:
        # A key press: silent context the model acts on in its own time.
        return [
            self._client("session.thinking.append", delegation_id=None, content=part)
            for part in _parts(text)
        ]

    def context(self, lines: list[tuple[str, str]]) -> list[dict[str, Any]]:
        if self.history or not lines:
            return []  # this dialect's own session: what was said went in as ``input``
        # Lines it has no history of (a moved call's are ``remember``ed before its session
        # opens): the new session hears them as silent context.
        return self.text(recap(lines)[-APPEND_CHARS:])


def _unset(value: Any) -> Any:
    """``value`` without the fields that are ``null`` (in every object, lists' included)."""
    if isinstance(value, dict):
        return {k: _unset(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_unset(v) for v in value]
    return value


def _function_call(item: dict[str, Any]) -> ToolCall:
    raw = item.get("arguments") or "{}"
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        args = {}
    return ToolCall(
        str(item.get("call_id") or ""),
        str(item.get("name") or ""),
        args if isinstance(args, dict) else {},
    )


def _message(role: str, text: str) -> dict[str, Any]:
    who, part = _ROLES.get(role, _ROLES["caller"])
    return {"type": "message", "role": who, "content": [{"type": part, "text": text}]}


def _parts(text: str) -> list[str]:
    return [text[at : at + APPEND_CHARS] for at in range(0, len(text), APPEND_CHARS)] or [""]


def _ms(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0
