"""A call's PCM WebSocket (``GET /call/{callID}/stream``) opened on a worker that does not own
the call, relayed message by message to the owner's (``routing.forward``).

Toward its client the relay keeps the bounds of the owner's own socket
(``attachments/pcm_outbox.py``: a small send buffer and writer limit, the oldest audio dropped
past two seconds and said once at WARNING, a close that waits at most 2 s), and it reads the
owner's socket as fast as the owner sends: a client that stops reading builds no lag in the
relay's buffers, and holds up neither the relay's request nor the owner.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import WSMsgType, web

from ..attachments.pcm_outbox import MAX_MESSAGE, PcmOutbox, pcm_response
from ..errors import BadRequest, OwnerUnreachable
from ..tasks import TaskSet
from .errors import error_response

STREAM_HANDSHAKE_TIMEOUT = 5.0
"""Seconds the owner has to upgrade a relayed ``/call/{callID}/stream`` (a read from memory, as
a forwarded GET): the session bounds only the connect, and an owner that accepts and never
answers held the client's request for ever."""

_REFUSAL_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "call_not_found",
    409: "invalid_call_state",
}


async def relay_stream(
    request: web.Request, http: aiohttp.ClientSession, base_url: str, headers: dict[str, str]
) -> web.StreamResponse:
    """Relay the ``/call/{callID}/stream`` WebSocket to the owner at ``base_url`` (``headers``:
    the forwarded request's), message by message."""
    client = pcm_response()
    if not client.can_prepare(request).ok:
        raise BadRequest("GET /call/{callID}/stream is a WebSocket: send an upgrade request")
    try:
        async with asyncio.timeout(STREAM_HANDSHAKE_TIMEOUT):
            upstream = await http.ws_connect(
                base_url.replace("http://", "ws://", 1) + request.path_qs,
                headers=headers,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5),
                max_msg_size=MAX_MESSAGE,
                autoping=True,
                heartbeat=20,
            )
    except aiohttp.WSServerHandshakeError as exc:
        # The owner refused before upgrading (404, 409, 400): the client sees that status.
        code = _REFUSAL_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, f"the owning worker refused the stream: {code}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise OwnerUnreachable(
            f"the worker that owns this call ({base_url}) did not answer: "
            f"{str(exc) or type(exc).__name__}"
        ) from None
    try:
        await client.prepare(request)
    except BaseException:
        await upstream.close()
        raise
    # The owner refuses (400, before the upgrade) any frame_ms but 20 and 60.
    frame_ms = 60 if request.query.get("frame_ms") == "60" else 20
    where = f"call {request.match_info['callID']}: PCM socket relayed to {base_url}"
    out = PcmOutbox(client, request.transport, where, frame_ms=frame_ms)
    relay = TaskSet(f"stream-relay[{base_url}]")  # the sender and the two directions
    async with upstream:
        relay.spawn(out.sender(), "sender")
        tasks = [
            relay.spawn(_to_client(upstream, out), "to-client"),
            relay.spawn(_to_owner(client, upstream, out), "to-owner"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if out.overflow:
                await out.close_socket(1008, b"client does not read its messages")
            # 1005/1006 (no status, abnormal) may not be sent on the wire (RFC 6455 §7.4.1).
            owners = upstream.close_code
            await out.finish(1011 if owners in (None, 1005, 1006) else owners)
        finally:
            await relay.close()
    return client


async def _to_client(upstream: aiohttp.ClientWebSocketResponse, out: PcmOutbox) -> None:
    """The owner's messages, queued for the client (never waiting for it)."""
    async for msg in upstream:
        if msg.type is WSMsgType.BINARY:
            out.audio(msg.data)
        elif msg.type is WSMsgType.TEXT:
            out.control(msg.data)
            if out.overflow:
                return
        else:
            return


async def _to_owner(
    client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse, out: PcmOutbox
) -> None:
    """The client's messages, sent on to the owner (which reads them as they come)."""
    async for msg in client:
        if msg.type is WSMsgType.BINARY:
            await upstream.send_bytes(msg.data)
        elif msg.type is WSMsgType.TEXT:
            await upstream.send_str(msg.data)
        else:
            if msg.type is WSMsgType.ERROR:  # aiohttp closed it (over 1 MiB: 1009)
                out.client_failed(msg.data)
            return
