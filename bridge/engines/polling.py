"""``PollingEngine``: the base of engines reached over HTTP whose calls are discovered by
polling their list of live calls (ZuckZapGo, WADial): the REST request's error mapping, the
poll loop that turns list differences into engine events, and media that reconnects while the
engine still lists the call (:mod:`.socket`)."""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Self

import aiohttp

from ..config import EngineSettings, Settings
from ..errors import EngineCallNotFound, EngineError, EngineUnavailable, PeerUnreachable
from ..logs import FailureKinds
from ..tasks import TaskSet, wait_event
from .base import EngineEvent, EngineHealth, EngineStats, RemoteCall
from .call_list import CallList
from .channels import MediaChannel, MediaClosed
from .hangups import PendingHangups
from .http import http_json
from .socket import ReconnectingChannel, why

log = logging.getLogger(__name__)


class PollingEngine(abc.ABC):
    """Base of engines whose calls are discovered by polling a list of live calls: each poll
    turns differences into events (a new inbound call rings, ours rings or goes active, a call
    gone from the list has ended — for ZuckZapGo, the only remote-hangup signal)."""

    name = "remote"
    media_before_answer = False
    who = "the engine"
    """Who answers, as the errors name it."""
    not_enabled = "the engine does not take calls"
    """What an engine's 409 means, and how to fix it."""

    REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=5, connect=2)

    def __init__(self, settings: EngineSettings, http: aiohttp.ClientSession | None = None) -> None:
        self.settings = settings
        self.base = settings.engine_url.rstrip("/")
        self.events: asyncio.Queue[EngineEvent] = asyncio.Queue(maxsize=1000)
        self.stats = EngineStats()
        self.up = False
        self.detail = "not polled yet"
        self._calls = CallList(self.events)
        self._tasks = TaskSet(self.name)
        self._poke = asyncio.Event()
        self._poll_lock = asyncio.Lock()
        self._http = http
        self._own_http = http is None
        self._back = asyncio.Event()
        """Set while the engine answers; a fresh (unset) one each time it stops answering."""
        self._first_listing: list[RemoteCall] | None = None
        self._bugs = FailureKinds(log)  # what a poll met, each kind logged once (every poll)
        self._listed = asyncio.Event()
        self.pending_hangups = PendingHangups(self.name, self.hangup, self.pause)

    @classmethod
    def from_settings(cls, settings: Settings, http: aiohttp.ClientSession | None = None) -> Self:
        """The engine registered for its ``BRIDGE_ENGINE`` name."""
        return cls(settings.engine, http)

    # -- lifecycle
    async def start(self) -> None:
        if self._http is None:  # standalone use; the app passes its one session
            self._http = aiohttp.ClientSession()
        self._tasks.spawn(self._poll_loop(), "poll")
        self._tasks.spawn(self.pending_hangups.run(), "pending-hangups")

    async def close(self) -> None:
        await self._tasks.close()
        left = self.pending_hangups.abandon_all()
        if left:
            log.warning(
                "%s engine: closing with %d calls not hung up on the engine (%s); the next "
                "start-up hangs them up as orphans (BRIDGE_ORPHAN_CALLS=hangup)",
                self.name,
                len(left),
                ", ".join(left[:20]),
            )
        if self._http is not None and self._own_http:
            await self._http.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, "engine not started"
        return self._http

    async def health(self) -> EngineHealth:
        return EngineHealth(up=self.up, detail=self.detail, info={"calls": len(self._calls)})

    def _mark(self, up: bool, detail: str) -> None:
        if up != self.up:
            log.log(
                logging.INFO if up else logging.WARNING,
                "engine %s is %s: %s",
                self.name,
                "up" if up else "down",
                detail,
            )
        if up and not self.up:
            self._back.set()
        elif not up and self.up:
            self._back = asyncio.Event()
        self.up = up
        self.detail = detail

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``; while the engine does not answer, return as soon as it does."""
        back = self._back
        if self.up or back.is_set():
            await asyncio.sleep(seconds)
            return
        await wait_event(back, seconds)

    # -- discovery
    @abc.abstractmethod
    async def list_calls(self) -> list[RemoteCall]:
        """The engine's live calls, normalised."""

    @abc.abstractmethod
    async def end_call(self, engine_call_id: str) -> None:
        """The engine's request that ends (or declines) a call."""

    def listed(self, items: Any) -> list[RemoteCall]:
        """The engine's list of calls read (``callId``, ``peerJid`` or ``peer``, ``state``,
        ``direction``); an item without a ``callId`` is counted bad and skipped; ``None`` (no
        ``calls`` at all) is none. Anything else is no list: :meth:`unreadable`."""
        if items is None:
            return []
        if not isinstance(items, list):
            raise self.unreadable(items)
        out = []
        for item in items:
            if not isinstance(item, dict) or not item.get("callId"):
                self.stats.bad_messages += 1
                continue
            peer = item.get("peerJid") or item.get("peer") or ""
            state = str(item.get("state") or "unknown").lower()
            direction = str(item.get("direction") or "").lower()
            out.append(RemoteCall(str(item["callId"]), str(peer), state, direction))
        return out

    def unreadable(self, answer: Any) -> EngineError:
        """A call list answered with no list (a proxy's page with 200, no JSON): the engine
        is down while it lasts (read as an empty list, it ended every call)."""
        self.stats.bad_messages += 1
        return EngineError(f"{self.who} answered the call list with no list: {answer!r:.80}")

    async def hangup(self, engine_call_id: str) -> None:
        """End (or decline) a call on the engine; tracked no more once it is gone there."""
        try:
            await self.end_call(engine_call_id)
        except EngineCallNotFound:
            self.hung_up(engine_call_id)
            raise
        self.hung_up(engine_call_id)

    def can_move(self, engine_call_id: str) -> bool:
        """Every call can: the engine holds the WhatsApp call, and closing our media socket
        does not end it (only a hang-up does), so another worker may open it again."""
        return True

    def poke(self) -> None:
        """Poll now (a webhook said something changed)."""
        self._poke.set()

    async def _poll_loop(self) -> None:
        while True:
            try:
                await self.poll_once()
            except EngineError as exc:
                self._mark(False, exc.message)
            except Exception as exc:  # a bug must not end call discovery for good
                self._bugs.failed(exc, "polling the %s engine", self.name)
                self._mark(False, "malformed answer to the call list")
            self._poke.clear()
            await wait_event(self._poke, self.settings.engine_poll_interval)

    async def poll_once(self) -> None:
        # One poll at a time: the loop and still_live() may both poll; an overlapping pair
        # could each diff against a stale view and report a call twice.
        async with self._poll_lock:
            await self._poll()

    async def _poll(self) -> None:
        calls = self._calls.live(await self.list_calls())
        self._mark(True, "reachable")
        if self._first_listing is None:
            self._first_listing = calls
            self._listed.set()
        self._calls.update(calls)

    async def startup_calls(self) -> list[RemoteCall]:
        """The engine's calls at its first successful listing (waits for the engine)."""
        await self._listed.wait()
        return list(self._first_listing or [])

    def hangup_later(self, engine_call_id: str, why: str) -> None:
        """Hang the call up once the engine answers again (see :class:`PendingHangups`)."""
        self.pending_hangups.add(engine_call_id, why)

    def track(self, call_id: str, peer: str, state: str, direction: str) -> None:
        """Remember a call we created, so its disappearance is noticed."""
        self._calls.track(call_id, peer, state, direction)

    def hung_up(self, call_id: str) -> None:
        """We ended the call ourselves: stop tracking it, report nothing."""
        self._calls.hung_up(call_id)

    def offer_again(self, engine_call_id: str) -> None:
        """``OffersAgain``: the next poll that lists the call ringing reports it ``INCOMING``
        (no worker could claim it: the directory was away)."""
        self._calls.offer_again(engine_call_id)

    def forget(self, call_id: str, reason: str = "") -> None:
        """The call is gone from the engine: report it ended (once)."""
        self._calls.forget(call_id, reason)

    async def still_live(self, call_id: str) -> bool:
        """Ask the engine now whether the call is still listed."""
        try:
            await self.poll_once()
        except EngineError:
            pass  # unreachable: cannot tell, so it stays live while it was
        except Exception as exc:  # a bug: cannot tell either
            self._bugs.failed(exc, "polling the %s engine", self.name)
        return call_id in self._calls

    async def reconnecting(
        self, engine_call_id: str, connect: Callable[[], Awaitable[MediaChannel]]
    ) -> ReconnectingChannel:
        """Open a media channel that reconnects, for up to ``BRIDGE_ENGINE_RECONNECT_WINDOW``
        seconds per drop, while this engine may still have the call."""
        channel = ReconnectingChannel(
            engine_call_id,
            connect,
            lambda: self.still_live(engine_call_id),
            self.stats,
            window=self.settings.engine_reconnect_window,
            pause=self.pause,
        )
        await channel.open()
        return channel

    async def media_socket(self, url: str, **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
        """The engine's media WebSocket at ``url`` (``http`` becomes ``ws``); :class:`MediaClosed`
        when it cannot be opened."""
        url = "ws" + url[4:] if url.startswith("http") else url
        try:
            return await self.http.ws_connect(
                url,
                heartbeat=20,
                max_msg_size=1 << 20,
                timeout=aiohttp.ClientWSTimeout(ws_close=2),
                **kwargs,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise MediaClosed(f"cannot open the {self.name} media socket: {why(exc)}") from None

    # -- HTTP
    async def request(
        self,
        method: str,
        url: str,
        *,
        payload: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One REST call (:func:`~.http.http_json`); an error status is :func:`status_error`'s."""
        resp, text, body = await http_json(
            self.http,
            self.stats,
            method,
            url,
            where=f"the {self.name} engine at {self.settings.engine_url}",
            down=lambda detail: self._mark(False, detail),
            json=payload,
            headers=headers,
            timeout=self.REQUEST_TIMEOUT,
        )
        if resp.status >= 400:
            self.stats.request_errors += 1
            message = ""
            if isinstance(body, dict):
                message = str(body.get("error") or body.get("message") or "")
            raise status_error(self.who, self.not_enabled, resp.status, message or text[:200])
        return body


def status_error(who: str, not_enabled: str, status: int, message: str) -> EngineError:
    """The error a polling engine's HTTP ``status`` (and its ``message``) means, in its words
    (:attr:`PollingEngine.who`, :attr:`PollingEngine.not_enabled`)."""
    if status in (401, 403):
        return EngineUnavailable(
            f"{who} refused BRIDGE_ENGINE_TOKEN ({status}): {message}",
            code="engine_unauthorized",
        )
    if status == 404:
        return EngineCallNotFound(f"{who} does not know this call: {message}")
    if status == 409:
        return EngineUnavailable(f"{not_enabled}: {message}", code="engine_not_enabled")
    if status == 502:
        return PeerUnreachable(f"the WhatsApp peer is unreachable: {message}")
    return EngineError(f"{who} error {status}: {message}")
