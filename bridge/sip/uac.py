"""Our INVITE to Meta (a business-initiated call): the INVITE client transaction and what its
UAC does around it (RFC 3261 §13.2, §17.1.1).

``100`` is ignored; ``180``/``183`` are progress; ``407`` is answered once with the number's
credentials (§22.2: the same Call-ID and From tag, CSeq + 1, a new branch, after ACKing the
``407``, §17.1.1.3), and once more only when the second ``407`` says ``stale=true`` (RFC 7616
§3.3: a fresh nonce, not a refusal). Of the ``407``'s challenges the best we support is
answered (Meta's carries SHA-256 first and MD5 second: SHA-256, RFC 8760), with the digest
``uri`` the INVITE's Request-URI as Meta's documented examples send it
(``sip:+<callee>@wa.meta.vc;transport=tls``; RFC 3261 §22.4), so its user is the To's, which
Meta checks. When the round fails, :attr:`InviteClient.auth_failure` says which challenge
failed and why (no challenge we can answer, or our answer refused), for the one WARNING the
engine logs. A ``2xx`` makes the dialog (§12.1.2, route set reversed) and is ACKed
in it (§13.2.2.4, the INVITE's CSeq number); any other final response is ACKed on its
transaction and returned. :meth:`InviteClient.cancel` sends ``CANCEL`` (§9.1) while no final
response has come.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

from .dialog import Dialog
from .digest import Challenge, DigestError, choose
from .headers import Uri, Via, new_branch, new_tag, strip_tag
from .message import Request, Response
from .transaction import TIMER_B, ClientTransaction
from .transport import Connection
from .ua import UserAgent

log = logging.getLogger(__name__)


class InviteClient:
    """One outbound INVITE and its 407 round (see the module docstring)."""

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
        self.ua = ua
        self._own = (number or ua.number, hostname or ua.hostname) if number or hostname else None
        number, hostname = number or ua.number, hostname or ua.hostname
        self.meta = Uri.parse(meta_uri)
        target = Uri.parse(meta_uri)
        target.user = f"+{callee}"
        self.target = str(target)
        self.to = f"<sip:+{callee}@{self.meta.host}>"
        self.from_ = f"<sip:+{number}@{hostname}>;tag={new_tag()}"
        self.sdp = sdp
        self.username, self.password = username, password
        self.call_id = call_id
        self.seq = 1
        self.dialog: Dialog | None = None
        self.final: Response | None = None
        self._tx: ClientTransaction | None = None
        self._conn: Connection | None = None
        self._cancelled = False
        self.answered: Challenge | None = None
        """The challenge of our last ``Proxy-Authorization`` (``None`` before a ``407``)."""
        self.auth_failure = ""
        """Why the digest round failed, when the final response is a ``407``."""

    @property
    def contact(self) -> str:
        return self.ua.contact_for(*self._own) if self._own else self.ua.contact

    @property
    def digest_uri(self) -> str:
        """The digest ``uri``: the Request-URI (see the module docstring)."""
        return self.target

    def _invite(self, authorization: str = "") -> Request:
        req = Request(method="INVITE", uri=self.target)
        req.add(
            "Via", str(Via("TLS", self.ua.via_host, None, {"branch": new_branch(), "rport": ""}))
        )
        req.add("Max-Forwards", "70")
        req.add("From", self.from_)
        req.add("To", self.to)
        req.add("Call-ID", self.call_id)
        req.add("CSeq", f"{self.seq} INVITE")
        req.add("Contact", self.contact)
        req.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY")
        if authorization:
            req.add("Proxy-Authorization", authorization)
        req.add("Content-Type", "application/sdp")
        req.body = self.sdp
        return req

    def _ack_failure(self, invite: Request, resp: Response) -> Request:
        """The ACK of a non-2xx final response: hop by hop, on the INVITE's branch."""
        ack = Request(method="ACK", uri=invite.uri)
        ack.add("Via", invite.get("Via"))
        ack.add("Max-Forwards", "70")
        ack.add("From", invite.get("From"))
        ack.add("To", resp.get("To"))
        ack.add("Call-ID", invite.call_id)
        ack.add("CSeq", f"{invite.cseq[0]} ACK")
        return ack

    async def run(self, on_progress: Callable[[Response], None]) -> Response:
        """Send the INVITE and follow it to its final response (``2xx``: the dialog is
        made and ACKed). Connection failures are a synthetic ``503``."""
        try:
            self._conn = await self.ua.connection_to(self.meta)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.warning("SIP: cannot reach Meta at %s: %s", self.meta, exc)
            self.final = Response(status=503, reason=f"Service Unavailable ({exc})")
            return self.final
        invite = self._invite()
        rounds = 0
        while True:
            tx = self._tx = await self.ua.send(invite, self._conn)
            try:
                resp = await self._follow(tx, on_progress)
            finally:
                self.ua.done(tx)
            if resp.status >= 300:
                try:
                    await self._conn.send(self._ack_failure(invite, resp))
                except (ConnectionError, OSError, TimeoutError, ssl.SSLError):
                    pass
            if resp.status == 407 and not self._cancelled and self._may_answer(resp, rounds):
                rounds += 1
                auth = self._answer_challenge(resp)
                if auth:
                    self.seq += 1
                    invite = self._invite(auth)
                    continue
            self.final = resp
            if 200 <= resp.status < 300:
                await self._confirm(invite, resp)
            return resp

    def _may_answer(self, resp: Response, rounds: int) -> bool:
        """The first ``407``, or a second whose challenge only renewed our nonce."""
        if rounds == 0 or self.answered is None:
            return rounds == 0
        try:
            stale = choose(resp.all("Proxy-Authenticate")).stale
        except DigestError:
            stale = False
        if stale and rounds == 1:
            log.info("SIP call %s: Meta's nonce went stale; answering anew", self.call_id)
            return True
        self.auth_failure = (
            f"Meta refused our {self.answered.algorithm} digest answer (realm "
            f"{self.answered.realm!r}, username {self.username}, uri {self.digest_uri}) and "
            "challenged again: BRIDGE_SIP_PASSWORD must be the number's SIP password (GET "
            "/{PHONE_NUMBER_ID}/settings?include_sip_credentials=true) and BRIDGE_SIP_NUMBER "
            "the number itself"
        )
        return False

    def _answer_challenge(self, resp: Response) -> str:
        values = resp.all("Proxy-Authenticate")
        try:
            chosen = choose(values)
        except DigestError as exc:
            offered = ", ".join(v[:120] for v in values) or "none"
            self.auth_failure = (
                f"Meta's 407 carries {len(values)} challenge(s) and we can answer none: {exc}; "
                f"offered: {offered}. No credentials were sent"
            )
            return ""
        self.answered = chosen
        log.info(
            "SIP call %s: answering Meta's %s challenge (of %d)",
            self.call_id,
            chosen.algorithm,
            len(values),
        )
        return chosen.answer("INVITE", self.digest_uri, self.username, self.password)

    async def _follow(
        self, tx: ClientTransaction, on_progress: Callable[[Response], None]
    ) -> Response:
        while True:
            resp = await tx.next(TIMER_B)
            if 100 < resp.status < 200:
                on_progress(resp)
            elif resp.status >= 200:
                return resp

    async def _confirm(self, invite: Request, resp: Response) -> None:
        assert self._conn is not None
        self.dialog = Dialog.as_uac(invite, resp, self._conn, self.contact)
        ack = self.dialog.request("ACK", self.ua.via_host, seq=invite.cseq[0])
        try:
            await (await self.ua.flow_for(self.dialog)).send(ack)
        except (ConnectionError, OSError, TimeoutError, ssl.SSLError) as exc:
            log.warning("SIP call %s: cannot send the ACK: %s", self.call_id, exc)

    async def cancel(self) -> None:
        """CANCEL the INVITE (§9.1) if it has no final response yet."""
        self._cancelled = True
        tx, conn = self._tx, self._conn
        if tx is None or conn is None or self.final is not None:
            return
        invite = tx.req
        cancel = Request(method="CANCEL", uri=invite.uri)
        cancel.add("Via", invite.get("Via"))
        cancel.add("Max-Forwards", "70")
        cancel.add("From", invite.get("From"))
        cancel.add("To", strip_tag(invite.get("To")))
        cancel.add("Call-ID", invite.call_id)
        cancel.add("CSeq", f"{invite.cseq[0]} CANCEL")
        for route in invite.all("Route"):
            cancel.add("Route", route)
        try:
            await conn.send(cancel)  # its 200 is matched to no transaction, and dropped
        except (ConnectionError, OSError, TimeoutError, ssl.SSLError) as exc:
            log.info("SIP call %s: CANCEL not sent: %s", self.call_id, exc)


__all__ = ["InviteClient"]
