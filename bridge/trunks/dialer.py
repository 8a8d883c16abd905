"""Our INVITE toward a trunk (RFC 3261 §13.2, §17.1.1): a SIP participant's leg, or a
REFER's new target, on the INVITE client transaction of ``sip/outbound_invite.py``.

The Request-URI is the target; the request goes to the trunk's host, port and transport as to
an outbound proxy. ``401``/``407`` are answered with the trunk's credentials as
``OutboundInvite`` answers them. :meth:`Dialer.cancel` is a CANCEL transaction of its own,
sent too when the target rings past the ring limit (``BRIDGE_RING_TIMEOUT``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..sip import Challenge, DigestError, Request, Response, UserAgent
from ..sip.digest import CHALLENGES
from ..sip.headers import Uri, new_branch, new_tag
from ..sip.outbound_invite import OutboundInvite

log = logging.getLogger(__name__)


class Dialer(OutboundInvite):
    """One outbound INVITE through a trunk (see the module docstring)."""

    def __init__(
        self,
        ua: UserAgent,
        *,
        proxy: str,
        target: str,
        from_uri: str,
        sdp: bytes,
        username: str,
        password: str,
        headers: Sequence[tuple[str, str]] = (),
        ring_limit: float | None = None,
    ) -> None:
        self.proxy = Uri.parse(proxy)
        super().__init__(
            ua,
            next_hop=self.proxy,
            target=target,
            to=f"<{target}>",
            from_=f"<{from_uri}>;tag={new_tag()}",
            call_id=f"{new_branch()[7:]}@{ua.hostname}",
            sdp=sdp,
            username=username,
            password=password,
            ring_limit=ring_limit,
        )
        self.from_uri = from_uri
        self.headers = list(headers)

    def _road_headers(self) -> Sequence[tuple[str, str]]:
        return [
            ("P-Asserted-Identity", f"<{self.from_uri}>"),
            ("Allow", self.ua.allow),
            ("Supported", "replaces"),  # RFC 3891 §6.2: a phone may take the leg over
            *self.headers,
        ]

    def _unreachable(self, exc: BaseException) -> None:
        log.warning("SIP trunk %s unreachable: %s", self.proxy, exc)

    def _not_sent(self, req: Request, exc: BaseException) -> None:
        log.info("SIP trunk %s: %s not sent: %s", self.proxy, req.method, exc)

    def _rang_out(self) -> None:
        log.info(
            "SIP trunk %s: %s rang %gs unanswered: cancelled",
            self.proxy,
            self.target,
            self.ring_limit or 0,
        )

    def _authorization(self, resp: Response, rounds: int) -> tuple[str, str] | None:
        if resp.status in CHALLENGES and not self.password:
            self.auth_failure = "the trunk asks for credentials and the trunk has no password"
            return None
        return super()._authorization(resp, rounds)

    def _unanswerable(self, resp: Response, values: list[str], exc: DigestError) -> str:
        return f"the trunk's {resp.status} has no challenge we can answer: {exc}"

    def _refused(self, again: Challenge) -> str:
        return (
            f"the trunk refused our {again.algorithm} digest (username "
            f"{self.username!r}, realm {again.realm!r}): check the trunk's password"
        )


__all__ = ["Dialer"]
