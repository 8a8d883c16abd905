"""Hold, owned by the call's runtime: the conference stops the WhatsApp user hearing the
browsers, and (if asked) music plays to them instead — a looping playback attachment that this
module starts with the hold and stops with the resume. Attachments that follow the hold
(:class:`~bridge.attachments.base.FollowsHold`: an agent, a talking PCM socket, a two-way
fork) are told of each change."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from ..attachments.base import Attachment, FollowsHold
from ..errors import CallStateError
from ..media import CallBus, UplinkSource


class Music(UplinkSource, Protocol):
    """The hold music playing: a source on the bus that names the audio asset it loops, so a
    call moved to another worker plays the same music there (``calls/handover.py``)."""

    asset_id: str | None


StartMusic = Callable[[], Awaitable[Music]]
"""Starts the hold music (a looping playback attached to the call) and returns it."""


class Hold:
    """A call's hold state and its music. See the module docstring."""

    def __init__(
        self,
        bus: CallBus,
        emit: Callable[..., None],
        attachments: Callable[[], Iterable[Attachment]] = tuple,
        live: Callable[[], bool] = lambda: True,
    ) -> None:
        """``live()``: whether the call is still up (a hold or resume waiting its turn while
        the call ended changes nothing)."""
        self.bus = bus
        self.emit = emit
        self._attachments = attachments
        self._live = live
        self.music: Music | None = None
        """The playback WhatsApp hears while the call is held."""
        self._changing = asyncio.Lock()

    @property
    def held(self) -> bool:
        return self.bus.conference.held

    @property
    def music_asset(self) -> str | None:
        """The audio asset WhatsApp hears looped while the call is held (what a call moved to
        another worker plays on there), or ``None``."""
        music = self._music_playing()
        return music.asset_id if self.held and music is not None else None

    def _music_playing(self) -> Music | None:
        """The hold's music while it plays: a playback stopped meanwhile (``POST /call/play/stop``
        stops every playback of the call, the music too) is no longer the hold's, so a hold
        asked again with music starts it anew rather than keep the call in silence."""
        if self.music is not None and not self.bus.mixes(self.music):
            self.music = None
        return self.music

    async def set(self, held: bool, music: StartMusic | None = None) -> None:
        """Hold (with ``music`` if given and none plays yet) or resume the WhatsApp peer;
        ``call.held`` / ``call.unheld`` on a change. One at a time, in the order asked: a
        resume asked while the hold's music opens (in a thread) comes after that hold, never
        before it (the call left held, with music, after its resume). One whose turn comes
        once the call has ended is refused (:class:`CallStateError`): it left the ended call's
        hold changed and its event after ``call.ended``."""
        async with self._changing:
            if not self._live():
                raise CallStateError(f"call {self.bus.call_id} has ended")
            await self._set(held, music)

    async def _set(self, held: bool, music: StartMusic | None) -> None:
        if held and music is not None and self._music_playing() is None:
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
