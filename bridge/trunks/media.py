"""A trunk leg's media: RTP (RFC 3550) with G.711 at 8 kHz, or G.722 or Opus at the bus's 16 kHz,
plain or SDES-SRTP, joined to the call's conference like a browser participant.

Receive: datagram → (SRTP unprotect) → RTP header → the one receiver every RTP leg has
(``rtc/uplink.py``'s :class:`~bridge.rtc.uplink.Playout`: reorder, adaptive jitter buffer, Opus
FEC, concealment — pitch repetition for G.711 and G.722 —, time-stretch; decoded to 16 kHz by
the codec's decoder, ``audio/phone_codecs.py``) → one 20 ms frame per tick of the media clock's
receive phase → the participant's microphone in the conference. A ``telephone-event`` packet
(RFC 4733) is a key, read by the one detector (``rtc/rfc4733.py``).
Send: on the worker's media clock (phase ``ENGINE``, after the mix), the participant's
downlink sink gives one 20 ms frame (silence when it has none) → encode (16 → 8 kHz then
G.711; G.722 or Opus as it is) → one RTP packet. A key queued for the PBX is sent as RFC 4733
events instead of audio for its duration (three end packets, §2.5.1.4).

The leg's RTP session is every leg's (``rtc/rtp_session.py`` ``RtpSession``): its packets go
out through the one RTP sender (``rtc/rtpsend.py`` ``LeanSender``: numbered and framed by the
session's :class:`~bridge.rtc.rtpsend.RtpStream`, audio, events and forwarded Opus alike, the
sender reports' time pair kept) onto the leg's wire, and its
:class:`~bridge.rtc.rtcp.RtcpReports` counts what arrives (RFC 3550 A.3 loss, A.8 jitter) and
reads what the phone reports of us. RTCP goes on the wire when both SDPs say ``a=rtcp-mux``
(RFC 5761: one port for both): our SR (or RR) with SDES CNAME on the worker clock at RTP/AVP's
intervals (``rtc/rtcp_schedule.py``: 5 s, randomised 0.5–1.5 ×, the first sooner), a BYE at
the end; the phone's SR and RR come in on the same socket. A phone that keeps RTCP on port + 1
gets none from us and its reports are not read (the leg has one socket).

The socket under it is ``trunks/rtp_socket.py``'s (clear) or ``rtc/srtpudp.py``'s (SDES).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

import numpy as np

from ..audio.opus import OpusDecoder
from ..audio.pcm import FRAME_SAMPLES, Pcm
from ..audio.phone_codecs import PhoneEncoder, phone_decoder
from ..audio.receiver import FrameDecoder
from ..calls.samples import LegSources
from ..media import BusStats
from ..media.clock import Phase, worker_clock
from ..rtc.forward_run import FORWARD_WAIT, RunNumbering, unsent_time
from ..rtc.rfc4733 import DtmfDetector, KeyPresses
from ..rtc.rtcp_schedule import RtcpInterval, RtcpSchedule
from ..rtc.rtp_session import RtpSession
from ..rtc.rtpsend import LeanSender
from ..rtc.uplink import Playout
from ..tasks import TaskSet
from .passthrough import one_20ms_packet
from .rtp_socket import Socket, rtp_payload
from .sdp import Remote

log = logging.getLogger(__name__)

RATE = 8000
SAMPLES = 160
"""8 kHz samples in one 20 ms packet (and G.722's timestamp step: its RTP clock is 8 kHz)."""
KEYS_QUEUED = 32
"""Keys waiting to be sent to the PBX; more are dropped (counted)."""


class TrunkMedia:
    """The RTP of one trunk leg: audio and keys both ways (module docstring)."""

    def __init__(
        self,
        name: str,
        codec: str,
        pt: int,
        event_pt: int | None,
        microphone: Callable[[Pcm], None],
        pop: Callable[[], Pcm | None],
        on_key: Callable[[str, int], None],
    ) -> None:
        self.name = name
        self.session = RtpSession(secrets.randbits(32), f"{secrets.token_hex(8)}@bridge")
        self.stream = self.session.stream
        """The one owner of this leg's sequence numbers: audio, events and forwarded Opus
        (``rtc/rtpsend.py``); its RTP times are the wire's (``origin=0``: :attr:`_ts` is)."""
        self.stream.payload_type, self.stream.origin = pt, 0
        self.reports = self.session.reports
        """What arrives from the phone and what it reports of us (``rtc/rtcp.py``)."""
        self.reports.clock = RATE
        self.sender = LeanSender(self.session, self._wire_rtp)
        """The one RTP sender every leg has (``rtc/rtpsend.py``), sending on :attr:`socket`."""
        self.rtcp_mux = False
        """Both SDPs said ``a=rtcp-mux``: our RTCP goes on the RTP port (module docstring)."""
        self.rtcp_schedule = RtcpSchedule(self._report, RtcpInterval())
        """Our reports on the worker clock while :attr:`rtcp_mux` (``rtc/rtcp_schedule.py``)."""
        self._said_bye = False
        self.octets_in = 0
        self.event_pt = event_pt
        self.forward_allowed: Callable[[], bool] | None = None
        """While set and true, WhatsApp's Opus packets (:meth:`offer`) go to the phone as they
        arrived instead of this leg's own encoding (``trunks/passthrough.py``)."""
        self._forward_up: Callable[[int, int, bytes, float], None] | None = None
        """Where the phone's Opus packets also go as they arrive (:meth:`forward_to`)."""
        self._up_needs_pcm: Callable[[float], bool] | None = None
        self._went_up = False
        """The packet in hand was forwarded up (one 20 ms Opus frame)."""
        self._run: RunNumbering | None = None
        """The forwarding run, while WhatsApp's packets go to the phone (``rtc/forward_run.py``)."""
        self._encoder_stale = False
        self.forwarded = self.forward_late = 0
        self.microphone, self.pop = microphone, pop
        self.codec = codec
        self._tasks = TaskSet(f"trunk-media:{name}")
        self.playout = Playout(microphone, BusStats(), self._tasks, self._decoder)
        """The phone's packets → frames on the media clock (module docstring); its counters
        join the call's once the leg is in the call (:meth:`start`)."""
        self.set_codec(codec)
        self.socket: Socket | None = None
        self._ts = secrets.randbits(32)
        self.keys_in = DtmfDetector(on_key, RATE)
        self.keys_out = KeyPresses(KEYS_QUEUED, lambda: self.event_pt)
        self._unregister: Callable[[], None] | None = None
        self.packets_in = 0
        self.sending = True
        """False while our SDP says we send nothing (``recvonly``/``inactive``: the phone holds,
        RFC 3264 §6.1): the clock still drains the participant's sink, the stream's time moves
        on (RFC 3550 §5.1), no packet goes out."""

    @property
    def pt(self) -> int:
        """The audio payload type both sides send (the far end's SDP's)."""
        return self.stream.payload_type

    @pt.setter
    def pt(self, value: int) -> None:
        self.stream.payload_type = value

    def set_codec(self, codec: str) -> None:
        """What both sides send: ``PCMU`` (µ-law) or ``PCMA`` (A-law) at 8 kHz, resampled to
        and from the bus; or a wideband codec coded at the bus's own 16 kHz, no resampling:
        ``G722`` (its RTP clock 8 kHz, RFC 3551 §4.5.2) or ``opus`` (its RTP clock 48 kHz,
        RFC 7587 §4.1)."""
        self.codec = codec
        self.encoder = PhoneEncoder(codec)
        self.step = 960 if codec == "opus" else SAMPLES
        """The RTP timestamp's step a 20 ms packet."""
        self.stream.frame_ticks = self.step
        self.reports.clock = 48000 if codec == "opus" else RATE  # its RTP clock (RFC 3551)
        # A fresh receiver for the codec (the stream so far was another codec's).
        self.playout.resume(self.playout.on_frame, self.playout.bus_stats)

    def _decoder(self) -> FrameDecoder:
        return OpusDecoder(16000) if self.codec == "opus" else phone_decoder(self.codec)

    # -- pass-through up (``calls/forwarding.py``): the phone's Opus to the WhatsApp leg
    def forward_to(
        self,
        offer: Callable[[int, int, bytes, float], None] | None,
        needs_pcm: Callable[[float], bool] | None = None,
    ) -> None:
        """Also hand the phone's Opus packets, as they arrive, with that time, to ``offer``
        (the WhatsApp leg's ``PassThrough.offer``; ``None`` stops); while ``needs_pcm(at)`` says
        no, they are not decoded (an idle playout, ``rtc/uplink.py``)."""
        self._forward_up, self._up_needs_pcm = offer, needs_pcm
        self.playout.forward_to(None if offer is None else self._offer_up, self._needs_pcm)

    def _offer_up(self, seq: int, ts: int, payload: bytes, at: float) -> None:
        # Only one 20 ms packet goes up as it is (the WhatsApp leg's pass-through maps 20 ms
        # packets); any other packet is decoded here and mixed.
        offer = self._forward_up
        self._went_up = offer is not None and one_20ms_packet(self.codec, payload)
        if self._went_up and offer is not None:
            offer(seq, ts, payload, at)

    def _needs_pcm(self, at: float) -> bool:
        needs = self._up_needs_pcm
        return not self._went_up or needs is None or needs(at)

    def follow(self, remote: Remote) -> None:
        """What the far end's SDP says both sides send: codec, payload types, the events'
        clock, RTCP on the RTP port (our SDP offered it, or answered as the offer said)."""
        self.pt, self.event_pt = remote.pt, remote.event_pt
        if remote.codec != self.codec:
            self.set_codec(remote.codec)
        self.keys_out.step = remote.event_rate // 50  # RFC 4733 durations' units in 20 ms
        self.keys_in.clock_rate = remote.event_rate
        self.rtcp_mux = remote.rtcp_mux
        self._start_reports()

    def start(self, socket: Socket, stats: BusStats | None = None) -> None:
        """On the clock with ``socket``; the receiver's counters added to the call's
        ``stats`` (the bus's, as a browser participant's are)."""
        self.socket = socket
        if stats is not None:
            self.playout.bus_stats = stats
        self._unregister = worker_clock().register(self._tick, Phase.ENGINE)
        self._start_reports()

    def _start_reports(self) -> None:
        if self.rtcp_mux and self.socket is not None and self._unregister is not None:
            self.rtcp_schedule.start()

    def _report(self) -> int:
        """One RTCP report (the scheduler's callback; none while the SDPs do not multiplex)."""
        if not self.rtcp_mux or self.socket is None:
            return 0
        report = self.reports.compound(self.stream)
        self.socket.send_rtcp(report)
        return len(report)

    @property
    def packets_out(self) -> int:
        """RTP packets sent to the phone: audio, events and forwarded Opus."""
        return self.stream.packets

    def stop(self) -> None:
        """Off the clock, a last RTCP packet with BYE (RFC 3550 §6.6) when the leg has sent
        RTCP (none else, as the RFC says), and the socket closed (idempotent)."""
        unregister, self._unregister = self._unregister, None
        if unregister is not None:
            unregister()
        self.rtcp_schedule.stop()
        self.playout.stop()
        socket = self.socket
        if self.rtcp_mux and socket is not None and self.reports.sent and not self._said_bye:
            self._said_bye = True
            socket.send_rtcp(self.reports.compound(self.stream, bye=True))
        if socket is not None:
            socket.close()

    # -- receive
    def on_rtp(self, packet: bytes, at: float) -> None:
        """One datagram from the phone, ``at`` its arrival (``time.monotonic()`` base)."""
        parsed = rtp_payload(packet)
        if parsed is None:
            return
        pt, seq, ts, ssrc, payload = parsed
        if pt == self.event_pt:
            self.reports.received(ssrc, seq, ts, at, audio=False)
            self.keys_in.feed(ts, payload)
            return
        if pt != self.pt or not payload:
            return
        self.reports.received(ssrc, seq, ts, at)
        self.packets_in += 1
        self.octets_in += len(payload)
        self.playout.packet(seq, ts, payload, at)

    def on_rtcp(self, plain: bytes, at: float) -> None:
        """A compound RTCP packet from the phone (multiplexed on the RTP port), ``at`` its
        arrival."""
        self.rtcp_schedule.received(len(plain))
        self.reports.receive(plain, at)

    # -- send
    def send_key(self, digit: str, duration_ms: int = 160) -> None:
        """Queue a key for the PBX (RFC 4733 events in place of audio)."""
        self.keys_out.press(digit, max(40, min(duration_ms, 2000)))

    def offer(self, seq: int, ts: int, payload: bytes, at: float) -> None:
        """One of WhatsApp's packets as it arrived, ``at`` (``time.monotonic()`` base), in the
        WhatsApp leg's receive callback (its codec is this leg's, ``calls/participants.py``
        ``packets_in``): sent to the phone as it is while :attr:`forward_allowed` says so and
        no key is being sent, numbered into this leg's own stream (``trunks/passthrough.py``)."""
        allowed = self.forward_allowed
        if (
            allowed is None
            or self.socket is None
            or not self.sending
            or self.keys_out.pending
            or not one_20ms_packet(self.codec, payload)
            or not allowed()
        ):
            self._run = None
            return
        run = self._run
        if run is None:  # a new run, numbered on from what this leg sent last
            run = self._run = RunNumbering(seq, ts, self._ts, self.stream, at)
            self._encoder_stale = True
        elif run.older_than_first(seq):
            self.forward_late += 1
            return
        placed = run.place(seq, ts, self.stream, at)
        self._send(self.pt, payload, marker=False, ts=placed.pts, seq=placed.seq)
        if placed.newest:  # a reordered packet does not take our time back
            self._ts = (placed.pts + self.step) & 0xFFFFFFFF
        self.forwarded += 1

    @property
    def forwarding(self) -> bool:
        """Whether WhatsApp's packets go to the phone as they are (a forwarding run)."""
        return self._run is not None

    def _tick(self, now: float) -> None:
        pcm = self.pop()
        if self._run is not None:
            idle = self._run.quiet(now)  # the tick's time, against the packets' arrivals
            if idle < FORWARD_WAIT:
                return  # the forwarded packets carry this tick (a lost one stays a gap)
            # WhatsApp's packets stopped coming: encode again.
            self._run = None
            self._ts = (self._ts + unsent_time(idle, self.step)) & 0xFFFFFFFF
        if self._encoder_stale:
            # The last packets were WhatsApp's: the encoder starts afresh rather than from
            # the state its own last frame left (stale audio spliced into the next one).
            self.encoder.reset()
            self._encoder_stale = False
        if not self.sending:
            self._ts = (self._ts + self.step) & 0xFFFFFFFF
            return
        if pcm is None:
            pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        payload = self.encoder.encode(pcm)
        if not self.keys_out.send_tick(self._ts, self._send_event):
            self._send(self.pt, payload)
        self._ts = (self._ts + self.step) & 0xFFFFFFFF

    def _send_event(self, pt: int, payload: bytes, ts: int, marker: bool) -> None:
        """One packet of the key being sent (``KeyPresses.send_tick``, in place of audio)."""
        self._send(pt, payload, marker=marker, ts=ts)

    def _send(
        self,
        pt: int,
        payload: bytes,
        *,
        marker: bool | None = None,
        ts: int | None = None,
        seq: int | None = None,
    ) -> None:
        """One packet through the leg's sender; numbered next unless ``seq`` says (a forwarded
        packet's mapped number). Encoded audio leaves the marker to the stream (RFC 3551 §4.1:
        the first packet, and the first after a hold)."""
        if self.socket is None:
            return
        audio = pt == self.pt
        self.sender.send_now(
            payload,
            self._ts if ts is None else ts,
            seq,
            marker=marker,
            payload_type=None if audio else pt,
        )

    def _wire_rtp(self, plain: bytes) -> None:
        if self.socket is not None:
            self.socket.send_rtp(plain)


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
