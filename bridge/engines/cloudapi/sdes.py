"""The WhatsApp side of a Cloud API call over SDES-SRTP (``BRIDGE_CLOUDAPI_MEDIA=sdes``): plain
RTP/SAVP on one UDP socket (:mod:`bridge.rtc.srtpudp`), keys from ``a=crypto`` (RFC 4568), no
ICE, no DTLS.

Meta offers this media kind on its SIP road and with Graph signalling alike. :class:`SdesPeer`
has the outward shape of :class:`~.peer.WhatsAppPeer` and is built from the same parts minus
aiortc: its RTP is an ``RtpLeg`` (``rtc/rtp_leg.py``) with the socket as its wire (which makes
our key and follows Meta's SDP, as a trunk's phone leg's does), RTCP at RTP/SAVP's intervals.
Two things are its own:

* **the first packet leaves as soon as the far end's address and key are known** (Meta sends
  nothing until it has one), and media never stops for the whole call;
* **liveness**: no authenticated packet for :data:`MEDIA_TIMEOUT` s (Meta's own limit) fails
  the channel, checked with each report: with no ICE consent, nothing else would notice.

Its SDP (RFC 4568 ``a=crypto``, RFC 3264 for the streams refused) is written here, and its
socket bound where :func:`open_socket` says.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from ...audio.receiver_stats import ReceiverStats
from ...config import IceSettings
from ...errors import BadOffer
from ...rtc import counters
from ...rtc.leg import RtpLegOwner
from ...rtc.rtcp_schedule import AVP_MIN_INTERVAL
from ...rtc.rtp_leg import RtpLeg
from ...rtc.rtp_session import RtpSession
from ...rtc.sdes import Crypto, SavpMedia, read_savp
from ...rtc.sdp import STATIC_PT, audio_sdp, telephone_event
from ...rtc.srtpudp import RtpSocket
from ...rtc.tracks import OpusBusTrack
from ...tasks import CloseOnce, TaskSet
from ..base import EngineStats
from .sdp import (
    OPUS_FMTP,
    RemoteAudio,
    leg_codecs,
)
from .shell import WhatsAppLeg

log = logging.getLogger(__name__)

OPUS_PT = 111
"""Opus' payload type in our offers (Meta's)."""
MEDIA_TIMEOUT = 30.0
"""Seconds without an authenticated packet before the leg fails (Meta ends such a call too)."""


class SdesPeer(WhatsAppLeg, RtpLegOwner):
    """One call's SDES-SRTP leg to Meta (see the module docstring)."""

    what = "WhatsApp-side SDES-SRTP"
    leg_words = "SDES leg"
    leg: RtpLeg

    def __init__(
        self,
        name: str,
        ice: IceSettings | None,
        stats: EngineStats,
        *,
        on_dtmf: Callable[[SdesPeer, str, int], None],
        on_media: Callable[[SdesPeer], None],
        on_closed: Callable[[SdesPeer], None] | None = None,
        rtcp_interval: float = AVP_MIN_INTERVAL,
        media_timeout: float = MEDIA_TIMEOUT,
    ) -> None:
        super().__init__()
        self.name = name
        self._ice = ice
        self.media_timeout = media_timeout
        self.state = "new"
        self.failure: str | None = None
        self.started_at: float | None = None
        self._tasks = TaskSet(f"sdes-peer[{name}]")
        self._open_shell(stats, on_dtmf=on_dtmf, on_media=on_media, on_closed=on_closed)
        self.leg = RtpLeg(
            RtpSession.new(OPUS_PT),
            codec="opus",
            on_frame=self._on_frame,
            stats=self.rx,
            tasks=self._tasks,
            dtmf=(lambda: self.dtmf_pt, self.dtmf),
            rtcp_interval=rtcp_interval,
            report=self._report,
        )
        """The leg's RTP on the socket (``rtc/rtp_leg.py``): session, receiver, sender, track,
        RTCP on the worker clock (the media watchdog with it)."""
        rtcp = self.leg.receive_rtcp
        self.socket = self.leg.wire = RtpSocket(name, self._on_rtp, rtcp, srtp=True)
        self._track: OpusBusTrack | None = None
        """Our track, made once Meta's address and key are known (:meth:`_start`)."""
        self.session = self.leg.session  # an RtpLegOwner's
        self._closing: CloseOnce[None] = CloseOnce(f"sdes-peer[{name}]:close")

    @property
    def audio_pt(self) -> int:
        """The audio codec's payload type both ways (Meta's Opus, or G.711's static one)."""
        return self.session.audio_pt

    # -- negotiation
    async def answer(self, offer: str, other_leg: tuple[str, ...] = ()) -> str:
        """Meta's SDES offer → our answer (a fresh key, the offer's crypto tag and suite), in
        the one codec :func:`.sdp.answer_codec` picks for ``other_leg`` (the codecs of the leg
        the call goes to: Opus, or a G.711 Meta offered); our media starts at once. Raises
        :class:`BadOffer` (a SIP engine: 488) for an offer that is not RTP/SAVP with a usable
        ``a=crypto`` and Opus."""
        remote = read_savp(offer)
        audio = self._read_offer(offer, other_leg)
        assert audio.opus_pt is not None  # an offer without Opus is refused
        self._use_codec(self.codec, audio.opus_pt)
        address = await open_socket(self.socket, self._ice, remote.address, remote.crypto)
        sdp = self._sdp(address, remote.media_lines, remote.index)
        self._start(remote, audio)
        return sdp

    async def offer(self, other_leg: tuple[str, ...] = ()) -> str:
        """Our offer for a business-initiated call: :func:`.sdp.leg_codecs` for ``other_leg``
        (G.711 on its static payload type before Opus on 111 when a PBX phone of that codec
        is the other leg), telephone-event on 126; the leg runs in the one Meta answers."""
        self.offered = leg_codecs(other_leg)
        address = await open_socket(self.socket, self._ice, None)
        return self._sdp(address, offer=self.offered)

    def _sdp(
        self,
        address: str,
        media_lines: tuple[str, ...] = (),
        index: int = 0,
        *,
        offer: tuple[str, ...] = (),
    ) -> str:
        """Our SDP: an offer of the codecs ``offer`` names, preferred first (G.711 on its static
        payload type, Opus on the leg's), or an answer in the leg's one codec (Opus, or the
        G.711 answered); telephone-event with either, on RTP/SAVP with our key. In an answer,
        every other offered stream is refused (port 0)."""
        assert self.socket.crypto is not None
        payloads = [
            (self.audio_pt, "opus/48000/2", OPUS_FMTP)  # Meta's in an answer, else 111
            if codec == "opus"
            else (STATIC_PT[codec], f"{codec}/8000", "")
            for codec in offer or (self.codec,)
        ]
        payloads.append(telephone_event(self.dtmf_pt))
        return audio_sdp(
            address,
            self.socket.local[1],
            payloads,
            origin=(self.leg.stream.ssrc, self.leg.stream.ssrc),
            key=self.socket.crypto.attribute(),
            rtcp_port=True,
            ssrc=(self.leg.stream.ssrc, self.leg.reports.cname.decode()),
            streams=media_lines or ("m=audio",),
            index=index,
        )

    async def apply_answer(self, answer: str) -> None:
        """Meta's answer to our offer: its key, address and codec; our media starts at once."""
        if self.socket.crypto is None:
            raise BadOffer("an answer came before our offer")
        remote = read_savp(answer)
        self.socket.check_answer(remote.crypto)
        audio, codec = self._read_answer(answer)
        self._use_codec(codec, self.audio_pt if audio.opus_pt is None else audio.opus_pt)
        self._start(remote, audio)

    def _use_codec(self, codec: str, opus_pt: int) -> None:
        """Send and receive ``codec``: Opus on ``opus_pt`` (Meta's), G.711 on its static
        payload type (RFC 3551 §6), as Meta offers and answers it; the receiver decodes it
        from now on."""
        self.codec = codec
        self.leg.use_codec(codec, opus_pt if codec == "opus" else STATIC_PT[codec])

    def _start(self, remote: SavpMedia, audio: RemoteAudio) -> None:
        """Meta's key and address known: our media starts."""
        if self._closed or self._track is not None:
            return
        self.socket.follow(remote.address, remote.port, remote.rtcp, remote.crypto)
        track = self._track = self._meta_track(audio.bitrate, audio.fec)
        self.state = "connecting"
        self.started_at = time.monotonic()
        self.leg.play(track)  # Meta's loss, report by report, to its encoder
        self.leg.rtcp_schedule.start()

    @property
    def answered(self) -> bool:
        return self._track is not None

    # -- sending
    def _report(self) -> int:
        """One RTCP report (the scheduler's callback), then the media watchdog."""
        sent = self.leg.report()
        self._watch()
        return sent

    def _watch(self) -> None:
        last = self.leg.playout.last_packet or self.started_at
        quiet = time.monotonic() - (last or time.monotonic())
        if quiet > self.media_timeout and not self._close_expected and self.failure is None:
            self.failure = f"media: no packet from Meta for {quiet:.0f} s"
            counters.failure("media", "no media")
            log.warning("%s: %s failed: %s", self.name, self.what, self.failure)
            self.state = "failed"
            self.port.end(self._over())

    # -- receiving
    def _on_rtp(self, plain: bytes, at: float) -> None:
        """One RTP packet from Meta, authenticated, ``at`` its arrival: the first one connects
        the leg."""
        if self.connected_at is None:
            self.connected_at = time.monotonic()
            if self.state == "connecting":
                self.state = "connected"
        self.leg.receive_rtp(plain, at)

    # -- the pump's channel
    @property
    def dead(self) -> bool:
        return self._closed or self.state == "failed"

    # -- stats
    @property
    def far_end_loss(self) -> float:
        return self.leg.far_end_loss

    @property
    def timeline_stats(self) -> tuple[ReceiverStats | None, float | None]:
        """The receiver's counters and the last round-trip time (``calls/reports.py``)."""
        return self.leg.timeline_stats

    def leg_json(self) -> dict[str, Any]:
        """The leg as a call's report shows it (``media: sdes``): a WhatsApp leg's numbers
        (``shell.py``) and its socket's."""
        sock = self.socket
        first, sent_at = None, self.leg.first_sent_at
        if sent_at is not None and self.started_at is not None:
            first = round((sent_at - self.started_at) * 1000, 1)
        rtt = self.leg.reports.far.rtt_s
        return {
            "media": "sdes",
            **WhatsAppLeg.leg_json(self),
            "firstPacketMs": first,
            "local": f"{sock.local[0]}:{sock.local[1]}",
            "remote": None if sock.rtp_to is None else f"{sock.rtp_to[0]}:{sock.rtp_to[1]}",
            "latched": sock.latched,
            "srtpAuthFailed": sock.auth_failed,
            "junkDropped": sock.junk + self.session.malformed,
            "rtcpSent": sock.rtcp_sent,
            "rtcpReceived": sock.rtcp_received,
            "rttMs": None if rtt is None else round(rtt * 1000, 1),
        }

    # -- close
    async def close(self) -> None:
        """Close (idempotent; concurrent callers share one teardown, which runs to its end
        even if a caller is cancelled: ``tasks.CloseOnce``): stop feeding the pump, the leg's
        RTP (a last RTCP report with BYE), the owned tasks, the socket."""
        self._closed = True
        await self._closing.run(self._teardown)

    async def _teardown(self) -> None:
        self._detach()
        self.leg.stop(bye=self._track is not None and self.socket.ready)
        await self._tasks.close()
        self.socket.close()
        self.state = "closed"


def route_to(host: str, v6: bool) -> str:
    """The local address the kernel would send from to ``host`` (no packet is sent: a UDP
    ``connect`` only picks the route); the host name's address without one."""
    if host:
        with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((host, 9))
                return str(s.getsockname()[0])
            except OSError:
                pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


async def open_socket(
    sock: RtpSocket, ice: IceSettings | None, remote_host: str | None, offered: Crypto | None = None
) -> str:
    """Bind the leg's socket (on the first ``BRIDGE_ICE_ADDRESSES``, ports from
    ``BRIDGE_RTP_PORTS``) with our key (``RtpSocket.open``: in an answer to Meta's ``offered``
    line, else in our offer); the address our SDP gives (``BRIDGE_PUBLIC_IP``, else the bound
    one, else the one that routes to the far end)."""
    bind = ice.ice_addresses[0] if ice is not None and ice.ice_addresses else ""
    v6 = ":" in (bind or remote_host or "")
    wildcard = "::" if v6 else "0.0.0.0"
    host, _ = await sock.open(bind or wildcard, ice.rtp_ports if ice else "", offered)
    if ice is not None and ice.public_ip:
        return ice.public_ip
    if host not in ("0.0.0.0", "::"):
        return host
    return route_to(remote_host or "", v6)
