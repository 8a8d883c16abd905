"""Putting a Cloud API number on Meta's SIP road through the bridge, in one call:
``POST /numbers/{numberID}/sip/enable`` points Meta's SIP for the number at this deployment
(``BRIDGE_SIP_HOSTNAME`` and the listener's port, or the body's ``port``), reads the SIP
password Meta made (``include_sip_credentials``) into the number's sealed credentials
(``cloudapi.sipPassword``, never shown), and compares Meta's settings with the number's mode
again; ``…/sip/rotate`` does the same after disabling SIP and clearing its servers, so Meta
makes a new password (Meta Cloud API Calling: SIP)."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from ..errors import BadRequest, Conflict
from ..numbers.model import DEFAULT_NUMBER
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
    sip = request.app[SETTINGS].sip
    hostname = str(number.config.get("sipHostname") or sip.sip_hostname)
    if not hostname:
        raise Conflict(
            "this deployment has no SIP host name: set BRIDGE_SIP_HOSTNAME (the name on its "
            "SIP certificate) or the number's 'cloudapi.sipHostname' first",
            code="sip_not_configured",
        )
    if number.number_id == DEFAULT_NUMBER:
        raise BadRequest(
            "the default number's SIP password is BRIDGE_SIP_PASSWORD (the settings define the "
            "default number): enable SIP for a number made with POST /numbers",
            code="default_number_settings",
        )
    port = int(body.get("port") or sip.listen[1])
    password = await engine.calling_settings.enable_sip(hostname, port, rotate=rotate)
    changed = dataclasses.replace(
        number, config=dict(number.config), secrets={**number.secrets, "sipPassword": password}
    )
    await request.app[CATALOG].update_number(changed)
    switchboard = request.app[SWITCHBOARD]
    await switchboard.reconcile()  # a number on SIP takes calls with the new password now
    await switchboard.compare_setup(number.number_id)
    return web.json_response(
        {
            "numberID": number.number_id,
            "sip": {"status": "ENABLED", "servers": [{"hostname": hostname, "port": port}]},
            "sipPasswordSet": True,
            "rotated": rotate,
            "health": switchboard.health_of(number.number_id),
        }
    )
