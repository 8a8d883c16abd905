"""The pump's ``MediaChannel`` on a leg to Meta, whichever its media kind: the WebRTC peer
(:class:`~.peer.WhatsAppPeer`, ICE + DTLS-SRTP) or the SDES-SRTP leg (:class:`~.sdes.SdesPeer`).
Both are a :class:`ChannelPeer`; the channel is also a ``WebRTCLeg`` (quality sampled,
Opus forwarded to and from the browser) and a ``DtmfLeg``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ...audio.pcm import Pcm
from ...audio.receiver_stats import ReceiverStats
from ...media import BusStats, ReceiveStats
from ...rtc.leg import Quality
from ...rtc.passthrough import PassThrough
from ..base import MediaClosed, MediaFatal


class ChannelPeer(Protocol):
    """What :class:`PeerChannel` needs of a leg to Meta: :class:`WhatsAppPeer` (DTLS) and
    ``sdes.SdesPeer`` (SDES) both are one."""

    name: str
    mos: float | None
    rx: BusStats

    @property
    def dead(self) -> bool: ...

    @property
    def far_end_loss(self) -> float: ...

    def send(self, pcm: Pcm) -> None: ...

    async def recv(self) -> Pcm: ...

    def detach(self) -> None: ...

    @property
    def receiver_stats(self) -> ReceiverStats | None: ...

    @property
    def last(self) -> Quality | None: ...

    def forward_from(self, allowed: Callable[[], bool]) -> PassThrough | None: ...

    def forward_received(self, offer: Callable[[int, int, bytes], None] | None) -> None: ...

    async def sample_quality(self) -> Quality | None: ...

    def send_dtmf(
        self, digits: str, duration_ms: int, gap_ms: int, done: Callable[[], None] | None
    ) -> None: ...

    def leg_json(self) -> dict[str, Any]: ...


class PeerChannel:
    """The pump's ``MediaChannel`` on a leg to Meta (:class:`ChannelPeer`), and a
    ``WebRTCLeg``."""

    def __init__(self, peer: ChannelPeer) -> None:
        self.peer = peer
        self._closed = False

    @property
    def mos(self) -> float | None:
        return self.peer.mos

    @mos.setter
    def mos(self, value: float | None) -> None:
        self.peer.mos = value

    @property
    def far_end_loss(self) -> float:
        return self.peer.far_end_loss

    async def send(self, pcm: Pcm) -> None:
        if self._closed or self.peer.dead:
            raise MediaFatal(f"{self.peer.name}: the WhatsApp-side peer connection is closed")
        self.peer.send(pcm)

    async def recv(self) -> Pcm:
        if self._closed:
            raise MediaClosed(self.peer.name)
        return await self.peer.recv()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.peer.detach()

    @property
    def receive_stats(self) -> ReceiveStats:
        return self.peer.rx.receive

    @property
    def timeline_stats(self) -> tuple[ReceiverStats | None, float | None]:
        """The receiver's counters and the last round-trip time (``calls/reports.py``)."""
        last = self.peer.last
        return self.peer.receiver_stats, last.rtt_s if last is not None else None

    def forward_from(self, allowed: Callable[[], bool]) -> PassThrough | None:
        """Send the browser's Opus packets to WhatsApp untouched while ``allowed()`` (the
        other direction of ``forward_to``); ``None`` before the leg is negotiated."""
        return self.peer.forward_from(allowed)

    def forward_to(self, offer: Callable[[int, int, bytes], None] | None) -> None:
        """Hand the WhatsApp user's Opus packets, as they arrive, to ``offer`` too (a
        browser sender forwarding them: ``rtc/passthrough.py``); ``None`` stops."""
        self.peer.forward_received(offer)

    async def sample_quality(self) -> Quality | None:
        return await self.peer.sample_quality()

    def send_dtmf(
        self, digits: str, duration_ms: int, gap_ms: int, done: Callable[[], None] | None = None
    ) -> None:
        """RFC 4733 key presses to the WhatsApp user (the runtime's ``DtmfLeg``)."""
        if self._closed:
            raise MediaClosed(self.peer.name)
        self.peer.send_dtmf(digits, duration_ms, gap_ms, done)

    def leg_json(self) -> dict[str, Any]:
        return self.peer.leg_json()
