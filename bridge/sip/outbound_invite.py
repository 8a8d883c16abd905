"""One INVITE we send, followed to its final response: the INVITE client transaction and the
dialog setup its UAC does around it (RFC 3261 §13.2, §17.1.1), shared by Meta's road
(``uac.InviteClient``) and the trunks (``trunks/dialer.py``'s ``Dialer``).

The next hop is connected to first (one that cannot be reached is a synthetic ``503``). Of the
responses ``100`` is ignored and the other ``1xx`` are progress, until the final one (none
within Timer B: a synthetic ``408``; once a provisional response came the INVITE rings until
its final response, or until the caller's ring limit, when it is CANCELled). A non-``2xx``
final response is ACKed hop by hop on the INVITE's own branch (§17.1.1.3), over UDP again
each time it comes again for Timer D (64·T1, §17.1.1.2). A ``401``/``407``
answered is followed by the INVITE again with the same Call-ID and From tag, CSeq + 1 and a
new branch (§8.1.3.5, §22.2): the best challenge we support (SHA-256 before MD5, RFC 8760)
answered once, the digest ``uri`` the Request-URI (§22.4), and once more only when it says
``stale=true`` (RFC 7616 §3.3: a fresh nonce, not a refusal); which statuses are answered and
what a failed round says are the subclass's. A ``2xx`` makes the dialog (§12.1.2, route set
reversed) and is ACKed in it with the INVITE's CSeq number (§13.2.2.4); the same 2xx sent
again is ACKed again for 64·T1 (the UAS sends it until an ACK reaches it, over any transport:
the ACK may be lost beyond the first hop, §13.3.1.4).
:meth:`OutboundInvite.cancel` sends ``CANCEL`` (§9.1) while no final response has come, once
a provisional one has.

By default a CANCEL is a client transaction of its own (retransmitted over UDP, §17.1.2.2) and
the ACKs go on the INVITE's connection; a subclass may send them otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Sequence

from .dialog import Dialog
from .digest import CHALLENGES, Challenge, DigestError, choose
from .headers import Address, Uri, Via, new_branch, strip_tag
from .message import Request, Response, SipParseError
from .transaction import TIMER_B, ClientTransaction
from .transport import Connection
from .ua import UserAgent

SEND_ERRORS = (ConnectionError, OSError, TimeoutError, ssl.SSLError)
"""What connecting or sending may raise (each an ``OSError``, named for the reader)."""

CANCEL_WAIT = 4.0
"""How long a CANCEL's transaction waits for its final response."""


class OutboundInvite:
    """One INVITE we send (see the module docstring); subclasses say what differs."""

    challenges: tuple[int, ...] = (401, 407)
    """The challenges answered."""

    def __init__(
        self,
        ua: UserAgent,
        *,
        next_hop: Uri,
        target: str,
        to: str,
        from_: str,
        call_id: str,
        sdp: bytes,
        username: str,
        password: str,
        ring_limit: float | None = None,
    ) -> None:
        """``next_hop``: where the INVITE goes (host, port, transport); ``target``: its
        Request-URI; ``ring_limit``: seconds it may ring (from its first provisional response)
        before we CANCEL it, ``None``: until its final response or :meth:`cancel`."""
        self.ua = ua
        self.next_hop = next_hop
        self.target = target
        self.to = to
        self.from_ = from_
        self.call_id = call_id
        self.sdp = sdp
        self.username, self.password = username, password
        self.seq = 1
        self.dialog: Dialog | None = None
        self.final: Response | None = None
        self.auth_failure = ""
        """Why the digest round failed, when the final response is a ``401``/``407``."""
        self.answered: Challenge | None = None
        """The challenge of our last authorization (``None`` before one)."""
        self._tx: ClientTransaction | None = None
        self._conn: Connection | None = None
        self._cancelled = False
        self.ring_limit = ring_limit
        self._cancel_sent: float | None = None
        """When our CANCEL went (loop time): its INVITE's final response is awaited 64·T1."""
        self._heard = False
        """A provisional response to the INVITE in hand came: a CANCEL may go (§9.1)."""
        self.early_tag = ""
        """The To tag of the latest provisional response: its early dialog's (§12.1.2)."""

    # -- what a subclass says
    @property
    def contact(self) -> str:
        """Our Contact in the INVITE and in the dialog it makes."""
        return self.ua.contact

    def _via_transport(self) -> str:
        """What our Via says of the hop (§18.1.1, §20.42): the connection's transport."""
        assert self._conn is not None
        return self._conn.via_transport

    def _road_headers(self) -> Sequence[tuple[str, str]]:
        """The INVITE's headers after Contact and before any authorization."""
        return ()

    def _authorization(self, resp: Response, rounds: int) -> tuple[str, str] | None:
        """The header answering ``resp``'s challenge after ``rounds`` answered ones (module
        docstring), or ``None``: ``resp`` is final, :attr:`auth_failure` says why."""
        if resp.status not in self.challenges:
            return None
        challenge_header, answer_header = CHALLENGES[resp.status]
        values = resp.all(challenge_header)
        try:
            chosen = choose(values)
        except DigestError as exc:
            self.auth_failure = self._unanswerable(resp, values, exc)
            return None
        if rounds > 1 or (rounds == 1 and not chosen.stale):
            self.auth_failure = self._refused(chosen)
            return None
        self._answering(chosen, values, rounds)
        self.answered = chosen
        return answer_header, chosen.answer("INVITE", self.target, self.username, self.password)

    def _unanswerable(self, resp: Response, values: list[str], exc: DigestError) -> str:
        """Why none of ``resp``'s challenges ``values`` can be answered."""
        return f"the {resp.status} has no challenge we can answer: {exc}"

    def _refused(self, again: Challenge) -> str:
        """Why a second challenge (``again``, not stale) ends the round."""
        return f"our {again.algorithm} digest was refused (realm {again.realm!r})"

    def _answering(self, chosen: Challenge, values: list[str], rounds: int) -> None:
        """Say that ``chosen`` is answered."""

    def _unreachable(self, exc: BaseException) -> None:
        """Say that the next hop cannot be reached."""

    def _not_sent(self, req: Request, exc: BaseException) -> None:
        """Say that an ACK or a CANCEL could not be sent."""

    def _rang_out(self) -> None:
        """Say that it rang for :attr:`ring_limit` unanswered (our CANCEL follows)."""

    async def _send_ack(self, ack: Request, dialog: Dialog) -> None:
        """The ACK of a ``2xx``, in its dialog: on the INVITE's connection."""
        await self._send_on_hop(ack)

    async def _send_cancel(self, cancel: Request, conn: Connection) -> None:
        """A CANCEL as a transaction of its own (§9.1, §17.1.2)."""
        try:
            cancel_tx = await self.ua.send(cancel, conn)
        except SEND_ERRORS as exc:
            self._not_sent(cancel, exc)
            return
        try:
            await cancel_tx.final(CANCEL_WAIT)
        finally:
            self.ua.done(cancel_tx)

    # -- the transaction
    def _invite(self, authorization: tuple[str, str] | None = None) -> Request:
        req = Request(method="INVITE", uri=self.target)
        via = Via(
            self._via_transport(), self.ua.via_host, None, {"branch": new_branch(), "rport": ""}
        )
        req.add("Via", str(via))
        req.add("Max-Forwards", "70")
        req.add("From", self.from_)
        req.add("To", self.to)
        req.add("Call-ID", self.call_id)
        req.add("CSeq", f"{self.seq} INVITE")
        req.add("Contact", self.contact)
        for name, value in self._road_headers():
            req.add(name, value)
        if authorization is not None:
            req.add(*authorization)
        req.add("Content-Type", "application/sdp")
        req.body = self.sdp
        return req

    async def run(self, on_progress: Callable[[Response], None]) -> Response:
        """Send the INVITE and follow it to its final response (a ``2xx``: the dialog made and
        ACKed). A next hop that cannot be reached is a synthetic ``503``."""
        try:
            self._conn = await self.ua.connection_to(self.next_hop)
        except SEND_ERRORS as exc:
            self._unreachable(exc)
            self.final = Response(status=503, reason=f"Service Unavailable ({exc})")
            return self.final
        if self._cancelled:  # cancel() came while the next hop was reached: send nothing
            self.final = Response(status=487, reason="Request Terminated (before it was sent)")
            return self.final
        invite = self._invite()
        rounds = 0
        while True:
            self._heard = False
            tx = self._tx = await self.ua.send(invite, self._conn)
            try:
                resp = await self._follow(tx, on_progress)
            except BaseException:
                self.ua.done(tx)
                raise
            kept = 200 <= resp.status < 300  # a 2xx's transaction kept: its ACK again
            if resp.status >= 300 and resp.values("Via"):  # (never for a 408 of our own)
                ack = self._ack_non_2xx(invite, resp)
                await self._send_on_hop(ack)
                if kept := not tx.conn.reliable:  # Timer D: the same refusal ACKed again
                    self.ua.spawn(ack_again(self, tx, ack), f"ack:{self.call_id[:24]}")
            if not kept:
                self.ua.done(tx)
            if resp.status in CHALLENGES and not self._cancelled:
                authorization = self._authorization(resp, rounds)
                if authorization is not None:
                    rounds += 1
                    self.seq += 1
                    invite = self._invite(authorization)
                    continue
            self.final = resp
            if 200 <= resp.status < 300:
                self.dialog = Dialog.as_uac(invite, resp, self._conn, self.contact)
                ack = self.dialog.request("ACK", self.ua.via_host, seq=invite.cseq[0])
                await self._send_ack(ack, self.dialog)
                self.ua.spawn(ack_again(self, tx, ack), f"ack:{self.call_id[:24]}")
            return resp

    async def _follow(
        self, tx: ClientTransaction, on_progress: Callable[[Response], None]
    ) -> Response:
        """The final response. Timer B (a synthetic ``408``) holds only until a provisional
        response (§17.1.1.2): then the INVITE rings until its final response, our
        :attr:`ring_limit` (our CANCEL then, §9.1) or :meth:`cancel`, after which the final
        response (the ``487``) is awaited 64·T1 more (§9.1)."""
        loop = asyncio.get_running_loop()
        rings_until: float | None = None  # set by the first provisional response
        while True:
            now = loop.time()
            if self._cancel_sent is not None:
                wait = self._cancel_sent + TIMER_B - now
            elif rings_until is not None:
                wait = min(rings_until - now, TIMER_B)
            else:
                wait = TIMER_B
            resp = await tx.next(max(wait, 0.0))
            if resp.values("Via"):  # heard (next()'s own 408 has none)
                if resp.status >= 200:
                    return resp
                if rings_until is None:
                    rings_until = loop.time() + (self.ring_limit or float("inf"))
                    self._heard = True
                    if self._cancelled:  # cancel() came before anything was heard: now
                        await self.cancel()
                if resp.status > 100:
                    with contextlib.suppress(SipParseError):
                        self.early_tag = Address.parse(resp.get("To")).tag
                    on_progress(resp)
                continue
            now = loop.time()
            if self._cancel_sent is not None:
                if now >= self._cancel_sent + TIMER_B:
                    return resp
            elif rings_until is None:
                return resp  # Timer B: nothing heard
            elif now >= rings_until:
                self._rang_out()
                await self.cancel()

    @staticmethod
    def _ack_non_2xx(invite: Request, resp: Response) -> Request:
        """Hop by hop, on the INVITE's branch, with the response's To (its tag)."""
        ack = Request(method="ACK", uri=invite.uri)
        ack.add("Via", invite.get("Via"))
        ack.add("Max-Forwards", "70")
        ack.add("From", invite.get("From"))
        ack.add("To", resp.get("To"))
        ack.add("Call-ID", invite.call_id)
        ack.add("CSeq", f"{invite.cseq[0]} ACK")
        return ack

    async def _send_on_hop(self, req: Request) -> None:
        """Send on the INVITE's connection, without a transaction (an ACK has none)."""
        if self._conn is None:
            return
        try:
            await self._conn.send(req)
        except SEND_ERRORS as exc:
            self._not_sent(req, exc)

    async def cancel(self) -> None:
        """CANCEL the INVITE (§9.1) while it has no final response; before it was sent, it
        is not sent (:meth:`run` ends with a ``487``); before a provisional response to it, the
        CANCEL waits for one (§9.1: it MUST NOT go earlier, it could overtake the INVITE)."""
        self._cancelled = True
        tx = self._tx
        if tx is None or self.final is not None or self._cancel_sent is not None:
            return
        if not self._heard:
            return  # _follow sends it with the first provisional response
        self._cancel_sent = asyncio.get_running_loop().time()
        invite = tx.req
        cancel = Request(method="CANCEL", uri=invite.uri)
        cancel.add("Via", invite.get("Via"))  # the INVITE's branch: §9.1
        cancel.add("Max-Forwards", "70")
        cancel.add("From", invite.get("From"))
        cancel.add("To", strip_tag(invite.get("To")))
        cancel.add("Call-ID", invite.call_id)
        cancel.add("CSeq", f"{invite.cseq[0]} CANCEL")
        for route in invite.all("Route"):
            cancel.add("Route", route)
        await self._send_cancel(cancel, tx.conn)


async def ack_again(invite: OutboundInvite, tx: ClientTransaction, ack: Request) -> None:
    """The final response to ``invite`` heard again (``tx`` kept: the job of its ACKs after
    the final one). §13.2.2.4: each 2xx is ACKed. Our ACK may be lost (over UDP, or beyond
    the first hop over TLS) and the UAS sends its 2xx again until one arrives (§13.3.1.4),
    for 64·T1: the transaction is kept that long to hear those and ACK each (forgotten, the
    call ended with the UAS's BYE); a 2xx of another dialog (a proxy forked the INVITE, two phones
    answered) is ACKed in its own and that dialog hung up. A refusal over UDP the same,
    hop by hop, for Timer D (§17.1.1.2: the UAS sends it again until our ACK, Timer G)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + TIMER_B
    forks: dict[str, tuple[Dialog, Request]] = {}
    try:
        while (left := until - loop.time()) > 0:
            resp = await tx.next(left)
            if not resp.values("Via"):  # next()'s own 408
                continue
            if invite.dialog is not None and 200 <= resp.status < 300:
                tag = Address.parse(resp.get("To")).tag
                if tag == invite.dialog.remote_tag:
                    await invite._send_ack(ack, invite.dialog)
                    continue
                known = tag in forks
                if not known:
                    fork = Dialog.as_uac(tx.req, resp, tx.conn, invite.contact)
                    seq = tx.req.cseq[0]
                    forks[tag] = fork, fork.request("ACK", invite.ua.via_host, seq=seq)
                fork, fork_ack = forks[tag]
                await invite._send_ack(fork_ack, fork)
                if not known:
                    invite.ua.spawn(hang_up_fork(invite, fork), f"fork:{invite.call_id[:24]}")
            elif invite.dialog is None and resp.status >= 300:
                await invite._send_on_hop(ack)
    finally:
        invite.ua.done(tx)


async def hang_up_fork(invite: OutboundInvite, fork: Dialog) -> None:
    """The dialog of a forked 2xx we do not keep, ACKed: ended with a BYE (§13.2.2.4)."""
    credentials = (invite.username, invite.password) if invite.password else None
    await invite.ua.in_dialog(fork, "BYE", timeout=4.0, credentials=credentials)


__all__ = ["CHALLENGES", "SEND_ERRORS", "OutboundInvite"]
