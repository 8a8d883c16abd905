"""Putting a Cloud API number on Meta's SIP road through the bridge, in one call:
``POST /numbers/{numberID}/sip/enable`` points Meta's SIP for the number at this deployment
(``BRIDGE_SIP_HOSTNAME`` and the listener's port, or the body's ``port``), reads the SIP
password Meta made (``include_sip_credentials``) into the number's sealed credentials
(``cloudapi.sipPassword``, never shown), and compares Meta's settings with the number's mode
again; ``…/sip/rotate`` does the same after disabling SIP and clearing its servers, so Meta
makes a new password (Meta Cloud API Calling: SIP). The settings' own number (``default``) keeps
Meta's password in the store too, unless ``BRIDGE_SIP_PASSWORD`` sets it: then the operator's
wins and both are ``409 defined_by_operator`` (``numbers/sip_road.py``, ``numbers/defined.py``)."""

from __future__ import annotations

from aiohttp import web

from ..numbers.sip_road import put_on_sip
from .keys import CATALOG, SETTINGS, SWITCHBOARD
from .number_settings import _settings_of as settings_of  # the same 404 rules
from .numbers import _number_for as number_for
from .schema import read_body

routes = web.RouteTableDef()


@routes.post("/numbers/{numberID}/sip/enable")
async def enable_sip(request: web.Request) -> web.Response:
    return await _point_sip(request, rotate=False)


@routes.post("/numbers/{numberID}/sip/rotate")
async def rotate_sip(request: web.Request) -> web.Response:
    return await _point_sip(request, rotate=True)


async def _point_sip(request: web.Request, *, rotate: bool) -> web.Response:
    number = number_for(request)
    engine = settings_of(request)
    body = await read_body(request, "SipEnableRequest")
    app = request.app
    view = await put_on_sip(
        app[CATALOG],
        app[SWITCHBOARD],
        app[SETTINGS],
        number,
        engine,
        rotate=rotate,
        port=int(body.get("port") or 0),
    )
    return web.json_response(view)
