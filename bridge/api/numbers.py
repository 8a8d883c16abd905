"""Numbers and tenants at run time: ``/numbers`` (the service for any tenant, a tenant's key
for its own) and ``/tenants`` (the service alone). Changes are written to the store and are
live on every worker within the catalog's poll (``numbers/store.py``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import BadRequest, Forbidden, NotFound
from ..numbers.file import export_yaml
from ..numbers.model import (
    Number,
    check_id,
    parse_number,
    patch_number,
)
from ..numbers.sip_road import check_sip_road
from ..numbers.tenants import ApiKey, Tenant, apply_tenant_fields, parse_tenant
from .keys import CATALOG, SETTINGS, SWITCHBOARD
from .schema import read_body
from .tenancy import principal_of, require_admin

routes = web.RouteTableDef()

PAGE = 100
"""Numbers per page of ``GET /numbers`` unless ``limit`` says otherwise (at most 1000)."""


def _number_for(request: web.Request) -> Number:
    """The number of the path, if the caller may see it (404 otherwise: not leaked)."""
    number_id = check_id(request.match_info["numberID"], "numberID")
    number = request.app[CATALOG].number(number_id)
    principal = principal_of(request)
    if number is None or (not principal.admin and number.tenant_id != principal.tenant_id):
        raise NotFound(f"no number {number_id!r}")
    return number


def _view(request: web.Request, number: Number) -> dict[str, object]:
    return {**number.public(), "health": request.app[SWITCHBOARD].health_of(number.number_id)}


def _files_by_admin(request: web.Request, body: dict[str, Any]) -> None:
    """Paths on this machine (a SIP certificate and key) are the service's to name."""
    block = body.get("cloudapi")
    if isinstance(block, dict) and ({"sipCert", "sipKey"} & block.keys()):
        if not principal_of(request).admin:
            raise Forbidden("fields 'cloudapi.sipCert'/'sipKey' are set with the service's token")


@routes.post("/numbers")
async def create_number(request: web.Request) -> web.Response:
    body = await read_body(request, "NumberRequest")
    principal = principal_of(request)
    tenant_id = body.pop("tenantID", None)
    if not principal.admin:
        if tenant_id not in (None, principal.tenant_id):
            raise Forbidden("a tenant's key creates numbers for its own tenant only")
        tenant_id = principal.tenant_id
    _files_by_admin(request, body)
    number = parse_number(body, tenant_id=tenant_id or "")
    check_sip_road(number, request.app[SETTINGS])
    await request.app[CATALOG].create_number(number)
    await request.app[SWITCHBOARD].reconcile()  # its engine is up before the answer
    await request.app[SWITCHBOARD].checked(number.number_id)  # and its health is known
    return web.json_response(_view(request, number), status=201)


@routes.get("/numbers")
async def list_numbers(request: web.Request) -> web.Response:
    """A page of the caller's numbers by ``numberID`` (``?cursor=`` the last one seen), or
    all of them as a numbers file (``?format=yaml``, no secrets)."""
    principal = principal_of(request)
    catalog = request.app[CATALOG]
    try:
        limit = int(request.query.get("limit", PAGE))
    except ValueError:
        raise BadRequest("query 'limit' must be an integer") from None
    if not 1 <= limit <= 1000:
        raise BadRequest("query 'limit' must be between 1 and 1000")
    cursor = request.query.get("cursor", "")
    if len(cursor) > 64:
        raise BadRequest("query 'cursor' must be a numberID (at most 64 characters)")
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "yaml"):
        raise BadRequest("query 'format' must be json or yaml")
    if fmt == "yaml":
        text = export_yaml(catalog, principal.tenant_id)
        return web.Response(text=text, content_type="text/yaml")
    mine = sorted(catalog.numbers_of(principal.tenant_id), key=lambda n: n.number_id)
    page = [n for n in mine if n.number_id > cursor][:limit]
    more = len(page) == limit and page[-1].number_id != mine[-1].number_id
    return web.json_response(
        {
            "numbers": [_view(request, n) for n in page],
            "nextCursor": page[-1].number_id if more else None,
        }
    )


@routes.get("/numbers/{numberID}")
async def get_number(request: web.Request) -> web.Response:
    return web.json_response(_view(request, _number_for(request)))


@routes.patch("/numbers/{numberID}")
async def change_number(request: web.Request) -> web.Response:
    _number_for(request)  # 404 before the body is read
    body = await read_body(request, "NumberPatch")
    # The number as it is once the body is in (it may have been changed or deleted while the
    # body came): a change to the copy read before would bring back what was removed.
    number = _number_for(request)
    _files_by_admin(request, body)
    changed = patch_number(number, body)
    check_sip_road(changed, request.app[SETTINGS])
    stored = await request.app[CATALOG].update_number(changed)
    await request.app[SWITCHBOARD].reconcile()
    await request.app[SWITCHBOARD].checked(stored.number_id)  # a rebuilt engine's, awaited
    return web.json_response(_view(request, stored))


@routes.delete("/numbers/{numberID}")
async def delete_number(request: web.Request) -> web.Response:
    """No new calls on the number from now on; its live calls end normally."""
    number = _number_for(request)
    await request.app[CATALOG].delete_number(number.number_id)  # not the default: 409
    await request.app[SWITCHBOARD].reconcile()
    return web.json_response({"numberID": number.number_id, "deleted": True})


# -- tenants (the service alone: tenancy.ADMIN_ONLY)
def _tenant_for(request: web.Request) -> Tenant:
    require_admin(request)
    tenant_id = check_id(request.match_info["tenantID"], "tenantID")
    tenant = request.app[CATALOG].tenants.get(tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    return tenant


@routes.post("/tenants")
async def create_tenant(request: web.Request) -> web.Response:
    require_admin(request)
    tenant = parse_tenant(await read_body(request, "TenantRequest"))
    _, key = tenant.new_key()
    await request.app[CATALOG].save_tenant(tenant)
    return web.json_response({**tenant.public(), "apiKey": key}, status=201)


@routes.get("/tenants")
async def list_tenants(request: web.Request) -> web.Response:
    require_admin(request)
    tenants = sorted(request.app[CATALOG].tenants.values(), key=lambda t: t.tenant_id)
    return web.json_response({"tenants": [t.public() for t in tenants]})


@routes.get("/tenants/{tenantID}")
async def get_tenant(request: web.Request) -> web.Response:
    return web.json_response(_tenant_for(request).public())


@routes.patch("/tenants/{tenantID}")
async def change_tenant(request: web.Request) -> web.Response:
    tenant = _tenant_for(request)  # 403/404 before the body is read
    body = await read_body(request, "TenantPatch")
    # Changed as it is at the write (on any worker): a copy read before would bring back a key
    # revoked, or the tenant deleted, meanwhile.
    changed = await request.app[CATALOG].change_tenant(
        tenant.tenant_id, lambda t: apply_tenant_fields(t, body)
    )
    return web.json_response(changed.public())


@routes.delete("/tenants/{tenantID}")
async def delete_tenant(request: web.Request) -> web.Response:
    tenant = _tenant_for(request)
    await request.app[CATALOG].delete_tenant(tenant.tenant_id)
    return web.json_response({"tenantID": tenant.tenant_id, "deleted": True})


@routes.post("/tenants/{tenantID}/keys")
async def new_tenant_key(request: web.Request) -> web.Response:
    """A new API key (shown once); the tenant's other keys keep working until revoked."""
    tenant = _tenant_for(request)
    made: list[tuple[ApiKey, str]] = []  # the last one made is the one stored

    def add(changed: Tenant) -> None:
        made[:] = [changed.new_key()]

    await request.app[CATALOG].change_tenant(tenant.tenant_id, add)
    record, key = made[0]
    return web.json_response({"keyID": record.key_id, "apiKey": key}, status=201)


@routes.delete("/tenants/{tenantID}/keys/{keyID}")
async def revoke_tenant_key(request: web.Request) -> web.Response:
    tenant = _tenant_for(request)
    key_id = request.match_info["keyID"]

    def revoke(changed: Tenant) -> None:
        kept = [k for k in changed.keys if k.key_id != key_id]
        if len(kept) == len(changed.keys):
            raise NotFound(f"tenant {tenant.tenant_id} has no key {key_id[:64]!r}")
        changed.keys = kept

    await request.app[CATALOG].change_tenant(tenant.tenant_id, revoke)
    return web.json_response({"keyID": key_id, "revoked": True})
