"""What the WebSocket attachments (PCM sockets, media forks, model agents) share: one bounded
queue of outgoing messages, drained by one sender task, so the media path never awaits a
socket; and a small kernel send buffer for the sockets the bridge opens to stream the call's
audio, so that queue's bound is what a stalled peer meets."""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

Send = Callable[[bytes | str], Awaitable[None]]

SEND_BUFFER = 64 * 1024
"""Kernel send buffer of a socket the bridge opens to stream the call's audio (a media fork,
a model agent): small, so a stalled peer is noticed within about a second of audio instead of
after megabytes of autotuned TCP buffer (over a minute of audio on loopback, the peer hearing
it ever later meanwhile)."""


def bound_send_buffer(
    ws: aiohttp.ClientWebSocketResponse | web.WebSocketResponse, size: int = SEND_BUFFER
) -> None:
    """Give ``ws``'s socket a kernel send buffer of ``size`` (none to set on a socket already
    gone): the bridge's own sockets, and a PCM socket's client (``pcm_outbox.py``)."""
    sock = ws.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


class OutgoingQueue:
    """Messages for one WebSocket peer: audio and control, each bounded.

    * :meth:`put_audio` queues one audio message. With ``drop_oldest_audio`` a full audio
      share drops the oldest audio message (counted in ``dropped``); without it the put is
      refused (``False``) and the owner decides (a fork is dropped whole).
    * :meth:`put_control` queues a control message; ``False`` when ``max_control`` wait
      already (a client that does not read: its owner closes it). One put ``before_audio``
      goes ahead of the audio waiting, still behind the control messages queued before it
      (an answer the peer waits for, such as a pong).
    * :meth:`run` sends in order until the socket closes; :meth:`drain` waits (bounded) for
      the queue to empty before a close.
    """

    def __init__(self, *, max_audio: int, max_control: int, drop_oldest_audio: bool) -> None:
        self.max_audio = max_audio
        self.max_control = max_control
        self.drop_oldest_audio = drop_oldest_audio
        self._items: deque[tuple[bool, bytes | str]] = deque()
        self._audio = 0
        self._wake = asyncio.Event()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put_audio(self, message: bytes | str) -> bool:
        if self._audio >= self.max_audio:
            if not self.drop_oldest_audio:
                return False
            for i, (is_audio, _) in enumerate(self._items):
                if is_audio:
                    del self._items[i]
                    self._audio -= 1
                    self.dropped += 1
                    break
        self._items.append((True, message))
        self._audio += 1
        self._wake.set()
        return True

    def put_control(self, message: str, *, before_audio: bool = False) -> bool:
        if len(self._items) - self._audio >= self.max_control:
            return False
        if before_audio and self._audio:
            # Right behind the last control message queued: ahead of the audio after it.
            at = len(self._items)
            while at and self._items[at - 1][0]:
                at -= 1
            self._items.insert(at, (False, message))
        else:
            self._items.append((False, message))
        self._wake.set()
        return True

    def take_audio(self) -> list[bytes | str]:
        """Take out the audio messages not sent yet, oldest first (they go to another socket:
        a model's next session, :meth:`bridge.agents.outbox.Outbox.hold`)."""
        taken = [message for is_audio, message in self._items if is_audio]
        self._items = deque(item for item in self._items if not item[0])
        self._audio = 0
        return taken

    async def run(self, send: Send, is_closed: Callable[[], bool]) -> None:
        """Send queued messages in order until ``is_closed()``; a send error propagates."""
        while not is_closed():
            await self._wake.wait()
            self._wake.clear()
            while self._items and not is_closed():
                is_audio, message = self._items.popleft()
                if is_audio:
                    self._audio -= 1
                await send(message)

    async def drain(self, timeout: float = 0.5) -> None:
        """Wait until everything queued was handed to the socket (at most ``timeout``)."""
        for _ in range(max(1, int(timeout / 0.01))):
            if not self._items:
                return
            await asyncio.sleep(0.01)
