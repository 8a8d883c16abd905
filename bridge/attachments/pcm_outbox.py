"""What a PCM WebSocket's client is sent, waiting for it: the bounds of ``GET
/call/{callID}/stream`` toward its client, on the worker that owns the call
(:class:`~.pcm_socket.PcmSocket`) and on one that relays it there (``api/stream_relay.py``).

The client's socket gets a small kernel send buffer and writer limit (:data:`SEND_BUFFER`), so
a client that reads too slowly meets the queue's bound within seconds: the oldest audio is
dropped past :data:`OUTGOING_FRAMES` (said once at WARNING, counted, its count said at the
close), never control; a client that reads none of its control messages is closed (1008). A
close sends the close frame without aiohttp's drain and waits at most :data:`CLOSE_TIMEOUT`
for the client's answer, then drops the connection: a client that stopped reading holds
nothing up.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from ..audio import FRAME_MS
from .wire import OutgoingQueue, bound_send_buffer

log = logging.getLogger(__name__)

MAX_MESSAGE = 1 << 20
"""Largest WebSocket message accepted from a client (1 MiB ≈ 32 s of s16 audio)."""
OUTGOING_FRAMES = 100
"""Peer audio queued for a slow socket client before the oldest is dropped (2 s)."""
SEND_BUFFER = 32 * 1024
"""Kernel send buffer of a client's socket, and what its writer sends before it waits for the
socket (a second of s16 audio each): small, so a client that reads too slowly loses its oldest
audio within seconds, as the queue intends, instead of getting it minutes late from megabytes
of autotuned TCP buffer (aiohttp's writer alone sent 256 KiB between two waits); the kernel
doubles it, room for f32le to a client half a second's round trip away."""
CLOSE_TIMEOUT = 2.0
"""Seconds a close waits for the client's answer to its close frame."""
OUTGOING_CONTROL = 1000
"""Control messages queued for a client that does not read; beyond it the socket is closed."""


def pcm_response() -> web.WebSocketResponse:
    """The server side of a PCM socket, its writer limited to :data:`SEND_BUFFER`."""
    return web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=20, writer_limit=SEND_BUFFER)


class PcmOutbox:
    """The messages waiting for one PCM socket's client (see the module docstring); its
    owner runs :meth:`sender` in a task of its own and ends with :meth:`finish`."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        where: str,
        *,
        frame_ms: int,
    ) -> None:
        self.ws = ws
        self._transport = transport
        """The client's connection (its request's), let go of at a close the client does
        not answer."""
        self.where = where
        """``call …: PCM socket …``, for the log."""
        self.batch = frame_ms // FRAME_MS
        self.queue = OutgoingQueue(
            max_audio=max(1, OUTGOING_FRAMES // self.batch),
            max_control=OUTGOING_CONTROL,
            drop_oldest_audio=True,
        )
        self.overflow = False
        """The client reads none of its control messages: its owner closes it (1008)."""

    @property
    def dropped(self) -> int:
        """Audio messages dropped because the client read too slowly."""
        return self.queue.dropped

    def sender(self) -> Coroutine[Any, Any, None]:
        """Bound the client's socket and send what is queued until it closes (the owner's
        task)."""
        bound_send_buffer(self.ws, SEND_BUFFER)
        return self.queue.run(self._send, lambda: self.ws.closed)

    async def _send(self, message: bytes | str) -> None:
        if isinstance(message, bytes):
            await self.ws.send_bytes(message)
        else:
            await self.ws.send_str(message)

    def audio(self, payload: bytes) -> bool:
        """Queue one audio message; ``False`` when the oldest waiting was dropped for it (a
        slow client loses its oldest audio, never control)."""
        dropped = self.queue.dropped
        self.queue.put_audio(payload)
        if self.queue.dropped == dropped:
            return True
        if not dropped:
            log.warning(
                "%s: the client reads too slowly; its oldest audio is dropped (more than "
                "%d ms waiting)",
                self.where,
                self.queue.max_audio * self.batch * FRAME_MS,
            )
        return False

    def client_failed(self, error: object) -> None:
        """aiohttp closed the client's socket on what it sent (a message over
        :data:`MAX_MESSAGE`: 1009): said once at WARNING, with aiohttp's reason."""
        log.warning("%s: closed: %s", self.where, error)

    def control(self, text: str) -> None:
        if not self.queue.put_control(text):
            self.overflow = True

    async def finish(self, code: int = 1000) -> None:
        """The last messages handed to the socket (bounded), then the close (bounded)."""
        if self.queue.dropped:
            log.info(
                "%s: %d audio messages (%d ms) were dropped for the slow client",
                self.where,
                self.queue.dropped,
                self.queue.dropped * self.batch * FRAME_MS,
            )
        if not self.ws.closed:
            await self.queue.drain()  # the last call_state / ended messages
            await self.close_socket(code)

    async def close_socket(self, code: int = 1000, message: bytes = b"") -> None:
        """Send the close frame and wait (bounded) for the client's. Never aiohttp's drain: a
        client that stopped reading holds the socket's buffers full, and the drain waited for
        it without end (the call's end, or the relay's request, with it). What the connection
        still holds once :data:`CLOSE_TIMEOUT` has passed is dropped with it: a transport's
        close waits to send it first, for ever to a client that reads nothing."""
        deadline = asyncio.get_running_loop().time() + CLOSE_TIMEOUT
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close(code=code, message=message, drain=False)
        except TimeoutError:
            pass  # aiohttp closed the transport
        transport = self._transport
        while transport is not None and transport.get_write_buffer_size():
            if asyncio.get_running_loop().time() >= deadline:
                sock = transport.get_extra_info("socket")
                if sock is not None:  # a reset: no orphan left to the kernel, sending on
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
                return
            await asyncio.sleep(0.05)
