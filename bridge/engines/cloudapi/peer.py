"""The WhatsApp side of a Cloud API call: an aiortc peer connection to Meta's media servers,
bridged to the call's bus through the same ``MediaChannel`` the PCM engines give the pump.

* What the WhatsApp user hears: the pump's ``send(pcm)`` → a short bounded queue →
  the bridge's own :class:`~bridge.rtc.tracks.OpusBusTrack` (16 kHz mono Opus at Meta's
  ``maxaveragebitrate``, in-band FEC, on its own 20 ms clock) → the bridge's lean RTP sender
  (:mod:`bridge.rtc.rtpsend`: packetise, SRTP, send; aiortc keeps ICE, DTLS and RTCP).
* What the agent hears: RTP → the pass-through receive path of :mod:`bridge.rtc.uplink`
  (no jitter-buffer hold, Opus decoded to 16 kHz in the loop) → a bounded queue → ``recv()``.
* DTMF: RTP packets of ``telephone-event``'s payload type are taken out before aiortc routes
  RTP (it would drop them: it has no such codec) and fed to :class:`.dtmf.DtmfDetector`; key
  presses the agent sends (``POST /call/dtmf``, a browser's ``RTCDTMFSender``) go to Meta as
  RFC 4733 packets in our audio stream (:class:`.dtmf.EventSender`, one owned task, a bounded
  queue of presses).

We are the full ICE agent against Meta's ICE-lite (aiortc takes the controlling role when the
offer says ``a=ice-lite``, and as the offerer) and the DTLS client in answers
(``a=setup:active``, aiortc's default). ICE failure or consent loss ends the channel with
:class:`~bridge.engines.base.MediaFatal`: the call fails, it is not reconnected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)

from ...audio.pcm import Pcm
from ...config import IceSettings
from ...media import BusStats, ReceiveStats
from ...rtc import counters, rtpsend
from ...rtc.dtls import diagnose
from ...rtc.ice import advertise_public_ip, server_rtc_configuration
from ...rtc.passthrough import PassThrough
from ...rtc.ports import port_scope
from ...rtc.release import release_peer_connection
from ...rtc.rfc4733 import hook_receive
from ...rtc.session import (
    Quality,
    account_concealment,
    install_transport_hooks,
    sample_peer_quality,
)
from ...rtc.tracks import OpusBusTrack
from ...rtc.uplink import Playout, take_over_receiver
from ...tasks import TaskSet
from ..base import EngineStats, MediaClosed, MediaFatal
from .dtmf import DtmfDetector, EventSender
from .sdp import DEFAULT_BITRATE, DTMF_PT, for_meta, read_remote

log = logging.getLogger(__name__)

OPUS_COMPLEXITY = 6
"""Encoder complexity for the WhatsApp leg, like the browser leg's default
(``BRIDGE_OPUS_COMPLEXITY``). Picked by ear on the quality bench's encoder curve
(docs/quality.md): at Meta's 20 kbit/s, PESQ-WB 2.51 at complexity 1 and 3.56 at 6, for about
100 µs more per 20 ms frame (0.5 % of a core per call)."""
IN_QUEUE = 25
"""Frames (500 ms) of the WhatsApp user's audio waiting for the pump; the oldest go first."""
OUT_LIMIT = 8
"""Frames (160 ms) of the agent's audio waiting for the encoder's clock; the oldest go first."""
OUT_PREFILL = 2
DTMF_QUEUE = 64
"""Key presses waiting to be sent as RFC 4733 events; more are refused (409)."""
"""Frames queued before the encoder starts taking them (absorbs the uplink's bursts)."""


class _Outgoing:
    """The bus frames waiting for :class:`OpusBusTrack`'s clock (its ``FrameSource``)."""

    def __init__(self, stats: EngineStats) -> None:
        self.stats = stats
        self._frames: deque[Pcm] = deque()
        self._playing = False
        self.dropped = 0
        self.underruns = 0

    def push(self, pcm: Pcm) -> None:
        if len(self._frames) >= OUT_LIMIT:
            self._frames.popleft()
            self.dropped += 1
            self.stats.uplink_dropped += 1
        self._frames.append(pcm)

    def pop(self) -> Pcm | None:
        if not self._playing:
            if len(self._frames) < OUT_PREFILL:
                return None
            self._playing = True
        if not self._frames:
            self._playing = False
            self.underruns += 1
            return None
        return self._frames.popleft()

    def detach(self) -> None:
        self._frames.clear()
        self._playing = False


class WhatsAppPeer:
    """One Cloud API call's peer connection to Meta (see the module docstring)."""

    def __init__(
        self,
        name: str,
        ice: IceSettings | None,
        stats: EngineStats,
        *,
        on_dtmf: Callable[[WhatsAppPeer, str, int], None],
        on_media: Callable[[WhatsAppPeer], None],
    ) -> None:
        install_transport_hooks()
        self.name = name
        self.wacid = ""
        """Meta's id of the call (set by the engine once known)."""
        self._ice = ice
        self.stats = stats
        config = server_rtc_configuration(ice) if ice is not None else None
        self.pc = RTCPeerConnection(config or RTCConfiguration(iceServers=[]))
        self.rx = BusStats()
        self._out = _Outgoing(stats)
        self._in: asyncio.Queue[Pcm | None] = asyncio.Queue(maxsize=IN_QUEUE)
        self._attached = False
        self._on_media = on_media
        self._media_seen = False
        self.dtmf = DtmfDetector(lambda digit, ms: on_dtmf(self, digit, ms))
        self.dtmf_pt = DTMF_PT
        self._events: EventSender | None = None
        self._lean: rtpsend.LeanSender | None = None
        self._dtmf_out: deque[tuple[str, int, int, Callable[[], None] | None]] = deque()
        self._tasks = TaskSet(f"meta-peer[{name}]")
        self._dtmf_task: asyncio.Task[None] | None = None
        self._track: OpusBusTrack | None = None
        self._playout: Playout | None = None
        self.state = "new"
        self.failure: str | None = None
        self.created_at = time.monotonic()
        self.connected_at: float | None = None
        self.frames_in = 0
        self.in_dropped = 0
        self.totals = Quality()
        self.last: Quality | None = None
        self.mos: float | None = None
        self._closed = False
        self.pc.on("connectionstatechange", self._on_state)

    # -- negotiation
    def _transceiver(self) -> RTCRtpTransceiver:
        audio = [t for t in self.pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise ValueError("the SDP has no audio m-line")
        return audio[0]

    def _prepare(self, bitrate: int, fec: bool) -> None:
        transceiver = self._transceiver()
        self._track = OpusBusTrack(self._out, bitrate=bitrate, complexity=OPUS_COMPLEXITY, fec=fec)
        transceiver.sender.replaceTrack(self._track)
        # The bridge's own packetise -> SRTP -> send for the track (rtc/rtpsend.py): the one
        # owner of the stream's sequence numbers (forwarded packets, DTMF events).
        self._lean = rtpsend.install(transceiver.sender)
        self._playout = take_over_receiver(
            transceiver.receiver, self._on_frame, self.rx, self._tasks
        )
        transceiver.direction = "sendrecv"

    def _local_sdp(self) -> str:
        sdp = str(self.pc.localDescription.sdp)
        if self._ice is not None:
            sdp = advertise_public_ip(sdp, self._ice.public_ip)
        return for_meta(sdp, self.dtmf_pt)

    @property
    def _ports(self) -> str:
        return self._ice.rtp_ports if self._ice is not None else ""

    async def answer(self, offer: str) -> str:
        """Meta's offer (a user-initiated call) → our answer, every candidate in it."""
        remote = read_remote(offer)
        if remote.opus_pt is None:
            raise ValueError("Meta's offer has no Opus")
        self.dtmf_pt = remote.dtmf_pt or DTMF_PT
        with port_scope(self._ports):
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            self._prepare(remote.bitrate, remote.fec)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._hook_dtmf()
        return self._local_sdp()

    async def offer(self) -> str:
        """Our offer for a business-initiated call: Opus only, telephone-event on 126."""
        transceiver = self.pc.addTransceiver("audio", direction="sendrecv")
        opus = [
            c
            for c in RTCRtpSender.getCapabilities("audio").codecs
            if c.mimeType.lower() == "audio/opus"
        ]
        transceiver.setCodecPreferences(opus)
        self._prepare(DEFAULT_BITRATE, True)
        with port_scope(self._ports):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        self._hook_dtmf()
        return self._local_sdp()

    async def apply_answer(self, answer: str) -> None:
        """Meta's answer to our offer (the connect webhook of a business-initiated call)."""
        remote = read_remote(answer)
        if remote.dtmf_pt is not None:
            self.dtmf_pt = remote.dtmf_pt
        with port_scope(self._ports):
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    @property
    def answered(self) -> bool:
        return self.pc.remoteDescription is not None

    def _hook_dtmf(self) -> None:
        """Take ``telephone-event`` RTP out before aiortc's router (which would drop it); our
        own events go out through the audio's lean sender, numbered with the audio."""
        transceiver = self._transceiver()
        hook_receive(transceiver.receiver.transport, lambda: self.dtmf_pt, self.dtmf)
        if self._lean is not None:
            self._events = EventSender(self._lean)

    # -- DTMF out (RFC 4733)
    def send_dtmf(
        self, digits: str, duration_ms: int, gap_ms: int, done: Callable[[], None] | None
    ) -> None:
        """Queue key presses; ``done`` is called once the last one was sent."""
        if self._events is None or self.dead:
            raise MediaClosed(f"{self.name}: the WhatsApp-side peer connection is not up")
        if len(self._dtmf_out) + len(digits) > DTMF_QUEUE:
            raise ValueError("too many key presses queued")
        for i, digit in enumerate(digits):
            last = i == len(digits) - 1
            self._dtmf_out.append((digit, duration_ms, gap_ms, done if last else None))
        if not self._tasks.closed and (self._dtmf_task is None or self._dtmf_task.done()):
            self._dtmf_task = self._tasks.spawn(self._send_dtmf(), "dtmf-out")

    async def _send_dtmf(self) -> None:
        while self._dtmf_out and self._events is not None and not self.dead:
            digit, duration_ms, gap_ms, done = self._dtmf_out[0]
            await self._events.play(digit, duration_ms, self.dtmf_pt)
            await asyncio.sleep(gap_ms / 1000)
            if self._dtmf_out:
                self._dtmf_out.popleft()
            if done is not None:
                done()

    # -- state
    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
        if state == "closed" and not self._closed and self.failure is None:
            # Nobody here closed it: aioice closes the connection when ICE consent expires
            # (RFC 7675: Meta stopped answering), and a DTLS close from Meta ends it too.
            state = "failed"
            self.failure = "ice: connection lost (consent expired or Meta closed it)"
            counters.failure("ice", "connection lost")
            log.warning("%s: WhatsApp-side WebRTC failed (%s)", self.name, self.failure)
        elif state == "failed" and self.failure is None:
            stage, reason = diagnose(self.pc)
            self.failure = f"{stage}: {reason}"
            counters.failure(stage, reason)
            log.warning("%s: WhatsApp-side WebRTC failed (%s)", self.name, self.failure)
        self.state = state
        if state in ("failed", "closed"):
            self._end_channel()

    def _end_channel(self) -> None:
        while True:
            try:
                self._in.put_nowait(None)
                return
            except asyncio.QueueFull:
                self._in.get_nowait()

    @property
    def dead(self) -> bool:
        return self._closed or self.state in ("failed", "closed")

    # -- media
    def _on_frame(self, pcm: Pcm) -> None:
        self.frames_in += 1
        if not self._media_seen:
            self._media_seen = True
            self._on_media(self)
        if not self._attached:
            return  # ringing (pre-accepted): nobody is listening yet
        try:
            self._in.put_nowait(pcm)
        except asyncio.QueueFull:
            self._in.get_nowait()
            self._in.put_nowait(pcm)
            self.in_dropped += 1

    def open_channel(self) -> PeerChannel:
        if self.dead:
            raise MediaClosed(f"{self.name}: the WhatsApp-side peer connection is {self.state}")
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
                f"{self.name}: the WhatsApp-side peer connection is {self.state}"
                + (f" ({self.failure})" if self.failure else "")
            )
        return item

    def detach(self) -> None:
        self._attached = False
        self._out.detach()

    # -- stats
    async def sample_quality(self) -> Quality | None:
        if self.dead or self.state != "connected":
            return None
        self.totals, self.last = await sample_peer_quality(self.pc, self.totals)
        if self._playout is not None:
            account_concealment(self.last, self._playout)
        if self._track is not None:
            self._track.report_loss(self.last.far_end_loss)
        return self.last

    def leg_json(self) -> dict[str, Any]:
        track = self._track
        return {
            "state": self.state,
            "failure": self.failure,
            "totals": self.totals.as_json(),
            "lastSample": self.last.as_json() if self.last else None,
            "lossFraction": self.last.loss_fraction if self.last else None,
            "mos": None if self.mos is None else round(self.mos, 2),
            "connectMs": None
            if self.connected_at is None
            else round((self.connected_at - self.created_at) * 1000, 1),
            "framesReceived": self.frames_in,
            "receivedDropped": self.in_dropped,
            "framesSent": track.frames_sent if track is not None else 0,
            "silentFramesSent": track.silent_frames if track is not None else 0,
            "sendDropped": self._out.dropped,
            "sendUnderruns": self._out.underruns,
            "rtpLate": self.rx.uplink_rtp_late,
            "decodeErrors": self.rx.uplink_decode_errors,
            "receiver": None if self._playout is None else self._playout.stats.as_w3c(),
            "dtmfPresses": self.dtmf.presses,
            "dtmfSent": self._events.presses if self._events is not None else 0,
        }

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._attached = False
        self._end_channel()
        self._dtmf_out.clear()
        await self._tasks.close()
        if self._track is not None:
            self._track.stop()
        try:
            await asyncio.wait_for(self.pc.close(), 5.0)
        except TimeoutError:
            log.warning("%s: closing the WhatsApp-side peer connection timed out", self.name)
        else:
            await release_peer_connection(self.pc)
        if self._playout is not None:
            self._playout.stop()


class PeerChannel:
    """The pump's ``MediaChannel`` on a :class:`WhatsAppPeer` (and a ``WebRTCLeg``)."""

    def __init__(self, peer: WhatsAppPeer) -> None:
        self.peer = peer
        self._closed = False

    @property
    def mos(self) -> float | None:
        return self.peer.mos

    @mos.setter
    def mos(self, value: float | None) -> None:
        self.peer.mos = value

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

    def forward_from(self, allowed: Callable[[], bool]) -> PassThrough | None:
        """Send the browser's Opus packets to WhatsApp untouched while ``allowed()`` (the
        other direction of ``forward_to``); ``None`` before the leg is negotiated."""
        peer = self.peer
        if peer._track is None or peer._lean is None:
            return None
        pass_through = PassThrough(allowed)
        peer._track.forward_from(pass_through, peer._lean.stream)
        return pass_through

    def forward_to(self, offer: Callable[[int, int, bytes], None] | None) -> None:
        """Hand the WhatsApp user's Opus packets, as they arrive, to ``offer`` too (a
        browser sender forwarding them: ``rtc/passthrough.py``); ``None`` stops."""
        if self.peer._playout is not None:
            self.peer._playout.forward = offer

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
