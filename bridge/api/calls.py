"""Call control routes: make, status, get, answer, hang up, mute, DTMF, events (SSE)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from ..config import EngineKind
from ..desk.tokens import looks_like_agent_token
from ..engines import ArtifactsEngine
from ..errors import (
    BadRequest,
    BridgeError,
    Forbidden,
    NotFound,
    RecordingForbidden,
    ReplayUnavailable,
)
from ..numbers.model import Number
from .auth import FORWARDED, request_token
from .errors import require_call_id
from .keys import CATALOG, DESK, DIRECTORY, INBOUND, MANAGER, SWITCHBOARD, WEBHOOKS
from .schema import read_body
from .tenancy import PRINCIPAL, Principal, principal_of, visible, visible_event
from .users import user_of

routes = web.RouteTableDef()

SSE_KEEPALIVE = 15.0
META_OPTIONS = ("recording", "transcription")
"""Fields of /call/make and /call/answer asking Meta to record or transcribe the call."""


def _call_id(body: dict[str, Any]) -> str:
    return require_call_id(body)


def _placing_agent(request: web.Request, body: dict[str, Any]) -> tuple[str | None, str] | None:
    """The agent whose connected leg carries a call placed now: the agent token's own (the
    request is then its tenant's), or ``agentID`` with an API key; ``None``: no agent."""
    token = request_token(request)
    if looks_like_agent_token(token):
        claims = request.app[DESK].tokens.verify(token)  # 401: not ours, or expired
        if body.get("agentID") not in (None, claims.agent_id):
            raise Forbidden(
                "an agent token places calls for its own agent only", code="agent_token"
            )
        request[PRINCIPAL] = Principal(claims.tenant_id)
        return claims.tenant_id, claims.agent_id
    return (principal_of(request).tenant_id, body["agentID"]) if "agentID" in body else None


@routes.post("/call/make")
async def make_call(request: web.Request) -> web.Response:
    if looks_like_agent_token(request_token(request)):
        request.app[DESK].tokens.verify(request_token(request))  # 401 before reading the body
    body = await read_body(request, "MakeCallRequest")  # phone or recipient; metadata or null
    agent = _placing_agent(request, body)
    user = user_of(body)  # digits, or the BSUID of a user who shows no phone
    metadata = body.get("metadata") or {}
    # The number it is placed from: "from" (phone or numberID), needed when the caller has
    # several; a tenant's key places calls from its own numbers only.
    principal = principal_of(request)
    catalog = request.app[CATALOG]
    number = catalog.resolve_from(body.get("from"), principal.tenant_id)
    tenant = catalog.tenants.get(number.tenant_id)
    callback = body.get("statusCallback")
    if callback is not None:  # the call's tenant's own webhookURL is one it may name
        callback = request.app[WEBHOOKS].check_callback(callback, number.tenant_id)
    if "recipient" in body and not _graph_number(number):
        raise BadRequest(
            f"field 'recipient': number {number.number_id} cannot call a business-scoped user "
            "id (only a Cloud API number on Graph signalling can; give 'phone')",
            code="recipient_not_supported",
        )
    # An agent's connected leg carries it (desk/legs.py): checked before anything is dialled.
    if agent is not None:
        request.app[DESK].legs.ready(agent)
    manager = request.app[MANAGER]
    with _meta_artifacts(request, body, number, user):  # as the engine dials
        call = await manager.make(
            user, metadata, status_callback=callback, number=number, tenant=tenant
        )
    if agent is not None:
        try:
            await request.app[DESK].legs.place(agent, manager.runtime(call.id))
        except BridgeError:
            await manager.hangup(call.id)  # no call dialled without its agent
            raise
        call = manager.get(call.id)
    return web.json_response(call.snapshot(), status=201)


@contextlib.contextmanager
def _meta_artifacts(
    request: web.Request, body: dict[str, Any], number: Number, key: str
) -> Iterator[None]:
    """Ask Meta to record/transcribe the call about to be placed or answered (``key``: the
    user dialled, or the engine's call id): only on the Graph road (400 elsewhere), never
    where the number or its tenant forbids recording (403, nothing asked)."""
    options = {name: body[name] for name in META_OPTIONS if body.get(name) is not None}
    if not options:
        yield
        return
    if not _graph_number(number):
        raise BadRequest(
            f"fields 'recording'/'transcription': number {number.number_id} is not on Meta's "
            "Graph signalling, where Meta records and transcribes calls (use /call/record)",
            code="meta_recording_not_supported",
        )
    who = request.app[CATALOG].recording_forbidden_by(number.number_id, number.tenant_id)
    if who is not None:
        raise RecordingForbidden(f"recording is forbidden by {who} (its 'recording' setting)")
    engine = request.app[SWITCHBOARD].engine(number.number_id)
    if not isinstance(engine, ArtifactsEngine):
        raise BadRequest(
            "this number's engine cannot ask Meta to record", code="meta_recording_not_supported"
        )
    engine.artifacts.ask(key, options)  # 400 naming a malformed field
    try:
        yield
    finally:
        engine.artifacts.fields(key)  # left unused (the call failed first): for no other call


def _graph_number(number: Number) -> bool:
    """Whether the number is on Meta's Graph road (where ``connect`` takes ``recipient``)."""
    cloud = number.engine is EngineKind.CLOUDAPI
    return cloud and str(number.config.get("signalling") or "graph") == "graph"


@routes.get("/call/status")
async def call_status(request: web.Request) -> web.Response:
    """Every live call: of this process, or of the whole cluster with a shared directory."""
    directory = request.app[DIRECTORY]
    principal = principal_of(request)
    if directory.shared:
        snapshots = await directory.live_snapshots()
    else:
        snapshots = [c.snapshot() for c in request.app[MANAGER].live_calls()]
    return web.json_response({"calls": [s for s in snapshots if visible(principal, s)]})


@routes.get("/call/events")
async def call_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``id``, ``event: <type>`` and a JSON ``data`` line per change, of
    every call of the cluster. A client that reconnects with ``Last-Event-ID`` first gets
    the events it missed (as many as ``BRIDGE_EVENT_BACKLOG`` keeps)."""
    directory = request.app[DIRECTORY]
    principal = principal_of(request)
    only = request.query.get("callID")
    last_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    try:
        await response.write(b"retry: 2000\n: connected\n\n")
        async for entry in directory.follow(last_id, SSE_KEEPALIVE):
            if entry is None:
                await response.write(b": keepalive\n\n")
                continue
            event_id, type_, call_id, data = entry
            if only and call_id != only:
                continue
            if not principal.admin and not visible_event(principal, data):
                continue  # another tenant's, or the service's own
            await response.write(f"id: {event_id}\nevent: {type_}\ndata: {data}\n\n".encode())
    except ReplayUnavailable as exc:
        # No id: the client's Last-Event-ID stays its own; the stream ends (docs/api.md).
        body = json.dumps({"lastEventId": last_id, "code": exc.code, "message": exc.message})
        with contextlib.suppress(ConnectionError):
            await response.write(f"event: replay.unavailable\ndata: {body}\n\n".encode())
    except ConnectionError:
        pass  # the client went away
    return response


@routes.get("/call/{callID}")
async def get_call(request: web.Request) -> web.Response:
    call = request.app[MANAGER].get(request.match_info["callID"])
    return web.json_response({**call.snapshot(), "webhook": call.webhook_status})


@routes.post("/call/answer")
async def answer_call(request: web.Request) -> web.Response:
    body = await read_body(request, "AnswerRequest")
    call_id = _call_id(body)
    manager = request.app[MANAGER]
    ringing = manager.get(call_id)
    callback = body.get("statusCallback")
    if callback is not None:  # the call's tenant's own webhookURL is one it may name
        callback = request.app[WEBHOOKS].check_callback(callback, ringing.tenant_id)
    number = request.app[CATALOG].number(ringing.number_id)
    if number is None and any(body.get(name) is not None for name in META_OPTIONS):
        raise BadRequest("the call's number is gone", code="meta_recording_not_supported")
    if number is None:
        call = await manager.answer(call_id, status_callback=callback)
    else:
        with _meta_artifacts(request, body, number, ringing.engine_call_id):
            call = await manager.answer(call_id, status_callback=callback)
    return web.json_response(call.snapshot())


@routes.post("/call/hangup")
async def hangup_call(request: web.Request) -> web.Response:
    body = await read_body(request, "CallIdRequest")
    call = await request.app[MANAGER].hangup(_call_id(body))
    return web.json_response(call.snapshot())


@routes.post("/call/mute")
async def mute_call(request: web.Request) -> web.Response:
    body = await read_body(request, "MuteRequest")
    muted: bool = body.get("muted", True)  # the schema: a boolean
    runtime = request.app[MANAGER].runtime(_call_id(body))
    runtime.set_muted(muted)
    call = runtime.call
    return web.json_response(call.snapshot())


@routes.post("/call/dtmf")
async def send_dtmf(request: web.Request) -> web.Response:
    """Key presses to the WhatsApp peer: RFC 4733 on the Cloud API leg, in-band tones on PCM
    engines; 202 once queued (``call.dtmf.sent`` follows when they have been sent)."""
    body = await read_body(request, "DtmfRequest")
    call_id = _call_id(body)
    digits: str = body["digits"]  # the schema: 1-32 of 0-9 * # A-D
    # The schema: integers of 40-2000 ms (int(): JSON's 100.0 is the integer 100).
    timing = {
        name: int(body.get(name, default)) for name, default in (("durationMs", 100), ("gapMs", 60))
    }
    runtime = request.app[MANAGER].runtime(call_id)
    method = await runtime.dtmf.send(digits.upper(), timing["durationMs"], timing["gapMs"])
    return web.json_response(
        {"callID": call_id, "digits": digits.upper(), "method": method, **timing}, status=202
    )


@routes.post("/call/adopt")
async def adopt_call(request: web.Request) -> web.Response:
    """Between instances only: take a new inbound call the worker that discovered it placed
    here (the least loaded). 404 without the internal secret."""
    if not request.get(FORWARDED):
        raise NotFound(f"no route {request.method} {request.path}")
    body = await read_body(request, "AdoptRequest")
    call = await request.app[INBOUND].adopt(
        body["engineCallID"],
        body["peer"],
        body.get("numberID") or "default",
        token=body.get("token") or "",
        ring_within=body.get("ringWithin"),
    )
    return web.json_response(call.snapshot(), status=201)


async def wait_for_engine_call(
    request: web.Request, engine_call_id: str, timeout: float = 2.0
) -> Any:
    """The call the manager created for an engine's call id (events are asynchronous)."""
    manager = request.app[MANAGER]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        call = manager.registry.by_engine_id(engine_call_id)
        if call is not None:
            return call
        await asyncio.sleep(0.005)
    return None
