"""Putting a Cloud API number on Meta's SIP road: one step, shared by the API
(``POST /numbers/{numberID}/sip/enable``, ``…/sip/rotate``) and the numbers file
(``sip: {enable: true}``, applied at start).

Meta's SIP for the number is pointed at this deployment (the number's ``sipHostname``, else
``BRIDGE_SIP_HOSTNAME``, and the SIP listener's port), the SIP password Meta made is read
(``include_sip_credentials``) into the number's sealed credentials, and Meta's settings are
compared with the number's mode again (Meta Cloud API Calling: SIP, "configure SIP settings").
The settings' own number (``default``) keeps the password in the store beside the others, on
every worker and after a restart. A password the operator set (``BRIDGE_SIP_PASSWORD``, a
numbers file's ``sipPassword``) is theirs: ``409 defined_by_operator`` before Meta is asked
(``defined.py``). Before any of it, :func:`check_sip_road` refuses a number that cannot be
on the road here (no host name, no certificate and key that load).
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from typing import TYPE_CHECKING, Any

from ..config import EngineKind, Settings
from ..engines import SettingsEngine
from ..errors import BadRequest, BridgeError, Conflict, NotFound
from ..sip import KeyLocked, load_pair
from .model import Number

if TYPE_CHECKING:
    from .catalog import Catalog
    from .switchboard import Switchboard

log = logging.getLogger(__name__)


async def put_on_sip(
    catalog: Catalog,
    switchboard: Switchboard,
    settings: Settings,
    number: Number,
    engine: SettingsEngine,
    *,
    rotate: bool = False,
    port: int = 0,
) -> dict[str, Any]:
    """Point Meta's SIP for ``number`` here and keep the password Meta made; the API's view of
    the result. ``Conflict`` (``sip_not_configured``) when there is no host name to give."""
    hostname = str(number.config.get("sipHostname") or settings.sip.sip_hostname)
    if not hostname:
        raise Conflict(
            "this deployment has no SIP host name: set BRIDGE_SIP_HOSTNAME (the name on its "
            "SIP certificate) or the number's 'cloudapi.sipHostname' first",
            code="sip_not_configured",
        )
    # Before Meta is asked: a password Meta made that could not be stored would be lost.
    catalog.refuse_defined(number.number_id, ["cloudapi.sipPassword"])
    port = port or settings.sip.listen[1]
    password = await engine.calling_settings.enable_sip(hostname, port, rotate=rotate)
    # Into the number as it is now: Meta's answer is a round trip, and a change or deletion
    # made meanwhile must not be undone by the copy read before it.
    current = catalog.number(number.number_id)
    if current is None:
        raise NotFound(
            f"number {number.number_id} was deleted while Meta was asked: Meta's SIP for it "
            "points here, with a password nothing keeps"
        )
    changed = dataclasses.replace(
        current,
        config=dict(current.config),
        secrets={**current.secrets, "sipPassword": password},
        sip_password_made=True,  # exported as what made it (file.py): nobody else knows it
    )
    await catalog.update_number(changed)
    await switchboard.reconcile()  # the number takes Meta's INVITEs with the new password now
    await switchboard.compare_setup(number.number_id)
    return {
        "numberID": number.number_id,
        "sip": {"status": "ENABLED", "servers": [{"hostname": hostname, "port": port}]},
        "sipPasswordSet": True,
        "rotated": rotate,
        "health": switchboard.health_of(number.number_id),
    }


async def enable_declared(
    catalog: Catalog, switchboard: Switchboard, settings: Settings, number_ids: list[str]
) -> None:
    """The numbers file's ``sip: {enable: true}``: each such number without a SIP password yet
    is put on SIP at start. A failure is logged once at WARNING with Meta's reason and does not
    stop the start (the number refuses Meta's INVITEs until it has a password)."""
    for number_id in number_ids:
        number = catalog.number(number_id)
        engine = switchboard.engines.get(number_id)
        if number is None or number.secrets.get("sipPassword"):
            continue  # already on SIP: the file is applied at every start
        if not isinstance(engine, SettingsEngine):
            log.warning(
                "numbers file: number %s asks for SIP but has no Cloud API settings to reach",
                number_id,
            )
            continue
        try:
            await put_on_sip(catalog, switchboard, settings, number, engine)
        except Exception as exc:  # Meta refusing or unreachable: said, and the start goes on
            reason = exc.message if isinstance(exc, BridgeError) else repr(exc)
            log.warning("numbers file: number %s cannot be put on SIP: %s", number_id, reason)
        else:
            log.info("numbers file: number %s put on Meta's SIP road", number_id)


def check_sip_road(number: Number, base: Settings) -> None:
    """A number on Meta's SIP road needs a host name and a certificate that loads: its own
    (``sipHostname``, ``sipCert``, ``sipKey``) or the deployment's (``BRIDGE_SIP_*``);
    400 saying which is missing otherwise."""
    if number.engine is not EngineKind.CLOUDAPI or number.config.get("signalling") != "sip":
        return
    if not (number.config.get("sipHostname") or base.sip.sip_hostname):
        raise BadRequest(
            "a number on Meta's SIP road needs a SIP host name: 'cloudapi.sipHostname' or "
            "the deployment's BRIDGE_SIP_HOSTNAME",
            code="sip_not_configured",
        )
    cert = number.config.get("sipCert") or base.sip.sip_cert
    key = number.config.get("sipKey") or base.sip.sip_key
    # A number's own key opens with its own passphrase, else the deployment's.
    own_password = number.secrets.get("sipKeyPassword")
    password = own_password if own_password is not None else base.sip.sip_key_password
    try:
        load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key, password)
    except KeyLocked as exc:
        what = "is not its passphrase" if exc.given else "is not set"
        named = (
            "the number's 'cloudapi.sipKeyPassword'"
            if own_password is not None
            else "the deployment's BRIDGE_SIP_KEY_PASSWORD"
        )
        raise BadRequest(
            f"the SIP key {key!r} is encrypted and {named} {what}", code="sip_not_configured"
        ) from None
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise BadRequest(
            f"a number on Meta's SIP road needs a certificate and key that load ('cloudapi."
            f"sipCert'/'sipKey' or BRIDGE_SIP_CERT/BRIDGE_SIP_KEY): {exc}",
            code="sip_not_configured",
        ) from None
