"""A trunk leg's media: the one RTP leg every leg is (``rtc/rtp_leg.py`` ``RtpLeg``) on its
``rtc/srtpudp.py`` socket (our key, the far end's SDP followed, as Meta's SDES leg's), clear or
SDES-SRTP, joined to the call's conference like a browser participant (codecs, keys, RTCP:
docs/sip.md, *Codecs and what they cost*), with the SIP side's rules:

* **Keys**: RFC 4733 both ways; a key queued for the PBX is sent as events in place of audio
  for its duration (three end packets, §2.5.1.4).
* **Hold** (the track's ``sending`` false while our SDP says ``recvonly``/``inactive``, RFC
  3264 §6.1): the frame is still taken and the stream's time moves on (RFC 3550 §5.1), no
  packet goes out.
* **RTCP** only when both SDPs say ``a=rtcp-mux`` (RFC 5761): the leg has one socket, so a
  phone that keeps RTCP on port + 1 gets none from us and its reports are not read.
* **Forwarding** (``calls/forwarding.py``): only packets of one 20 ms frame go through as they
  are, numbered into the leg's own stream (``rtc/forward_run.py``, RFC 3550 §5.1, so a loss
  before the bridge stays a gap the phone's decoder rebuilds from FEC).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..audio.pcm import Pcm
from ..calls.samples import LegSources
from ..media import BusStats, LevelMeter
from ..rtc.passthrough import PassThrough, one_20ms_packet
from ..rtc.rfc4733 import DtmfDetector, KeyPresses
from ..rtc.rtp_leg import RtpLeg
from ..rtc.rtp_session import RtpSession
from ..rtc.srtpudp import RtpSocket
from ..rtc.tracks import OpusBusTrack
from ..tasks import TaskSet
from .sdp import Remote, we_send

log = logging.getLogger(__name__)

RATE = 8000
KEYS_QUEUED = 32
"""Keys waiting to be sent to the PBX; more are dropped (counted)."""


class _Downlink:
    """The participant's downlink as the track takes it (``media/ports.py`` ``FrameSource``)."""

    def __init__(self, pop: Callable[[float], Pcm | None]) -> None:
        self.take = pop

    def detach(self) -> None:
        pass  # the participant's sink is the call's: it goes with the participant


class TrunkMedia:
    """The RTP of one trunk leg: audio and keys both ways (module docstring), on SDES-SRTP
    when ``srtp``."""

    def __init__(
        self,
        name: str,
        codec: str,
        pt: int,
        event_pt: int | None,
        microphone: Callable[[Pcm], None],
        pop: Callable[[float], Pcm | None],
        on_key: Callable[[str, int], None],
        *,
        srtp: bool = False,
    ) -> None:
        self.name = name
        self.event_pt = event_pt
        self.keys_in = DtmfDetector(on_key, RATE)
        self.keys_out = KeyPresses(KEYS_QUEUED, lambda: self.event_pt)
        leg = self.leg = RtpLeg(
            RtpSession.new(pt),
            codec=codec,
            on_frame=microphone,
            stats=BusStats(),  # the call's once the leg is in the call (:meth:`start`)
            tasks=TaskSet(f"trunk-media:{name}"),
            dtmf=(lambda: self.event_pt, self.keys_in),
            report=self._report,
        )
        self.socket = leg.wire = RtpSocket(name, leg.receive_rtp, leg.receive_rtcp, srtp)
        """Bound by the participant (``RtpSocket.open``, with our key), closed by :meth:`stop`."""
        self.track = OpusBusTrack(_Downlink(pop), codec=codec, keys=self.keys_out, phone=True)
        self.leg.carry(self.track)
        self.leg.use_codec(codec, pt)
        self.rtcp_mux = False
        """Both SDPs said ``a=rtcp-mux`` (module docstring)."""
        self._forward_up: Callable[[int, int, bytes, float], bool] | None = None

    @property
    def codec(self) -> str:
        """What both sides send (``PCMU``, ``PCMA``, ``G722``, ``opus``); :meth:`follow`
        changes it."""
        return self.leg.codec

    # -- pass-through up (``calls/forwarding.py``): the phone's Opus to the WhatsApp leg
    def forward_to(
        self,
        offer: Callable[[int, int, bytes, float], bool] | None,
        needs_pcm: Callable[[float], bool] | None = None,
        meters: tuple[LevelMeter, ...] = (),
    ) -> None:
        """Also hand the phone's packets, as they arrive, to ``offer`` (the WhatsApp leg's
        ``PassThrough.offer``; ``None`` stops), as ``RtpLeg.forward_to`` does; only packets of
        one 20 ms frame (module docstring)."""
        self._forward_up = offer
        self.leg.forward_to(None if offer is None else self._offer_up, needs_pcm, meters)

    def _offer_up(self, seq: int, ts: int, payload: bytes, at: float) -> bool:
        # The WhatsApp leg's pass-through maps 20 ms packets; any other is decoded and mixed.
        offer = self._forward_up
        return (
            offer is not None
            and one_20ms_packet(self.codec, payload)
            and offer(seq, ts, payload, at)
        )

    def follow(self, remote: Remote) -> None:
        """What the far end's SDP says: its key and address (``RtpSocket.follow``), and what
        both sides send: codec, payload types, the events' clock, RTCP on the RTP port (our SDP
        offered it, or answered as the offer said)."""
        self.socket.follow(remote.address, remote.port, remote.rtcp, remote.crypto)
        self.event_pt = remote.event_pt
        self.leg.use_codec(remote.codec, remote.pt)
        self.keys_out.step = remote.event_rate // 50  # RFC 4733 durations' units in 20 ms
        self.keys_in.clock_rate = remote.event_rate
        self.rtcp_mux = remote.rtcp_mux
        self.track.sending = we_send(remote)  # not to a phone that holds (RFC 3264 §6.1)
        self._start_reports()

    def start(self, stats: BusStats | None = None) -> None:
        """On the clock; the receiver's counters added to the call's ``stats`` (the bus's)."""
        if stats is not None:
            self.leg.playout.bus_stats = stats
        self.leg.play(self.track)
        self._start_reports()

    def _start_reports(self) -> None:
        if self.rtcp_mux and self.leg.sender.running:  # from :meth:`start` to :meth:`stop`
            self.leg.rtcp_schedule.start()

    def _report(self) -> int:
        return self.leg.report() if self.rtcp_mux else 0

    def stop(self) -> None:
        """Off the clock, a last RTCP packet with BYE (RFC 3550 §6.6) when the leg has sent
        RTCP (none else, as the RFC says), and the socket closed (idempotent)."""
        self.leg.stop(bye=self.rtcp_mux and self.leg.reports.sent > 0)
        self.socket.close()

    def send_key(self, digit: str, duration_ms: int = 160) -> None:
        """Queue a key for the PBX (RFC 4733 events in place of audio)."""
        self.keys_out.press(digit, max(40, min(duration_ms, 2000)))

    # -- pass-through down (``calls/forwarding.py``): WhatsApp's packets to the phone
    def forward_from(self, allowed: Callable[[], bool]) -> PassThrough | None:
        """``RtpLeg.forward_from``: WhatsApp's packets sent as they are while ``allowed()``."""
        return self.leg.forward_from(allowed)


def timeline(media: TrunkMedia) -> LegSources:
    """A trunk leg as the call's timeline reads a leg (``calls/samples.py``); the round trip
    and loss the phone reports are ``None`` until it reports (a leg without ``a=rtcp-mux``)."""
    reports = media.leg.reports
    far = reports.far if reports.far_reports else None
    return LegSources(
        media.leg.playout.stats,
        None if far is None else far.rtt_s,
        octets_sent=media.leg.stream.octets,
        loss_reported=None if far is None else far.fraction_lost,
    )
