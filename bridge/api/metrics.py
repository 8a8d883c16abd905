"""``GET /metrics`` (Prometheus text format), ``GET /call/{callID}/stats`` and
``GET /call/{callID}/report`` (JSON)."""

from __future__ import annotations

from aiohttp import web

from ..disk import on_disk
from ..errors import BadRequest, Unauthorized
from ..metrics import CONTENT_TYPE
from .auth import request_token, token_matches
from .keys import MANAGER, METRICS, REPORTS, SETTINGS
from .tenancy import principal_of, tenant_of_call

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Open unless ``BRIDGE_METRICS_TOKEN`` is set (then Bearer, ``token:`` or ``?token=``)."""
    token = request.app[SETTINGS].server.metrics_token
    if token:
        presented = request_token(request) or request.query.get("token")
        if presented is None or not token_matches(presented, (token,)):
            raise Unauthorized("/metrics needs BRIDGE_METRICS_TOKEN")
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


@routes.get("/call/{callID}/stats")
async def call_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[MANAGER].stats(request.match_info["callID"]))


TENANT_SCAN = 20
"""Records looked at for each one a tenant's ``GET /call/reports`` asks (their calls' owners
read from the directory): a tenant among many sees its newest, at a bounded cost."""


@routes.get("/call/reports")
async def call_reports(request: web.Request) -> web.Response:
    """The ids of the newest stored call records (``?limit=``, at most 500), newest first."""
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 1 <= limit <= 500:
        raise BadRequest("limit must be between 1 and 500")
    reports = request.app[REPORTS]
    tenant_id = principal_of(request).tenant_id
    if tenant_id is None:
        return web.json_response({"reports": await on_disk(reports.stored, limit)})
    # A tenant's calls' reports only (while their calls' records last): its newest ``limit``
    # among the newest records of every tenant, looked at until found (at most TENANT_SCAN a
    # report asked; before, ``limit`` was taken across every tenant first, and a tenant
    # whose calls were not among the newest got none).
    mine: list[str] = []
    for call_id in (await on_disk(reports.stored, None))[: limit * TENANT_SCAN]:
        if await tenant_of_call(request, call_id) == tenant_id:
            mine.append(call_id)
            if len(mine) == limit:
                break
    return web.json_response({"reports": mine})


@routes.get("/call/{callID}/report")
async def call_report(request: web.Request) -> web.Response:
    """The call record: a live call's so far, an ended call's as stored at its end."""
    report = await request.app[REPORTS].get(request.match_info["callID"])
    return web.json_response(report)
