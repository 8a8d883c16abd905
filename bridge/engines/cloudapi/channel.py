"""The pump's channel on a leg to Meta (either media kind): the leg lives in this worker, so
the channel is a ``ClockedChannel`` (the pump plugs the call's WhatsApp-side door into the
leg's :class:`LegPort`, and the leg moves its own frames on the worker clock), a
``WebRTCChannel`` (the runtime reaches the leg itself, :attr:`PeerChannel.leg`) and a
``DtmfLeg``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ...audio.pcm import Pcm
from ...media.ports import ClockedPort
from ..channels import (
    ClockedChannel,
    DtmfLeg,
    LegPort,
    MediaClosed,
    MediaFatal,
    WebRTCChannel,
    WebRTCLeg,
)


class ChannelPeer(WebRTCLeg, Protocol):
    """What :class:`PeerChannel` needs of a leg to Meta: a ``WebRTCLeg`` with a
    :class:`LegPort` the pump plugs the call's door into, and RFC 4733 key presses."""

    name: str
    port: LegPort

    @property
    def dead(self) -> bool: ...

    def send_dtmf(
        self, digits: str, duration_ms: int, gap_ms: int, done: Callable[[], None] | None
    ) -> None: ...


class PeerChannel:
    """The pump's ``ClockedChannel`` on a leg to Meta (:class:`ChannelPeer`)."""

    def __init__(self, peer: ChannelPeer) -> None:
        self.leg = peer
        self._closed = False

    def plug(self, port: ClockedPort) -> None:
        if self._closed:
            port.ended(f"{self.leg.name}: the WhatsApp-side channel is closed")
            return
        self.leg.port.plug(port)

    # The plain ``MediaChannel`` face: nothing reads or writes it (the leg is clocked).
    async def send(self, pcm: Pcm) -> None:
        raise MediaFatal(f"{self.leg.name}: a clocked channel is plugged, not written")

    async def recv(self) -> Pcm:
        raise MediaFatal(f"{self.leg.name}: a clocked channel is plugged, not read")

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.leg.port.unplug()

    def send_dtmf(
        self, digits: str, duration_ms: int, gap_ms: int, done: Callable[[], None] | None = None
    ) -> None:
        """RFC 4733 key presses to the WhatsApp user (the runtime's ``DtmfLeg``)."""
        if self._closed:
            raise MediaClosed(self.leg.name)
        self.leg.send_dtmf(digits, duration_ms, gap_ms, done)


def _fits(channel: PeerChannel) -> tuple[WebRTCChannel, DtmfLeg, ClockedChannel]:
    """Never called: mypy checks here that the channel has what the runtime looks for."""
    return channel, channel, channel
