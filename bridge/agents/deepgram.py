"""Deepgram's Voice Agent API (``wss://agent.deepgram.com/v1/agent/converse``): a hosted
listen → think → speak pipeline with its own PascalCase messages and binary audio both ways.

The bridge is the client. It waits for ``Welcome``, sends one ``Settings`` (the app's
``session`` merged into the bridge's: ``linear16`` at 16 kHz both ways, output ``container:
"none"`` — raw PCM, the bus's own rate, nothing resampled) and waits for ``SettingsApplied``.
The caller goes up as binary frames; the agent's binary frames are played into the call.
Deepgram decides the caller's turns: on ``UserStartedSpeaking`` the bridge drops the queued
voice (the server stops sending it; there is nothing to cancel or truncate); the turn's end,
which has no message, is its user ``ConversationText`` (or ``AgentStartedSpeaking``). Client-side
functions (``FunctionCallRequest`` items with ``client_side: true``) are answered with
``FunctionCallResponse``; those the server withdraws (``FunctionCallCancelled``) get no answer.
While no audio goes up the bridge sends ``KeepAlive`` every :data:`KEEPALIVE_S`; a session is
capped at two hours, so the connection renews it before (a new ``Settings`` carrying the
conversation so far as ``agent.context.messages``, without the greeting). An ``Error`` ends
the session: the bridge closes it at once and opens a new one the same way, rather than wait
for Deepgram's close; a call moved to this worker opens its session with the lines it carried
the same way (:meth:`DeepgramVoiceAgent.remember`). An API key goes as
``Authorization: Token``; a temporary token (a JWT's shape) as ``Bearer``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..errors import BadRequest
from .wire import (
    Audio,
    Hello,
    ModelError,
    ModelEvent,
    ProtocolError,
    Ready,
    SpeechStarted,
    SpeechStopped,
    Tool,
    ToolCall,
    ToolCancelled,
    Transcript,
    TurnDone,
    check_list,
    merge,
)

log = logging.getLogger(__name__)

RATE = 16_000
DEFAULT_URL = "wss://agent.deepgram.com/v1/agent/converse"
LINEAR16 = {"encoding": "linear16", "sample_rate": RATE}
KEEPALIVE_S = 8.0
"""Deepgram closes a socket that hears nothing (``CLIENT_MESSAGE_TIMEOUT``)."""
SESSION_LIMIT_S = 2 * 3600.0
HISTORY_LINES = 50
_ROLES = {"user": "caller", "assistant": "agent"}
_SPEAKERS = {role: speaker for speaker, role in _ROLES.items()}


def check_session(session: dict[str, Any]) -> None:
    """Refuse what the bridge decides: the audio formats and the message type."""
    for field in ("audio", "type"):
        if field in session:
            raise BadRequest(f"field 'session': {field} is the bridge's (linear16 at 16 kHz)")
    agent = session.get("agent")
    if agent is not None and not isinstance(agent, dict):
        raise BadRequest("field 'session': agent must be an object")
    think = (agent or {}).get("think")
    if think is not None and not isinstance(think, dict | list):
        raise BadRequest("field 'session': agent.think must be an object or a list")
    for each in think if isinstance(think, list) else [think or {}]:
        if isinstance(each, dict):
            check_list(each.get("functions"), "agent.think.functions")
    context = (agent or {}).get("context")
    if context is not None and not isinstance(context, dict):
        # (A renewed session's history goes in its ``messages``: the newer schema.)
        raise BadRequest("field 'session': agent.context must be an object (its messages)")
    check_list((context or {}).get("messages"), "agent.context.messages")


def _jwt(key: str) -> bool:
    parts = key.split(".")
    return len(parts) == 3 and all(parts) and key.startswith("eyJ")


class DeepgramVoiceAgent:
    """The Deepgram Voice Agent dialect (:class:`~.wire.ModelDialect`,
    :class:`~.capabilities.Remembers`)."""

    provider = "deepgram"
    rate_in = RATE
    rate_out = RATE
    model_detects_speech = True
    waits_for_hello = True
    default_url: str | None = DEFAULT_URL
    keepalive_s: float | None = KEEPALIVE_S
    session_limit_s: float | None = SESSION_LIMIT_S
    server_close_ends = False
    final_close_codes: frozenset[int] = frozenset()
    streams_up = False
    duplex_buffer_ms: int | None = None

    def __init__(self, session: dict[str, Any] | None = None) -> None:
        session = dict(session or {})
        check_session(session)
        self.session = session
        self.history: list[tuple[str, str]] = []
        """What was said (Deepgram roles), for the ``Settings`` of a renewed session."""
        self._turn = 0
        self._odd = b""
        self._caller_turn = False
        """``UserStartedSpeaking`` came, and nothing that says the caller's turn is over."""

    def url_refused(self, url: str) -> str | None:
        return None  # any URL of its scheme

    def remember(self, lines: list[tuple[str, str]]) -> None:
        said = [(_SPEAKERS[role], text) for role, text in lines if role in _SPEAKERS]
        self.history = said[-HISTORY_LINES:]

    def connect(self, url: str, api_key: str | None) -> tuple[str, dict[str, str]]:
        if not api_key:
            return url, {}
        scheme = "Bearer" if _jwt(api_key) else "Token"
        return url, {"Authorization": f"{scheme} {api_key}"}

    def opening(self, tools: list[Tool], resume: str | None) -> list[dict[str, Any]]:
        ours: dict[str, Any] = {
            "type": "Settings",
            "audio": {"input": dict(LINEAR16), "output": {**LINEAR16, "container": "none"}},
        }
        settings = merge(self.session, ours)
        agent = settings.setdefault("agent", {})
        if tools:
            functions = [
                # They change the call: run only once the caller's turn is over.
                {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                    "defer_until_eot": True,
                }
                for t in tools
            ]
            think = agent.get("think")
            for each in think if isinstance(think, list) else [agent.setdefault("think", {})]:
                if isinstance(each, dict):
                    each["functions"] = [*(each.get("functions") or []), *functions]
        if self.history:  # a renewed session: what was said, and no second greeting
            agent.pop("greeting", None)
            context = agent.setdefault("context", {})
            said = [{"type": "History", "role": r, "content": c} for r, c in self.history]
            context["messages"] = [*(context.get("messages") or []), *said]
        return [settings]

    def audio(self, pcm: bytes) -> bytes:
        return pcm

    def binary(self, data: bytes) -> list[ModelEvent]:
        data, self._odd = self._odd + data, b""
        if len(data) % 2:
            data, self._odd = data[:-1], data[-1:]
        return [Audio(data, f"dg{self._turn}")] if data else []

    def keepalive(self) -> list[dict[str, Any]]:
        return [{"type": "KeepAlive"}]

    def closing(self) -> list[dict[str, Any]]:
        return []

    def parse(self, body: dict[str, Any]) -> list[ModelEvent]:
        kind = body.get("type")
        if not isinstance(kind, str):
            raise ProtocolError("no type")
        if kind == "Welcome":
            return [Hello()]
        if kind == "SettingsApplied":
            return [Ready()]
        if kind == "UserStartedSpeaking":
            self._next_turn()
            self._caller_turn = True
            return [SpeechStarted(f"dg{self._turn - 1}")]
        if kind == "AgentStartedSpeaking":
            self._next_turn()
            return self._caller_turn_over()
        if kind == "AgentAudioDone":
            return [TurnDone()]
        if kind == "ConversationText":
            role, text = body.get("role"), body.get("content")
            if role not in _ROLES or not isinstance(text, str):
                raise ProtocolError("ConversationText without its role or content")
            self.history = [*self.history[-(HISTORY_LINES - 1) :], (str(role), text)]
            over = self._caller_turn_over() if role == "user" else []
            return [*over, Transcript(_ROLES[str(role)], text)]
        if kind == "FunctionCallRequest":
            return [self._call(f) for f in _items(body) if f.get("client_side") is True]
        if kind == "FunctionCallCancelled":
            return [ToolCancelled(tuple(str(f.get("id") or "") for f in _items(body)))]
        if kind in ("Error", "Warning"):
            code, text = str(body.get("code") or kind), str(body.get("description") or "")
            # Every ``Error`` is fatal to the session: the bridge closes it and opens another.
            return [ModelError(code, text, benign=kind == "Warning", ends_session=kind == "Error")]
        return []  # PromptUpdated, AgentThinking, History, LatencyReport, …

    def _caller_turn_over(self) -> list[ModelEvent]:
        """The caller's turn ended: Deepgram has no message for it, but its transcript of the
        turn (or the agent starting its reply) comes once it is over."""
        if not self._caller_turn:
            return []
        self._caller_turn = False
        return [SpeechStopped()]

    def _next_turn(self) -> None:
        self._turn += 1
        self._odd = b""

    @staticmethod
    def _call(item: dict[str, Any]) -> ToolCall:
        raw = item.get("arguments") or "{}"
        try:  # the think model's text, passed through: it may be broken JSON
            args = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            args = {}  # still a call to answer (Deepgram's agent waits for it), as the others'
            log.info("FunctionCallRequest %s: its arguments are no JSON", item.get("id"))
        return ToolCall(
            str(item.get("id") or ""),
            str(item.get("name") or ""),
            args if isinstance(args, dict) else {},
        )

    def truncate(self, item_id: str, audio_end_ms: int, by: str = "bridge") -> list[dict[str, Any]]:
        return []  # the server stops its speech itself; it has no truncate

    def cancel(self, by: str) -> list[dict[str, Any]]:
        return []  # no cancel message: on ``UserStartedSpeaking`` the server stops by itself

    def tool_result(self, call: ToolCall, output: Any) -> list[dict[str, Any]]:
        content = output if isinstance(output, str) else json.dumps(output)
        response = {"id": call.call_id, "name": call.name, "content": content}
        return [{"type": "FunctionCallResponse", **response}]

    def turn_started(self) -> list[dict[str, Any]]:
        return []  # Deepgram always hears the caller's turns itself

    def turn_ended(self, answer: bool = True) -> list[dict[str, Any]]:
        return []

    def context(self, lines: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return []  # a new session gets the history in its ``Settings`` (``opening``)

    def audio_stopped(self) -> list[dict[str, Any]]:
        return []  # no message for it

    def text(self, text: str) -> list[dict[str, Any]]:
        return [{"type": "InjectUserMessage", "content": text}]


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    functions = body.get("functions")
    if not isinstance(functions, list):
        raise ProtocolError(f"{body.get('type')} without its functions")
    return [f for f in functions if isinstance(f, dict)]
