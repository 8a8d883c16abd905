"""Our INVITE toward a trunk (RFC 3261 §13.2, §17.1.1): a SIP participant's leg, or a
REFER's new target, on the INVITE client transaction of ``sip/outbound_invite.py``.

The Request-URI is the target; the request goes to the trunk's host, port and transport as to
an outbound proxy. ``401``/``407`` are answered once with the trunk's credentials (the best
challenge: SHA-256 before MD5, RFC 8760), once more only on ``stale=true``; the digest ``uri``
is the Request-URI (§22.4). :meth:`Dialer.cancel` is a CANCEL transaction of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..sip import DigestError, Request, Response, UserAgent, choose
from ..sip.headers import Uri, new_branch, new_tag
from ..sip.outbound_invite import CHALLENGES, OutboundInvite

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REFER, INFO"


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
        )
        self.from_uri = from_uri
        self.headers = list(headers)

    def _road_headers(self) -> Sequence[tuple[str, str]]:
        return [("P-Asserted-Identity", f"<{self.from_uri}>"), ("Allow", ALLOW), *self.headers]

    def _unreachable(self, exc: BaseException) -> None:
        log.warning("SIP trunk %s unreachable: %s", self.proxy, exc)

    def _not_sent(self, req: Request, exc: BaseException) -> None:
        log.info("SIP trunk %s: %s not sent: %s", self.proxy, req.method, exc)

    def _authorization(self, resp: Response, rounds: int) -> tuple[str, str] | None:
        if rounds >= 2:  # answered, and answered again on a stale nonce: no more
            return None
        challenge_header, answer_header = CHALLENGES[resp.status]
        values = resp.all(challenge_header)
        try:
            chosen = choose(values)
        except DigestError as exc:
            self.auth_failure = f"the trunk's {resp.status} has no challenge we can answer: {exc}"
            return None
        if rounds == 1 and not chosen.stale:
            self.auth_failure = (
                f"the trunk refused our {chosen.algorithm} digest (username "
                f"{self.username!r}, realm {chosen.realm!r}): check the trunk's password"
            )
            return None
        if not self.password:
            self.auth_failure = "the trunk asks for credentials and the trunk has no password"
            return None
        return answer_header, chosen.answer("INVITE", self.target, self.username, self.password)


__all__ = ["Dialer"]
