"""The WhatsApp side of a Cloud API call over SDES-SRTP (``BRIDGE_CLOUDAPI_MEDIA=sdes``): plain
RTP/SAVP on one UDP socket, keys from ``a=crypto`` (RFC 4568), no ICE, no DTLS.

Meta offers this media kind on its SIP road and with Graph signalling alike (its
``srtp_key_exchange_protocol`` number setting). :class:`SdesPeer` has the outward shape of
:class:`~.peer.WhatsAppPeer` (``answer``/``offer``/``apply_answer``, the channel the pump
reads, RFC 4733 both ways, Opus pass-through to and from the browser, ``leg_json``, an
idempotent ``close``) and is built from the same parts, minus aiortc:

* **Out**: the pump's frames → :class:`~bridge.rtc.tracks.OpusBusTrack` (16 kHz mono Opus at
  Meta's bitrate, FEC, its own 20 ms clock; silence when nothing plays; a browser's packets
  untouched while nothing mixes) → :class:`~bridge.rtc.rtpsend.RtpStream` (the one owner of
  the stream's numbers, RFC 4733 events included) → SRTP → UDP (:mod:`bridge.rtc.srtpudp`).
  **The first packet leaves as soon as the far end's address and key are known** (Meta sends
  nothing until it has one) and media never stops for the whole call.
* **In**: UDP → SRTP unprotect (failures dropped and counted) → the Opus payload to
  :class:`~bridge.rtc.uplink.Playout` (``audio/receiver.py``'s ``OpusReceiver`` on a 20 ms
  clock; and to the browser untouched while it hears the WhatsApp user alone), a
  telephone-event to the DTMF detector.
* **RTCP** both ways (:mod:`bridge.rtc.rtcp`: SR/RR with SDES CNAME, SRTCP), every
  :data:`RTCP_INTERVAL` s; the far end's reports give the loss the encoder plans FEC for and
  the round-trip time.
* **Liveness**: no authenticated packet for :data:`MEDIA_TIMEOUT` s (Meta's own limit) fails
  the channel (``MediaFatal``): with no ICE consent, nothing else would notice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ...audio.pcm import Pcm
from ...audio.receiver_stats import ReceiverStats
from ...config import IceSettings
from ...errors import BadOffer
from ...media import BusStats, ReceiveStats
from ...rtc import counters
from ...rtc.leg import Quality, account_concealment
from ...rtc.passthrough import PassThrough
from ...rtc.protection import LossProtection
from ...rtc.rfc4733 import DtmfDetector, EventSender
from ...rtc.rtcp import RtcpReports
from ...rtc.rtprecv import payload_bounds
from ...rtc.rtpsend import RtpStream
from ...rtc.sdes import Crypto, media_section, new_crypto, read_savp, session_description
from ...rtc.srtpudp import SrtpSocket
from ...rtc.tracks import OpusBusTrack
from ...rtc.uplink import Playout
from ...tasks import TaskSet
from ..base import EngineStats, MediaClosed, MediaFatal
from .channel import PeerChannel
from .peer import DTMF_QUEUE, IN_QUEUE, OPUS_COMPLEXITY, Outgoing
from .sdp import DTMF_PT, OPUS_FMTP, read_remote

log = logging.getLogger(__name__)

OPUS_PT = 111
"""Opus' payload type in our offers (Meta's)."""
RTCP_INTERVAL = 5.0
"""Seconds between our RTCP reports (RFC 3550 §6.2's minimum), randomised ±50 %."""
MEDIA_TIMEOUT = 30.0
"""Seconds without an authenticated packet before the leg fails (Meta ends such a call too)."""
_HEADER = struct.Struct("!BBHII")


class SdesPeer:
    """One call's SDES-SRTP leg to Meta (see the module docstring)."""

    what = "WhatsApp-side SDES-SRTP"

    def __init__(
        self,
        name: str,
        ice: IceSettings | None,
        stats: EngineStats,
        *,
        on_dtmf: Callable[[SdesPeer, str, int], None],
        on_media: Callable[[SdesPeer], None],
        on_closed: Callable[[SdesPeer], None] | None = None,
        rtcp_interval: float = RTCP_INTERVAL,
        media_timeout: float = MEDIA_TIMEOUT,
    ) -> None:
        self.name = name
        self.wacid = ""
        self.stats = stats
        self.rx = BusStats()
        self._ice = ice
        self._on_media, self._on_closed = on_media, on_closed
        self.rtcp_interval, self.media_timeout = rtcp_interval, media_timeout
        self.state = "new"
        self.failure: str | None = None
        self.created_at = time.monotonic()
        self.started_at: float | None = None
        self.first_sent_at: float | None = None
        self.connected_at: float | None = None
        self.mos: float | None = None
        self.last: Quality | None = None
        self.totals = Quality()
        self._tasks = TaskSet(f"sdes-peer[{name}]")
        self.socket = SrtpSocket(name, self._on_rtp, self._on_rtcp)
        self.stream = RtpStream(secrets.randbits(32), OPUS_PT)
        self.rtcp = RtcpReports(self.stream.ssrc, f"bridge-{secrets.token_hex(6)}")
        self.crypto: Crypto | None = None
        self.opus_pt, self.dtmf_pt = OPUS_PT, DTMF_PT
        self._out = Outgoing(stats)
        self._track: OpusBusTrack | None = None
        self._in: asyncio.Queue[Pcm | None] = asyncio.Queue(maxsize=IN_QUEUE)
        self._attached = False
        self._media_seen = False
        self.playout = Playout(self._on_frame, self.rx, self._tasks)
        self.dtmf = DtmfDetector(lambda digit, ms: on_dtmf(self, digit, ms))
        self._events = EventSender(_StreamSender(self))
        self._dtmf_out: deque[tuple[str, int, int, Callable[[], None] | None]] = deque()
        self._dtmf_task: asyncio.Task[None] | None = None
        self._close_lock = asyncio.Lock()
        self._closed = self._close_expected = False
        self.frames_in = self.in_dropped = self.unknown_payloads = 0

    # -- negotiation
    async def _open(self, remote_host: str | None) -> str:
        """Bind the socket; the address our SDP gives (``BRIDGE_PUBLIC_IP``, else the first
        ``BRIDGE_ICE_ADDRESSES``, else the one that routes to the far end)."""
        ice = self._ice
        bind = ice.ice_addresses[0] if ice is not None and ice.ice_addresses else ""
        v6 = ":" in (bind or remote_host or "")
        host, _ = await self.socket.open(
            bind or ("::" if v6 else "0.0.0.0"), ice.rtp_ports if ice else ""
        )
        if ice is not None and ice.public_ip:
            return ice.public_ip
        if host not in ("0.0.0.0", "::"):
            return host
        return _route_to(remote_host or "", v6)

    def _sdp(
        self, address: str, crypto: Crypto, media_lines: tuple[str, ...] = (), index: int = 0
    ) -> str:
        payloads = [
            (self.opus_pt, "opus/48000/2", OPUS_FMTP),
            (self.dtmf_pt, "telephone-event/8000", "0-15"),
        ]
        audio = media_section(
            address,
            self.socket.local[1],
            payloads,
            crypto,
            ssrc=self.stream.ssrc,
            cname=self.rtcp.cname.decode(),
        )
        lines: list[str] = []
        for i, m in enumerate(media_lines or ("m=audio",)):
            if i == index:
                lines += audio
            else:  # RFC 3264 §6: every offered stream is answered; the others refused
                parts = m.split()
                lines.append(" ".join([parts[0], "0", *parts[2:]]))
        return session_description(address, self.stream.ssrc, lines)

    async def answer(self, offer: str) -> str:
        """Meta's SDES offer → our answer (a fresh key, the offer's crypto tag and suite);
        our media starts at once. Raises :class:`BadOffer` (a SIP engine: 488) for an offer
        that is not RTP/SAVP with a usable ``a=crypto`` and Opus."""
        remote = read_savp(offer)
        audio = read_remote(offer)
        if audio.opus_pt is None:
            raise BadOffer("the SDP's audio has no opus/48000")
        self.opus_pt, self.dtmf_pt = audio.opus_pt, audio.dtmf_pt or DTMF_PT
        self.crypto = new_crypto(remote.crypto.tag, remote.crypto.suite)
        address = await self._open(remote.address)
        sdp = self._sdp(address, self.crypto, remote.media_lines, remote.index)
        self._start(
            remote.crypto, (remote.address, remote.port), remote.rtcp, audio.bitrate, audio.fec
        )
        return sdp

    async def offer(self) -> str:
        """Our offer for a business-initiated call: Opus on 111, telephone-event on 126."""
        self.crypto = new_crypto()
        return self._sdp(await self._open(None), self.crypto)

    async def apply_answer(self, answer: str) -> None:
        """Meta's answer to our offer: its key and address; our media starts at once."""
        if self.crypto is None:
            raise BadOffer("an answer came before our offer")
        remote = read_savp(answer)
        audio = read_remote(answer)
        if remote.crypto.suite != self.crypto.suite:
            raise BadOffer(f"the answer's a=crypto suite {remote.crypto.suite} is not ours")
        self.dtmf_pt = audio.dtmf_pt or self.dtmf_pt
        if audio.opus_pt is not None:
            self.opus_pt = audio.opus_pt
        self._start(
            remote.crypto, (remote.address, remote.port), remote.rtcp, audio.bitrate, audio.fec
        )

    def _start(
        self, theirs: Crypto, rtp: tuple[str, int], rtcp: tuple[str, int], bitrate: int, fec: bool
    ) -> None:
        assert self.crypto is not None
        if self._closed or self._track is not None:
            return
        self.socket.set_keys(self.crypto.key, theirs.key, self.crypto.profile)
        self.socket.set_remote(rtp, rtcp)
        self.stream.payload_type = self.opus_pt
        # FEC follows Meta's reports as they arrive (rtc/protection.py), as on the DTLS leg:
        # none before the first one (LBRR at Meta's 20 kbit/s costs a clean link dearly).
        self._track = OpusBusTrack(
            self._out,
            bitrate=bitrate,
            complexity=OPUS_COMPLEXITY,
            fec=fec,
            protection=LossProtection(fec=fec, unknown=0),
        )
        self.state = "connecting"
        self.started_at = time.monotonic()
        self._tasks.spawn(self._send_media(self._track), "rtp-out")
        self._tasks.spawn(self._reports(), "rtcp")

    @property
    def answered(self) -> bool:
        return self._track is not None

    def expect_close(self) -> None:
        """The call is over in signalling: the far end going quiet is no failure now."""
        self._close_expected = True

    # -- sending
    async def _send_media(self, track: OpusBusTrack) -> None:
        while True:
            packet = await track.recv()
            await self.send_packet(packet.data, packet.pts, packet.seq)

    async def send_packet(
        self,
        payload: bytes,
        pts: int,
        seq: int | None = None,
        *,
        marker: bool | None = None,
        payload_type: int | None = None,
    ) -> None:
        """Packetise, protect and send one packet of our stream (RFC 4733 events too)."""
        stream = self.stream
        plain = stream.packetise(payload, pts, seq, marker=marker, payload_type=payload_type)
        self.socket.send_rtp(plain)
        if self.first_sent_at is None:
            self.first_sent_at = time.monotonic()
        if payload_type is None and stream.last_pts == pts & 0xFFFFFFFF:
            self.rtcp.sent_audio(stream.timestamp(pts))

    async def _reports(self) -> None:
        """RTCP every ``rtcp_interval`` (±50 %, RFC 3550 §6.2; the first after half of one),
        and the media watchdog."""
        wait = self.rtcp_interval / 2
        while True:
            await asyncio.sleep(wait * random.uniform(0.5, 1.5))
            wait = self.rtcp_interval
            self.socket.send_rtcp(self.rtcp.compound(self.stream))
            self._watch()

    def _watch(self) -> None:
        last = self.playout.last_packet or self.started_at
        quiet = time.monotonic() - (last or time.monotonic())
        if quiet > self.media_timeout and not self._close_expected and self.failure is None:
            self.failure = f"media: no packet from Meta for {quiet:.0f} s"
            counters.failure("media", "no media")
            log.warning("%s: %s failed: %s", self.name, self.what, self.failure)
            self.state = "failed"
            self._end_channel()

    # -- receiving
    def _on_rtp(self, plain: bytes) -> None:
        bounds = payload_bounds(plain)
        if bounds is None:
            self.socket.junk += 1
            return
        _, second, seq, timestamp, ssrc = _HEADER.unpack_from(plain)
        pt = second & 0x7F
        payload = plain[bounds[0] : bounds[1]]
        if self.connected_at is None:
            self.connected_at = time.monotonic()
            if self.state == "connecting":
                self.state = "connected"
        if pt == self.opus_pt:
            self.rtcp.received(ssrc, seq, timestamp)
            self.playout.packet(seq, timestamp, payload)
        elif pt == self.dtmf_pt:
            self.rtcp.received(ssrc, seq, timestamp, audio=False)
            self.dtmf.feed(timestamp, payload)
        else:
            self.unknown_payloads += 1

    def _on_rtcp(self, plain: bytes) -> None:
        reports = self.rtcp.far_reports
        self.rtcp.receive(plain)
        if self._track is not None and self.rtcp.far_reports != reports:
            self._track.far_end_report(self.rtcp.far.fraction_lost)

    def _on_frame(self, pcm: Pcm) -> None:
        self.frames_in += 1
        if not self._media_seen:
            self._media_seen = True
            self._on_media(self)
        if not self._attached:
            return  # ringing: nobody listens yet
        if self._in.full():
            self._in.get_nowait()
            self.in_dropped += 1
        self._in.put_nowait(pcm)

    # -- the pump's channel
    @property
    def dead(self) -> bool:
        return self._closed or self.state == "failed"

    def _end_channel(self) -> None:
        while self._in.full():
            self._in.get_nowait()
        self._in.put_nowait(None)

    def open_channel(self) -> PeerChannel:
        if self.dead:
            raise MediaClosed(f"{self.name}: the WhatsApp-side SDES leg is {self.state}")
        while not self._in.empty():
            self._in.get_nowait()
        self._attached = True
        return PeerChannel(self)

    def send(self, pcm: Pcm) -> None:
        self._out.push(pcm)

    async def recv(self) -> Pcm:
        item = await self._in.get()
        if item is None:
            self._end_channel()  # stays ended for any later reader
            raise MediaFatal(
                f"{self.name}: the WhatsApp-side SDES leg is {self.state}"
                + (f" ({self.failure})" if self.failure else "")
            )
        return item

    def detach(self) -> None:
        self._attached = False
        self._out.detach()

    def forward_from(self, allowed: Callable[[], bool]) -> PassThrough | None:
        """Send the browser's Opus packets to WhatsApp untouched while ``allowed()``, numbered
        by our stream; ``None`` before negotiation."""
        if self._closed or self._track is None:
            return None
        pass_through = PassThrough(allowed)
        self._track.forward_from(pass_through, self.stream)
        return pass_through

    def forward_to(self, offer: Callable[[int, int, bytes], None] | None) -> None:
        """Also hand each Opus packet from WhatsApp, untouched, to ``offer``."""
        self.playout.forward = offer

    def report_loss_beyond(self, loss: Callable[[], float] | None) -> None:
        """Accepted for the ``PeerLeg`` shape; our receiver reports carry our own loss."""

    # -- DTMF out (RFC 4733)
    def send_dtmf(
        self, digits: str, duration_ms: int, gap_ms: int, done: Callable[[], None] | None
    ) -> None:
        """Queue key presses; ``done`` is called once the last one was sent."""
        if self._track is None or self.dead:
            raise MediaClosed(f"{self.name}: the WhatsApp-side SDES leg is not up")
        if len(self._dtmf_out) + len(digits) > DTMF_QUEUE:
            raise ValueError("too many key presses queued")
        for i, digit in enumerate(digits):
            last = i == len(digits) - 1
            self._dtmf_out.append((digit, duration_ms, gap_ms, done if last else None))
        if not self._tasks.closed and (self._dtmf_task is None or self._dtmf_task.done()):
            self._dtmf_task = self._tasks.spawn(self._send_dtmf(), "dtmf-out")

    async def _send_dtmf(self) -> None:
        while self._dtmf_out and not self.dead:
            digit, duration_ms, gap_ms, done = self._dtmf_out[0]
            await self._events.play(digit, duration_ms, self.dtmf_pt)
            await asyncio.sleep(gap_ms / 1000)
            if self._dtmf_out:
                self._dtmf_out.popleft()
            if done is not None:
                done()

    # -- stats
    @property
    def far_end_loss(self) -> float:
        return self.rtcp.far.fraction_lost if self.rtcp.far_reports else 0.0

    async def sample_quality(self) -> Quality | None:
        """The change of the RTP/RTCP counters since the last sample (and the far end's loss
        to the encoder); ``None`` until media has come."""
        if self._closed or self.state != "connected":
            return None
        r, far = self.rtcp, self.rtcp.far
        sent = (self.stream.audio_packets - far.packets_lost) if r.far_reports else 0
        now = Quality(
            uplink_packets=r.packets_received,
            uplink_lost=r.packets_lost,
            uplink_jitter_s=r.jitter_s,
            downlink_packets=max(0, sent),
            downlink_lost=far.packets_lost,
            downlink_jitter_s=far.jitter_s if r.far_reports else None,
            rtt_s=far.rtt_s,
        )
        prev = self.totals
        delta = Quality(
            uplink_packets=max(0, now.uplink_packets - prev.uplink_packets),
            uplink_lost=max(0, now.uplink_lost - prev.uplink_lost),
            uplink_jitter_s=now.uplink_jitter_s,
            downlink_packets=max(0, now.downlink_packets - prev.downlink_packets),
            downlink_lost=max(0, now.downlink_lost - prev.downlink_lost),
            downlink_jitter_s=now.downlink_jitter_s,
            rtt_s=now.rtt_s,
        )
        self.totals = now
        account_concealment(delta, self.playout)
        self.last = delta
        return delta

    @property
    def receive_stats(self) -> ReceiveStats:
        """The Opus receiver's counters (summed with ``leg="whatsapp"``)."""
        return self.rx.receive

    @property
    def timeline_stats(self) -> tuple[ReceiverStats | None, float | None]:
        """The receiver's counters and the last round-trip time (``calls/reports.py``)."""
        return self.playout.stats, self.rtcp.far.rtt_s

    @property
    def receiver_stats(self) -> ReceiverStats | None:
        """The receiver's counters (the timeline reads them once a second)."""
        return self.playout.stats

    def leg_json(self) -> dict[str, Any]:
        track, sock, last = self._track, self.socket, self.last
        first = None
        if self.first_sent_at is not None and self.started_at is not None:
            first = round((self.first_sent_at - self.started_at) * 1000, 1)
        return {
            "media": "sdes",
            "state": self.state,
            "totals": self.totals.as_json(),
            "lastSample": last.as_json() if last else None,
            "lossFraction": last.loss_fraction if last else None,
            "mos": None if self.mos is None else round(self.mos, 2),
            "receiver": self.playout.stats.as_w3c(),
            "failure": self.failure,
            "connectMs": None
            if self.connected_at is None
            else round((self.connected_at - self.created_at) * 1000, 1),
            "firstPacketMs": first,
            "local": f"{sock.local[0]}:{sock.local[1]}",
            "remote": None if sock.rtp_to is None else f"{sock.rtp_to[0]}:{sock.rtp_to[1]}",
            "latched": sock.latched,
            "framesReceived": self.frames_in,
            "receivedDropped": self.in_dropped,
            "framesSent": track.frames_sent if track is not None else 0,
            "silentFramesSent": track.silent_frames if track is not None else 0,
            "sendDropped": self._out.dropped,
            "sendUnderruns": self._out.underruns,
            "srtpAuthFailed": sock.auth_failed,
            "junkDropped": sock.junk,
            "rtcpSent": sock.rtcp_sent,
            "rtcpReceived": sock.rtcp_received,
            "rttMs": None if self.rtcp.far.rtt_s is None else round(self.rtcp.far.rtt_s * 1000, 1),
            "rtpLate": self.rx.uplink_rtp_late,
            "decodeErrors": self.rx.uplink_decode_errors,
            "dtmfPresses": self.dtmf.presses,
            "dtmfSent": self._events.presses,
        }

    # -- close
    async def close(self) -> None:
        """Close (idempotent; concurrent callers share one teardown): stop feeding the pump,
        the owned tasks, a last RTCP report with BYE, the socket, the receiver."""
        async with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._attached = False
            self._end_channel()
            self._dtmf_out.clear()
            if self._on_closed is not None:
                self._on_closed(self)
            await self._tasks.close()
            if self._track is not None:
                self._track.stop()
                if self.socket.ready:
                    self.socket.send_rtcp(self.rtcp.compound(self.stream, bye=True))
            self.socket.close()
            self.playout.stop()
            self.state = "closed"


class _StreamSender:
    """What :class:`~bridge.rtc.rfc4733.EventSender` writes through: our stream and its send."""

    def __init__(self, peer: SdesPeer) -> None:
        self.stream = peer.stream
        self.send = peer.send_packet


def _route_to(host: str, v6: bool) -> str:
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
