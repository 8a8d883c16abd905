"""The engines' PCM media sockets: a WebSocket carrying binary PCM frames both ways, and a
channel that reopens it while the engine still lists the call."""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp

from ..audio.pcm import Pcm
from ..errors import EngineError
from .base import EngineStats, MediaChannel, MediaClosed, MediaFatal

log = logging.getLogger(__name__)


class WebSocketMedia(abc.ABC):
    """Base of the engines' media sockets: binary PCM frames both ways, text to a handler.

    Subclasses set ``sample_bytes`` and implement :meth:`decode` (and :meth:`on_text` when
    their protocol has control frames). A binary frame that is not a whole number of samples
    is logged, counted and dropped; the call goes on.
    """

    sample_bytes = 2
    engine = "engine"

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, call_id: str, stats: EngineStats
    ) -> None:
        self.ws = ws
        self.call_id = call_id
        self.stats = stats

    async def send_payload(self, payload: bytes) -> None:
        if self.ws.closed:
            raise MediaClosed(self.call_id)
        try:
            await self.ws.send_bytes(payload)
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
                    log.warning(
                        "call %s: %s sent a %d-byte frame, not whole %d-byte samples; dropped",
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
        await self.ws.close()


class ReconnectingChannel:
    """A media channel that reopens its socket while the engine still lists the call.

    ``connect`` opens a fresh inner channel. When the inner channel closes, ``still_live``
    decides: the call is gone → :class:`MediaClosed`; otherwise reconnect with exponential
    backoff, up to ``attempts`` times. Meanwhile uplink frames are dropped (counted), so the
    caller never blocks and nothing piles up; the browser's peer connection is untouched.
    """

    def __init__(
        self,
        call_id: str,
        connect: Callable[[], Awaitable[MediaChannel]],
        still_live: Callable[[], Awaitable[bool]],
        stats: EngineStats,
        *,
        attempts: int = 5,
        backoff: float = 0.2,
    ) -> None:
        self.call_id = call_id
        self._connect = connect
        self._still_live = still_live
        self.stats = stats
        self.attempts = attempts
        self.backoff = backoff
        self._inner: MediaChannel | None = None
        self._closed = False
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self._inner = await self._connect()

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
                    log.info("call %s: media socket closed (%s)", self.call_id, exc)
            await self._reconnect(inner)

    async def _reconnect(self, failed: MediaChannel | None) -> None:
        async with self._lock:
            if self._inner is not failed:
                return  # someone else already reconnected
            self._inner = None
            if failed is not None:
                await failed.close()
            delay = self.backoff
            for attempt in range(1, self.attempts + 1):
                if self._closed or not await self._still_live():
                    self._closed = True
                    raise MediaClosed(self.call_id)
                try:
                    self._inner = await self._connect()
                except (ConnectionError, EngineError) as exc:
                    log.info(
                        "call %s: media reconnect %d/%d failed: %s",
                        self.call_id,
                        attempt,
                        self.attempts,
                        exc,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                self.stats.reconnects += 1
                log.info("call %s: media socket reconnected (attempt %d)", self.call_id, attempt)
                return
            self._closed = True
            raise MediaClosed(f"{self.call_id}: media reconnect failed {self.attempts} times")

    async def close(self) -> None:
        self._closed = True
        inner, self._inner = self._inner, None
        if inner is not None:
            await inner.close()
