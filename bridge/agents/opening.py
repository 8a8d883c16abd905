"""Opening a model's session: the first job of an agent's :class:`~.connection.ModelConnection`,
its base here. Where the socket is (:func:`~.preflight.where_to_connect`), the handshake (an
HTTP refusal named by its status), the messages that configure the session, and the wait for
the model to take them — a ``ping`` meanwhile answered on that socket, an error refusing the
session (:class:`~.wire.Refused`, final where another attempt would meet it again). A session
opened with a resumption handle the server refuses is opened again at once as a new one. And
the retry policy of reopening one (:func:`reopen`)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable

import aiohttp

from ..attachments.wire import bound_send_buffer
from ..http import RedirectRefused
from ..logs import FailureKinds
from .preflight import CONNECT_TIMEOUT, where_to_connect
from .wire import (
    FINAL_STATUSES,
    Answer,
    Hello,
    ModelDialect,
    ModelError,
    ModelEvent,
    ProtocolError,
    Ready,
    Refused,
    Tool,
)

log = logging.getLogger(__name__)

BACKOFF = (0.0, 0.3, 1.0, 2.0, 4.0)
"""Seconds before each reconnection attempt (the last repeats), each but the first drawn
between half and all of it so a restarted server is not hit by every call at once."""


class SessionOpening:
    """How a :class:`~.connection.ModelConnection` opens its sessions (its state is the
    connection's: these attributes)."""

    dialect: ModelDialect
    url: str
    _key: str | None
    tools: list[Tool]
    where: str
    resume: str | None
    resumed: bool
    """The newest session continues the conversation: it opened with a resumption handle the
    server took (a handle the new session gives, as Ultravox's ``callId`` is, says nothing)."""
    session: int
    _bugs: FailureKinds

    async def _events(self, parsed: list[ModelEvent]) -> list[ModelEvent]:
        """The connection's handling of the events read (while it opens, too)."""
        raise NotImplementedError

    async def _open(self, http: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
        """A socket with its session ready: the old conversation resumed where there is a
        handle, or — the server refusing it (expired, unknown: Gemini's, an Ultravox
        ``priorCallId``) — a new session at once, told what was said (``on_reconnected``)."""
        self.resumed = False
        if self.resume is None:
            return await self._connect(http)
        try:
            ws = await self._connect(http)
        except ConnectionError as exc:  # (``Refused``, or closed before the session was ready)
            log.warning(
                "%s: the model refused to resume the conversation (%s); a new session, told "
                "what was said",
                self.where,
                exc,
            )
            self.resume = None
            return await self._connect(http)
        self.resumed = True
        return ws

    async def _connect(self, http: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
        url, headers = await where_to_connect(
            self.dialect, self.url, self._key, self.tools, self.resume, http
        )
        try:
            ws = await http.ws_connect(
                url,
                headers=headers,
                heartbeat=20,
                max_msg_size=16 << 20,
                timeout=aiohttp.ClientWSTimeout(ws_close=2),
            )
        except aiohttp.WSServerHandshakeError as exc:
            # The status only: the exception's text holds the URL (a key may be in it).
            raise Refused(f"http_{exc.status}", final=exc.status in FINAL_STATUSES) from None
        self.session += 1  # a new session's socket: what the old one asked is the old one's
        bound_send_buffer(ws)  # a model too slow for the caller meets the queue's bound soon
        try:  # cancelled or timed out anywhere here: the socket (a session, billed) is closed
            async with asyncio.timeout(CONNECT_TIMEOUT):
                if self.dialect.waits_for_hello:
                    await self._read_until(ws, Hello)
                for message in self.dialect.opening(self.tools, self.resume):
                    await ws.send_str(json.dumps(message))
                await self._read_until(ws, Ready)
        except BaseException:
            await ws.close()
            raise
        return ws

    async def _read_until(
        self, ws: aiohttp.ClientWebSocketResponse, wanted: type[Hello] | type[Ready]
    ) -> None:
        """Read until the server says ``wanted`` (ready for the configuration, or took it)."""
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                continue  # audio before the session is ready: not the caller's yet
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError("the model closed before its session was ready")
            try:
                events = self._parse(msg.data)
                for event in events:
                    if isinstance(event, Answer):
                        # (An ElevenLabs ``ping`` before the session is ready: its ``pong`` now,
                        # on this socket — the queue is the session's once it is, a new one's
                        # anew.)
                        for message in event.messages:
                            await ws.send_str(json.dumps(message))
                await self._events([e for e in events if not isinstance(e, Answer)])
            except (aiohttp.ClientError, ConnectionError, RuntimeError):
                raise  # the socket's
            except Exception as exc:
                # A bug met on one message costs that message, as once the session is open
                # (``ModelConnection._serve``): it used to escape the opening (a 500, or a
                # reconnection's runner ended, the agent reconnecting for good).
                self._bugs.failed(exc, "%s: a model message not handled", self.where)
                continue
            for event in events:
                if isinstance(event, ModelError) and not event.benign:
                    # It refused the session: no use waiting.
                    raise Refused(event.code, final=event.account)
            if any(isinstance(event, wanted) for event in events):
                return

    def _parse(self, data: str) -> list[ModelEvent]:
        try:
            body = json.loads(data)
            if not isinstance(body, dict):
                raise ProtocolError("not an object")
            return self.dialect.parse(body)
        except (ValueError, ProtocolError) as exc:
            log.info("%s: unreadable message (%s)", self.where, exc)
            return []


async def reopen(
    open_socket: Callable[[], Awaitable[aiohttp.ClientWebSocketResponse]],
    retries: int,
    spent: int,
    stopping: Callable[[], bool],
    where: str,
) -> tuple[aiohttp.ClientWebSocketResponse | None, int]:
    """The retry policy: ``retries`` attempts in all since a socket last worked (``spent`` of
    them used: see :data:`HEALTHY_S`), :data:`BACKOFF` apart, while not ``stopping()``; the
    socket (``None`` when none opened) and the attempts used."""
    for attempt in range(spent, retries):
        delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        if stopping():
            return None, attempt
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                return await open_socket(), attempt + 1
        except Refused as exc:
            if exc.final:
                raise
            log.info("%s: reconnect %d failed: %s", where, attempt + 1, exc)
        except (aiohttp.ClientError, OSError, TimeoutError, RedirectRefused) as exc:
            log.info("%s: reconnect %d failed: %s", where, attempt + 1, type(exc).__name__)
    log.warning(
        "%s: the model could not be reached (or kept open) again after %d attempts", where, retries
    )
    return None, retries
