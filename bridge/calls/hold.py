"""Hold, owned by the call's runtime: the conference stops the WhatsApp user hearing the
browsers, and (if asked) music plays to them instead — a looping playback attachment that this
module starts with the hold and stops with the resume. Attachments that follow the hold
(:class:`~bridge.attachments.base.FollowsHold`: an agent) are told of each change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from ..attachments.base import Attachment, FollowsHold
from ..media import CallBus, UplinkSource

StartMusic = Callable[[], Awaitable[UplinkSource]]
"""Starts the hold music (a looping playback attached to the call) and returns it."""


class Hold:
    """A call's hold state and its music. See the module docstring."""

    def __init__(
        self,
        bus: CallBus,
        emit: Callable[..., None],
        attachments: Callable[[], Iterable[Attachment]] = tuple,
    ) -> None:
        self.bus = bus
        self.emit = emit
        self._attachments = attachments
        self.music: UplinkSource | None = None
        """The playback WhatsApp hears while the call is held."""

    @property
    def held(self) -> bool:
        return self.bus.conference.held

    async def set(self, held: bool, music: StartMusic | None = None) -> None:
        """Hold (with ``music`` if given and none plays yet) or resume the WhatsApp peer;
        ``call.held`` / ``call.unheld`` on a change."""
        if held and music is not None and self.music is None:
            started = await music()
            if self.music is None:
                self.music = started
            else:  # another hold started its music meanwhile: one hold, one music
                self.bus.remove_source(started)
        self.set_state(held)
        if not held and self.music is not None:
            playing, self.music = self.music, None
            self.bus.remove_source(playing)  # it finishes (playback.finished) and detaches

    def set_state(self, held: bool) -> None:
        """Hold or resume without touching the music (a call restored as it was)."""
        if held == self.held:
            return
        self.bus.conference.set_held(held)
        for attachment in list(self._attachments()):
            if isinstance(attachment, FollowsHold):
                attachment.held(held)
        self.emit("call.held" if held else "call.unheld")
