"""Ultravox (``https://api.ultravox.ai/api``): the call is created over REST, then joined over
the WebSocket its answer names.

The bridge is the client. For each session it creates a call — ``POST {url}/calls`` with
``X-API-Key`` (``url`` is the API's base: ``/calls`` goes on its path, its query kept), the
app's ``session`` (``systemPrompt``, ``model``,
``voice``, ``firstSpeaker``, ``selectedTools``…) merged with the bridge's ``serverWebSocket``
medium at 16 kHz both ways, the bus's own rate — and opens the ``joinUrl`` of its ``201``
answer without headers (it carries its own credentials), with ``apiVersion=1`` as the public
clients add. The audio is binary s16le at 16 kHz both ways. Ultravox decides the turns: on
``playback_clear_buffer`` the bridge drops every unplayed byte of the voice and tells the cut
reply's transcript as far as it came (its ``final`` may never come; a late one is not told
again); the server stops the reply itself, so there is nothing to cancel. Client tools
(``temporaryTool`` with ``client: {}``, the bridge's declared this way) come as
``client_tool_invocation`` and are answered with ``client_tool_result`` at once — the
conversation is frozen meanwhile; a failed tool (an answer with ``"ok": false`` or an
``error``) in its error form, ``errorType``
``implementation-error`` with the ``errorMessage``. The call's
``maxDuration`` (the bridge names it: :data:`MAX_DURATION_S` unless the session gives one) is
renewed before it ends: a new call with ``priorCallId``, which continues the conversation (one
whose ``priorCallId`` is refused is told what was said in a ``user_text_message``, and greets
not again).
A session the bridge ends (the agent stopped, the WhatsApp call over, a renewal) gets
``hang_up``, which ends the Ultravox call; the server closes the socket.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import BadRequest
from .capabilities import Preflight
from .tools import failure
from .wire import (
    Audio,
    Interrupted,
    ModelError,
    ModelEvent,
    ProtocolError,
    Ready,
    Resumable,
    Tool,
    ToolCall,
    Transcript,
    merge,
    recap,
)

RATE = 16_000
DEFAULT_URL = "https://api.ultravox.ai/api"
CLIENT_BUFFER_MS = 30_000
"""``clientBufferSizeMs``: how far ahead of playback the server may send. The bridge drops
the unplayed voice at once on ``playback_clear_buffer``, so a large buffer only makes the
voice robust to a slow socket (the spec's reading of Ultravox's documents)."""
MAX_DURATION_S = 3600
"""The call's ``maxDuration`` when the session names none (what public clients allow at
most); the connection renews the call before it."""
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")
_ROLES = {"user": "caller", "agent": "agent"}


def check_session(session: dict[str, Any]) -> None:
    """Refuse what the bridge decides (the medium) and a ``maxDuration`` it cannot read."""
    for name in ("medium", "initialOutputMedium"):
        if name in session:
            raise BadRequest(f"field 'session': {name} is the bridge's (serverWebSocket, 16 kHz)")
    tools = session.get("selectedTools")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("field 'session': selectedTools must be a list")
    if "maxDuration" in session:
        duration(session["maxDuration"])


def duration(value: Any) -> float:
    """Seconds of a protobuf duration string (``"1800s"``)."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None or float(match.group(1)) < 10:
        raise BadRequest("field 'session': maxDuration must be a duration such as \"1800s\"")
    return float(match.group(1))


def calls_url(base: str, query: list[tuple[str, str]]) -> str:
    """``{base path}/calls`` of the API's base ``url``, with ``query`` as its query (the base's
    own, kept where it belongs: after the path, never with ``/calls`` glued after it)."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + "/calls"
    return urlunsplit(parts._replace(path=path, query=urlencode(query), fragment=""))


def temporary_tool(tool: Tool) -> dict[str, Any]:
    """A bridge tool as an Ultravox client tool: its JSON Schema's properties as body
    parameters."""
    props = tool.parameters.get("properties") or {}
    required = set(tool.parameters.get("required") or ())
    return {
        "temporaryTool": {
            "modelToolName": tool.name,
            "description": tool.description,
            "dynamicParameters": [
                {
                    "name": name,
                    "location": "PARAMETER_LOCATION_BODY",
                    "schema": schema,
                    "required": name in required,
                }
                for name, schema in props.items()
            ],
            "client": {},
        }
    }


class UltravoxCall:
    """The Ultravox dialect (:class:`~.wire.ModelDialect`, :class:`~.capabilities.Prepared`,
    :class:`~.capabilities.Unfinished`)."""

    provider = "ultravox"
    rate_in = RATE
    rate_out = RATE
    model_detects_speech = True
    waits_for_hello = False
    default_url: str | None = DEFAULT_URL
    keepalive_s: float | None = None
    """Audio flows both ways all the time (:attr:`streams_up`); ``ping`` is for latency only."""
    url_schemes = ("http", "https")
    server_close_ends = True
    final_close_codes: frozenset[int] = frozenset()
    """A hang-up (the agent's tool, ``maxDuration``) closes the socket."""
    streams_up = True
    """Audio flows all the time — the caller's, or silence in its gaps (a hold) — as the call
    needs no keep-alive only while it does (``ping`` is for latency only)."""
    duplex_buffer_ms: int | None = None
    """Turn-taking, not full duplex: its barge-in cuts the voice."""

    def __init__(self, session: dict[str, Any] | None = None) -> None:
        session = dict(session or {})
        check_session(session)
        self.session = session
        given = session.get("maxDuration")
        self.session_limit_s: float | None = (
            duration(given) if given is not None else float(MAX_DURATION_S)
        )
        self._under_way = False
        """The conversation has begun (a call joined, or a prior one named): the next calls
        continue it."""
        self._turn = 0
        self._odd = b""
        self._said: dict[tuple[str, Any], str] = {}
        """Transcript deltas so far, by role and ordinal, until their ``final`` (or the
        socket's close: :meth:`finish`)."""
        self._cut: dict[tuple[str, Any], None] = {}
        """Agent messages told at a ``playback_clear_buffer``: what comes of them later on the
        same socket (a ``final``) is not told again."""

    # -- connecting
    def url_refused(self, url: str) -> str | None:
        return None  # any URL of its scheme

    def connect(self, url: str, api_key: str | None) -> tuple[str, dict[str, str]]:
        raise ProtocolError("an Ultravox socket is reached through its call (preflight)")

    def preflight(
        self, url: str, api_key: str | None, tools: list[Tool], resume: str | None
    ) -> Preflight:
        ours: dict[str, Any] = {
            "medium": {
                "serverWebSocket": {
                    "inputSampleRate": RATE,
                    "outputSampleRate": RATE,
                    "clientBufferSizeMs": CLIENT_BUFFER_MS,
                }
            },
        }
        body = merge(self.session, ours)
        body.setdefault("maxDuration", f"{MAX_DURATION_S}s")
        if tools:
            body["selectedTools"] = [
                *(body.get("selectedTools") or []),
                *(temporary_tool(t) for t in tools),
            ]
        query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
        if resume:  # a renewed, reopened or moved call continues the conversation
            self._under_way = True
            query = [(k, v) for k, v in query if k != "priorCallId"] + [("priorCallId", resume)]
        if self._under_way:  # no second greeting (nor with its priorCallId refused)
            body.pop("firstSpeakerSettings", None)
            body["firstSpeaker"] = "FIRST_SPEAKER_USER"
        headers = {"X-API-Key": api_key} if api_key else {}
        return Preflight("POST", calls_url(url, query), headers, body, expect=201)

    def joined(self, answer: dict[str, Any]) -> tuple[str, dict[str, str]]:
        join = answer.get("joinUrl")
        if not isinstance(join, str) or urlsplit(join).scheme not in ("ws", "wss"):
            raise ProtocolError("no ws(s) joinUrl")
        self._under_way = True
        parts = urlsplit(join)
        query = parse_qsl(parts.query)
        if not any(k == "apiVersion" for k, _ in query):
            query.append(("apiVersion", "1"))
        return urlunsplit(parts._replace(query=urlencode(query))), {}

    def opening(self, tools: list[Tool], resume: str | None) -> list[dict[str, Any]]:
        return []  # everything went in the call's creation

    # -- audio
    def audio(self, pcm: bytes) -> bytes:
        return pcm

    def binary(self, data: bytes) -> list[ModelEvent]:
        data, self._odd = self._odd + data, b""
        if len(data) % 2:
            data, self._odd = data[:-1], data[-1:]
        return [Audio(data, f"uv{self._turn}")] if data else []

    def keepalive(self) -> list[dict[str, Any]]:
        return []

    # -- the server's messages
    def closing(self) -> list[dict[str, Any]]:
        # Ends the Ultravox call (the server closes the socket), not only our socket: on a
        # stop, the WhatsApp call's end (the ``hangup`` bridge tool) and a renewal alike.
        return [{"type": "hang_up"}]

    def parse(self, body: dict[str, Any]) -> list[ModelEvent]:
        kind = body.get("type")
        if not isinstance(kind, str):
            raise ProtocolError("no type")
        if kind == "call_started":
            call_id = body.get("callId")
            return [Ready(), *([Resumable(call_id)] if isinstance(call_id, str) else [])]
        if kind == "playback_clear_buffer":
            self._turn += 1  # frames after it are a new reply's
            self._odd = b""
            return [Interrupted(), *self._interrupted()]
        if kind == "transcript":
            return self._transcript(body)
        if kind == "client_tool_invocation":
            invocation = body.get("invocationId")
            if not isinstance(invocation, str):
                raise ProtocolError("client_tool_invocation without its invocationId")
            params = body.get("parameters")
            return [
                ToolCall(
                    invocation,
                    str(body.get("toolName") or ""),
                    params if isinstance(params, dict) else {},
                )
            ]
        if kind == "error":  # not in the public list; read if it comes
            return [ModelError("error", str(body.get("message") or "")[:200])]
        return []  # state, pong, debug, …

    def _interrupted(self) -> list[ModelEvent]:
        """The agent's messages still open when the caller cut its reply, told as far as they
        came (their ``final`` may never come), once."""
        cut = [key for key in self._said if key[0] == "agent"]
        for key in cut:
            self._cut[key] = None
        while len(self._cut) > 8:
            self._cut.pop(next(iter(self._cut)))
        return [Transcript("agent", text) for key in cut if (text := self._said.pop(key))]

    def _transcript(self, body: dict[str, Any]) -> list[ModelEvent]:
        role = _ROLES.get(str(body.get("role")))
        if role is None:
            raise ProtocolError("transcript without its role")
        key = (role, body.get("ordinal"))
        if key in self._cut:  # told when the caller cut it
            if body.get("final") is True:
                self._cut.pop(key)
            return []
        text = body.get("text")
        if isinstance(text, str):  # the whole text so far
            self._said[key] = text
        else:
            delta = body.get("delta")
            self._said[key] = self._said.get(key, "") + (delta if isinstance(delta, str) else "")
        if body.get("final") is not True:
            if len(self._said) > 64:  # never final (a cut reply): forget the oldest
                self._said.pop(next(iter(self._said)))
            return []
        said = self._said.pop(key, "")
        # Messages before this one still open will never be final (a cut reply's): forgotten,
        # or the socket's close would tell them out of their order (``finish``).
        self._said = {k: t for k, t in self._said.items() if not _before(k[1], key[1])}
        return [Transcript(role, said)] if said else []

    def finish(self) -> list[ModelEvent]:
        # The socket closed before these transcripts' ``final``: what came of them is told,
        # the oldest first, so a new call told what was said holds them. The cut ones' finals
        # will never come either: the next call's messages, whose ordinals are its own, pass.
        said, self._said = self._said, {}
        self._cut.clear()
        return [Transcript(role, text) for (role, _), text in said.items() if text]

    # -- what the bridge says
    def truncate(self, item_id: str, audio_end_ms: int, by: str = "bridge") -> list[dict[str, Any]]:
        return []  # the server keeps its own account of what was played (its buffer)

    def cancel(self, by: str) -> list[dict[str, Any]]:
        # Ultravox hears every barge-in itself and stops; its only interrupt from the client
        # (``user_text_message`` ``immediate``) would make it answer, which a hold must not.
        return []

    def tool_result(self, call: ToolCall, output: Any) -> list[dict[str, Any]]:
        answer: dict[str, Any] = {"type": "client_tool_result", "invocationId": call.call_id}
        why = failure(output)
        if why is not None:  # the protocol's error form: the agent is told the tool failed
            answer.update(errorType="implementation-error", errorMessage=why)
        else:
            answer["result"] = output if isinstance(output, str) else json.dumps(output)
        return [{**answer, "responseType": "tool-response"}]

    def turn_started(self) -> list[dict[str, Any]]:
        return []

    def turn_ended(self, answer: bool = True) -> list[dict[str, Any]]:
        return []

    def context(self, lines: list[tuple[str, str]]) -> list[dict[str, Any]]:
        # A new call that could not continue the old one (its ``priorCallId`` refused: the
        # old call is unknown or gone) is told what was said, as text of the user's side
        # the agent takes in without answering it at once (``later``).
        if not lines:
            return []
        return [{"type": "user_text_message", "text": recap(lines), "urgency": "later"}]

    def audio_stopped(self) -> list[dict[str, Any]]:
        return []  # no message for it

    def text(self, text: str) -> list[dict[str, Any]]:
        return [{"type": "user_text_message", "text": text, "urgency": "soon"}]


def _before(ordinal: Any, other: Any) -> bool:
    """Whether the message ``ordinal`` comes before ``other`` in the call (both numbered)."""
    numbers = [o for o in (ordinal, other) if isinstance(o, int) and not isinstance(o, bool)]
    return len(numbers) == 2 and ordinal < other
