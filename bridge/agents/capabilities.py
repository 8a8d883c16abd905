"""What only some realtime model dialects can do beyond :class:`~.wire.ModelDialect`, each a
capability the bridge asks for with ``isinstance`` (never a probe of which provider it is):
tell a new session what was said in the messages that open it (:class:`Remembers`), close
what a session leaves in progress when its socket closes (:class:`Unfinished`), reach the
socket through an HTTP request first (:class:`Prepared`, with its :class:`Preflight`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .wire import ModelEvent, Tool


@dataclass(frozen=True)
class Preflight:
    """An HTTPS request the connection makes before it opens the socket (ElevenLabs' signed
    URL, Ultravox's call creation); its JSON answer goes to :meth:`Prepared.joined`."""

    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any] | None = None
    expect: int = 200
    """The status of a success (Ultravox answers ``201 Created``)."""


@runtime_checkable
class Remembers(Protocol):
    """A dialect that tells a new session what was said in the messages that open it
    (Deepgram's ``Settings``, GPT-Live's ``input``) rather than after (a capability: the
    service asks for it with ``isinstance``): a moved call's agent hands it the lines it
    carried before its first session opens."""

    def remember(self, lines: list[tuple[str, str]]) -> None:
        """``(role, text)`` lines (``caller``/``agent``), the oldest first: the history the
        next session opens with."""


@runtime_checkable
class Unfinished(Protocol):
    """A dialect holding what a session leaves in progress when its socket closes (a
    capability: the connection asks for it with ``isinstance``): GPT-Live's turns, grouped
    from transcript fragments, which no server message closes; the transcripts put together
    from deltas (the Realtime family's, Gemini's, Ultravox's) whose end never came."""

    def finish(self) -> list[ModelEvent]:
        """The session's socket closed (a drop, a renewal, an end): what it left open, closed
        — the events the agent is told (the caller's turn stopped, each open turn's
        transcript) before the next session opens, whose history then holds them."""


@runtime_checkable
class Prepared(Protocol):
    """A dialect whose socket's URL comes from an HTTP request first (a capability: the
    connection asks for it with ``isinstance``; every other dialect's :meth:`connect` says
    where to go at once)."""

    url_schemes: tuple[str, ...]
    """The schemes a request's ``url`` may have (Ultravox's is the REST API's base)."""

    def preflight(
        self, url: str, api_key: str | None, tools: list[Tool], resume: str | None
    ) -> Preflight | None:
        """The request to make (``None``: none, :meth:`~.wire.ModelDialect.connect` says where)."""

    def joined(self, answer: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The socket's URL and headers from the request's answer (:class:`ProtocolError`
        when it has none)."""
