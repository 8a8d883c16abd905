"""Shared parts of the fake engines: a loopback aiohttp server with a paced tone sender."""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass, field

import numpy as np
from aiohttp import WSMsgType, web

from bridge.audio import tone

from ..support.ports import free_port


@dataclass
class FakeCall:
    id: str
    peer: str
    direction: str
    state: str
    received: list[bytes] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)  # time.monotonic() of each frame
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    connects: int = 0
    max_open: int = 0  # the most media sockets open at once
    sink: web.WebSocketResponse | None = None
    """With one inbound sink per call (ZuckZapGo), the socket that gets the peer's audio."""
    answered: bool = False
    signal: np.ndarray | None = None
    """16 kHz s16 to play once instead of the tone (then silence), e.g. DTMF and speech."""
    clock_ppm: float = 0.0
    """How fast the engine's sample clock runs against ours (a real engine's drifts)."""

    def heard(self) -> np.ndarray:
        """Everything the engine received, as int16 samples."""
        return np.frombuffer(b"".join(self.received), dtype="<i2")


class CallerAudioLog:
    """What a fake model keeps of the caller's audio, the hook benches time the bridge by:
    ``chunks`` as the bridge sent them and ``arrived``, the ``time.monotonic()`` each came
    in (``bench.agents`` times a caller's frame from the engine to the model's socket by it).
    ``cancelled`` holds when a cancel of a generation in progress arrived, in whatever form
    the provider has one (it stays empty where the protocol has none).

    Beside it every fake model has the same hooks for ``bench.agents`` and the tests:
    ``say(pcm)`` (a reply at its output rate; ``say(pcm, done=False)`` leaves it generating,
    where a cancel exists), ``drop()`` (the socket closed as a failing server), a method that
    sends the provider's own barge-in signal, ``errors`` (what it refused) and
    ``connections`` (sockets opened)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.arrived: list[float] = []
        self.cancelled: list[float] = []
        self.opened: list[float] = []
        """When each session's socket was accepted (:meth:`served`): a reconnect is timed to
        the first of ``arrived`` after the last."""
        self.stopping = False
        """The server is shutting down (new sessions are refused)."""
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()

    def new_app(self) -> web.Application:
        """The fake's app, whose shutdown closes the sessions it serves (:meth:`served`), as
        a server going away does: an open one would hold the shutdown for aiohttp's 60 s."""
        app = web.Application()
        app.on_shutdown.append(self._going_away)
        return app

    def served(self, ws: web.WebSocketResponse) -> None:
        """``ws`` is a session of this server (closed when it shuts down)."""
        self.opened.append(time.monotonic())
        self._sockets.add(ws)

    async def _going_away(self, app: web.Application) -> None:
        self.stopping = True
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"going away")

    def keep_caller_audio(self, raw: bytes) -> None:
        self.chunks.append(raw)
        self.arrived.append(time.monotonic())

    @property
    def heard(self) -> np.ndarray:
        """Every caller sample the bridge sent, int16 at the model's input rate."""
        return np.frombuffer(b"".join(self.chunks), dtype="<i2")


class BusinessFirst:
    """Meta's rule for a call's media on every road (Graph or SIP signalling, DTLS or SDES
    keys, calls of either direction): it sends no RTP until the business's first RTP packet
    has arrived (Meta's calling documentation). The one gate both of the fake Meta's media
    peers send through (``cloudapi.MetaPeer``, ``support/sdes_peer.SdesEndpoint``)."""

    def __init__(self) -> None:
        self.first_rtp_at: float | None = None
        """When the business's first RTP packet arrived (monotonic)."""
        self.first_sent_at: float | None = None
        """When Meta's side sent its first RTP packet: never before :attr:`first_rtp_at`."""
        self.held_back = 0
        """RTP packets Meta's side did not send: the business had sent none yet."""
        self.last_rtp_at: float | None = None
        """When the business's latest RTP packet arrived (Meta's media timers read it)."""
        self.unanswered = False
        """A Graph call not connected yet (a user's before ``accept``, ours before the user
        picks up): ICE and DTLS come up at ``pre_accept``, but Meta's media flows only once
        the call is accepted (Meta's Cloud API Calling documentation)."""

    def heard(self) -> None:
        """An RTP packet of the business's arrived."""
        self.last_rtp_at = time.monotonic()
        self.first_rtp_at = self.first_rtp_at or self.last_rtp_at

    def may_send(self) -> bool:
        """Whether Meta's side sends an RTP packet now (else it is dropped and counted)."""
        if self.unanswered:
            return False
        if self.first_rtp_at is None:
            self.held_back += 1
            return False
        self.first_sent_at = self.first_sent_at or time.monotonic()
        return True


class FakeServer:
    """Runs an aiohttp app on 127.0.0.1 at a fixed port, stoppable and restartable."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._runner: web.AppRunner | None = None
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[tuple[str, str, object]] = []
        self._ids = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def build(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> None:
        self._runner = web.AppRunner(self.build(), shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        for call in self.calls.values():
            for ws in list(call.sockets):
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def new_id(self) -> str:
        self._ids += 1
        return f"FAKE{self._ids:03d}AbC"

    async def kill_media(self, call_id: str) -> None:
        for ws in list(self.calls[call_id].sockets):
            await ws.close()


async def send_tone(
    ws: web.WebSocketResponse,
    call: FakeCall,
    freq: float,
    frame: int,
    encode,
    single_sink: bool = False,
) -> None:
    """Send a tone on the engine's clock, ``frame`` samples per message, while active."""
    start = time.monotonic()
    n = played = 0  # ``played``: where ``call.signal`` starts (the tone plays until it is set)
    while not ws.closed:
        wait = start + n / (16_000 * (1 + call.clock_ppm * 1e-6)) - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if call.state == "active" and (not single_sink or call.sink is ws):
            if call.signal is not None:
                chunk = call.signal[n - played : n - played + frame]
                pcm = np.zeros(frame, dtype=np.int16)
                pcm[: chunk.size] = chunk
            else:
                played = n + frame
                pcm = tone(freq, frame, 16_000, 0.4, start=n)
            try:
                await ws.send_bytes(encode(pcm))
            except ConnectionError:
                return
        n += frame


async def serve_media(
    ws: web.WebSocketResponse,
    call: FakeCall,
    freq: float,
    frame: int,
    encode,
    single_sink: bool = False,
) -> None:
    """An engine's media socket: play a tone on its clock, keep what the bridge sends.

    ``single_sink``: the call has one inbound sink (ZuckZapGo), which the newest socket
    takes: an older socket still open gets no more of the peer's audio."""
    call.sink = ws
    call.max_open = max(call.max_open, len(call.sockets))
    sender = asyncio.ensure_future(send_tone(ws, call, freq, frame, encode, single_sink))
    try:
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                call.received.append(msg.data)
                call.received_at.append(time.monotonic())
    finally:
        sender.cancel()
        call.sockets.remove(ws)
        if call.sink is ws:
            call.sink = None
