"""Our INVITE toward a trunk (RFC 3261 §13.2, §17.1.1): a SIP participant's leg, or a
REFER's new target.

The Request-URI is the target (``sip:1001@pbx.example.com``); the request goes to the trunk's
host, port and transport (its ``uri``), as to an outbound proxy. ``401``/``407`` are answered
once with the trunk's credentials (``Authorization``/``Proxy-Authorization``, the best
challenge we can: SHA-256 before MD5, RFC 8760), and once more only when the next one says
``stale=true``; the digest ``uri`` is the Request-URI (§22.4). A ``2xx`` makes the dialog
(§12.1.2) and is ACKed in it; any other final response is ACKed on its transaction
(§17.1.1.3). :meth:`Dialer.cancel` sends ``CANCEL`` (§9.1) while no final response has come.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from ..sip import Dialog, DigestError, Request, Response, UserAgent, choose
from ..sip.headers import Uri, Via, new_branch, new_tag, strip_tag
from ..sip.transaction import TIMER_B, ClientTransaction
from ..sip.transport import Connection

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REFER, INFO"
AUTH = {
    401: ("WWW-Authenticate", "Authorization"),
    407: ("Proxy-Authenticate", "Proxy-Authorization"),
}


class Dialer:
    """One outbound INVITE through a trunk (see the module docstring)."""

    def __init__(
        self,
        ua: UserAgent,
        *,
        proxy: str,
        target: str,
        from_uri: str,
        display: str,
        sdp: bytes,
        username: str,
        password: str,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.ua = ua
        self.proxy = Uri.parse(proxy)
        self.target = target
        self.from_ = (
            f'"{display}" <{from_uri}>;tag={new_tag()}'
            if display
            else f"<{from_uri}>;tag={new_tag()}"
        )
        self.from_uri = from_uri
        self.sdp = sdp
        self.username, self.password = username, password
        self.headers = list(headers)
        self.call_id = f"{new_branch()[7:]}@{ua.hostname}"
        self.seq = 1
        self.dialog: Dialog | None = None
        self.final: Response | None = None
        self.auth_failure = ""
        self._tx: ClientTransaction | None = None
        self._conn: Connection | None = None
        self._cancelled = False

    def _invite(self, auth: tuple[str, str] | None = None) -> Request:
        assert self._conn is not None
        req = Request(method="INVITE", uri=self.target)
        via = Via(
            self._conn.via_transport, self.ua.via_host, None, {"branch": new_branch(), "rport": ""}
        )
        req.add("Via", str(via))
        req.add("Max-Forwards", "70")
        req.add("From", self.from_)
        req.add("To", f"<{self.target}>")
        req.add("Call-ID", self.call_id)
        req.add("CSeq", f"{self.seq} INVITE")
        req.add("Contact", self.ua.contact)
        req.add("P-Asserted-Identity", f"<{self.from_uri}>")
        req.add("Allow", ALLOW)
        for name, value in self.headers:
            req.add(name, value)
        if auth is not None:
            req.add(*auth)
        req.add("Content-Type", "application/sdp")
        req.body = self.sdp
        return req

    async def run(self, on_progress: Callable[[Response], None]) -> Response:
        """Send the INVITE and follow it to its final response (a ``2xx``: the dialog made and
        ACKed). A trunk that cannot be reached is a synthetic ``503``."""
        try:
            self._conn = await self.ua.connection_to(self.proxy)
        except (OSError, TimeoutError) as exc:
            log.warning("SIP trunk %s unreachable: %s", self.proxy, exc)
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
                await self._send(self._ack_failure(invite, resp))
            if resp.status in AUTH and not self._cancelled and rounds < 2:
                auth = self._answer(resp, rounds)
                if auth is not None:
                    rounds += 1
                    self.seq += 1
                    invite = self._invite(auth)
                    continue
            self.final = resp
            if 200 <= resp.status < 300:
                self.dialog = Dialog.as_uac(invite, resp, self._conn, self.ua.contact)
                ack = self.dialog.request("ACK", self.ua.via_host, seq=invite.cseq[0])
                await self._send(ack)
            return resp

    def _answer(self, resp: Response, rounds: int) -> tuple[str, str] | None:
        challenge_header, answer_header = AUTH[resp.status]
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

    async def _follow(
        self, tx: ClientTransaction, on_progress: Callable[[Response], None]
    ) -> Response:
        while True:
            resp = await tx.next(TIMER_B)
            if 100 < resp.status < 200:
                on_progress(resp)
            elif resp.status >= 200:
                return resp

    def _ack_failure(self, invite: Request, resp: Response) -> Request:
        ack = Request(method="ACK", uri=invite.uri)
        ack.add("Via", invite.get("Via"))
        ack.add("Max-Forwards", "70")
        ack.add("From", invite.get("From"))
        ack.add("To", resp.get("To"))
        ack.add("Call-ID", invite.call_id)
        ack.add("CSeq", f"{invite.cseq[0]} ACK")
        return ack

    async def _send(self, req: Request) -> None:
        if self._conn is None:
            return
        try:
            await self._conn.send(req)
        except (ConnectionError, OSError, TimeoutError) as exc:
            log.info("SIP trunk %s: %s not sent: %s", self.proxy, req.method, exc)

    async def cancel(self) -> None:
        """CANCEL the INVITE (§9.1) while it has no final response."""
        self._cancelled = True
        tx = self._tx
        if tx is None or self.final is not None:
            return
        invite = tx.req
        cancel = Request(method="CANCEL", uri=invite.uri)
        cancel.add("Via", invite.get("Via"))
        cancel.add("Max-Forwards", "70")
        cancel.add("From", invite.get("From"))
        cancel.add("To", strip_tag(invite.get("To")))
        cancel.add("Call-ID", invite.call_id)
        cancel.add("CSeq", f"{invite.cseq[0]} CANCEL")
        try:
            cancel_tx = await self.ua.send(cancel, tx.conn)
        except (ConnectionError, OSError, TimeoutError) as exc:
            log.info("SIP trunk %s: CANCEL not sent: %s", self.proxy, exc)
            return
        try:
            await cancel_tx.final(4.0)
        finally:
            self.ua.done(cancel_tx)
