"""What a model connector understands of a realtime model's socket, whatever its protocol: the
events the bridge acts on (typed, below) and the :class:`ModelDialect` each protocol module
implements (:mod:`.openai` for OpenAI Realtime, :mod:`.xai` for xAI Grok Voice, :mod:`.azure`
for Azure Voice Live, :mod:`.gemini` for Gemini Live, :mod:`.deepgram` for Deepgram's Voice
Agent API, :mod:`.elevenlabs` for ElevenLabs Agents, :mod:`.ultravox` for Ultravox,
:mod:`.openai_live` for OpenAI GPT-Live; what only some of them can do: :mod:`.capabilities`).
Nothing outside those modules knows a field name of a protocol. At its end, what several
dialects use alike: :func:`recap` (what was said, for a new session), :func:`merge` (an app's
session into the bridge's), :func:`check_list`, :func:`b64_audio`."""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import BadRequest


class ProtocolError(ValueError):
    """A message the bridge cannot read as its protocol defines it."""


FINAL_STATUSES = frozenset({400, 401, 402, 403, 404})
"""Handshake (or preflight) answers another attempt would meet again: the request, the key or
the account is refused."""


class Refused(ConnectionError):
    """The provider refused the session: with an error while it was being configured, or an
    HTTP status at the handshake (``code`` ``http_<status>``). ``final`` when another attempt
    would be refused the same (:data:`FINAL_STATUSES`, an account-level error): then the agent
    fails (``model_error``) without spending its retries."""

    def __init__(self, code: str, *, final: bool) -> None:
        super().__init__(f"the model refused the session ({code})")
        self.code = code
        self.final = final


@dataclass(frozen=True)
class Hello:
    """The server is ready for the session's configuration (xAI ``conversation.created``);
    waited for only by a dialect whose ``waits_for_hello`` is set."""


@dataclass(frozen=True)
class Ready:
    """The server took the session's configuration (``session.updated``, ``setupComplete``)."""


@dataclass(frozen=True)
class Audio:
    """Model audio (s16le mono at the dialect's ``rate_out``) of one response item."""

    pcm: bytes
    item_id: str = ""


@dataclass(frozen=True)
class SpeechStarted:
    """The model heard the caller start talking (its own turn detection)."""

    item_id: str = ""


@dataclass(frozen=True)
class SpeechStopped:
    pass


@dataclass(frozen=True)
class Interrupted:
    """The model stopped its own turn because the caller spoke (Gemini ``interrupted``)."""


@dataclass(frozen=True)
class TurnDone:
    pass


@dataclass(frozen=True)
class Transcript:
    role: str
    """``caller`` (what the model heard) or ``agent`` (what it said)."""
    text: str


@dataclass(frozen=True)
class ToolCall:
    call_id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    session: int = 0
    """The connection's session that asked (``ModelConnection.session``, stamped by it): the
    answer goes to that session only."""


@dataclass(frozen=True)
class ToolCancelled:
    """The model withdrew tool calls it made (Deepgram ``FunctionCallCancelled``): they get
    no answer."""

    call_ids: tuple[str, ...]


@dataclass(frozen=True)
class Skipped:
    """A part of a server message the bridge cannot read (a Gemini audio part at another rate,
    or not base64), left out: the rest of the message is read."""

    why: str


@dataclass(frozen=True)
class GoAway:
    """The server will close the connection soon (Gemini ``goAway``)."""

    time_left: str = ""


@dataclass(frozen=True)
class Resumable:
    """A handle to resume the conversation on a new connection (Gemini)."""

    handle: str


ACCOUNT_CODES = frozenset(
    {"invalid_api_key", "insufficient_quota", "account_deactivated", "billing_hard_limit_reached"}
)
"""Error codes of the account, not of the session (the OpenAI family's: a bad key, no quota or
credit left, billing stopped), which clients treat as fatal: no new session would fare better."""


@dataclass(frozen=True)
class ModelError:
    code: str
    message: str
    benign: bool = False
    """A known race, not a failure (a cancel after the response ended, a truncate the server
    had already made): logged at INFO, never refuses a session."""
    ends_session: bool = False
    """The protocol ends the session with it (Deepgram's every ``Error``): the bridge closes
    the socket and opens a new session at once, rather than wait for the server's close."""

    @property
    def account(self) -> bool:
        """Of the account (:data:`ACCOUNT_CODES`): the agent fails (``model_error``) rather
        than reconnect."""
        return self.code in ACCOUNT_CODES


@dataclass(frozen=True)
class Answer:
    """Messages the protocol wants sent back at once (ElevenLabs' ``pong`` to every ``ping``):
    the connection queues them ahead of the caller's audio waiting, in order with the other
    control messages."""

    messages: tuple[dict[str, Any], ...]


ModelEvent = (
    Answer
    | Hello
    | Ready
    | Audio
    | SpeechStarted
    | SpeechStopped
    | Interrupted
    | TurnDone
    | Transcript
    | ToolCall
    | ToolCancelled
    | Skipped
    | GoAway
    | Resumable
    | ModelError
)


@dataclass(frozen=True)
class Tool:
    """A function the model may call: JSON Schema ``parameters``."""

    name: str
    description: str
    parameters: dict[str, Any]


SLOT = "@slot@"
"""Where a :class:`MessageText` takes a value."""


class MessageText:
    """The text of a JSON message a dialect sends on every frame (the caller's audio), made by
    filling the slots of its ``json.dumps`` made once. ``json.dumps`` of each 20 ms frame's
    message would scan its 856 base64 characters for escapes base64 never has: 6.6 µs a frame
    against 0.6 µs (2-core AMD EPYC VM, 2026-11-27). The values go in as they are, so they must
    be text JSON writes as it is (base64, ASCII names without quotes or backslashes); the text
    is then the very one ``json.dumps`` writes (``tests/unit/test_agent_dialects.py``)."""

    __slots__ = ("_format",)

    def __init__(self, message: dict[str, Any]) -> None:
        """``message`` with :data:`SLOT` as each value to fill, in order."""
        text = json.dumps(message).replace("{", "{{").replace("}", "}}")
        self._format = text.replace(json.dumps(SLOT), '"{}"')

    def __call__(self, *values: str) -> str:
        return self._format.format(*values)


class ModelDialect(Protocol):
    """One realtime model protocol, as the bridge (the client) speaks it."""

    provider: str
    rate_in: int
    """Sample rate of the caller's audio the model takes."""
    rate_out: int
    """Sample rate of the audio the model sends."""
    model_detects_speech: bool
    """The model decides the caller's turns (its VAD is on); otherwise the bridge does."""
    waits_for_hello: bool
    """The configuration is sent once the server said :class:`Hello`, not at once."""
    default_url: str | None
    """The provider's own endpoint, used when a request gives no ``url`` (``None``: required)."""
    keepalive_s: float | None
    """Seconds without a message to the model after which :meth:`keepalive` is sent
    (``None``: the protocol wants none)."""
    session_limit_s: float | None
    """The provider's cap on one session's length: the connection opens a new session
    before it (``None``: no cap the bridge knows of). Read once a session is ready, so a
    dialect may set it from what the server said (GPT-Live's ``expires_at``)."""
    server_close_ends: bool
    """The server ends a conversation by closing the socket normally (code 1000: ElevenLabs'
    ``end_call``, Ultravox's hang-up): the agent stops there, where a drop is reconnected."""
    final_close_codes: frozenset[int]
    """Close codes with which the server refuses the client for good (OpenAI Realtime's 4000s,
    such as the beta shape's; ElevenLabs' billing stop): the agent fails (``model_error``)
    rather than reopen."""
    streams_up: bool
    """The caller's audio goes up without a pause, silence in its gaps (a hold, a stalled leg:
    :class:`~.uplink.ContinuousUplink`): GPT-Live runs on a clock, and an Ultravox call needs
    no keep-alive only while audio flows."""
    duplex_buffer_ms: int | None
    """``None``: the model sends replies (faster than real time) and stops them on a barge-in
    signal, so its voice queues whole replies and the caller's speech cuts it. A number: the
    model is full duplex (GPT-Live): it hears the caller over itself and stops by itself, so
    the caller's audio goes up without a pause (silence in its gaps), its one continuous
    real-time stream plays through a jitter buffer of at most this many ms, and nothing the
    caller says cuts it."""

    def url_refused(self, url: str) -> str | None:
        """Why a request's ``url`` cannot reach this protocol's model (ElevenLabs': it names
        no agent), ``None`` when it can: run by ``AgentService.check`` once the URL's scheme,
        host and lack of credentials are checked, so a route is refused when it is made
        rather than each call it takes."""

    def connect(self, url: str, api_key: str | None) -> tuple[str, dict[str, str]]:
        """The URL to open and the headers to send (the key where the provider wants it)."""

    def opening(self, tools: list[Tool], resume: str | None) -> list[dict[str, Any]]:
        """The messages that configure a new connection (``resume``: a resumption handle)."""

    def audio(self, pcm: bytes) -> str | bytes:
        """The caller's audio (s16le at ``rate_in``): a JSON message's text (sent on every
        frame: written by a :class:`MessageText`), or ``bytes`` for a binary frame."""

    def parse(self, body: dict[str, Any]) -> list[ModelEvent]:
        """The events of one server message (:class:`ProtocolError` when it is none)."""

    def binary(self, data: bytes) -> list[ModelEvent]:
        """The events of one binary frame (:class:`ProtocolError` where the protocol has
        none)."""

    def keepalive(self) -> list[dict[str, Any]]:
        """What keeps an idle socket open (see :attr:`keepalive_s`)."""

    def closing(self) -> list[dict[str, Any]]:
        """What ends a session gracefully before its socket closes (empty: closing the
        socket is the end, the protocol has no goodbye)."""

    def truncate(self, item_id: str, audio_end_ms: int, by: str = "bridge") -> list[dict[str, Any]]:
        """Tell the model what the caller heard of an interrupted item (empty: not needed,
        or the server truncates itself on a barge-in ``by`` its own turn detection)."""

    def cancel(self, by: str) -> list[dict[str, Any]]:
        """Stop the response the caller will not hear (a barge-in ``by`` ``model`` or
        ``bridge``; ``hold``): empty when none is being generated, when the model stops it
        itself, or when the protocol has no cancel."""

    def tool_result(self, call: ToolCall, output: Any) -> list[dict[str, Any]]: ...

    def turn_started(self) -> list[dict[str, Any]]:
        """The bridge heard the caller start a turn (the model's own VAD is off)."""

    def turn_ended(self, answer: bool = True) -> list[dict[str, Any]]:
        """The bridge heard the caller's turn end: the model should answer. ``answer``
        false: the caller's audio stopped reaching the model in the middle of the turn (a
        hold): the turn ends, with no answer asked for where the protocol can say so."""

    def audio_stopped(self) -> list[dict[str, Any]]:
        """The caller's audio stops reaching the model (a hold, the agent leaving the call)
        until it comes again: what tells the model's own turn detection the microphone is
        off (Gemini's ``audioStreamEnd``; empty where the protocol has no such message, or
        the model's detection is off: the bridge's turn is ended instead)."""

    def text(self, text: str) -> list[dict[str, Any]]:
        """A line of text from the caller's side (a key pressed)."""

    def context(self, lines: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """The conversation so far, ``(role, text)`` lines, for a new connection that has no
        resumption handle (empty: the protocol resumes, or nothing to say)."""


def recap(lines: list[tuple[str, str]]) -> str:
    """What was said, ``(role, text)`` lines, as the text a new session that cannot resume the
    old one is told (in each dialect's message for it: :meth:`ModelDialect.context`)."""
    said = "\n".join(f"{'Caller' if role == 'caller' else 'You'}: {text}" for role, text in lines)
    return "The connection was reopened. The conversation so far:\n" + said


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` merged into a copy of ``base``, objects recursively."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_list(value: Any, name: str) -> None:
    """Refuse a field of an app's ``session`` the bridge adds to (the tools its own join, the
    history a new session is told) unless it is a list or unset: a ``400`` when the request
    comes, rather than a session that cannot be written when it opens (a ``500``) or renews
    (a reconnection that dies)."""
    if value is not None and not isinstance(value, list):
        raise BadRequest(f"field 'session': {name} must be a list")


def b64_audio(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ProtocolError("audio delta is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ProtocolError("audio delta is not base64") from None
