"""An agent's model connection: the realtime model's WebSocket, apart from the call's audio
and turns (:mod:`.agent`).

It opens the socket with the key where the provider wants it, sends the messages that
configure the session and waits for the model to take them (:mod:`.opening`), then reads the
model's events (handing them to the agent, keeping the connection's own: the session being
ready, the resumption handle, ``goAway``, the model's errors) while one sender task writes
what the agent queued, in order, bounded. A dropped or closing socket (``goAway``, a server
close, a network error) is reopened — with the resumption handle where the protocol has one —
within ``retries`` attempts, :data:`~.opening.BACKOFF` apart, while the call goes on; then the
agent is told it failed (``reconnect_failed``) — at once where another attempt would be
refused the same (an account-level error, a handshake answered 4xx, a final close code:
``model_error``), and where a bug is met on the way (``reconnect_failed``: never an agent
left reconnecting). A model's error that ends its session (the dialect's ``ends_session``)
closes the socket at once, and a new session opens. Where the protocol wants it, an idle
socket gets the dialect's keep-alive, and a session the provider caps (Deepgram's two hours,
GPT-Live's ``expires_at``, OpenAI Realtime's and xAI's hour) is renewed on a new socket
before the cap, at the first moment nobody speaks (when: :mod:`.upkeep`), so the caller is
never cut off by it; what the caller says between such a planned end and the next session is
kept for it (:mod:`.ends`). A protocol with a goodbye
(GPT-Live's ``session.close``, Ultravox's ``hang_up``) gets it before its socket closes, and
on a stop the server is given :data:`CLOSE_WAIT_S` to end the session itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any

import aiohttp

from ..logs import FailureKinds
from ..tasks import TaskSet, cancel_and_wait
from . import upkeep
from .capabilities import Unfinished
from .ends import PlannedEnd, Why
from .opening import SessionOpening, reopen
from .outbox import Outbox
from .preflight import CONNECT_TIMEOUT
from .wire import (
    Answer,
    GoAway,
    Hello,
    ModelDialect,
    ModelError,
    ModelEvent,
    ProtocolError,
    Ready,
    Refused,
    Resumable,
    Skipped,
    Tool,
    ToolCall,
)

log = logging.getLogger(__name__)

HEALTHY_S = 10.0
"""Seconds a socket must stay open for its drop to count as a new one with every retry again:
a server that takes the session and closes it at once uses up ``retries`` rather than being
reopened forever, a WARNING each time — whether or not it said something first (a word on
each session once reset the retries, and the next attempt came at once: reopened as fast as
the server answered, for the rest of the call)."""
CLOSE_WAIT_S = 2.0
"""Seconds a stopped agent's server has, after the dialect's goodbye (``closing``), to end the
session and close the socket itself before the bridge closes it (finalization unconfirmed)."""

Handle = Callable[[ModelEvent], Awaitable[None]]
"""The agent's handling of one model event (audio, turns, transcripts, tool calls)."""


class Stopped(ConnectionError):
    """The connection was closed while it opened."""


class ModelConnection(SessionOpening):
    """One agent's socket to its model. See the module docstring."""

    def __init__(
        self,
        dialect: ModelDialect,
        url: str,
        api_key: str | None,
        *,
        tools: list[Tool],
        retries: int,
        where: str,
        handle: Handle,
        resume: str | None = None,
        quiet: Callable[[], bool] = lambda: True,
    ) -> None:
        self.dialect = dialect
        self.quiet = quiet
        """Whether nobody is speaking (the agent's voice, the caller): a renewal waits for it."""
        self.url = url
        self._key = api_key  # never logged, never in a snapshot or an event
        self.tools = tools
        self.retries = retries
        self.where = where
        """``call …: agent …``, for the log."""
        self._handle = handle
        self.resume: str | None = resume
        """The latest resumption handle the model gave (Gemini), or the one it started with."""
        self.resumed = False
        self.state = "connecting"
        self.session = 0
        """The number of the newest session's socket (one more at each socket opened)."""
        self.reconnects = 0
        self.skipped = 0
        """Parts of the model's messages left out, unreadable (:class:`~.wire.Skipped`)."""
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.out = Outbox(where)
        """What waits for the socket (the current session's queue; the caller's audio
        dropped when the socket is too slow)."""
        self._stopping = False
        self.failure: str | None = None
        """What refused the agent for good (``Refused.code``, an account-level error's code)."""
        self._tasks = TaskSet(f"model[{where}]")
        self.ends = PlannedEnd(dialect, self.out, self._tasks, where)
        """Why the current socket is being closed on purpose (a renewal, ``goAway``, an error
        that ended the session), and the caller's audio of the gap kept meanwhile."""
        self._runner: asyncio.Task[None] | None = None
        self._bugs = FailureKinds(log)  # what the messages met, each kind logged once

    @property
    def connected(self) -> bool:
        return self._ws is not None and self.state == "connected"

    @property
    def takes_audio(self) -> bool:
        """The caller's audio goes up: to the session open, or, in a planned end's gap, kept
        for the next one (:meth:`~.outbox.Outbox.hold`)."""
        return self.connected or (self.state == "reconnecting" and self.out.holding)

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- what the agent sends
    def current(self, session: int, what: str) -> bool:
        """Whether ``session`` is the one open now (over once its socket dropped); if not,
        ``what`` (meant for it) is said dropped, at WARNING: a new session never asked for it."""
        if session == self.session and self.state not in ("reconnecting", "failed"):
            return True
        log.warning("%s: %s came after its session ended: not sent", self.where, what)
        return False

    def send(self, messages: list[dict[str, Any]]) -> None:
        """Queue control messages (never dropped while the queue has room)."""
        self.out.control(messages)

    def send_audio(self, pcm: bytes) -> bool:
        """Queue the caller's audio (s16le at the dialect's ``rate_in``); ``False`` when the
        socket is too slow to take it and the oldest frame queued went (:mod:`.outbox`)."""
        return self.out.audio(self.dialect.audio(pcm))

    # -- opening
    async def start(
        self,
        http: aiohttp.ClientSession,
        on_reconnected: Callable[[bool], None],
        on_end: Callable[[str], Awaitable[None]],
    ) -> None:
        """Connect (raises on failure: the API answers the request; :class:`Stopped` when
        closed meanwhile), then serve and reopen in the background: ``on_reconnected(resumed)``
        after each reopening; ``on_end(reason)`` when it will not reopen: ``reconnect_failed``
        once the retries are spent, ``ended_by_model`` when the server closed normally and
        its protocol ends a conversation so (the dialect's ``server_close_ends``)."""
        async with asyncio.timeout(CONNECT_TIMEOUT):
            ws = await self._open(http)
        if self._stopping:
            await ws.close()
            raise Stopped(self.where)
        self._ws = ws
        self.state = "connected"
        self._runner = self._tasks.spawn(self._run(http, on_reconnected, on_end), "run")

    # -- serving
    async def _message(self, data: str) -> list[ModelEvent]:
        return await self._events(self._parse(data))

    async def _binary(self, data: bytes) -> None:
        try:
            parsed = self.dialect.binary(data)
        except ProtocolError as exc:
            log.info("%s: unreadable binary frame (%s)", self.where, exc)
            return
        await self._events(parsed)

    async def _events(self, parsed: list[ModelEvent]) -> list[ModelEvent]:
        for event in parsed:
            if isinstance(event, ToolCall):
                event = replace(event, session=self.session)  # the session that asks
            if not self._own(event):
                await self._handle(event)
        return parsed

    def _own(self, event: ModelEvent) -> bool:
        """Handle the connection's own events; ``False`` for the agent's."""
        if isinstance(event, Answer):
            self.out.control(list(event.messages), before_audio=True)
        elif isinstance(event, Resumable):
            self.resume = event.handle
        elif isinstance(event, Ready | Hello):
            pass  # waited for while opening (``_read_until``)
        elif isinstance(event, Skipped):
            self.skipped += 1  # (the first said at WARNING, the rest at DEBUG)
            log.log(
                logging.WARNING if self.skipped == 1 else logging.DEBUG,
                "%s: a part of a model message left out (%s); the rest of it read",
                self.where,
                event.why,
            )
        elif isinstance(event, GoAway):
            log.info("%s: the model will close (goAway %s)", self.where, event.time_left)
            if self._ws is not None:
                self.ends.close(self._ws, Why.GOAWAY)
        elif isinstance(event, ModelError) and event.benign:
            log.info("%s: the model reported %s (a known race)", self.where, event.code)
        elif isinstance(event, ModelError):
            # (While a session opens, ``Refused`` says it.)
            if self.ends.error(event, self._ws if self.connected else None):
                self.failure = event.code  # ``_run`` fails the agent: no reconnect
        else:
            return False
        return True

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async def send(message: bytes | str) -> None:
            if isinstance(message, bytes):
                await ws.send_bytes(message)  # binary audio (Deepgram)
            else:
                await ws.send_str(message)

        helpers = [self._tasks.spawn(self.out.queue.run(send, lambda: ws.closed), "sender")]
        if every := self.dialect.keepalive_s:
            keep = upkeep.keep_alive(self.out, every, lambda: self.send(self.dialect.keepalive()))
            helpers.append(self._tasks.spawn(keep, "keep"))
        if cap := self.dialect.session_limit_s:
            helpers.append(self._tasks.spawn(self.ends.renew(ws, cap, self.quiet), "renew"))
        try:
            async for msg in ws:
                try:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        await self._message(msg.data)
                    elif msg.type is aiohttp.WSMsgType.BINARY:
                        await self._binary(msg.data)
                except (aiohttp.ClientError, ConnectionError, RuntimeError):
                    raise  # the socket's: ``_run`` reopens it
                except Exception as exc:
                    # A bug met on one message (a dialect's, the agent's) costs that message:
                    # it used to end this loop, the agent silent for the rest of the call.
                    self._bugs.failed(exc, "%s: a model message not handled", self.where)
        finally:
            await cancel_and_wait(helpers)
            if not ws.closed:
                # A close begun by another task (a renewal's) ends this loop the moment it
                # starts and its task was just cancelled: finish it here, or the old session's
                # socket stays open, its server waiting for our close frame.
                await ws.close()

    async def _run(
        self,
        http: aiohttp.ClientSession,
        on_reconnected: Callable[[bool], None],
        on_end: Callable[[str], Awaitable[None]],
    ) -> None:
        spent = 0  # retries used since a socket last worked
        try:
            while not self._stopping:
                assert self._ws is not None
                opened = time.monotonic()
                try:
                    await self._serve(self._ws)
                except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                    # Its type only: an aiohttp error's text may hold the URL, and a URL a key.
                    log.info("%s: socket error %s", self.where, type(exc).__name__)
                if self._stopping:
                    return
                if isinstance(self.dialect, Unfinished):  # what it left in progress, told
                    await self._events(self.dialect.finish())
                planned = self.ends.take()
                code = self._ws.close_code
                if code in self.dialect.final_close_codes and planned is not Why.RENEWAL:
                    log.warning("%s: the model closed its socket for good (%s)", self.where, code)
                    self.failure = f"close_{code}"
                if self.failure is not None:
                    self.state = "failed"
                    await on_end("model_error")
                    return
                if (
                    self.dialect.server_close_ends
                    and self._ws.close_code == aiohttp.WSCloseCode.OK
                    and planned is not Why.RENEWAL
                ):
                    log.info("%s: the model ended the conversation (a normal close)", self.where)
                    await on_end("ended_by_model")
                    return
                if time.monotonic() - opened >= HEALTHY_S:
                    spent = 0
                self.state = "reconnecting"
                why = f"closed ({self._ws.close_code})" if self._ws.close_code else "dropped"
                if planned is Why.RENEWAL:
                    spent = 0  # planned: logged by ``PlannedEnd.renew``
                elif planned is Why.ERROR:  # its error was logged (``_own``)
                    log.info("%s: the model ended the session; a new one opens", self.where)
                elif planned is Why.GOAWAY:
                    pass  # said at INFO (``_own``); its retries counted as a drop's
                else:
                    log.warning("%s: the model's socket %s; reconnecting", self.where, why)
                try:
                    ws, spent = await reopen(
                        partial(self._open, http),
                        self.retries,
                        spent,
                        lambda: self._stopping,
                        self.where,
                    )
                except Refused as exc:  # for good: another attempt would be refused the same
                    log.warning(
                        "%s: the model refused the session for good (%s)", self.where, exc.code
                    )
                    self.failure, self.state = exc.code, "failed"
                    await on_end("model_error")
                    return
                if ws is None and self._stopping:
                    return  # closed meanwhile: a stop, not a failure
                if ws is None:
                    self.state = "failed"
                    await on_end("reconnect_failed")
                    return
                self._ws = ws
                self.out.renew()  # what was queued for the old socket means nothing now
                self.state = "connected"
                self.reconnects += 1
                on_reconnected(self.resumed)
                self.out.release()  # the gap's audio: after the turn it belongs to is opened
        except Exception as exc:
            # A bug (a dialect's, met as a session reopens): the agent fails, its fallback
            # runs, rather than stay reconnecting for the rest of the call.
            self._bugs.failed(exc, "%s: the model's connection failed", self.where)
            if self._ws is not None:
                await self._ws.close()  # (a session just opened: nobody reads it now)
            if not self._stopping and self.state != "failed":
                self.state = "failed"
                await on_end("reconnect_failed")

    async def close(self) -> None:
        """Send what is queued (briefly), close the socket, stop the tasks (idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        if self.state != "failed":
            self.state = "stopped"
        if self._ws is not None and not self._ws.closed:
            goodbye = self.dialect.closing()
            self.send(goodbye)
            await self.out.queue.drain(0.2)
            if goodbye and self._runner is not None and not self._ws.closed:
                # The server ends the session (and closes) once it has drained.
                await asyncio.wait({self._runner}, timeout=CLOSE_WAIT_S)
                if not self._ws.closed:
                    log.info("%s: the model did not end its session in time", self.where)
            await self._ws.close()
        if isinstance(self.dialect, Unfinished):  # a reply cut by the stop: what was said, told
            await self._events(self.dialect.finish())
        await self._tasks.close()
