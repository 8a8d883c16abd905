"""What every bus user besides the browser is: an ``Attachment`` of one call's runtime.

Attachments (a playback, the recorder, a media fork, a PCM socket) are created by their
service, adopted by the call's runtime (``runtime.attach``) and closed by it when the call
ends. They see the call only through :class:`AttachmentHost` — its bus, its id, a way to
publish an event and to detach — so this package never imports the call layer above it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..media import CallBus


class AttachmentHost(Protocol):
    """The call runtime as an attachment sees it."""

    @property
    def call_id(self) -> str: ...

    @property
    def bus(self) -> CallBus: ...

    def emit(self, type_: str, **data: Any) -> None:
        """Publish an event about the call (``playback.finished``, ``stream.started`` …)."""

    def attach(self, attachment: Attachment) -> None: ...

    def detach(self, attachment: Attachment) -> None:
        """Forget an attachment that ended by itself."""

    def attached(self, kind: str) -> list[Any]:
        """The call's attachments of one kind."""

    def key_pressed(self, participant_id: str, digit: str, duration_ms: int) -> None:
        """A key pressed by something that speaks to WhatsApp as the agent does (a PCM
        socket's client): the call's ``call.dtmf``, and on to WhatsApp."""


class Attachment(Protocol):
    id: str
    kind: str
    """``playback``, ``recorder``, ``fork`` or ``socket``."""
    wants_media: bool
    """Whether it makes the call's audio worth carrying (opens the engine media)."""

    def call_state(self, state: str, end_reason: str | None) -> None:
        """The call changed state (sockets forward it to their client)."""

    async def close(self) -> Any:
        """Detach from the bus and release everything (idempotent)."""


@runtime_checkable
class CarriesKeys(Protocol):
    """An attachment that carries the WhatsApp user's key presses to an app (a fork's
    ``dtmf`` event, a PCM socket's ``dtmf`` message, an agent's text)."""

    def dtmf(self, digit: str, duration_ms: int) -> None: ...


@runtime_checkable
class FollowsHold(Protocol):
    """An attachment that acts when the call is put on hold or taken off it (an agent, a
    talking PCM socket, a two-way fork: each stops talking to and hearing a held caller)."""

    def held(self, held: bool) -> None: ...


@runtime_checkable
class ActsOnItsOwn(Protocol):
    """An attachment that acts on the call by itself — a desk route's run rings agents, takes
    an accept, answers — and so stands still while the call moves to another worker: from the
    move's start, only the worker that ends up carrying the call acts on it."""

    async def stand_still(self) -> None:
        """Begin nothing more; returns once what it had begun is done."""

    def go_on(self) -> None:
        """The call stays here after all (its move failed): act again."""


@runtime_checkable
class KeepsCallHere(Protocol):
    """An attachment with a leg only this worker can carry (a phone on a trunk: its SIP
    dialog and RTP socket are this worker's): while :attr:`keeps_call_here`, its call cannot
    move to another worker (``calls/letting_go.py`` ``can_move``)."""

    @property
    def keeps_call_here(self) -> bool: ...
