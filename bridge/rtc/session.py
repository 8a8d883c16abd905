"""``WebRTCSession``: one browser peer connection for one call, bridged to its bus.

The peer connection itself (set-up, failure diagnosis, close, stats) is a :class:`~.leg.PeerLeg`;
what is the browser's own is here: its offer and our answer, its place in the call's
conference (a participant with a role), RED and its key presses."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from ..audio.dtx import DtxGate
from ..config import IceSettings, MediaSettings
from ..errors import AtCapacity, BadOffer, CallStateError
from ..media import CallBus, CallPort, DownlinkSink, LevelMeter, Role
from .browser_sdp import (
    answer_fmtp,
    asks_for_dtx,
    check_pairs,
    open_candidates,
    opus_parameters,
    with_opus_fmtp,
)
from .leg import PeerLeg
from .protection import EncoderSetting, LossProtection
from .red import RedStats, RedWrapper, add_red, offered_red
from .rfc4733 import DtmfDetector, add_telephone_event
from .sdp import audio_section
from .tracks import OpusBusTrack

_ids = itertools.count(1)

StateCallback = Callable[["WebRTCSession", str], None]
DtmfCallback = Callable[["WebRTCSession", str, int], None]


class WebRTCSession(PeerLeg):
    """Terminates one browser's Opus RTP for a call (one participant of its conference).

    Uplink: RTP → the leg's receiver (``uplink.py``) → 20 ms 16 kHz frames → its door into the
    call (``media/conference.py`` ``CallPort.accept``). Downlink: its door's ``take`` (its sink,
    a jitter buffer) → paced :class:`OpusBusTrack` → the lean RTP sender (``rtpsend.py``) →
    browser.
    """

    what = "WebRTC session"
    far_end = "the browser"
    track_class: type[OpusBusTrack] = OpusBusTrack
    """What plays the downlink (a connected leg's parks between calls: ``connected.py``)."""

    def __init__(
        self,
        call_id: str,
        bus: CallBus,
        media: MediaSettings,
        ice: IceSettings,
        on_state: StateCallback | None = None,
        configuration: RTCConfiguration | None = None,
        *,
        participant_id: str = "agent",
        role: Role = Role.AGENT,
        on_dtmf: DtmfCallback | None = None,
    ) -> None:
        super().__init__(
            f"call {call_id}",
            ice,
            configuration,
            tasks=f"rtc[{call_id}]",
            log_extra={"call_id": call_id},
        )
        self._on_dtmf = on_dtmf
        self.dtmf: DtmfDetector | None = None
        """The browser's key presses (``RTCDTMFSender``: RFC 4733 on the negotiated type)."""
        self.call_id = call_id
        self.bus = bus
        self.participant_id = participant_id
        self.role = role
        self._port: CallPort | None = None
        """Its door into the call (kept once it left: its sink's numbers)."""
        self.media = media
        self.id = f"webrtc:{next(_ids)}"
        self._on_state = on_state
        self.uplink_frames = 0
        self.sends_audio = True
        """Whether the browser said it sends audio (its offer ``sendrecv`` or ``sendonly``, RFC
        3264 §6.1): a listener's ``recvonly`` sends no RTP, and its silence is no failure."""
        self.receive_bitrate: int | None = None
        """The most the browser should send (its answer's ``maxaveragebitrate``), when the
        call needs less than the default (a Cloud API call: what Meta takes)."""
        self.red = RedStats()
        """RED packets from the browser (``rtc/red.py``), when it sends them."""
        self.mic_level = LevelMeter()
        """The level of what the browser sends (its microphone, as the receiver plays it)."""
        self.sent_level = LevelMeter()
        """The level of what the bridge sends the browser (its track's frames)."""

    @property
    def offered_at(self) -> float:
        """When the offer came (monotonic): the session is made for it."""
        return self.created_at

    @property
    def media_since(self) -> float | None:
        """Since when the browser's RTP is due (its connection): the media timeout counts from
        here, or from its latest packet when later."""
        return self.connected_at

    def _state_changed(self, state: str) -> None:
        if self._on_state is not None:
            self._on_state(self, state)
        if state in ("failed", "closed") and not self._closed and not self._tasks.closed:
            # Failed, or closed by the browser (its DTLS close_notify: aiortc closed the peer
            # connection, not the rest of the session: its door into the call, its RTP).
            # For good: a connected leg's own close only parks it (``connected.py``).
            self._tasks.spawn(WebRTCSession.close(self), f"close-{state}")

    async def accept_offer(self, sdp: str) -> str:
        """Apply the browser's offer; return the answer SDP with every candidate in it."""
        self.bus.add_user(self.id)
        try:
            with self.ports():
                answer_sdp = await self._negotiate(self.pc, sdp)
        except (BadOffer, AtCapacity):
            await self.close()
            raise
        except Exception as exc:  # aiortc raises ValueError, KeyError, ... on bad SDP
            overtaken = self._closed  # a close or a newer offer came meanwhile: not the SDP's fault
            await self.close()
            if overtaken:
                raise CallStateError(
                    f"call {self.call_id} changed while the offer was answered (the session "
                    "was closed or replaced)"
                ) from exc
            raise BadOffer(f"cannot answer this offer: {exc or type(exc).__name__}") from exc
        self._set_state("connecting")
        return self.advertise(answer_sdp)

    async def _negotiate(self, pc: RTCPeerConnection, sdp: str) -> str:
        """setRemoteDescription, tracks, createAnswer, setLocalDescription (which gathers)."""
        await pc.setRemoteDescription(RTCSessionDescription(sdp=open_candidates(sdp), type="offer"))
        if self._closed:  # closed while aiortc took the offer: nothing may join the call now
            raise ConnectionError("closed while the offer was taken")
        audio = self.audio_transceiver()
        if audio is None:
            raise BadOffer("the offer has no audio m-line", code="unsupported_media")
        # The participant's microphone and what it hears go through its door into the call
        # (straight to the bus while it is the only one: see media/conference.py).
        port = self._port = self.bus.conference.join(self.participant_id, self.role)
        self.sends_audio = audio_section(sdp).direction in ("sendrecv", "sendonly")
        st = self.media
        # A browser may cap what it wants to receive (RFC 7587 §6.1 maxaveragebitrate).
        try:
            cap = int(opus_parameters(sdp).get("maxaveragebitrate", 0)) or 510_000
        except ValueError:
            cap = 510_000  # RFC 7587 §6.1: Opus' own maximum
        # RED (RFC 2198) when the browser offers it over Opus: taken from it, and sent to it
        # while its reports show loss (rtc/protection.py).
        red = offered_red(sdp) if st.opus_red else None
        track = self.track_class(
            port,
            bitrate=max(6_000, min(st.opus_bitrate, cap)),
            complexity=st.opus_complexity,
            fec=st.opus_fec,
            dtx=st.opus_dtx,
            # DTX where the browser asks for it (or every browser, BRIDGE_OPUS_DTX).
            dtx_gate=DtxGate() if st.opus_dtx or asks_for_dtx(sdp) else None,
            protection=LossProtection(fec=st.opus_fec, red=red is not None),
            protected_bitrate=max(6_000, min(st.opus_fec_bitrate, cap)),
            protected_complexity=st.opus_fec_complexity,
            clean=(
                EncoderSetting(st.opus_celt_bitrate, st.opus_celt_complexity, celt=True)
                # Not with DTX: CELT's only fires on digital silence, SILK's on quiet too.
                if st.opus_celt_bitrate and st.opus_celt_bitrate <= cap and not st.opus_dtx
                else None
            ),
            red=None if red is None else RedWrapper(*red),
            level=self.sent_level,
        )
        self.start_media(audio, track, self._uplink_frame, self.bus.stats)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        # Ask for in-band FEC, mono, 16 kHz (see rtc/browser_sdp.py): aiortc's answer asks for
        # nothing. And for DTX: a silent microphone then sends almost nothing (audio/dtx.py).
        fmtp = answer_fmtp(self.receive_bitrate, dtx=st.opus_uplink_dtx)
        answer_sdp = with_opus_fmtp(str(pc.localDescription.sdp), fmtp)
        check_pairs(sdp, answer_sdp)
        if red is not None:
            answer_sdp = add_red(answer_sdp, *red)
            self.session.take_red(*red, self.red)
        # aiortc has no telephone-event: answer it ourselves and take its packets in the leg's
        # RTP session (see rfc4733.py), so the browser's RTCDTMFSender works. 8 kHz first: its
        # durations reach 8 s, 48 kHz's only 1.36 s.
        event = audio_section(sdp).telephone_event(8000, 48_000, 16_000)
        if event is not None:
            pt, rate = event
            self.dtmf = DtmfDetector(self._dtmf_press, rate)
            self.session.take_dtmf(lambda: pt, self.dtmf)
            answer_sdp = add_telephone_event(answer_sdp, pt, rate)
        return answer_sdp

    def _dtmf_press(self, digit: str, duration_ms: int) -> None:
        if self._on_dtmf is not None and not self._closed:
            self._on_dtmf(self, digit, duration_ms)

    def _uplink_frame(self, pcm: Any) -> None:
        self.mic_level.add(pcm)
        if self._port is not None:
            self._port.accept(pcm)
        self.uplink_frames += 1

    @property
    def downlink_sink(self) -> DownlinkSink | None:
        """What plays the downlink to this browser (``None`` before the offer was answered)."""
        return None if self._port is None else self._port.sink

    def stats_json(self) -> dict[str, Any]:
        """This session's numbers for ``GET /call/{callID}/stats``."""
        sink = self.downlink_sink
        jitter = sink.jitter if sink is not None else None
        track = self._track
        return {
            **self.quality_json(),
            "offerToConnectedMs": self.connect_ms,
            "uplinkFrames": self.uplink_frames,
            "redPackets": self.red.packets,
            # Downlink packets forwarded untouched from the WhatsApp leg (rtc/passthrough.py).
            "downlinkForwarded": 0 if track is None else track.forwarded_frames,
            # The browser's packets forwarded to WhatsApp and not decoded (rtc/uplink.py).
            "uplinkNotDecoded": self.not_decoded,
            # What the downlink does against the loss the browser reports (rtc/protection.py).
            "downlinkProtection": None if track is None else track.protection_json(),
            "jitterBuffer": None
            if jitter is None or sink is None
            else {
                "depth": len(jitter),
                "target": jitter.target,
                "underruns": jitter.stats.underruns,
                "overflowDrops": jitter.stats.overflow_drops,
                "latencyDrops": jitter.stats.latency_drops,
                "played": jitter.stats.played,
                # The engine's clock drift followed by stretching (W3C's names for it).
                "insertedSamplesForDeceleration": sink.inserted_samples,
                "removedSamplesForAcceleration": sink.removed_samples,
                "concealedUnderruns": sink.concealed,
                # Frames held against the engine's jitter now (1 while its frames lead).
                "cushionFrames": sink.cushion.frames,
            },
        }

    def fail(self, why: str, detail: str = "") -> None:
        """Mark the session failed (a timeout: ``why`` one of ``dtls.REASON_LABELS``, its
        seconds in ``detail``) and close it in the background."""
        if self._closed or self.state in ("failed", "closed"):
            return
        self.record_failure("timeout", why, detail)
        self._set_state("failed")

    def _detach(self) -> None:
        self.bus.remove_user(self.id)
        if self._port is not None:
            self._port.leave()  # (not a successor's: a replaced port leaves nothing)
