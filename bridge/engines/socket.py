"""The engines' PCM media sockets: a WebSocket carrying binary PCM frames both ways, and a
channel that reopens it while the engine still lists the call."""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
import numpy as np

from ..audio import FRAME_SAMPLES
from ..audio.pcm import Pcm, quiet
from ..errors import EngineError
from ..logs import Repeats
from ..tasks import CloseOnce, wait_event
from .base import EngineStats
from .channels import MediaChannel, MediaClosed, MediaFatal
from .tick_aim import TickAim

log = logging.getLogger(__name__)


class WebSocketMedia(abc.ABC):
    """Base of the engines' media sockets: binary PCM frames both ways, text to a handler.

    Subclasses set ``sample_bytes`` and implement :meth:`decode` (and :meth:`on_text` when
    their protocol has control frames). A binary frame that is not a whole number of samples
    is counted and dropped, the first of a socket logged (:meth:`bad`); the call goes on.
    """

    sample_bytes = 2
    engine = "engine"

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, call_id: str, stats: EngineStats
    ) -> None:
        self.ws = ws
        self.call_id = call_id
        self.stats = stats
        self._bad = Repeats(size=16)
        """What this socket sent that could not be used, by kind: the first said, the rest
        counted (an engine that sends one sends one a frame), their sum said at close."""

    def bad(self, kind: str, message: str, *args: object) -> None:
        """One more ``kind`` of unusable message: logged at WARNING the first time only."""
        if self._bad.seen(kind) == 1:
            log.warning(message, *args)

    async def send_payload(self, payload: bytes | str) -> None:
        """One frame: binary for bytes (PCM), text for a string (a control message)."""
        if self.ws.closed:
            raise MediaClosed(self.call_id)
        try:
            if isinstance(payload, bytes):
                await self.ws.send_bytes(payload)
            else:
                await self.ws.send_str(payload)
        except (ConnectionError, RuntimeError) as exc:
            raise MediaClosed(f"{self.call_id}: {exc}") from exc

    @abc.abstractmethod
    def decode(self, data: bytes) -> Pcm:
        """One binary frame (a whole number of samples) as s16 PCM."""

    def on_text(self, text: str) -> None:  # noqa: B027 - deliberately optional hook
        """A text frame (ignored unless the protocol defines control frames)."""

    async def recv(self) -> Pcm:
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                data: bytes = msg.data
                if len(data) % self.sample_bytes:
                    self.stats.bad_frames += 1
                    self.bad(
                        "frames",
                        "call %s: %s sent a %d-byte frame, not whole %d-byte samples; dropped "
                        "(such frames are counted, not said again)",
                        self.call_id,
                        self.engine,
                        len(data),
                        self.sample_bytes,
                    )
                    continue
                return self.decode(data)
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.on_text(msg.data)
                continue
            raise MediaClosed(f"{self.call_id}: socket {msg.type.name.lower()}")

    async def close(self) -> None:
        for kind, count in self._bad.drain():
            if count > 1:
                log.warning(
                    "call %s: %s sent %d unusable %s on one media socket",
                    self.call_id,
                    self.engine,
                    count,
                    kind,
                )
        await self.ws.close()


class PcmStreamMedia(WebSocketMedia):
    """s16le PCM both ways on a WebSocket, the bus's 20 ms frames sent in batches of
    ``batch_samples`` (a partial batch is never sent; at close it is dropped): the neutral
    channel the worker-to-worker relay (``GET /call/{callID}/stream``) and the ZuckZapGo
    engine (1920-byte frames) both speak.

    With an ``aim``, the batches are aimed at the engine's clock, learnt from its batch-sized
    frames: a quiet frame dropped, or a batch of silence shed, as ``tick_aim.py`` says."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        call_id: str,
        stats: EngineStats,
        *,
        batch_samples: int = FRAME_SAMPLES,
        aim: TickAim | None = None,
        engine: str = "PCM stream",
    ) -> None:
        super().__init__(ws, call_id, stats)
        self.engine = engine
        self.batch_samples = batch_samples
        self.aim = aim
        self._out: list[Pcm] = []

    async def send(self, pcm: Pcm) -> None:
        out = self._out
        aim = self.aim
        if aim is not None and (len(out) + 1) * FRAME_SAMPLES >= self.batch_samples:
            # Speech is never dropped: the next quiet frame will do.
            if aim.shift(time.monotonic()) < 0 and quiet(pcm):
                aim.dropped()
                return  # the batch completes a tick later
        out.append(pcm)
        if len(out) * FRAME_SAMPLES < self.batch_samples:
            return
        if aim is not None:
            now = time.monotonic()
            if aim.backlog(now) and all(quiet(p) for p in out):
                out.clear()  # a frame stands queued in the engine: it goes out in our stead
                aim.skipped(now)
                return
            aim.sent(now)
        payload = np.concatenate(out).astype("<i2", copy=False).tobytes()
        out.clear()
        await self.send_payload(payload)

    def decode(self, data: bytes) -> Pcm:
        if self.aim is not None and len(data) == 2 * self.batch_samples:
            self.aim.heard(time.monotonic())
        return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)

    async def send_key(self, digit: str, duration_ms: int) -> None:
        """A key pressed at this end, as the stream's ``dtmf`` message (``attachments/
        pcm_socket.py``): the relay of a leg lent across workers (``desk/lending.py``)."""
        await self.send_payload(
            json.dumps({"type": "dtmf", "digit": digit, "durationMs": duration_ms})
        )

    async def close(self) -> None:
        self._out.clear()
        await super().close()


Pause = Callable[[float], Awaitable[None]]
"""Sleeps up to the given seconds between attempts; an engine cuts it short when it is back."""

CONNECT_TIMEOUT = 5.0
"""Seconds one attempt to open the socket may take (a partition can swallow the handshake)."""


class ReconnectingChannel:
    """A media channel that reopens its socket while the engine may still have the call.

    ``connect`` opens a fresh inner channel. When the inner channel closes (or the first open
    fails), it is reopened for up to ``window`` seconds, with a backoff that starts at
    ``backoff`` and doubles up to ``max_backoff``. Before each attempt ``still_live`` asks the
    engine: a call it no longer lists stops the reconnects at once (:class:`MediaClosed`); an
    engine that does not answer cannot tell, so the attempts go on within the window.
    Meanwhile uplink frames are dropped (counted) and nothing reaches the downlink, so the
    caller never blocks, nothing piles up, the browser hears silence (its jitter buffer plays
    silence on underrun) and its peer connection is untouched.
    """

    def __init__(
        self,
        call_id: str,
        connect: Callable[[], Awaitable[MediaChannel]],
        still_live: Callable[[], Awaitable[bool]],
        stats: EngineStats,
        *,
        window: float = 30.0,
        backoff: float = 0.2,
        max_backoff: float = 2.0,
        pause: Pause | None = None,
    ) -> None:
        self.call_id = call_id
        self._connect = connect
        self._still_live = still_live
        self.stats = stats
        self.window = window
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._pause: Pause = pause or asyncio.sleep
        self._delay = backoff
        self._connected_at = 0.0
        self._outage: float | None = None
        """When the media was last lost after being up a while: a socket the engine drops
        as soon as it opens does not start the window afresh."""
        self._inner: MediaChannel | None = None
        self._opened = asyncio.Event()
        """Set while a socket is open (:meth:`wait_connected`)."""
        self._closed = False
        self._closing: CloseOnce[None] = CloseOnce(f"engine-media[{call_id}]:close")
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """Whether a socket to the engine is open now (not between reconnects)."""
        return self._inner is not None and not self._closed

    async def wait_connected(self, timeout: float) -> bool:
        """Whether a socket is open within ``timeout`` seconds (``OpensInBackground``)."""
        if not self.connected:
            await wait_event(self._opened, timeout)
        return self.connected

    def _set_inner(self, inner: MediaChannel | None) -> None:
        self._inner = inner
        if inner is None:
            self._opened.clear()
        else:
            self._opened.set()

    async def open(self) -> None:
        """Open the socket; if the engine cannot be reached now, :meth:`recv` keeps trying
        within the window (the call is not failed for an engine that is restarting)."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                self._set_inner(await self._connect())
            self._connected_at = time.monotonic()
        except (ConnectionError, EngineError, TimeoutError) as exc:
            log.warning(
                "call %s: cannot open the engine media (%s); retrying for up to %g s",
                self.call_id,
                why(exc),
                self.window,
            )

    async def send(self, pcm: Pcm) -> None:
        if self._closed:
            raise MediaClosed(self.call_id)
        inner = self._inner
        if inner is None:
            self.stats.uplink_dropped += 1
            return
        try:
            await inner.send(pcm)
        except ConnectionError:
            self.stats.uplink_dropped += 1  # recv() notices and reconnects

    async def recv(self) -> Pcm:
        while True:
            if self._closed:
                raise MediaClosed(self.call_id)
            inner = self._inner
            if inner is not None:
                try:
                    return await inner.recv()
                except MediaFatal:
                    self._closed = True
                    raise
                except ConnectionError as exc:
                    if time.monotonic() - self._connected_at >= self.max_backoff:
                        log.warning(
                            "call %s: engine media lost (%s); reconnecting for up to %g s",
                            self.call_id,
                            why(exc),
                            self.window,
                        )
            await self._reconnect(inner)

    async def _reconnect(self, failed: MediaChannel | None) -> None:
        async with self._lock:
            if self._inner is not failed:
                return  # someone else already reconnected
            self._set_inner(None)
            flapping = False
            if failed is not None:
                await failed.close()
                if time.monotonic() - self._connected_at >= self.max_backoff:
                    self._delay = self.backoff  # it had been up a while: start over quickly
                    self._outage = None
                else:
                    flapping = True  # the engine dropped it as soon as it opened
            started = time.monotonic()
            if self._outage is None:
                self._outage = started
            deadline = self._outage + self.window
            attempt = 0
            if flapping:  # the same backoff as a refused connect: never a tight loop
                await self._back_off(deadline, "each socket dropped as soon as it opened")
            while True:
                if self._closed:
                    raise MediaClosed(self.call_id)
                if not await self._still_live():
                    self._closed = True
                    log.info(
                        "call %s: the engine no longer lists the call; media closed", self.call_id
                    )
                    raise MediaClosed(f"{self.call_id}: the engine no longer lists the call")
                if self._closed:
                    raise MediaClosed(self.call_id)
                attempt += 1
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        inner = await self._connect()
                except (ConnectionError, EngineError, TimeoutError) as exc:
                    log.debug(
                        "call %s: media reconnect %d failed (%s); %.1f s of the window left",
                        self.call_id,
                        attempt,
                        why(exc),
                        deadline - time.monotonic(),
                    )
                    tried = f"{attempt} attempts, last: {why(exc)}"
                    await self._back_off(deadline, tried, exc)
                    continue
                if self._closed:  # closed while connecting
                    await inner.close()
                    raise MediaClosed(self.call_id)
                self._set_inner(inner)
                self._connected_at = time.monotonic()
                self.stats.reconnects += 1
                log.info(
                    "call %s: engine media reconnected after %.1f s (attempt %d)",
                    self.call_id,
                    self._connected_at - started,
                    attempt,
                )
                return

    async def _back_off(
        self, deadline: float, tried: str, failed: BaseException | None = None
    ) -> None:
        """Wait before the next attempt (the backoff, doubled each time up to its most), or,
        the window over at ``deadline``, give up: closed, said once (with ``tried``),
        :class:`MediaClosed` (from ``failed``, the last attempt's error)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self._closed = True
            log.warning(
                "call %s: engine media not back within %g s (%s)", self.call_id, self.window, tried
            )
            gone = f"{self.call_id}: engine media not back within {self.window:g} s"
            raise MediaClosed(gone) from failed
        await self._pause(min(self._delay, remaining))
        self._delay = min(self._delay * 2, self.max_backoff)

    async def close(self) -> None:
        """No more reconnects, the open socket closed (idempotent; concurrent callers share
        one close, which runs to its end even if a caller is cancelled: ``tasks.CloseOnce``)."""
        self._closed = True
        await self._closing.run(self._close_inner)

    async def _close_inner(self) -> None:
        inner = self._inner
        self._set_inner(None)
        if inner is not None:
            await inner.close()


def why(exc: BaseException) -> str:
    """Why a socket did not open or was lost, never naming its URL (a ``?token=`` query and
    all), as the str() of aiohttp's handshake error does."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{exc.status} {exc.message}"
    return str(exc) or type(exc).__name__
