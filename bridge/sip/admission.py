"""Whether a new INVITE is taken: the checks the user agent makes before an INVITE gets its
``100 Trying`` and goes to the call handler, in this order:

* unfit (:func:`~.extensions.unfit_invite`): a ``Require`` the user agent does not support
  ``420`` (RFC 3261 §8.2.2.3), no SDP offer ``488``;
* a number a shared listener does not serve (its :data:`Lookup`): ``404``, counted
  ``unknown_number``;
* the number's digest (§22, :func:`refusal_of`): a challenge ``407``, counted
  ``challenged`` (every call's first INVITE gets one), or wrong credentials ``403``, counted
  ``auth`` and said once per source while it lasts;
* the user agent closing, or :data:`PENDING_INVITES` INVITEs already waiting for their final
  response: ``503`` with ``Retry-After`` (§21.5.4); the latter counted ``overloaded`` and said
  once at WARNING while it lasts, its end (an INVITE taken again) at INFO.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sized
from typing import Protocol

from ..logs import Repeats
from .dialog import new_tag, reply
from .digest import DigestServer, Verdict
from .extensions import unfit_invite
from .message import Request, Response

log = logging.getLogger(__name__)

PENDING_INVITES = 1024
"""INVITE server transactions without a final response at once; more get ``503``."""
RETRY_AFTER = "5"
"""Seconds a caller refused for want of room is asked to wait (``Retry-After``)."""
Lookup = Callable[[Request], tuple[DigestServer | None, str] | None]
"""A shared listener's number for an INVITE: its digest and Contact, ``None`` when unknown."""


class Admitting(Protocol):
    """What the checks read of their user agent."""

    @property
    def supported(self) -> tuple[str, ...]: ...
    @property
    def lookup(self) -> Lookup | None: ...
    @property
    def digest(self) -> DigestServer | None: ...
    @property
    def pending(self) -> Sized: ...
    @property
    def closing(self) -> bool: ...
    def count(self, what: str) -> None: ...


class InviteAdmission:
    """The user agent's checks of a new INVITE (see the module docstring)."""

    def __init__(self, ua: Admitting) -> None:
        self.ua = ua
        self._said = Repeats()
        """The pending cap reached: said once while it lasts, its end at INFO."""

    def judge(self, req: Request, source: str) -> Response | str:
        """The refusal to send for ``req`` from ``source``, else the Contact its dialog
        gets (the INVITE is taken)."""
        ua = self.ua
        unfit = unfit_invite(req, ua.supported)
        if unfit is not None:
            return unfit
        line = ua.lookup(req) if ua.lookup is not None else (ua.digest, "")
        if line is None:  # a number this shared listener does not serve
            ua.count("unknown_number")
            return reply(req, 404, "Not Found (no such number here)")
        digest, contact = line
        refusal = refusal_of(digest, req, source, ua.count) if digest is not None else None
        if refusal is not None:
            return refusal
        if ua.closing:
            return busy(req)
        if len(ua.pending) >= PENDING_INVITES:
            ua.count("overloaded")
            if self._said.seen("pending") == 1:
                log.warning(
                    "SIP: %d INVITEs wait for their answer: more are refused 503 while it "
                    "lasts (the first from %s)",
                    PENDING_INVITES,
                    source,
                )
            return busy(req)
        if refused := self._said.ended("pending"):
            log.info("SIP: INVITEs are taken again (%d refused 503 before)", refused)
        return contact


def busy(req: Request) -> Response:
    """``503`` with ``Retry-After`` (RFC 3261 §21.5.4): no room for ``req`` now."""
    return reply(req, 503, "Service Unavailable", extra=[("Retry-After", RETRY_AFTER)])


def refusal_of(
    digest: DigestServer, req: Request, source: str, count: Callable[[str], None]
) -> Response | None:
    """``None`` when ``req``'s digest answer is right; else the ``407`` with one challenge
    per algorithm we offer, the preferred first (RFC 8760 §2.4), counted ``challenged``, or
    ``403`` for wrong credentials, counted ``auth`` (and logged)."""
    verdict = digest.verify(req.method, req.all("Proxy-Authorization"))
    if verdict is Verdict.OK:
        if wrong := digest.wrong.ended(source):
            log.info("SIP from %s: digest credentials right again after %d wrong", source, wrong)
        return None
    if verdict is Verdict.WRONG:
        count("auth")
        # Said once while a source keeps answering wrong (someone guessing sends guess after
        # guess: it was a line each), and its end when it answers right.
        if digest.wrong.seen(source) == 1:
            log.warning(
                "SIP INVITE %s from %s: wrong digest credentials (said once until this "
                "source's are right)",
                req.call_id,
                source,
            )
        return reply(req, 403, "Forbidden (wrong credentials)")
    count("challenged")
    challenges = digest.challenges(stale=verdict is Verdict.STALE)
    extra = [("Proxy-Authenticate", challenge) for challenge in challenges]
    return reply(req, 407, "Proxy Authentication Required", to_tag=new_tag(), extra=extra)
