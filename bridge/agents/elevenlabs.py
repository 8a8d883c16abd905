"""ElevenLabs Agents (``wss://api.elevenlabs.io/v1/convai/conversation?agent_id=…``): an agent
configured on ElevenLabs' platform (prompt, LLM, voice, tools, audio formats, turn model),
one conversation a socket, JSON both ways with base64 audio.

The bridge is the client. With an API key it first asks the ``url``'s host for a signed URL
(``GET /v1/convai/conversation/get-signed-url?agent_id=…`` with ``xi-api-key``: a private
agent) and opens that, without headers; with none it opens the ``url`` itself (a public
agent). It sends ``conversation_initiation_client_data`` first (the app's ``session``:
``conversation_config_override``, ``dynamic_variables``…) and waits for
``conversation_initiation_metadata``, whose formats are the agent's: the protocol has no field
to name them, so the bridge reads them there (``pcm_16000`` both ways is the bus's own rate;
another ``pcm_<rate>`` is resampled; ``ulaw_8000`` is refused). The caller goes up as
``user_audio_chunk`` (a message with no ``type``); the agent's ``audio`` events are played.
ElevenLabs decides the turns: on ``interruption`` the bridge drops the queued voice and every
later ``audio`` whose ``event_id`` is at most the interruption's (late chunks of the cut reply);
there is no cancel. Every ``ping`` is answered with its ``pong`` at once, or the server drops
the socket; while no audio goes up (a hold) ``user_activity`` keeps the agent from timing the
caller's silence out (every 2 s, or the session's ``user_activity_interval_ms``). Client
tools (declared on the agent by name) come as ``client_tool_call`` and are answered with
``client_tool_result``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from ..errors import BadRequest
from .capabilities import Preflight
from .tools import failure
from .wire import (
    SLOT,
    Answer,
    Audio,
    Interrupted,
    MessageText,
    ModelError,
    ModelEvent,
    ProtocolError,
    Ready,
    Tool,
    ToolCall,
    Transcript,
)

RATE = 16_000
SIGNED_URL_PATH = "/v1/convai/conversation/get-signed-url"
SESSION_FIELDS = {
    "conversation_config_override",
    "dynamic_variables",
    "custom_llm_extra_body",
    "user_id",
    "source_info",
}
"""What ``conversation_initiation_client_data`` carries besides its ``type``."""
FORMATS = {f"pcm_{rate}": rate for rate in (8000, 16000, 22050, 24000, 44100, 48000)}
"""The agent's formats the bridge plays (``ulaw_8000``, the one other, is refused)."""
KEEPALIVE_S = 2.0
"""Seconds without the caller's audio going up (a hold, a stalled leg) after which the agent is
sent ``user_activity``, and again each such while, unless the session sets it
(:data:`ACTIVITY_FIELD`): the agent's turn and silence timeouts are its settings on ElevenLabs
(``turn.turn_timeout``, ``turn.silence_end_call_timeout``), whose lengths the client is not
told: one small message every 2 s stays under any but a very short one."""
ACTIVITY_FIELD = "user_activity_interval_ms"
"""The one ``session`` field that is the bridge's, not sent: the ``user_activity`` interval in
ms (:data:`ACTIVITY_MS`), for an agent whose turn timeout is under :data:`KEEPALIVE_S`."""
ACTIVITY_MS = (100, 60_000)
"""The interval's bounds, in ms."""
_AUDIO = MessageText({"user_audio_chunk": SLOT})  # no ``type``
"""The caller's audio (its base64)."""


def check_session(session: dict[str, Any]) -> None:
    """Refuse what ``conversation_initiation_client_data`` does not carry, and a
    :data:`ACTIVITY_FIELD` out of its bounds."""
    if ACTIVITY_FIELD in session:
        activity_s(session[ACTIVITY_FIELD])
    unknown = sorted(set(session) - SESSION_FIELDS - {ACTIVITY_FIELD})
    if unknown:
        raise BadRequest(
            f"field 'session': {', '.join(unknown)} not in conversation_initiation_client_data "
            "(the audio formats are the agent's, set on ElevenLabs)"
        )
    for name in ("conversation_config_override", "dynamic_variables", "custom_llm_extra_body"):
        if name in session and not isinstance(session[name], dict):
            raise BadRequest(f"field 'session': {name} must be an object")


def activity_s(value: Any) -> float:
    """Seconds of a :data:`ACTIVITY_FIELD` (whole ms within :data:`ACTIVITY_MS`)."""
    low, high = ACTIVITY_MS
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(
            f"field 'session': {ACTIVITY_FIELD} must be a whole number of ms from {low} to "
            f"{high} (how often user_activity goes while no audio does)"
        )
    return value / 1000


def agent_id(url: str) -> str:
    """The ``agent_id`` a conversation URL names (empty: none)."""
    return (parse_qs(urlsplit(url).query).get("agent_id") or [""])[0]


class ElevenLabsAgent:
    """The ElevenLabs Agents dialect (:class:`~.wire.ModelDialect`,
    :class:`~.capabilities.Prepared`)."""

    provider = "elevenlabs"
    model_detects_speech = True
    waits_for_hello = False
    default_url: str | None = None
    """Required: the agent is named in it (``?agent_id=``), on the region's host."""
    keepalive_s: float | None = KEEPALIVE_S
    """The server's ``ping``, answered, keeps the socket open; ``user_activity`` while no audio
    goes up (a hold) keeps the agent from timing the caller's silence out (each agent's: its
    session's :data:`ACTIVITY_FIELD`, else :data:`KEEPALIVE_S`)."""
    session_limit_s: float | None = None
    """The agent's ``max_duration_seconds`` is set on ElevenLabs and not told to the client."""
    url_schemes = ("ws", "wss")
    server_close_ends = True
    """Its ``end_call`` system tool ends the conversation by closing the socket."""
    final_close_codes = frozenset({1002})
    """A billing stop has been seen closing with 1002 (unconfirmed; a protocol error, the other
    meaning of 1002, would be met again by a new conversation too)."""
    streams_up = False
    duplex_buffer_ms: int | None = None
    """Turn-taking, not full duplex: its barge-in cuts the voice."""

    def __init__(self, session: dict[str, Any] | None = None) -> None:
        session = dict(session or {})
        check_session(session)
        every = session.pop(ACTIVITY_FIELD, None)
        if every is not None:
            self.keepalive_s = activity_s(every)
        self.session = session
        """What ``conversation_initiation_client_data`` carries."""
        self.rate_in = RATE
        self.rate_out = RATE
        """The agent's formats once a ``conversation_initiation_metadata`` told them."""
        self._formats: tuple[str, str] | None = None
        self._turn = 0
        self._cut_upto = -1
        """The last interruption's ``event_id``: audio up to it is the cut reply's."""

    # -- connecting
    def url_refused(self, url: str) -> str | None:
        # A public agent's URL and a private one's signed URL request both name it.
        return None if agent_id(url) else "an elevenlabs url names its agent (?agent_id=)"

    def connect(self, url: str, api_key: str | None) -> tuple[str, dict[str, str]]:
        return url, {}  # a public agent: no credentials (a key goes to ``preflight``)

    def preflight(
        self, url: str, api_key: str | None, tools: list[Tool], resume: str | None
    ) -> Preflight | None:
        if not api_key:
            return None
        parts = urlsplit(url)
        query = urlencode({"agent_id": agent_id(url)})
        http = "https" if parts.scheme == "wss" else "http"
        signed = urlunsplit((http, parts.netloc, SIGNED_URL_PATH, query, ""))
        return Preflight("GET", signed, {"xi-api-key": api_key})

    def joined(self, answer: dict[str, Any]) -> tuple[str, dict[str, str]]:
        signed = answer.get("signed_url")
        if not isinstance(signed, str) or urlsplit(signed).scheme not in ("ws", "wss"):
            raise ProtocolError("no ws(s) signed_url")
        return signed, {}  # it carries its own signature

    def opening(self, tools: list[Tool], resume: str | None) -> list[dict[str, Any]]:
        # Tools are the agent's (client tools declared on ElevenLabs by these names): the
        # socket has no field to declare them.
        return [{"type": "conversation_initiation_client_data", **self.session}]

    def _metadata(self, event: Any) -> list[ModelEvent]:
        if not isinstance(event, dict):
            raise ProtocolError("conversation_initiation_metadata without its event")
        given = (event.get("user_input_audio_format"), event.get("agent_output_audio_format"))
        if not all(isinstance(f, str) and f in FORMATS for f in given):
            return [ModelError("unsupported_audio_format", f"formats {given}: pcm_* only")]
        formats = (str(given[0]), str(given[1]))
        if self._formats is not None and formats != self._formats:
            # The agent's voice was set up for the first session's (a changed agent).
            return [ModelError("audio_format_changed", f"formats {formats}, were {self._formats}")]
        self._formats = formats
        self.rate_in, self.rate_out = FORMATS[formats[0]], FORMATS[formats[1]]
        self._cut_upto = -1  # a new conversation numbers its events anew
        return [Ready()]

    # -- audio
    def audio(self, pcm: bytes) -> str:
        return _AUDIO(base64.b64encode(pcm).decode())

    def binary(self, data: bytes) -> list[ModelEvent]:
        raise ProtocolError("ElevenLabs sends no binary frames")

    def keepalive(self) -> list[dict[str, Any]]:
        # It resets the agent's turn timeout: a held caller, sending nothing, is neither
        # prompted nor hung up on (the agent's timeouts are its settings, not told to us).
        return [{"type": "user_activity"}]

    # -- the server's events
    def closing(self) -> list[dict[str, Any]]:
        return []  # the protocol has no goodbye: the socket's close ends it

    def parse(self, body: dict[str, Any]) -> list[ModelEvent]:
        kind = body.get("type")
        if not isinstance(kind, str):
            raise ProtocolError("no type")
        if kind == "audio":
            return self._audio(body.get("audio_event"))
        if kind == "ping":
            event = body.get("ping_event")
            if not isinstance(event, dict) or "event_id" not in event:
                raise ProtocolError("ping without its event_id")
            return [Answer(({"type": "pong", "event_id": event["event_id"]},))]
        if kind == "conversation_initiation_metadata":
            return self._metadata(body.get("conversation_initiation_metadata_event"))
        if kind == "interruption":
            event_id = _event_id((body.get("interruption_event") or {}).get("event_id"))
            self._cut_upto = max(self._cut_upto, event_id)
            self._turn += 1
            return [Interrupted()]
        if kind == "user_transcript":
            text = (body.get("user_transcription_event") or {}).get("user_transcript")
            return [Transcript("caller", text)] if isinstance(text, str) else []
        if kind == "agent_response":
            text = (body.get("agent_response_event") or {}).get("agent_response")
            return [Transcript("agent", text)] if isinstance(text, str) else []
        if kind == "client_tool_call":
            return [self._call(body.get("client_tool_call"))]
        if kind == "client_error":
            return [ModelError("client_error", str(body.get("message") or body)[:200])]
        return []  # vad_score, tentative transcripts, corrections, pings of other kinds…

    def _audio(self, event: Any) -> list[ModelEvent]:
        if not isinstance(event, dict) or not isinstance(event.get("audio_base_64"), str):
            raise ProtocolError("audio without its audio_base_64")
        if _event_id(event.get("event_id")) <= self._cut_upto:
            return []  # a late chunk of the reply the caller interrupted
        try:
            pcm = base64.b64decode(event["audio_base_64"], validate=True)
        except binascii.Error:
            raise ProtocolError("audio_base_64 is not base64") from None
        return [Audio(pcm, f"el{self._turn}")] if pcm else []

    @staticmethod
    def _call(call: Any) -> ToolCall:
        if not isinstance(call, dict) or not isinstance(call.get("tool_call_id"), str):
            raise ProtocolError("client_tool_call without its tool_call_id")
        params = call.get("parameters")
        return ToolCall(
            call["tool_call_id"],
            str(call.get("tool_name") or ""),
            params if isinstance(params, dict) else {},
        )

    # -- what the bridge says
    def truncate(self, item_id: str, audio_end_ms: int, by: str = "bridge") -> list[dict[str, Any]]:
        return []  # ElevenLabs reports what was said itself (``agent_response_correction``)

    def cancel(self, by: str) -> list[dict[str, Any]]:
        return []  # the protocol has no cancel: the turn model stops the reply itself

    def tool_result(self, call: ToolCall, output: Any) -> list[dict[str, Any]]:
        failed = failure(output) is not None
        result = output if isinstance(output, str) else json.dumps(output)
        return [
            {
                "type": "client_tool_result",
                "tool_call_id": call.call_id,
                "result": result,
                "is_error": failed,
            }
        ]

    def turn_started(self) -> list[dict[str, Any]]:
        return []  # ElevenLabs always hears the caller's turns itself

    def turn_ended(self, answer: bool = True) -> list[dict[str, Any]]:
        return []

    def context(self, lines: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """A new conversation (no resumption) is told what was said, without a turn."""
        if not lines:
            return []
        said = "\n".join(f"{role}: {text}" for role, text in lines)
        return [{"type": "contextual_update", "text": f"The conversation so far:\n{said}"}]

    def audio_stopped(self) -> list[dict[str, Any]]:
        return []  # no message for it

    def text(self, text: str) -> list[dict[str, Any]]:
        return [{"type": "user_message", "text": text}]


def _event_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ProtocolError("event_id is not a number")
    try:
        return int(value)
    except ValueError:
        raise ProtocolError("event_id is not a number") from None
