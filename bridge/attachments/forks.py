"""Media forks: the bridge connects out to an app's WebSocket and streams the call's audio to
it as JSON events — ``connected``, ``start``, ``media`` (base64, per 20 ms frame and track),
``stop`` — and, for a two-way fork, plays the app's ``media`` into the call and answers its
``mark`` and ``clear``.

How the events are spelled is the fork's dialect (:class:`~.wavix.ForkDialect`): Wavix-style
(:class:`~.wavix.WavixEvents`, ``"format": "pcm16"`` or ``"pcmu"``) or Twilio Media Streams
(:class:`~.twilio.TwilioEvents`, ``"format": "twilio"``); everything else — the taps, the
bounded queue, the two-way source, the lifecycle — is this module's, whatever the dialect.

``inbound`` is what the WhatsApp peer says, ``outbound`` what the call sends to the peer
(microphone, playback, sockets), as in the recordings. Payloads are the bus audio (s16le
16 kHz mono) or 8 kHz G.711 µ-law (``pcmu``, and always with Twilio). A fork that cannot keep
up (its send queue fills) is dropped with a ``stream.dropped`` event; it never slows the call.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import numpy as np

from ..audio import FRAME_MS, Resampler
from ..audio.g711 import ulaw_decode, ulaw_encode
from ..audio.pcm import Pcm
from ..errors import BadRequest, CallStateError, json_object
from ..http import connect_failure, display_url
from ..logs import Repeats
from ..media import BusFrame
from ..tasks import CloseOnce, TaskSet
from .base import AttachmentHost
from .queued_source import MAX_MARKS, QueuedSource
from .twilio import TwilioEvents
from .wavix import ForkDialect
from .wire import OutgoingQueue, bound_send_buffer

log = logging.getLogger(__name__)

QUEUE_LIMIT = 250
"""Messages a fork may have waiting (5 s of one track) before it is dropped."""
FRAME_8K = 160
"""Samples in 20 ms at 8 kHz: every µ-law payload is one whole frame (as Twilio sends)."""
CONNECT_TIMEOUT = 10.0
"""Seconds to open a fork's WebSocket, handshake included."""


class Fork:
    """One outgoing media stream of one call; an attachment of the call's runtime."""

    kind = "fork"
    wants_media = True

    def __init__(
        self,
        host: AttachmentHost,
        url: str,
        channel: str,
        kind: str,
        fmt: str,
        dialect: ForkDialect,
        *,
        resumed: bool = False,
    ) -> None:
        self.wire = dialect
        self.resumed = resumed
        """The stream was opened by another worker, which handed the call over: its ``start``
        says ``"resumed": true`` and keeps the stream id."""
        self.id = dialect.stream_id
        self.host = host
        self.call_id = host.call_id
        self.url = url
        self.shown = display_url(url)
        self.channel = channel
        self.stream_type = kind
        self.format = fmt
        self.codec = dialect.codec
        self.bus = host.bus
        self._queue = OutgoingQueue(
            max_audio=QUEUE_LIMIT, max_control=QUEUE_LIMIT, drop_oldest_audio=False
        )
        self._chunks = {"inbound": 0, "outbound": 0}
        self._first_ms: dict[str, int] = {}
        self._t0 = time.monotonic()
        self._to8k = {"inbound": Resampler(8000), "outbound": Resampler(8000)}
        self._from8k = Resampler(16_000)
        self.source: QueuedSource | None = None
        self.on_hold = False
        """The call is held and this fork talks (two-way): its bot neither speaks to nor hears
        the caller (:meth:`held`)."""
        self._tasks = TaskSet(f"fork[{self.id}]")
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._stopping = False
        self._closing: CloseOnce[None] = CloseOnce(f"fork[{self.id}]:close")
        self._started = False
        """Its socket opened and its taps are on (``stream.started`` follows): only then does
        its end say ``stream.stopped``/``dropped``."""
        self.dropped = False

    # -- events to the app
    def _enqueue(self, body: dict[str, Any], *, audio: bool = False) -> None:
        if self.dropped:
            return
        message = json.dumps(body)
        if not (self._queue.put_audio(message) if audio else self._queue.put_control(message)):
            self.dropped = True
            log.warning("call %s: media fork %s cannot keep up; dropped", self.call_id, self.id)
            self._tasks.spawn(self._finish("dropped"), "drop")

    def _tap(self, track: str) -> Callable[[BusFrame], None]:
        def tap(frame: BusFrame) -> None:
            pcm = np.zeros_like(frame.pcm) if self.on_hold else frame.pcm
            if self.codec == "pcmu":
                narrow = self._to8k[track].resample_array(pcm, 16_000)
                if narrow.size < FRAME_8K:  # the filter's delay, on the first frame only
                    narrow = np.concatenate([np.zeros(FRAME_8K - narrow.size, np.int16), narrow])
                payload = ulaw_encode(narrow)
            else:
                payload = pcm.astype("<i2", copy=False).tobytes()
            self._chunks[track] += 1
            if track not in self._first_ms:
                self._first_ms[track] = int((time.monotonic() - self._t0) * 1000)
            # Milliseconds of media since the stream started: each 20 ms frame its own,
            # whatever bursts the engine's frames arrive in (a 60 ms packet is three frames).
            at_ms = self._first_ms[track] + (self._chunks[track] - 1) * FRAME_MS
            self._enqueue(self.wire.media(track, self._chunks[track], at_ms, payload), audio=True)

        return tap

    # -- lifecycle
    async def start(self, http: aiohttp.ClientSession) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                self._ws = await http.ws_connect(
                    self.url,
                    heartbeat=20,
                    max_msg_size=1 << 20,
                    timeout=aiohttp.ClientWSTimeout(ws_close=2),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            why = connect_failure(exc, CONNECT_TIMEOUT)
            log.warning("call %s: fork to %s not opened: %s", self.call_id, self.shown, why)
            raise BadRequest(
                f"cannot open a WebSocket to the stream url: {why}", code="stream_connect_failed"
            ) from None
        if self._stopping:  # the call ended while we connected
            await self._ws.close()
            raise CallStateError(f"call {self.call_id} has ended")
        bound_send_buffer(self._ws)  # a stalled app is noticed within about a second
        self._enqueue(self.wire.connected())
        start = self.wire.start(self.channel, self.stream_type)
        if self.resumed:
            start["resumed"] = True
        self._enqueue(start)
        self._taps: list[tuple[str, Callable[[BusFrame], None]]] = []
        if self.channel in ("inbound", "both"):
            tap = self._tap("inbound")
            self.bus.add_downlink_tap(tap)
            self._taps.append(("down", tap))
        if self.channel in ("outbound", "both"):
            tap = self._tap("outbound")
            self.bus.add_uplink_tap(tap)
            self._taps.append(("up", tap))
        if self.stream_type == "twoway":
            self.source = QueuedSource(
                on_mark=self._marked,
                stats=self.bus.stats,
                where=f"call {self.call_id}: media fork {self.id}",
            )
            self.bus.add_source(self.source)
            self.held(self.bus.conference.held)  # opened on a held call
        else:
            self.bus.add_user(f"fork:{self.id}")
        self._tasks.spawn(self._ends_the_fork(self._sender(), "sending to"), "sender")
        self._tasks.spawn(self._ends_the_fork(self._receiver(), "reading"), "receiver")
        self._started = True

    def held(self, held: bool) -> None:
        """The call was put on hold or taken off it (``FollowsHold``): a two-way fork's bot
        neither speaks to nor hears a held caller, as a talking PCM socket and a browser's
        agent (what it sends plays out in time as silence, marks answered; it is sent silence,
        its chunks and timestamps going on); a one-way fork (a recorder, a transcriber) hears
        the call as it is."""
        if self.source is not None:
            self.on_hold = self.source.quiet = held

    def _marked(self, name: str, status: str) -> None:
        self._enqueue(self.wire.mark(name, status))

    def dtmf(self, digit: str, duration_ms: int) -> None:
        """The WhatsApp user pressed a key (see :mod:`.keys`)."""
        message = self.wire.dtmf(digit)
        if message is not None and not self._stopping:
            self._enqueue(message)

    async def _ends_the_fork(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run the fork's sender or reader: however it ends, the fork ends with it (never left
        half-open); an unexpected error is said once at WARNING, ``stream.stopped``'s reason."""
        reason = "disconnected"
        try:
            await work
        except Exception as exc:  # a defect: the fork ends, the call goes on
            reason = "error"
            log.warning(
                "call %s: media fork %s stopped %s the app (%s: %s); the fork ends",
                self.call_id,
                self.id,
                what,
                type(exc).__name__,
                exc,
            )
        finally:
            if not self._stopping:
                self._tasks.spawn(self._finish(reason), "ended")

    async def _sender(self) -> None:
        ws = self._ws
        assert ws is not None

        async def send(message: bytes | str) -> None:
            assert isinstance(message, str)
            await ws.send_str(message)

        with contextlib.suppress(ConnectionError, RuntimeError):  # the socket closed under a send
            await self._queue.run(send, lambda: ws.closed)

    async def _receiver(self) -> None:
        ws = self._ws
        assert ws is not None
        # The app's unreadable messages, its marks over the bound (dropped): the first of each
        # said, their count at the end (an app that sends them sends one a frame).
        said = Repeats()
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.ERROR:
                # aiohttp closed the socket (a message over 1 MiB: 1009; no pong): the fork
                # ends with the cause said, not as if the app had closed it.
                raise msg.data
            if self.source is None:
                continue  # a one-way fork ignores what the app sends
            if msg.type is not aiohttp.WSMsgType.TEXT:
                if said.seen("skipped {} binary messages") == 1:
                    log.warning(
                        "call %s: fork %s sent a binary message; its audio goes in JSON "
                        "'media' events (text): skipped, as those after it",
                        self.call_id,
                        self.id,
                    )
                continue
            try:
                body = json_object(msg.data)  # nested too deeply: it once ended this loop
                event = body.get("event")
                if event == "media":
                    raw = base64.b64decode(body["media"]["payload"], validate=True)
                    self.source.push(self._decode(raw))
                elif event == "mark":
                    # One over MAX_MARKS never comes back (the protocol has no refusal).
                    over = not self.source.mark(str(body["mark"]["name"])[:200])
                    if over and said.seen("dropped {} marks over the bound") == 1:
                        log.warning(
                            "call %s: fork %s sent more marks than may wait (%d); those "
                            "over it are dropped, never answered",
                            self.call_id,
                            self.id,
                            MAX_MARKS,
                        )
                elif event == "clear":
                    self.source.clear()
            except (BadRequest, ValueError, KeyError, TypeError, AttributeError) as exc:
                if said.seen("skipped {} messages it could not read") == 1:
                    log.warning(
                        "call %s: fork %s sent a message it cannot read (%s: %s); the "
                        "fork goes on, skipping such messages",
                        self.call_id,
                        self.id,
                        type(exc).__name__,
                        exc,
                    )
        for what, count in said.drain():
            if count > 1:
                log.warning("call %s: fork %s %s", self.call_id, self.id, what.format(count))

    def _decode(self, raw: bytes) -> Pcm:
        if self.codec == "pcmu":
            return self._from8k.resample_array(ulaw_decode(raw), 8000)
        if len(raw) % 2:
            raise ValueError("odd-length PCM")
        return np.frombuffer(raw, dtype="<i2").astype(np.int16)

    def _detach(self) -> None:
        for where, tap in getattr(self, "_taps", []):
            if where == "down":
                self.bus.remove_downlink_tap(tap)
            else:
                self.bus.remove_uplink_tap(tap)
        self._taps = []
        if self.source is not None:
            self.bus.remove_source(self.source)
        self.bus.remove_user(f"fork:{self.id}")

    async def _finish(self, reason: str) -> None:
        """End the fork: once, its callers (the app's end, a drop, a ``DELETE``, the call's
        end or move) sharing the first one's teardown, each returning once it is over."""
        self._stopping = True
        await self._closing.run(lambda: self._teardown(reason))

    async def _teardown(self, reason: str) -> None:
        self._detach()
        if reason == "stopped" and self._ws is not None and not self._ws.closed:
            self._queue.put_control(json.dumps(self.wire.stop()))
            await self._queue.drain()
        if self._ws is not None:
            await self._ws.close()
        self.host.detach(self)
        if self._started:  # one the call ended while it connected was never a stream (409)
            event = "stream.dropped" if reason == "dropped" else "stream.stopped"
            self.host.emit(event, streamId=self.id, reason=reason)
        await self._tasks.close()

    def call_state(self, state: str, end_reason: str | None) -> None:
        pass  # a fork follows the call through its runtime's close()

    async def close(self) -> None:
        await self._finish("stopped")

    async def leave(self) -> None:
        """Close the socket without ``stop``: the call moved to another worker, which opens
        the stream again with the same id (its ``start`` says it resumed)."""
        await self._finish("moved")

    def export(self) -> dict[str, Any]:
        """What another worker needs to open this stream again (a handover)."""
        moved: dict[str, Any] = {
            "url": self.url,
            "channel": self.channel,
            "type": self.stream_type,
            "format": self.format,
            "streamId": self.id,
        }
        if isinstance(self.wire, TwilioEvents):
            moved["customParameters"] = self.wire.parameters
        return moved
