"""``WebRTCSession``: one browser peer connection for one call, bridged to its bus."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..audio import BusFramer
from ..bus import CallBus
from ..config import Settings
from ..errors import BadOffer
from ..tasks import TaskSet
from .ice import server_rtc_configuration
from .tracks import BusAudioTrack

log = logging.getLogger(__name__)

_ids = itertools.count(1)

# aiortc connection states → the snapshot's webrtc.state vocabulary.
_STATES = {
    "new": "new",
    "connecting": "connecting",
    "connected": "connected",
    "failed": "failed",
    "closed": "closed",
}


class WebRTCSession:
    """Terminates one browser's Opus RTP for a call.

    Uplink: remote track → stateful resample to 16 kHz mono → exact 20 ms frames → bus.
    Downlink: bus → jitter buffer → paced :class:`BusAudioTrack` → Opus → browser.
    """

    def __init__(
        self,
        call_id: str,
        bus: CallBus,
        settings: Settings,
        on_state: Callable[[WebRTCSession, str], None] | None = None,
    ) -> None:
        self.call_id = call_id
        self.bus = bus
        self.settings = settings
        self.id = f"webrtc:{next(_ids)}"
        self.state = "new"
        self._on_state = on_state
        self._pc: RTCPeerConnection | None = None
        self._track: BusAudioTrack | None = None
        self._tasks = TaskSet(f"rtc[{call_id}]")
        self._close_lock = asyncio.Lock()
        self._closed = False
        self.uplink_frames = 0

    def _set_state(self, state: str) -> None:
        if state == self.state or self.state == "closed":
            return
        self.state = state
        if self._on_state is not None:
            self._on_state(self, state)

    async def accept_offer(self, sdp: str) -> str:
        """Apply the browser's offer; return the answer SDP with every candidate in it."""
        pc = RTCPeerConnection(server_rtc_configuration(self.settings))
        self._pc = pc
        self.bus.add_user(self.id)

        @pc.on("connectionstatechange")
        def on_connectionstatechange() -> None:
            self._set_state(_STATES.get(pc.connectionState, "connecting"))
            if pc.connectionState == "failed":
                self._tasks.spawn(self.close(), "close-failed")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self._tasks.spawn(self._run_uplink(track), "uplink")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
            if not audio:
                raise BadOffer("the offer has no audio m-line", code="unsupported_media")
            self._track = BusAudioTrack(self.bus.add_downlink(self.id))
            audio[0].sender.replaceTrack(self._track)
            audio[0].direction = "sendrecv"
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except BadOffer:
            await self.close()
            raise
        except Exception as exc:  # aiortc raises ValueError, KeyError, ... on bad SDP
            await self.close()
            raise BadOffer(f"cannot answer this offer: {exc or type(exc).__name__}") from exc
        self._set_state("connecting")
        return pc.localDescription.sdp

    async def _run_uplink(self, track: MediaStreamTrack) -> None:
        framer = BusFramer()
        try:
            while True:
                frame = await track.recv()
                for pcm in framer.push(frame):  # type: ignore[arg-type]
                    self.bus.push_uplink(pcm)
                    self.uplink_frames += 1
        except MediaStreamError:
            pass

    async def close(self) -> None:
        """Close the peer connection and stop both directions (idempotent)."""
        async with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self.bus.remove_user(self.id)
            if self._track is not None:
                self._track.stop()
            if self._pc is not None:
                try:
                    await asyncio.wait_for(self._pc.close(), 5.0)
                except TimeoutError:
                    log.warning("call %s: peer connection close timed out", self.call_id)
            await self._tasks.close()
            if self.state != "failed":
                self._set_state("closed")
