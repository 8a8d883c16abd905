"""Our INVITE to Meta (a business-initiated call): what Meta's road asks of the INVITE client
transaction that ``outbound_invite`` runs (RFC 3261 §13.2, §17.1.1).

The INVITE goes over TLS to Meta (its Via says ``TLS``), with the calling number's From and
Contact. Only ``407`` is answered, with the number's credentials (the round is
``OutboundInvite``'s; Meta's carries SHA-256 first and MD5 second), the digest ``uri`` the
Request-URI as Meta's documented examples send it (``sip:+<callee>@wa.meta.vc;transport=tls``),
so its user is the To's, which Meta checks. When the round fails,
:attr:`InviteClient.auth_failure` says which challenge failed and why (no challenge we can
answer, or our answer refused), for the one WARNING the engine logs. The ACK of a ``2xx`` goes
on the dialog's flow (made again to its next hop if the INVITE's connection is gone), and a
CANCEL is sent bare: over TLS nothing is retransmitted, and the engine's hang-up does not wait
for its ``200``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .dialog import Dialog
from .digest import Challenge, DigestError
from .headers import Uri, new_tag
from .message import Request, Response
from .outbound_invite import SEND_ERRORS, OutboundInvite
from .transport import Connection
from .ua import ALLOW, UserAgent

log = logging.getLogger(__name__)


class InviteClient(OutboundInvite):
    """One outbound INVITE to Meta and its 407 round (see the module docstring)."""

    challenges = (407,)

    def __init__(
        self,
        ua: UserAgent,
        *,
        meta_uri: str,
        callee: str,
        sdp: bytes,
        username: str,
        password: str,
        call_id: str,
        number: str = "",
        hostname: str = "",
    ) -> None:
        """``number``/``hostname``: the calling number's From and Contact on a shared
        listener (the user agent's own by default)."""
        self._own = (number or ua.number, hostname or ua.hostname) if number or hostname else None
        number, hostname = number or ua.number, hostname or ua.hostname
        self.meta = Uri.parse(meta_uri)
        target = Uri.parse(meta_uri)
        target.user = f"+{callee}"
        super().__init__(
            ua,
            next_hop=self.meta,
            target=str(target),
            to=f"<sip:+{callee}@{self.meta.host}>",
            from_=f"<sip:+{number}@{hostname}>;tag={new_tag()}",
            call_id=call_id,
            sdp=sdp,
            username=username,
            password=password,
        )

    @property
    def contact(self) -> str:
        return self.ua.contact_for(*self._own) if self._own else self.ua.contact

    @property
    def digest_uri(self) -> str:
        """The digest ``uri``: the Request-URI (see the module docstring)."""
        return self.target

    def _via_transport(self) -> str:
        return "TLS"  # Meta's road is SIP over TLS only

    def _road_headers(self) -> Sequence[tuple[str, str]]:
        return [("Allow", ALLOW)]

    def _unreachable(self, exc: BaseException) -> None:
        log.warning("SIP: cannot reach Meta at %s: %s", self.meta, exc)

    def _unanswerable(self, resp: Response, values: list[str], exc: DigestError) -> str:
        offered = ", ".join(v[:120] for v in values) or "none"
        return (
            f"Meta's 407 carries {len(values)} challenge(s) and we can answer none: {exc}; "
            f"offered: {offered}. No credentials were sent"
        )

    def _refused(self, again: Challenge) -> str:
        answered = self.answered or again
        return (
            f"Meta refused our {answered.algorithm} digest answer (realm "
            f"{answered.realm!r}, username {self.username}, uri {self.digest_uri}) and "
            "challenged again: BRIDGE_SIP_PASSWORD must be the number's SIP password (GET "
            "/{PHONE_NUMBER_ID}/settings?include_sip_credentials=true) and BRIDGE_SIP_NUMBER "
            "the number itself"
        )

    def _answering(self, chosen: Challenge, values: list[str], rounds: int) -> None:
        if rounds:
            log.info("SIP call %s: Meta's nonce went stale; answering anew", self.call_id)
        log.info(
            "SIP call %s: answering Meta's %s challenge (of %d)",
            self.call_id,
            chosen.algorithm,
            len(values),
        )

    async def _send_ack(self, ack: Request, dialog: Dialog) -> None:
        try:  # the dialog's flow, else a connection to its next hop (§12.2.1.1)
            await (await self.ua.flow_for(dialog)).send(ack)
        except SEND_ERRORS as exc:
            log.warning("SIP call %s: cannot send the ACK: %s", self.call_id, exc)

    async def _send_cancel(self, cancel: Request, conn: Connection) -> None:
        try:
            await conn.send(cancel)  # its 200 is matched to no transaction, and dropped
        except SEND_ERRORS as exc:
            log.info("SIP call %s: CANCEL not sent: %s", self.call_id, exc)


__all__ = ["InviteClient"]
