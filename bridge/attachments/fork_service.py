"""Opening media forks (``POST /call/{callID}/streams``): the request checked (a ``ws://`` or
``wss://`` URL on a ``BRIDGE_FORK_URL_ALLOW`` host, its channel, type and format, the call's
limits), then the :class:`~.forks.Fork` opened and announced (``stream.started``); a moved
call's forks opened again here (:meth:`ForkService.resume`). The running stream is
``forks.py``'s.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from ..errors import BadRequest, CallStateError, Forbidden, NotFound
from ..http import HostAllow, url_parts
from .base import AttachmentHost
from .forks import Fork
from .twilio import TwilioEvents, custom_parameters
from .wavix import ForkDialect, WavixEvents

MAX_TWOWAY, MAX_ONEWAY = 1, 5
"""Streams a call may have of each type."""


class ForkService:
    """Opens media forks; URLs restricted to ``BRIDGE_FORK_URL_ALLOW`` hosts."""

    def __init__(self, allow: tuple[str, ...], http: aiohttp.ClientSession) -> None:
        self.allow = HostAllow(allow)
        self._http = http

    async def resume(self, host: AttachmentHost, moved: dict[str, Any]) -> Fork:
        """Open a stream of a call moved here again (:meth:`Fork.export`): same URL, same
        stream id, a ``start`` with ``"resumed": true``."""
        stream_id = moved.get("streamId")
        if not isinstance(stream_id, str) or not stream_id:
            raise BadRequest("a moved media fork needs its 'streamId' (a string)")
        body = {k: v for k, v in moved.items() if k != "streamId"}
        return await self.start(host, body, stream_id=stream_id, resumed=True)

    async def start(
        self,
        host: AttachmentHost,
        body: dict[str, Any],
        *,
        stream_id: str | None = None,
        resumed: bool = False,
    ) -> Fork:
        url = body.get("url")
        if not isinstance(url, str):
            raise BadRequest("field 'url' must be a ws:// or wss:// URL")
        parts = url_parts(url)
        if parts is None or parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise BadRequest("field 'url' must be a ws:// or wss:// URL")
        if not self.allow.allows(parts):
            raise Forbidden(
                f"host {parts.hostname!r} is not in BRIDGE_FORK_URL_ALLOW", code="url_not_allowed"
            )
        channel = body.get("channel", "inbound")
        kind = body.get("type", "oneway")
        fmt = body.get("format", "pcm16")
        if channel not in ("inbound", "outbound", "both"):
            raise BadRequest("channel must be inbound, outbound or both")
        if kind not in ("oneway", "twoway"):
            raise BadRequest("type must be oneway or twoway")
        if fmt not in ("pcm16", "pcmu", "twilio"):
            raise BadRequest("format must be pcm16, pcmu or twilio")
        params = body.get("customParameters")
        if params is not None and fmt != "twilio":
            raise BadRequest("customParameters are for format twilio")
        mine: list[Fork] = host.attached("fork")
        if kind == "twoway" and sum(f.stream_type == "twoway" for f in mine) >= MAX_TWOWAY:
            raise CallStateError("a call can have one two-way stream")
        if kind == "oneway" and sum(f.stream_type == "oneway" for f in mine) >= MAX_ONEWAY:
            raise CallStateError(f"a call can have {MAX_ONEWAY} one-way streams")
        if fmt == "twilio":
            dialect: ForkDialect = TwilioEvents(host.call_id, custom_parameters(params), stream_id)
        else:
            dialect = WavixEvents(host.call_id, fmt, stream_id)
        fork = Fork(host, url, channel, kind, fmt, dialect, resumed=resumed)
        host.attach(fork)  # counted against the limits while it connects
        try:
            await fork.start(self._http)
        except BaseException:
            host.detach(fork)
            raise
        host.emit(
            "stream.started",
            streamId=fork.id,
            channel=channel,
            type=kind,
            format=fmt,
            **({"resumed": True} if resumed else {}),
        )
        return fork

    @staticmethod
    async def stop(host: AttachmentHost, stream_id: str) -> None:
        fork = next((f for f in host.attached("fork") if f.id == stream_id), None)
        if fork is None:
            raise NotFound(f"no stream {stream_id[:80]!r} on this call")
        await fork.close()
