"""A trunk leg's media: the one RTP leg every leg is (``rtc/rtp_leg.py`` ``RtpLeg``: session,
receiver, sender, track, reports) on its ``rtc/srtpudp.py`` socket, clear or SDES-SRTP, joined
to the call's conference like a browser participant, with the SIP side's rules:

* **Codecs**: G.711 (µ-law, A-law) at 8 kHz, resampled to and from the bus, or G.722 or Opus at
  the bus's 16 kHz (``audio/phone_codecs.py``); the leg's track (``OpusBusTrack`` in its phone
  mode) sends one 20 ms frame a tick, silence when the participant's sink has none.
* **Keys**: RFC 4733 both ways (``rtc/rfc4733.py``); a key queued for the PBX is sent as events
  in place of audio for its duration (three end packets, §2.5.1.4).
* **Hold** (:attr:`TrunkMedia.sending` false): the frame is still taken and the stream's time
  moves on, no packet goes out.
* **RTCP** only when both SDPs say ``a=rtcp-mux`` (RFC 5761: one port for both), on the worker
  clock at RTP/AVP's intervals (``rtc/rtcp_schedule.py``), a BYE at the end. A phone that keeps
  RTCP on port + 1 gets none from us and its reports are not read (the leg has one socket).
* **Forwarding** (``calls/forwarding.py``): WhatsApp's packets go to a phone alone on the call
  through a ``PassThrough`` (:meth:`TrunkMedia.forward_from`), only packets of one 20 ms frame,
  numbered into the leg's own stream (``rtc/forward_run.py``, RFC 3550 §5.1, so a loss before
  the bridge stays a gap the phone's decoder rebuilds from FEC); the phone's go up likewise
  (:meth:`TrunkMedia.forward_to`).
"""

from __future__ import annotations

import logging
import secrets
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
from .sdp import Remote

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
    """The RTP of one trunk leg: audio and keys both ways (module docstring)."""

    def __init__(
        self,
        name: str,
        codec: str,
        pt: int,
        event_pt: int | None,
        microphone: Callable[[Pcm], None],
        pop: Callable[[float], Pcm | None],
        on_key: Callable[[str, int], None],
    ) -> None:
        self.name = name
        self.event_pt = event_pt
        self.keys_in = DtmfDetector(on_key, RATE)
        self.keys_out = KeyPresses(KEYS_QUEUED, lambda: self.event_pt)
        self.leg = RtpLeg(
            RtpSession(secrets.randbits(32), f"{secrets.token_hex(8)}@bridge", audio_pt=pt),
            codec=codec,
            on_frame=microphone,
            stats=BusStats(),
            tasks=TaskSet(f"trunk-media:{name}"),
            dtmf=(lambda: self.event_pt, self.keys_in),
            report=self._report,
        )
        """The leg's RTP (``rtc/rtp_leg.py``); its receiver's counters join the call's once
        the leg is in the call (:meth:`start`)."""
        self.session, self.stream, self.reports = (
            self.leg.session,
            self.leg.stream,
            self.leg.reports,
        )
        self.sender, self.playout = self.leg.sender, self.leg.playout
        self.on_rtp: Callable[[bytes, float], None] = self.leg.receive_rtp
        """One datagram from the phone, ``at`` its arrival (``time.monotonic()`` base): the
        leg's session takes it (the socket's callback, with no call between)."""
        self.rtcp_schedule = self.leg.rtcp_schedule
        self.track = OpusBusTrack(_Downlink(pop), codec=codec, keys=self.keys_out, phone=True)
        """What the sender sends each tick (module docstring)."""
        self.leg.carry(self.track)
        self.leg.use_codec(codec, pt)
        self.rtcp_mux = False
        """Both SDPs said ``a=rtcp-mux``: our RTCP goes on the RTP port (module docstring)."""
        self._forward_up: Callable[[int, int, bytes, float], bool] | None = None
        """Where the phone's packets also go as they arrive (:meth:`forward_to`)."""
        self.socket: RtpSocket | None = None
        self.started = False

    @property
    def sending(self) -> bool:
        """False while our SDP says we send nothing (``recvonly``/``inactive``: the phone holds,
        RFC 3264 §6.1): the clock still drains the participant's sink, the stream's time moves
        on (RFC 3550 §5.1), no packet goes out (the track's)."""
        return self.track.sending

    @sending.setter
    def sending(self, value: bool) -> None:
        self.track.sending = value

    @property
    def pt(self) -> int:
        """The audio payload type both sides send (the far end's SDP's)."""
        return self.session.audio_pt

    @pt.setter
    def pt(self, value: int) -> None:
        self.session.audio_pt = self.stream.payload_type = value

    @property
    def codec(self) -> str:
        """What both sides send: ``PCMU`` (µ-law) or ``PCMA`` (A-law) at 8 kHz, resampled to
        and from the bus; or a wideband codec coded at the bus's own 16 kHz, no resampling:
        ``G722`` (its RTP clock 8 kHz, RFC 3551 §4.5.2) or ``opus`` (its RTP clock 48 kHz,
        RFC 7587 §4.1). :meth:`follow` changes it."""
        return self.leg.codec

    @property
    def packets_in(self) -> int:
        """Audio packets received from the phone (the session's count)."""
        return self.session.audio_packets

    # -- pass-through up (``calls/forwarding.py``): the phone's Opus to the WhatsApp leg
    def forward_to(
        self,
        offer: Callable[[int, int, bytes, float], bool] | None,
        needs_pcm: Callable[[float], bool] | None = None,
        meters: tuple[LevelMeter, ...] = (),
    ) -> None:
        """Also hand the phone's packets, as they arrive, with that time, to ``offer`` (the
        WhatsApp leg's ``PassThrough.offer``; ``None`` stops); while it carries them and
        ``needs_pcm(at)`` says no, they are not decoded (an idle playout, ``rtc/uplink.py``)
        but for their level's sample, into ``meters`` (as a WebRTC leg's ``forward_to``)."""
        self._forward_up = offer
        self.leg.forward_to(None if offer is None else self._offer_up, needs_pcm, meters)

    def _offer_up(self, seq: int, ts: int, payload: bytes, at: float) -> bool:
        # Only one 20 ms packet goes up as it is (the WhatsApp leg's pass-through maps 20 ms
        # packets); any other packet is not carried: it is decoded here and mixed.
        offer = self._forward_up
        return (
            offer is not None
            and one_20ms_packet(self.codec, payload)
            and offer(seq, ts, payload, at)
        )

    def follow(self, remote: Remote) -> None:
        """What the far end's SDP says both sides send: codec, payload types, the events'
        clock, RTCP on the RTP port (our SDP offered it, or answered as the offer said)."""
        self.event_pt = remote.event_pt
        if remote.codec != self.codec:
            self.leg.use_codec(remote.codec, remote.pt)
        else:
            self.pt = remote.pt
        self.keys_out.step = remote.event_rate // 50  # RFC 4733 durations' units in 20 ms
        self.keys_in.clock_rate = remote.event_rate
        self.rtcp_mux = remote.rtcp_mux
        self._start_reports()

    def start(self, socket: RtpSocket, stats: BusStats | None = None) -> None:
        """On the clock with ``socket``; the receiver's counters added to the call's
        ``stats`` (the bus's, as a browser participant's are)."""
        self.socket = self.leg.wire = socket
        if stats is not None:
            self.playout.bus_stats = stats
        self.started = True
        self.leg.play(self.track)
        self._start_reports()

    def _start_reports(self) -> None:
        if self.rtcp_mux and self.socket is not None and self.started:
            self.rtcp_schedule.start()

    def _report(self) -> int:
        """One RTCP report (the scheduler's callback; none while the SDPs do not multiplex)."""
        return self.leg.report() if self.rtcp_mux else 0

    @property
    def packets_out(self) -> int:
        """RTP packets sent to the phone: audio, events and forwarded ones."""
        return self.stream.packets

    def stop(self) -> None:
        """Off the clock, a last RTCP packet with BYE (RFC 3550 §6.6) when the leg has sent
        RTCP (none else, as the RFC says), and the socket closed (idempotent)."""
        self.started = False
        self.leg.stop(bye=self.rtcp_mux and self.reports.sent > 0)
        if self.socket is not None:
            self.socket.close()

    # -- receive
    def on_rtcp(self, plain: bytes, at: float) -> None:
        """A compound RTCP packet from the phone (multiplexed on the RTP port), ``at`` its
        arrival."""
        self.leg.receive_rtcp(plain, at)

    # -- send
    def send_key(self, digit: str, duration_ms: int = 160) -> None:
        """Queue a key for the PBX (RFC 4733 events in place of audio)."""
        self.keys_out.press(digit, max(40, min(duration_ms, 2000)))

    # -- pass-through down (``calls/forwarding.py``): WhatsApp's packets to the phone
    def forward_from(self, allowed: Callable[[], bool]) -> PassThrough | None:
        """Let this leg's sender send WhatsApp's packets (offered to the returned
        ``PassThrough`` by the WhatsApp leg's ``forward_to``) as they are while ``allowed()``,
        numbered into this leg's own stream (module docstring): as a browser's
        ``forward_from``."""
        return self.leg.forward_from(allowed)

    @property
    def forwarding(self) -> bool:
        """Whether WhatsApp's packets go to the phone as they are (a forwarding run)."""
        return self.track.forwarding

    @property
    def forwarded(self) -> int:
        """WhatsApp's packets sent to the phone as they were."""
        return self.track.forwarded_frames


def timeline(media: TrunkMedia) -> LegSources:
    """A trunk leg as the call's timeline reads a leg (``calls/samples.py``): the phone's
    stream as its receiver counts it (loss, jitter, what was concealed or stretched:
    ``audio/receiver.py``), the octets we sent, and the round trip and loss the phone's RTCP
    reports (``None`` until it reports: a leg without ``a=rtcp-mux``)."""
    reports = media.reports
    far = reports.far if reports.far_reports else None
    return LegSources(
        media.playout.stats,
        None if far is None else far.rtt_s,
        octets_sent=media.stream.octets,
        loss_reported=None if far is None else far.fraction_lost,
    )
