"""A number's calling settings at its WhatsApp provider, through the bridge:
``GET /numbers/{numberID}/settings`` (as Meta keeps them, no SIP password) and ``PATCH
/numbers/{numberID}/settings`` (camelCase mirrors of Meta's fields, checked against Meta's
rules before anything is sent). A number whose engine has no such settings is 404
``settings_not_supported``; another tenant's number is 404 as on every route."""

from __future__ import annotations

from aiohttp import web

from ..engines import SettingsEngine
from ..errors import NotFound
from .keys import SWITCHBOARD
from .numbers import _number_for as number_for  # the same 404 rules
from .schema import read_body

routes = web.RouteTableDef()


def _settings_of(request: web.Request) -> SettingsEngine:
    number = number_for(request)
    engine = request.app[SWITCHBOARD].engines.get(number.number_id)
    if not isinstance(engine, SettingsEngine):
        raise NotFound(
            f"number {number.number_id} has no calling settings the bridge can reach (only a "
            "Cloud API number's, with its Graph token)",
            code="settings_not_supported",
        )
    return engine


@routes.get("/numbers/{numberID}/settings")
async def get_settings(request: web.Request) -> web.Response:
    engine = _settings_of(request)
    return web.json_response(await engine.calling_settings.read())


@routes.patch("/numbers/{numberID}/settings")
async def change_settings(request: web.Request) -> web.Response:
    engine = _settings_of(request)
    body = await read_body(request, "CallingSettings")
    changed = await engine.calling_settings.write(body)
    await request.app[SWITCHBOARD].compare_setup(request.match_info["numberID"])
    return web.json_response(changed)
