"""An in-process aiortc client that calls through the bridge over loopback UDP."""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bridge.audio import tone
from bridge.rtc import restrict_host_addresses
from bridge.rtc.release import release_peer_connection

from .spectrum import band_energy
from .waits import until


class ToneTrack(MediaStreamTrack):
    """A live 48 kHz tone, paced like a microphone (20 ms frames).

    Sent as identical stereo channels: aiortc's Opus encoder is stereo, and letting it upmix
    mono would cost 3 dB, which the level assertions would have to allow for.
    """

    kind = "audio"

    def __init__(self, freq: float, rate: int = 48_000, amplitude: float = 0.5) -> None:
        super().__init__()
        self.freq = freq
        self.rate = rate
        self.amplitude = amplitude
        self.samples = rate // 50
        self.sent_frames = 0
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._n / self.rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        data = tone(self.freq, self.samples, self.rate, self.amplitude, start=self._n)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(data, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = self.rate
        frame.pts = self._n
        frame.time_base = fractions.Fraction(1, self.rate)
        self._n += self.samples
        self.sent_frames += 1
        return frame


class Recorder:
    """Collects what a remote track plays, as mono 48 kHz samples with arrival times."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.times: list[float] = []
        self.rate = 48_000
        self.frame_sizes: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self, track: MediaStreamTrack) -> None:
        self._task = asyncio.ensure_future(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                self.rate = frame.sample_rate
                data = frame.to_ndarray().reshape(-1)
                if len(frame.layout.channels) == 2:
                    data = data.reshape(-1, 2).mean(axis=1)
                self.frame_sizes.add(frame.samples)
                self.chunks.append(data.astype(np.float64))
                self.times.append(time.monotonic())
        except MediaStreamError:
            pass

    def since(self, t0: float) -> np.ndarray:
        parts = [c for c, t in zip(self.chunks, self.times, strict=True) if t >= t0]
        return np.concatenate(parts) if parts else np.zeros(0)

    def last(self, seconds: float) -> np.ndarray:
        """The last ``seconds`` heard (fewer samples while less has arrived)."""
        want, parts, have = int(self.rate * seconds), [], 0
        for chunk in reversed(self.chunks):
            if have >= want:
                break
            parts.append(chunk)
            have += chunk.size
        return np.concatenate(parts[::-1])[-want:] if parts else np.zeros(0)

    async def tone_arrives(self, freq: float, timeout: float = 10.0) -> None:
        """Until the last 200 ms heard are ``freq`` (over half their energy within ±15 Hz of
        it): the bounded wait for a tone to reach this end before a test listens to a window
        of it, where a fixed second or more was slept (longer than needed on a quiet host,
        and on a loaded one sometimes not long enough)."""

        def arrived() -> bool:
            heard = self.last(0.2)
            return heard.size >= 0.2 * self.rate and band_energy(heard, self.rate, freq) > 0.5

        await until(arrived, timeout, f"{freq:g} Hz to arrive", every=0.02)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


class RtcClient:
    """A WebRTC client as a browser would be: offer, wait for gathering, POST, answer."""

    def __init__(
        self,
        http: Any,
        call_id: str,
        freq: float = 440.0,
        headers: Any = None,
        configuration: RTCConfiguration | None = None,
        participant: dict[str, str] | None = None,
        amplitude: float = 0.5,
    ) -> None:
        restrict_host_addresses(["127.0.0.1"])
        self.participant = participant or {}
        self.http = http
        self.call_id = call_id
        self.headers = headers or {}
        self.pc = RTCPeerConnection(configuration or RTCConfiguration(iceServers=[]))
        self.track = ToneTrack(freq, amplitude=amplitude) if freq else None
        self.recorder = Recorder()
        self.connected = asyncio.Event()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.recorder.start(track)

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()

    async def offer(self, rewrite_answer: Any = None, rewrite_offer: Any = None) -> dict[str, Any]:
        if self.track is not None:
            self.pc.addTrack(self.track)
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        resp = await self.http.post(
            "/call/webrtc/offer",
            json={
                "callID": self.call_id,
                "type": "offer",
                "sdp": sdp if rewrite_offer is None else rewrite_offer(sdp),
                **self.participant,
            },
            headers=self.headers,
        )
        body = await resp.json()
        assert resp.status == 200, body
        sdp = body["sdp"] if rewrite_answer is None else await rewrite_answer(body["sdp"])
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        return body

    async def close(self) -> None:
        await self.recorder.stop()
        await self.pc.close()
        await release_peer_connection(self.pc)  # no cycles left for the gc (the thread test)
