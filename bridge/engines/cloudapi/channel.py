"""The pump's ``MediaChannel`` on a leg to Meta, whichever its media kind: the WebRTC peer
(:class:`~.peer.WhatsAppPeer`, ICE + DTLS-SRTP) or the SDES-SRTP leg (:class:`~.sdes.SdesPeer`).
Both are a :class:`ChannelPeer`. The channel is also a ``WebRTCChannel`` (the runtime samples,
forwards and reports the leg itself, :attr:`PeerChannel.leg`) and a ``DtmfLeg``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ...audio.pcm import Pcm
from ..base import DtmfLeg, MediaClosed, MediaFatal, WebRTCChannel, WebRTCLeg


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
