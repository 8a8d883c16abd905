"""``WebRTCSession``: one browser peer connection for one call, bridged to its bus."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from ..audio.pcm import Pcm
from ..audio.receiver import ReceiverStats
from ..config import IceSettings, MediaSettings
from ..errors import AtCapacity, BadOffer
from ..media import CallBus, DownlinkSink, Role
from ..tasks import TaskSet
from . import counters
from .dtls import diagnose, install_dtls_hooks
from .guard import install_udp_guard
from .ice import advertise_public_ip, install_port_hook, server_rtc_configuration
from .passthrough import PassThrough
from .ports import port_scope
from .red import RedStats, add_red, hook_red, offered_red
from .release import release_peer_connection
from .rfc4733 import DtmfDetector, add_telephone_event, hook_receive, offered_telephone_event
from .sdp import answer_fmtp, opus_parameters, with_opus_fmtp
from .tracks import BusAudioTrack, OpusBusTrack
from .uplink import Playout, take_over_receiver

log = logging.getLogger(__name__)

_ids = itertools.count(1)

OPUS_CLOCK = 48_000
"""RTP clock rate of Opus (RFC 7587): aiortc reports jitter in these units."""


@dataclass
class Quality:
    """One sample of a session's RTP/RTCP statistics (deltas since the previous sample)."""

    uplink_packets: int = 0
    uplink_lost: int = 0
    uplink_jitter_s: float = 0.0
    downlink_packets: int = 0
    downlink_lost: int = 0
    downlink_jitter_s: float | None = None
    rtt_s: float | None = None
    loss_fraction: float = 0.0
    """What the MOS estimate counts as lost: the larger of the audio our receiver had to
    conceal and the loss the far end reports of what we send."""
    concealed_fraction: float = 0.0

    @property
    def far_end_loss(self) -> float:
        """The fraction of what we sent that the far end's receiver reports say was lost."""
        sent = self.downlink_packets + self.downlink_lost
        return self.downlink_lost / sent if sent else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "uplinkPacketsReceived": self.uplink_packets,
            "uplinkPacketsLost": self.uplink_lost,
            "uplinkJitterMs": round(self.uplink_jitter_s * 1000, 2),
            "downlinkPacketsReceived": self.downlink_packets,
            "downlinkPacketsLost": self.downlink_lost,
            "downlinkJitterMs": None
            if self.downlink_jitter_s is None
            else round(self.downlink_jitter_s * 1000, 2),
            "rttMs": None if self.rtt_s is None else round(self.rtt_s * 1000, 2),
            "concealedFraction": round(self.concealed_fraction, 4),
        }


async def sample_peer_quality(pc: RTCPeerConnection, prev: Quality) -> tuple[Quality, Quality]:
    """A peer connection's RTP/RTCP statistics now (cumulative) and their change since ``prev``.

    ``uplink`` is what the bridge receives on this peer connection, ``downlink`` what it sends
    (as the far end's RTCP receiver reports tell it)."""
    report = await pc.getStats()
    now = Quality()
    for stat in report.values():
        kind = getattr(stat, "type", "")
        if kind == "inbound-rtp":
            now.uplink_packets += stat.packetsReceived or 0
            now.uplink_lost += max(0, stat.packetsLost or 0)
            now.uplink_jitter_s = max(now.uplink_jitter_s, (stat.jitter or 0) / OPUS_CLOCK)
        elif kind == "remote-inbound-rtp":
            now.downlink_packets += stat.packetsReceived or 0
            now.downlink_lost += max(0, stat.packetsLost or 0)
            now.downlink_jitter_s = (stat.jitter or 0) / OPUS_CLOCK
            if stat.roundTripTime is not None:
                now.rtt_s = float(stat.roundTripTime)
    delta = Quality(
        uplink_packets=max(0, now.uplink_packets - prev.uplink_packets),
        uplink_lost=max(0, now.uplink_lost - prev.uplink_lost),
        uplink_jitter_s=now.uplink_jitter_s,
        downlink_packets=max(0, now.downlink_packets - prev.downlink_packets),
        downlink_lost=max(0, now.downlink_lost - prev.downlink_lost),
        downlink_jitter_s=now.downlink_jitter_s,
        rtt_s=now.rtt_s,
    )
    up = delta.uplink_packets + delta.uplink_lost
    down = delta.downlink_packets + delta.downlink_lost
    delta.loss_fraction = max(
        delta.uplink_lost / up if up else 0.0, delta.downlink_lost / down if down else 0.0
    )
    return now, delta


def account_concealment(delta: Quality, playout: Playout) -> None:
    """Count what the listener misses, not what the network lost: a loss the receiver rebuilt
    from FEC is heard; a concealed one (or a packet too late to play) is not."""
    delta.concealed_fraction = playout.concealed_since_last()
    delta.loss_fraction = max(delta.concealed_fraction, delta.far_end_loss)


def install_transport_hooks() -> None:
    """The process-wide aioice/aiortc hooks every session relies on (idempotent): pinned
    ports, the UDP guard, DTLS ciphers and failure reasons."""
    install_port_hook()
    install_udp_guard()
    install_dtls_hooks()


class WebRTCSession:
    """Terminates one browser's Opus RTP for a call.

    Uplink: remote track → stateful resample to 16 kHz mono → exact 20 ms frames → bus.
    Downlink: bus → jitter buffer → paced :class:`BusAudioTrack` → Opus → browser.
    """

    def __init__(
        self,
        call_id: str,
        bus: CallBus,
        media: MediaSettings,
        ice: IceSettings,
        on_state: Callable[[WebRTCSession, str], None] | None = None,
        configuration: RTCConfiguration | None = None,
        *,
        participant_id: str = "agent",
        role: Role = Role.AGENT,
        on_dtmf: Callable[[WebRTCSession, str, int], None] | None = None,
    ) -> None:
        install_transport_hooks()
        self._on_dtmf = on_dtmf
        self.dtmf: DtmfDetector | None = None
        """The browser's key presses (``RTCDTMFSender``: RFC 4733 on the negotiated type)."""
        self.call_id = call_id
        self.bus = bus
        self.participant_id = participant_id
        self.role = role
        self._microphone: Callable[[Pcm], None] | None = None
        self.media = media
        self.public_ip = ice.public_ip
        self.rtp_ports = ice.rtp_ports
        self.id = f"webrtc:{next(_ids)}"
        self.state = "new"
        self._on_state = on_state
        self._configuration = configuration or server_rtc_configuration(ice)
        self._pc: RTCPeerConnection | None = None
        self._track: BusAudioTrack | OpusBusTrack | None = None
        self._sink: DownlinkSink | None = None
        self._tasks = TaskSet(f"rtc[{call_id}]")
        self._close_lock = asyncio.Lock()
        self._closed = False
        self.uplink_frames = 0
        self._playout: Playout | None = None
        self.receive_bitrate: int | None = None
        """The most the browser should send (its answer's ``maxaveragebitrate``), when the
        call needs less than the default (a Cloud API call: what Meta takes)."""
        self.red = RedStats()
        """RED packets from the browser (``rtc/red.py``), when it sends them."""
        self.offered_at = time.monotonic()
        self.connected_at: float | None = None
        self.totals = Quality()
        """Cumulative RTP counters (absolute, not deltas)."""
        self.last: Quality | None = None
        self.mos: float | None = None
        self.failure_stage: str | None = None
        self.failure_reason: str | None = None
        """Why the session failed (``ice``/``dtls``/``timeout`` and a reason), else ``None``."""

    def _set_state(self, state: str) -> None:
        if state == self.state or self.state in ("closed", "failed"):
            return  # both are final
        self.state = state
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
        if self._on_state is not None:
            self._on_state(self, state)

    async def accept_offer(self, sdp: str) -> str:
        """Apply the browser's offer; return the answer SDP with every candidate in it."""
        pc = RTCPeerConnection(self._configuration)
        self._pc = pc
        self.bus.add_user(self.id)

        @pc.on("connectionstatechange")
        def on_connectionstatechange() -> None:
            if pc.connectionState == "failed":
                self._record_failure(*diagnose(pc))
            # aiortc's states (new, connecting, connected, failed, closed) are the snapshot's.
            self._set_state(pc.connectionState)
            if pc.connectionState == "failed":
                self._tasks.spawn(self.close(), "close-failed")

        try:
            with port_scope(self.rtp_ports):  # aioice binds inside BRIDGE_RTP_PORTS
                answer_sdp = await self._negotiate(pc, sdp)
        except (BadOffer, AtCapacity):
            await self.close()
            raise
        except Exception as exc:  # aiortc raises ValueError, KeyError, ... on bad SDP
            await self.close()
            raise BadOffer(f"cannot answer this offer: {exc or type(exc).__name__}") from exc
        self._set_state("connecting")
        return advertise_public_ip(answer_sdp, self.public_ip)

    async def _negotiate(self, pc: RTCPeerConnection, sdp: str) -> str:
        """setRemoteDescription, tracks, createAnswer, setLocalDescription (which gathers)."""
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise BadOffer("the offer has no audio m-line", code="unsupported_media")
        # The participant's microphone and what it hears go through the call's conference
        # (straight to the bus while it is the only one: see media/conference.py).
        self._microphone, sink = self.bus.conference.join(self.participant_id, self.role)
        self._sink = sink
        st = self.media
        # A browser may cap what it wants to receive (RFC 7587 §6.1 maxaveragebitrate).
        try:
            cap = int(opus_parameters(sdp).get("maxaveragebitrate", st.opus_bitrate))
        except ValueError:
            cap = st.opus_bitrate
        self._track = (
            OpusBusTrack(
                sink,
                bitrate=max(6_000, min(st.opus_bitrate, cap)),
                complexity=st.opus_complexity,
                fec=st.opus_fec,
                dtx=st.opus_dtx,
            )
            if st.opus_direct
            else BusAudioTrack(sink)
        )
        audio[0].sender.replaceTrack(self._track)
        # The uplink: the bridge's receiver instead of aiortc's jitter buffer and decoder
        # thread (see uplink.py).
        self._playout = take_over_receiver(
            audio[0].receiver, self._uplink_frame, self.bus.stats, self._tasks
        )
        audio[0].direction = "sendrecv"
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        # Ask for in-band FEC, mono, 16 kHz (see rtc/sdp.py): aiortc's answer asks for nothing.
        answer_sdp = with_opus_fmtp(
            str(pc.localDescription.sdp), answer_fmtp(self.receive_bitrate)
        )
        # RED (RFC 2198) when the browser offers it over Opus: every frame sent twice.
        red = offered_red(sdp) if st.opus_red else None
        if red is not None and self._playout is not None:
            answer_sdp = add_red(answer_sdp, *red)
            hook_red(audio[0].receiver.transport, *red, self._playout.redundant, self.red)
        # aiortc has no telephone-event: answer it ourselves and take its packets out before
        # aiortc's router (see rfc4733.py), so the browser's RTCDTMFSender works.
        event = offered_telephone_event(sdp)
        if event is not None:
            pt, rate = event
            self.dtmf = DtmfDetector(self._dtmf_press, rate)
            hook_receive(audio[0].receiver.transport, lambda: pt, self.dtmf)
            answer_sdp = add_telephone_event(answer_sdp, pt, rate)
        return answer_sdp

    def _dtmf_press(self, digit: str, duration_ms: int) -> None:
        if self._on_dtmf is not None and not self._closed:
            self._on_dtmf(self, digit, duration_ms)

    def forward_uplink(self, offer: Callable[[int, int, bytes], None] | None) -> None:
        """Also hand the browser's Opus packets, untouched, to ``offer`` (``None`` stops)."""
        if self._playout is not None:
            self._playout.forward = offer

    def forward_downlink(self, allowed: Callable[[], bool]) -> PassThrough | None:
        """Let this browser's sender forward another leg's Opus packets while ``allowed()``
        (``rtc/passthrough.py``); ``None`` when it encodes with aiortc's encoder (no direct
        Opus) or has no sender yet."""
        pc, track = self._pc, self._track
        if pc is None or not isinstance(track, OpusBusTrack):
            return None
        sender = next(
            (t.sender for t in pc.getTransceivers() if t.kind == "audio" and t.sender), None
        )
        if sender is None:
            return None
        pass_through = PassThrough(allowed)
        track.forward_from(pass_through, sender)
        return pass_through

    @property
    def last_media(self) -> float | None:
        """When the browser's latest RTP packet arrived (monotonic)."""
        return self._playout.last_packet if self._playout is not None else None

    @property
    def receiver_stats(self) -> ReceiverStats | None:
        """The uplink receiver's counters (``None`` before the offer was answered)."""
        return self._playout.stats if self._playout is not None else None

    def _uplink_frame(self, pcm: Any) -> None:
        if self._microphone is not None:
            self._microphone(pcm)
        self.uplink_frames += 1

    @property
    def jitter_buffer(self) -> Any:
        """The downlink jitter buffer (``None`` before the offer was answered)."""
        return self._sink.jitter if self._sink is not None else None

    async def sample_quality(self) -> Quality | None:
        """Read aiortc's RTP/RTCP statistics; returns the change since the last sample."""
        pc = self._pc
        if pc is None or self._closed:
            return None
        self.totals, delta = await sample_peer_quality(pc, self.totals)
        if self._playout is not None:
            account_concealment(delta, self._playout)
        self.last = delta
        if isinstance(self._track, OpusBusTrack):
            self._track.report_loss(delta.far_end_loss)
        return delta

    def stats_json(self) -> dict[str, Any]:
        """This session's numbers for ``GET /call/{callID}/stats``."""
        jitter = self.jitter_buffer
        return {
            "state": self.state,
            "totals": self.totals.as_json(),
            "lastSample": self.last.as_json() if self.last else None,
            "lossFraction": self.last.loss_fraction if self.last else None,
            "mos": None if self.mos is None else round(self.mos, 2),
            "offerToConnectedMs": None
            if self.connected_at is None
            else round((self.connected_at - self.offered_at) * 1000, 1),
            "uplinkFrames": self.uplink_frames,
            "redPackets": self.red.packets,
            # Downlink packets forwarded untouched from the WhatsApp leg (rtc/passthrough.py).
            "downlinkForwarded": self._track.forwarded_frames
            if isinstance(self._track, OpusBusTrack)
            else 0,
            # The uplink receiver, in W3C RTCInboundRtpStreamStats names (audio/receiver.py).
            "receiver": None if self._playout is None else self._playout.stats.as_w3c(),
            "jitterBuffer": None
            if jitter is None
            else {
                "depth": len(jitter),
                "target": jitter.target,
                "underruns": jitter.stats.underruns,
                "overflowDrops": jitter.stats.overflow_drops,
                "latencyDrops": jitter.stats.latency_drops,
                "played": jitter.stats.played,
            },
        }

    def _record_failure(self, stage: str, reason: str) -> None:
        """Log (WARNING) and count the first failure of this session; later ones are echoes."""
        if self.failure_reason is not None:
            return
        self.failure_stage, self.failure_reason = stage, reason
        counters.failure(stage, reason)
        log.warning(
            "call %s: WebRTC session failed (%s): %s",
            self.call_id,
            stage,
            reason,
            extra={"call_id": self.call_id},
        )

    def fail(self, why: str) -> None:
        """Mark the session failed (a timeout) and close it in the background."""
        if self._closed or self.state in ("failed", "closed"):
            return
        self._record_failure("timeout", why)
        self._set_state("failed")
        self._tasks.spawn(self.close(), "close-failed")

    async def close(self) -> None:
        """Close the peer connection and stop both directions (idempotent)."""
        async with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self.bus.remove_user(self.id)
            if self._microphone is not None and self._sink is not None:
                self.bus.conference.leave(self.participant_id, self._sink)
            self._microphone = None
            if self._track is not None:
                self._track.stop()
            pc = self._pc
            if pc is not None:
                try:
                    await asyncio.wait_for(pc.close(), 5.0)
                except TimeoutError:
                    log.warning("call %s: peer connection close timed out", self.call_id)
                else:
                    # Free it (and the codec threads it owns) now, not at the next gc run.
                    await release_peer_connection(pc)
            if self._playout is not None:
                self._playout.stop()
            await self._tasks.close()
            if self.state != "failed":
                self._set_state("closed")
