"""Routing between instances: a request about a call runs on the worker that owns the call.

With a shared directory (Redis), any worker may receive any request. This middleware finds
the call a request is about (the ``{callID}`` in its path, or ``callID`` in its JSON body on
the routes whose body schema in the OpenAPI document requires one),
and when another worker owns it, forwards the request to that worker's internal address with
``BRIDGE_INTERNAL_SECRET`` and gives the client the owner's status and body unchanged (the
``/call/{callID}/stream`` WebSocket is relayed message by message). ``POST /call/make`` is
placed on the least-loaded worker with room. An engine webhook goes to the worker that owns
the calls it is about (the engine names them). With the in-memory directory none of this is
installed.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from ..cluster import CallRecord, Directory
from ..engines import WebhookCalls
from ..engines.webhooks import WEBHOOK_LIMIT
from ..errors import (
    AtCapacity,
    CallStateError,
    DirectoryUnavailable,
    OwnerUnreachable,
)
from ..logs import Repeats
from ..numbers.front_door import webhook_calls
from .auth import FORWARDED, INTERNAL_HEADER, OWNER_HEADER, TENANT_HEADER
from .engine import WEBHOOK_PATH
from .errors import JSON_LIMIT, RAW_BODY, error_code, read_raw_json
from .keys import DIRECTORY, INTERNAL_HTTP, MANAGER, METRICS, SETTINGS, SWITCHBOARD
from .media import play_body_limit
from .placing import with_room
from .schema import call_body_routes
from .stream_relay import relay_stream
from .tenancy import principal_of

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=2)
"""A forwarded request may take as long as an offer's ICE gathering; connecting is quick
or the owner is gone."""
FORWARD_READ_TIMEOUT = aiohttp.ClientTimeout(total=5, connect=2)
"""A forwarded read (GET) answers from memory: an owner silent that long is stuck."""
_HOP_BY_HOP = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "content-length",
        "proxy-authorization",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-accept",
    }
)


def routing_middleware(secret: str) -> Middleware:
    handled_here = Repeats(size=4)
    """Engine webhooks handled here as they could not be routed, by reason: said once while
    it lasts (one line per webhook through a Redis outage before), its end once."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.get(FORWARDED):
            # The sender routed it here: serve it (if this is the worker it meant: a worker
            # restarted on the same internal port is another worker). A change (a call placed
            # or adopted here) is in the directory before the answer goes back.
            meant = request.headers.get(OWNER_HEADER)
            if meant is not None and meant != request.app[DIRECTORY].worker_id:
                raise OwnerUnreachable(
                    f"worker {meant[:100]} is no longer at this address (it was restarted)",
                    code="owner_moved",
                )
            response = await handler(request)
            if request.method == "POST":
                await request.app[DIRECTORY].flush(FLUSH_TIMEOUT)
            return response
        if request.method == "POST" and request.path == "/call/make":
            return await _place(request, handler, secret)
        if request.method == "POST" and request.path == WEBHOOK_PATH:
            return await _route_webhook(request, handler, secret, handled_here)
        call_id = await call_id_of(request)
        directory = request.app[DIRECTORY]
        local = request.app[MANAGER].registry.get(call_id) if call_id is not None else None
        if call_id is None or (local is not None and local.owner == directory.worker_id):
            # Not about a call, or ours (a handed-over call, held here for its browser's relay,
            # is the new owner's): a change made here is in the directory before the answer
            # goes back, as a forwarded one's (the client may use it at once, anywhere).
            response = await handler(request)
            if request.method == "POST":
                await directory.flush(FLUSH_TIMEOUT)
            return response
        record = await directory.record(call_id)
        if record is None or record.owner == directory.worker_id:
            return await handler(request)  # unknown (the handler says 404) or ours
        if not await _alive(directory, record.owner):
            if not record.live and _reads_a_report(request):
                return await handler(request)  # the record its worker stored (shared data dir)
            return _orphaned(request, record)  # its worker is gone: what the record knows
        return await forward(request, record.url, secret, owner=record.owner)

    return middleware


async def call_id_of(request: web.Request) -> str | None:
    call_id = request.match_info.get("callID")
    if call_id is not None:
        return call_id
    if request.method != "POST" or request.path not in call_body_routes():
        return None
    limit = JSON_LIMIT  # the handler's
    if request.path == "/call/play":
        limit = play_body_limit(request.app[SETTINGS].storage)
    with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
        body = json.loads(await read_raw_json(request, limit))
        if isinstance(body, dict) and isinstance(body.get("callID"), str):
            return body["callID"]
    return None  # malformed: the handler answers 400


async def _alive(directory: Directory, worker: str) -> bool:
    return any(w.id == worker for w in await directory.workers())


def _reads_a_report(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return (
        request.method == "GET"
        and resource is not None
        and resource.canonical == "/call/{callID}/report"
    )


def _orphaned(request: web.Request, record: CallRecord) -> web.Response:
    """A call whose worker has no heartbeat: ``GET /call/{id}`` answers from its record;
    anything else is 409 once it ended, else 503 (a survivor is about to end it)."""
    resource = request.match_info.route.resource
    if request.method == "GET" and resource is not None and resource.canonical == "/call/{callID}":
        return web.json_response({**record.snapshot, "webhook": None})
    if not record.live:
        raise CallStateError(
            f"call {record.call_id} has ended ({record.snapshot.get('endReason')})"
        )
    raise OwnerUnreachable(
        f"the worker that owns call {record.call_id} ({record.owner}) has no heartbeat; "
        "its calls are being ended (worker_lost)"
    )


async def _place(request: web.Request, handler: Handler, secret: str) -> web.StreamResponse:
    """Create the call on the least-loaded worker with room; all full → 503 ``at_capacity``."""
    directory = request.app[DIRECTORY]
    workers = await with_room(directory)
    await read_raw_json(request)  # kept for the handler or the forward
    for worker in workers:
        if worker.id == directory.worker_id:
            try:
                response = await handler(request)
            except AtCapacity:
                continue  # filled meanwhile: try the next
            # The client may use the call at once, anywhere (and the engine may report on it
            # to any worker): its record is in the directory before the answer leaves.
            await directory.flush(FLUSH_TIMEOUT)
            return response
        try:
            response = await forward(request, worker.url, secret, owner=worker.id)
        except OwnerUnreachable as exc:
            if exc.sent:  # it may be dialling: a second worker would ring the user twice
                log.warning("placing a call: worker %s: %s", worker.id, exc.message)
                raise OwnerUnreachable(
                    f"worker {worker.id} took the request and did not answer in time: the call "
                    "may have been placed there (GET /call/status shows it); not dialled again",
                    sent=True,
                ) from None
            log.warning("placing a call: worker %s: %s; trying the next", worker.id, exc.message)
            continue  # never connected: nothing was created there
        body = response.body if isinstance(response, web.Response) else None
        full = error_code(body if isinstance(body, bytes) else None) == AtCapacity.code
        if response.status == 503 and full:
            continue  # filled meanwhile: try the next
        return response
    raise AtCapacity("every worker carries its maximum of calls (BRIDGE_MAX_CALLS each)")


async def _route_webhook(
    request: web.Request, handler: Handler, secret: str, handled_here: Repeats
) -> web.StreamResponse:
    """An engine webhook about a call another worker owns goes to that worker (which checks
    it, e.g. Meta's signature, on the same raw body); one about a new call goes to the
    least-loaded worker with room, like ``/call/make``.

    Where the directory cannot say who carries a call the webhook names (Redis away), or its
    carrier does not answer, a new call rings here. Any other webhook (a user's hang-up, a
    call's status) is checked and taken here for what this worker carries, and answered 503:
    Meta delivers a webhook answered other than 200 again, later (its Cloud API webhooks
    documentation), so the call's own worker hears it once it can be found. Answered 200, it
    was lost, the call left up on its worker."""
    raw = await read_raw_json(request, WEBHOOK_LIMIT)
    about = webhook_calls(request.app[SWITCHBOARD], raw, request.query)  # none: handled here
    directory = request.app[DIRECTORY]
    try:
        target = await _webhook_owner(request, about)
        if directory.available:
            for reason, count in handled_here.drain():
                log.info("engine webhooks routed again: %d were handled here (%s)", count, reason)
        if target is not None and target[0] != directory.worker_id:
            return await forward(request, target[1], secret, owner=target[0])
    except (DirectoryUnavailable, OwnerUnreachable) as exc:
        if not about.new_call:
            return await _here_or_later(request, handler, exc)
        if handled_here.seen(exc.code) == 1:
            log.warning("engine webhooks handled here: %s (said once while it lasts)", exc.message)
    return await handler(request)


async def _here_or_later(
    request: web.Request,
    handler: Handler,
    exc: DirectoryUnavailable | OwnerUnreachable,
) -> web.StreamResponse:
    """A webhook naming a call this worker does not carry and cannot route, taken here (this
    worker's calls in it): 503, another worker may carry that call; but what the local
    handling answers when it refuses the webhook (forged, malformed: as with Redis up)."""
    answer = await handler(request)
    if answer.status >= 300:
        return answer  # refused here: delivered again, it would be refused again
    raise type(exc)(
        f"{exc.message}: the webhook names a call another worker may carry, deliver it again later",
        code=exc.code,
    ) from None


async def _webhook_owner(request: web.Request, about: WebhookCalls) -> tuple[str, str] | None:
    """The worker (id, url) a webhook belongs on: the one owner of the live calls it names,
    or for a new call the least-loaded worker with room; ``None``: handle it here (several
    owners, or none and nothing new)."""
    directory = request.app[DIRECTORY]
    registry = request.app[MANAGER].registry
    owners: dict[str, tuple[str, str]] = {}
    for engine_call_id in about.engine_call_ids:
        if registry.by_engine_id(engine_call_id) is not None:
            owners[directory.worker_id] = (directory.worker_id, directory.url)
            continue  # ours: no need to ask
        record = await directory.record_by_engine_id(engine_call_id)
        if record is not None and record.live:
            owners[record.owner] = (record.owner, record.url)
    if len(owners) == 1:
        return next(iter(owners.values()))
    if about.new_call and not owners:
        workers = await with_room(directory)
        if workers:
            return workers[0].id, workers[0].url
    return None


_NOT_FORWARDED = _HOP_BY_HOP | {h.lower() for h in (INTERNAL_HEADER, OWNER_HEADER, TENANT_HEADER)}


def _forward_headers(request: web.Request, secret: str, owner: str) -> dict[str, str]:
    # The client's own instance headers (any case) go: the target reads the first it finds.
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
    headers[INTERNAL_HEADER] = secret
    headers[OWNER_HEADER] = owner
    headers[TENANT_HEADER] = principal_of(request).tenant_id or ""  # what auth found here
    return headers


async def forward(
    request: web.Request, base_url: str, secret: str, *, owner: str
) -> web.StreamResponse:
    """Send ``request`` to worker ``owner`` at ``base_url`` and answer with its response
    unchanged (the PCM stream's WebSocket is relayed)."""
    resource = request.match_info.route.resource
    if resource is not None and resource.canonical == "/call/{callID}/stream":
        headers = _forward_headers(request, secret, owner)
        return await relay_stream(request, request.app[INTERNAL_HTTP], base_url, headers)
    http = request.app[INTERNAL_HTTP]
    body = request.get(RAW_BODY)
    if body is None and request.method in ("POST", "DELETE") and request.can_read_body:
        body = await read_raw_json(request)
    forwarded = request.app[METRICS].forwarded
    try:
        async with http.request(
            request.method,
            base_url + request.path_qs,
            data=body,
            headers=_forward_headers(request, secret, owner),
            timeout=FORWARD_READ_TIMEOUT if request.method == "GET" else FORWARD_TIMEOUT,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            headers = {}
            for name in ("Content-Type", "Retry-After", "WWW-Authenticate"):
                if name in upstream.headers:
                    headers[name] = upstream.headers[name]
            forwarded.labels("answered").inc()
            return web.Response(status=upstream.status, body=payload, headers=headers)
    except (aiohttp.ClientError, TimeoutError) as exc:
        forwarded.labels("unreachable").inc()
        raise OwnerUnreachable(
            f"the worker that owns this call ({base_url}) did not answer: "
            f"{str(exc) or type(exc).__name__}",
            sent=not isinstance(exc, aiohttp.ClientConnectorError),  # connected, then nothing
        ) from None


FLUSH_TIMEOUT = 2.0
"""Seconds a new call's answer waits for its record to reach the directory."""
