"""A client on a call's PCM WebSocket (``GET /call/{callID}/stream``), ZuckZapGo-compatible.

Binary messages are raw PCM (``s16le`` or ``f32le``, 16 kHz mono) both ways, in 20 or 60 ms
frames out; text messages are JSON control: ``ready``, ``buffer``, ``call_state``, ``ended``,
``error``, ``mark``/``cleared``, ``dtmf`` (the WhatsApp user's key presses) out, ``clear``
and ``mark`` in. What the client sends is queued into the call (:class:`QueuedSource`); with
``role=listen`` it only listens.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from ..audio import FRAME_MS, SAMPLE_RATE, f32_to_s16, s16_to_f32
from ..audio.dtmf import DIGITS
from ..audio.pcm import Pcm
from ..errors import BadRequest, CallStateError, json_object
from ..media import BusFrame
from ..tasks import CloseOnce, TaskSet
from .base import AttachmentHost
from .pcm_outbox import PcmOutbox
from .queued_source import QueuedSource


class PcmSocket:
    """One client on a call's PCM WebSocket; an attachment of the call's runtime."""

    kind = "socket"
    wants_media = True

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        host: AttachmentHost,
        *,
        state: str,
        encoding: str,
        frame_ms: int,
        listen_only: bool,
    ) -> None:
        self.ws = ws
        self.host = host
        self.bus = host.bus
        self.state = state
        self.encoding = encoding
        self.batch = frame_ms // FRAME_MS
        self.listen_only = listen_only
        self.id = f"ws:{id(self)}"
        self._out = PcmOutbox(
            ws, transport, f"call {host.call_id}: PCM socket {self.id}", frame_ms=frame_ms
        )
        self._pending: list[Pcm] = []
        self._tasks = TaskSet(f"ws[{host.call_id[:12]}]")
        self._closed = False
        self._closing: CloseOnce[None] = CloseOnce(f"ws[{host.call_id[:12]}]:close")
        self.on_hold = False
        """The call is held: a talking client neither speaks to nor hears the caller
        (:meth:`held`)."""
        self.source = QueuedSource(
            on_mark=self._marked,
            on_buffer=self._buffer,
            stats=self.bus.stats,
            where=self._out.where,
        )

    @property
    def dropped(self) -> int:
        """Peer audio messages dropped because the client read too slowly."""
        return self._out.dropped

    # -- outgoing (never awaited from the media path: queued for the sender task)
    def _send_json(self, body: dict[str, Any]) -> None:
        self._out.control(json.dumps(body))  # overflow: the receive loop closes it (1008)

    def _marked(self, name: str, status: str) -> None:
        self._send_json({"type": "mark", "name": name, "status": status})

    def _buffer(self, ms: int) -> None:
        self._send_json(
            {
                "type": "buffer",
                "bufferedMs": ms,
                "lowWatermarkMs": self.source.low_ms,
                "highWatermarkMs": self.source.high_ms,
            }
        )

    def _peer_frame(self, frame: BusFrame) -> None:
        self._pending.append(np.zeros_like(frame.pcm) if self.on_hold else frame.pcm)
        if len(self._pending) < self.batch:
            return
        pcm = np.concatenate(self._pending) if self.batch > 1 else self._pending[0]
        self._pending = []
        payload = (
            s16_to_f32(pcm).astype("<f4").tobytes()
            if self.encoding == "f32le"
            else pcm.astype("<i2", copy=False).tobytes()
        )
        if not self._out.audio(payload):  # a slow client loses its oldest audio
            self.bus.stats.socket_frames_dropped += self.batch

    def dtmf(self, digit: str, duration_ms: int) -> None:
        """The WhatsApp user pressed a key (see :mod:`.keys`)."""
        self._send_json({"type": "dtmf", "digit": digit, "durationMs": duration_ms})

    # -- the call, as the runtime reports it
    def held(self, held: bool) -> None:
        """The call was put on hold or taken off it (``FollowsHold``): a talking client (an
        agent's leg lent from another worker, a bot) neither speaks to nor hears a held caller,
        as a browser's agent; one that listens (a transcriber) hears the call as it is."""
        if not self.listen_only:
            self.on_hold = self.source.quiet = held

    def call_state(self, state: str, end_reason: str | None) -> None:
        if state == self.state:
            return
        self.state = state
        self._send_json({"type": "call_state", "state": state})
        if state == "ended":
            self._send_json({"type": "ended", "reason": end_reason})

    # -- incoming
    def _error(self, code: str, message: str) -> None:
        self._send_json({"type": "error", "code": code, "message": message})

    def _audio_in(self, data: bytes) -> None:
        if self.listen_only:
            self._error("listen_only", "this socket is receive-only (role=listen)")
            return
        width = 4 if self.encoding == "f32le" else 2
        if len(data) % width:
            self._error(
                "bad_frame",
                f"a {self.encoding} frame must be a multiple of {width} "
                f"bytes; got {len(data)}; dropped",
            )
            return
        pcm = (
            f32_to_s16(np.frombuffer(data, dtype="<f4"))
            if width == 4
            else np.frombuffer(data, dtype="<i2").astype(np.int16)
        )
        self.source.push(pcm)

    def _control(self, text: str) -> None:
        try:
            msg = json_object(text)
        except BadRequest:  # nested too deeply too: it once closed the socket, unexplained
            self._error("bad_json", "text frames must be JSON objects")
            return
        kind = msg.get("type")
        if kind == "clear":
            dropped = self.source.clear()
            self._send_json({"type": "cleared", "droppedMs": dropped * FRAME_MS})
        elif kind == "dtmf":
            self._key(msg)
        elif kind == "mark":
            name = msg.get("name")
            if not isinstance(name, str) or not name or len(name) > 200:
                self._error("bad_mark", "mark needs a 'name' string (1-200 characters)")
            elif not self.source.mark(name):
                self._error("too_many_marks", "too many marks waiting; send fewer")
        else:
            self._error("unknown_type", f"unknown message type {str(kind)[:40]!r}")

    def _key(self, msg: dict[str, Any]) -> None:
        """``{"type": "dtmf", "digit", "durationMs"?}``: a key the client presses, heard by
        WhatsApp as the agent's (RFC 4733 where the WhatsApp side takes it): a bot on the
        socket, or an agent's leg lent from another worker (``desk/lending.py``)."""
        digit, duration = msg.get("digit"), msg.get("durationMs", 160)
        if self.listen_only:
            self._error("listen_only", "this socket is receive-only (role=listen)")
        elif not isinstance(digit, str) or len(digit) != 1 or digit.upper() not in DIGITS:
            self._error("bad_dtmf", f"dtmf needs a 'digit', one of {DIGITS}")
        elif type(duration) is not int or not 40 <= duration <= 2000:
            self._error("bad_dtmf", "dtmf 'durationMs' must be an integer from 40 to 2000")
        else:
            self.host.key_pressed(self.id, digit.upper(), duration)

    async def run(self) -> None:
        """Serve the client until it leaves or the call ends (the request handler awaits it)."""
        self._send_json(
            {
                "type": "ready",
                "callID": self.host.call_id,
                "encoding": self.encoding,
                "sampleRate": SAMPLE_RATE,
                "channels": 1,
                "frameMs": self.batch * FRAME_MS,
                "frameBytes": self.batch
                * FRAME_MS
                * SAMPLE_RATE
                // 1000
                * (4 if self.encoding == "f32le" else 2),
                "role": "listen" if self.listen_only else "talk",
                "state": self.state,
            }
        )
        self._tasks.spawn(self._out.sender(), "sender")
        self.held(self.bus.conference.held)  # opened on a held call
        self.bus.add_downlink_tap(self._peer_frame)
        if self.listen_only:
            self.bus.add_user(self.id)
        else:
            self.bus.add_source(self.source)
        try:
            self.host.attach(self)
        except CallStateError:  # the call ended while the socket opened
            self.call_state("ended", None)
            await self.close()
            return
        try:
            async for msg in self.ws:
                if msg.type is WSMsgType.BINARY:
                    self._audio_in(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    self._control(msg.data)
                elif msg.type is WSMsgType.ERROR:  # aiohttp closed it (over 1 MiB: 1009)
                    self._out.client_failed(msg.data)
                if self._out.overflow:
                    await self._out.close_socket(1008, b"client does not read its messages")
                    break
        finally:
            self.host.detach(self)
            await self.close()

    async def close(self) -> None:
        """Off the bus, the last messages handed to the client (bounded), the socket closed
        (bounded), the sender stopped (idempotent; concurrent callers share one teardown,
        which runs to its end even if a caller is cancelled: ``tasks.CloseOnce``)."""
        self._closed = True
        await self._closing.run(self._teardown)

    async def _teardown(self) -> None:
        self.bus.remove_downlink_tap(self._peer_frame)
        self.bus.remove_source(self.source)
        self.bus.remove_user(self.id)
        await self._out.finish()
        await self._tasks.close()
