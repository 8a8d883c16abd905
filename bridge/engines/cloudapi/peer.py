"""The WhatsApp side of a Cloud API call over WebRTC (``BRIDGE_CLOUDAPI_MEDIA=dtls``): an aiortc
peer connection to Meta's media servers, a clocked leg of this worker plugged into the call's
WhatsApp-side door (``engines/pump.py``).

The peer connection itself (set-up, failure diagnosis, close, its RTP both ways on the worker
clock) is a :class:`~bridge.rtc.leg.PeerLeg`, as a browser's session is; what the two WhatsApp
legs share is :mod:`.shell`'s. What is Meta's is here: its SDP rules (:mod:`.sdp`), and the
roles it takes: we are the full ICE agent against Meta's ICE-lite (aiortc takes the controlling
role) and the DTLS client in answers (``a=setup:active``). ICE failure or consent loss ends the
channel with :class:`~bridge.engines.base.MediaFatal`: the call fails, it is not reconnected.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc import RTCRtpCodecCapability, RTCRtpSender, RTCSessionDescription

from ...audio.receiver_stats import ReceiverStats
from ...config import IceSettings
from ...rtc.leg import PeerLeg
from ...rtc.sdp import static_rtpmaps
from ..base import EngineStats
from .sdp import G711, for_meta, leg_codecs
from .shell import WhatsAppLeg


class WhatsAppPeer(WhatsAppLeg, PeerLeg):
    """One Cloud API call's peer connection to Meta (see the module docstring), a ``CallLeg``
    (``engines/base.py``): ``on_closed`` tells the engine when its runtime closed it."""

    what = "WhatsApp-side WebRTC"
    far_end = "Meta"
    far_end_close_fails = True
    leg_words = "peer connection"

    def __init__(
        self,
        name: str,
        ice: IceSettings | None,
        stats: EngineStats,
        *,
        on_dtmf: Callable[[WhatsAppPeer, str, int], None],
        on_media: Callable[[WhatsAppPeer], None],
        on_closed: Callable[[WhatsAppPeer], None] | None = None,
    ) -> None:
        super().__init__(name, ice, tasks=f"meta-peer[{name}]")
        self._open_shell(stats, on_dtmf=on_dtmf, on_media=on_media, on_closed=on_closed)
        # Meta's telephone-event, taken in the leg's RTP session: aiortc has no such codec.
        self.session.take_dtmf(lambda: self.dtmf_pt, self.dtmf)

    # -- negotiation
    def _prepare(self, bitrate: int, fec: bool, codec: str = "opus") -> None:
        self.codec = codec
        audio = self.audio_transceiver()
        if audio is None:
            raise ValueError("the SDP has no audio m-line")
        self.start_media(audio, self._meta_track(bitrate, fec), self._on_frame, self.rx)

    def _local_sdp(self) -> str:
        return for_meta(self.advertise(str(self.pc.localDescription.sdp)), self.dtmf_pt)

    async def answer(self, offer: str, other_leg: tuple[str, ...] = ()) -> str:
        """Meta's offer (a user-initiated call) → our answer, every candidate in it, with the
        one codec :func:`.sdp.answer_codec` picks for ``other_leg`` (the codecs of the leg
        the call goes to, when known: a PBX phone's)."""
        remote = self._read_offer(offer, other_leg)
        offer = static_rtpmaps(offer, G711)  # G.711 read as offered: aiortc must see it too
        # The transceiver made first takes the offer's m-line (aiortc reuses one with no mid),
        # and its preference leaves one codec in the answer: Meta sends what we answer.
        transceiver = self.pc.addTransceiver("audio", direction="sendrecv")
        transceiver.setCodecPreferences(_capabilities(self.codec))
        with self.ports():
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            self._prepare(remote.bitrate, remote.fec, self.codec)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self._local_sdp()

    async def offer(self, other_leg: tuple[str, ...] = ()) -> str:
        """Our offer for a business-initiated call: :func:`.sdp.leg_codecs` for ``other_leg``
        (the codecs of the leg the call is placed for: a PBX phone's), preferred first, Opus
        always last; telephone-event on 126. The leg's codec is the one Meta's answer picks:
        its media is set up then (:meth:`apply_answer`)."""
        self.offered = leg_codecs(other_leg)
        transceiver = self.pc.addTransceiver("audio", direction="sendrecv")
        transceiver.setCodecPreferences([c for n in self.offered for c in _capabilities(n)])
        with self.ports():
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return self._local_sdp()

    async def apply_answer(self, answer: str) -> None:
        """Meta's answer to our offer (the connect webhook of a business-initiated call): the
        leg runs in the codec it picked, at its Opus bit rate."""
        remote, codec = self._read_answer(answer)
        answer = static_rtpmaps(answer, G711)
        with self.ports():
            if self._track is None:  # before aiortc starts the transceiver (DTLS up)
                self._prepare(remote.bitrate, True, codec)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    @property
    def answered(self) -> bool:
        return self.pc.remoteDescription is not None

    # -- state
    def _state_changed(self, state: str) -> None:
        if state in ("failed", "closed"):
            self.port.end(self._over())

    @property
    def dead(self) -> bool:
        return self._closed or self.state in ("failed", "closed")

    # -- stats
    @property
    def timeline_stats(self) -> tuple[ReceiverStats | None, float | None]:
        """The receiver's counters and the last round-trip time (``calls/reports.py``)."""
        last = self.last
        return self.receiver_stats, last.rtt_s if last is not None else None


def _capabilities(codec: str) -> list[RTCRtpCodecCapability]:
    """aiortc's capability for ``codec`` (``opus``, ``PCMU``, ``PCMA``), for a preference."""
    mime = f"audio/{codec}".lower()
    return [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == mime]
