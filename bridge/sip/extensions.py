"""The SIP extensions a request asks of the user agent server, checked before it is served:
a ``Require`` naming one it does not support (RFC 3261 §8.2.2.3: ``420``), a ``Replaces``
where RFC 3891 §3 refuses it (``400``), and a method it does not implement (§8.2.1: ``501``);
and what it answers an OPTIONS with (§11.2).
Meta's road supports no extension; a trunk's supports ``replaces`` (``trunks/replacing.py``
follows the header where it belongs)."""

from __future__ import annotations

import logging
from collections.abc import Collection

from ..logs import Repeats
from .dialog import reply
from .message import Request, Response

log = logging.getLogger(__name__)


def unfit_invite(req: Request, supported: Collection[str] = ()) -> Response | None:
    """``420`` for a ``Require`` naming an extension not in ``supported`` (§8.2.2.3; Meta's
    road supports none, a trunk's ``replaces``), ``488`` for an INVITE without an SDP offer;
    ``None`` when it is fit to answer."""
    values = (value.strip() for value in req.values("Require"))
    required = [r for r in values if r and r.lower() not in supported]
    if required:
        return reply(req, 420, "Bad Extension", extra=[("Unsupported", ", ".join(required))])
    if not req.body or "sdp" not in req.get("Content-Type").lower():
        warn = [("Warning", '399 bridge "an INVITE needs an SDP offer"')]
        return reply(req, 488, "Not Acceptable Here", extra=warn)
    return None


def misplaced_replaces(
    req: Request, supported: Collection[str], sources: Repeats, source: str
) -> Response | None:
    """The ``400`` for a ``Replaces`` in a request other than INVITE, or for more than one in
    an INVITE (RFC 3891 §3), said at WARNING once per ``source`` (``sources``); ``None`` for
    any other request. Only where the user agent supports the header (a trunk's): elsewhere
    it is a header like any it does not know. An ACK is never answered."""
    if "replaces" not in supported or req.method == "ACK":
        return None
    count = len(req.all("Replaces"))
    if count and req.method != "INVITE":
        why = f"Replaces in a {req.method[:16]}"
    elif count > 1 or len(req.values("Replaces")) > 1:
        why = "more than one Replaces"
    else:
        return None
    if sources.seen(source) == 1:
        log.warning(
            "SIP %s %s from %s refused: 400 %s (said once for this source)",
            req.method[:16],
            req.call_id[:64],
            source,
            why,
        )
    return reply(req, 400, f"Bad Request ({why})")


def not_implemented(req: Request, allow: str, sources: Repeats, source: str) -> Response:
    """The ``501`` with ``Allow`` for a method the user agent does not implement (§8.2.1:
    UPDATE, MESSAGE, SUBSCRIBE …), said at WARNING once per ``source`` and method
    (``sources``): a PBX that sends one with every call sent it unseen."""
    method = req.method[:16]
    if sources.seen(f"{method} {source}") == 1:
        log.warning(
            "SIP %s from %s refused: 501, not a method the bridge implements (said once for "
            "this source and method)",
            method,
            source,
        )
    return reply(req, 501, "Not Implemented", extra=[("Allow", allow)])


def capabilities(req: Request, allow: str, supported: Collection[str]) -> Response:
    """The ``200`` to an OPTIONS (§11.2): the methods taken (``allow``), the body we read and
    the extensions ``supported``."""
    extra = [("Allow", allow), ("Accept", "application/sdp")]
    extra += [("Supported", ", ".join(supported))] if supported else []
    return reply(req, 200, "OK", extra=extra)
