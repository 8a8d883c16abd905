"""The pump's ``MediaChannel`` on a leg to Meta, whichever its media kind: the WebRTC peer
(:class:`~.peer.WhatsAppPeer`, ICE + DTLS-SRTP) or the SDES-SRTP leg (:class:`~.sdes.SdesPeer`).
Both are a :class:`ChannelPeer`. The channel is also a ``WebRTCChannel`` (the runtime samples,
forwards and reports the leg itself, :attr:`PeerChannel.leg`) and a ``DtmfLeg``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from ...audio.pcm import Pcm
from ..channels import DtmfLeg, MediaClosed, MediaFatal, WebRTCChannel, WebRTCLeg

IN_QUEUE = 25
"""Frames from WhatsApp waiting for the pump (500 ms); the oldest go first."""


class Incoming:
    """A leg's frames from WhatsApp on their way to the pump: bounded (:data:`IN_QUEUE`, the
    oldest dropped and counted), kept only while a channel is attached (a ringing call has no
    listener), and ended once for every reader when the leg fails or closes."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Pcm | None] = asyncio.Queue(maxsize=IN_QUEUE)
        self.attached = False
        self.frames = 0
        """Frames the leg decoded (attached or not)."""
        self.dropped = 0
        """Frames dropped because the pump fell behind."""

    def push(self, pcm: Pcm) -> None:
        self.frames += 1
        if not self.attached:
            return  # ringing (pre-accepted): nobody is listening yet
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(pcm)

    def attach(self) -> None:
        """A channel opens: what waited for an earlier one is dropped."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self.attached = True

    def detach(self) -> None:
        self.attached = False

    def end(self) -> None:
        """The leg is over: every ``get`` from now on ends (idempotent)."""
        self.attached = False
        while self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def get(self, why: Callable[[], str]) -> Pcm:
        """The next frame; ``MediaFatal(why())`` once the leg has ended."""
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # stays ended for any later reader
            raise MediaFatal(why())
        return item


class ChannelPeer(WebRTCLeg, Protocol):
    """What :class:`PeerChannel` needs of a leg to Meta: a ``WebRTCLeg`` that the pump can
    send to and receive from, with RFC 4733 key presses."""

    name: str

    @property
    def dead(self) -> bool: ...

    def send(self, pcm: Pcm) -> None: ...

    async def recv(self) -> Pcm: ...

    def detach(self) -> None: ...

    def send_dtmf(
        self, digits: str, duration_ms: int, gap_ms: int, done: Callable[[], None] | None
    ) -> None: ...


class PeerChannel:
    """The pump's ``MediaChannel`` on a leg to Meta (:class:`ChannelPeer`)."""

    def __init__(self, peer: ChannelPeer) -> None:
        self.leg = peer
        self._closed = False

    async def send(self, pcm: Pcm) -> None:
        if self._closed or self.leg.dead:
            raise MediaFatal(f"{self.leg.name}: the WhatsApp-side leg is closed")
        self.leg.send(pcm)

    async def recv(self) -> Pcm:
        if self._closed:
            raise MediaClosed(self.leg.name)
        return await self.leg.recv()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.leg.detach()

    def send_dtmf(
        self, digits: str, duration_ms: int, gap_ms: int, done: Callable[[], None] | None = None
    ) -> None:
        """RFC 4733 key presses to the WhatsApp user (the runtime's ``DtmfLeg``)."""
        if self._closed:
            raise MediaClosed(self.leg.name)
        self.leg.send_dtmf(digits, duration_ms, gap_ms, done)


def _fits(channel: PeerChannel) -> tuple[WebRTCChannel, DtmfLeg]:
    """Never called: mypy checks here that the channel has what the runtime looks for."""
    return channel, channel
