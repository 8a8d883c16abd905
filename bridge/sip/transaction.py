"""SIP transactions (RFC 3261 §17), and the protocol of what the user agent hands to the
engine. Over UDP (a trunk's) a client transaction retransmits its request (Timer A/E) until
a response is heard, and a server answers a retransmitted request with its last response.

* :class:`InviteServer`: Meta's INVITE and the early dialog we answer it in. Over TLS nothing
  is retransmitted hop by hop, but the UAS still retransmits its 2xx until the ACK (§13.3.1.4:
  the ACK may be lost beyond the first hop) and gives up after 64·T1.
* :class:`ClientTransaction`: a request we sent and its responses, matched by the top Via's
  branch and CSeq's method (§17.1.3), with a deadline (Timer B/F, 64·T1; no Timer A on a
  reliable transport, §17.1.1.2).

They see their user agent as the :class:`TransactionUser` declared here (§5: the layer above
the transactions), which ``ua.py``'s ``UserAgent`` is.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from ..logs import Repeats
from ..tasks import TaskSet, wait_event
from .completed import Completed
from .dialog import Dialog, new_tag, reply
from .extensions import unfit_invite
from .headers import Address, Via
from .message import Request, Response
from .transport import Connection

log = logging.getLogger(__name__)

T1, T2 = 0.5, 4.0
"""RFC 3261 §17.1.1.1 timers (seconds)."""
TIMER_B = 64 * T1
"""A client transaction's deadline (and a 2xx's wait for its ACK)."""
REFUSALS_KEPT = 1024
"""Refusals over UDP sent again until their ACK at once (a scanner's INVITEs are refused: its
403s are not sent again beyond these)."""


class CallHandler(Protocol):
    """What the engine does with calls the UA has accepted as SIP."""

    async def invite(self, tx: InviteServer) -> None:
        """A new, authenticated INVITE (its ``100`` is sent): answer it through ``tx``."""

    async def cancelled(self, tx: InviteServer) -> None:
        """The caller cancelled before our final response (``487`` is sent)."""

    async def acked(self, dialog: Dialog) -> None:
        """The ACK to our 2xx arrived: the dialog is confirmed."""

    async def ack_timeout(self, dialog: Dialog) -> None:
        """No ACK to our 2xx within 64·T1 (§13.3.1.4): the call is to be ended with BYE."""

    async def bye(self, dialog: Dialog, req: Request) -> None:
        """The peer ended the dialog (the ``200`` is sent)."""


class TransactionUser(Protocol):
    """What the transactions use of their user agent (RFC 3261 §5's transaction user; each
    described at :class:`~.ua.UserAgent`)."""

    @property
    def contact(self) -> str: ...
    @property
    def handler(self) -> CallHandler: ...
    @property
    def supported(self) -> tuple[str, ...]: ...
    @property
    def allow(self) -> str: ...
    @property
    def tasks(self) -> TaskSet: ...
    @property
    def pending(self) -> dict[tuple[str, str], InviteServer]: ...
    @property
    def awaiting_ack(self) -> dict[tuple[str, str], InviteServer]: ...
    @property
    def refused(self) -> dict[tuple[str, str], InviteServer]: ...
    @property
    def dialogs(self) -> dict[tuple[str, str], Dialog]: ...
    @property
    def completed(self) -> Completed: ...
    @property
    def refused_reinvites(self) -> Repeats: ...
    def count(self, what: str) -> None: ...
    def remember(self, resp: Response) -> None: ...
    async def answer(self, conn: Connection, resp: Response) -> None: ...
    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None: ...
    async def send(self, req: Request, conn: Connection) -> ClientTransaction: ...
    def done(self, tx: ClientTransaction) -> None: ...


class InviteServer:
    """An INVITE server transaction and the early dialog we answer it in."""

    def __init__(
        self,
        ua: TransactionUser,
        req: Request,
        conn: Connection,
        contact: str = "",
        *,
        dialog: Dialog | None = None,
    ) -> None:
        """``contact``: the number's own (a shared listener's), else the user agent's.
        ``dialog``: the confirmed dialog a re-INVITE arrived in (§14.2): answered in it, its
        ACK found by its key (§13.3.1.4), no new dialog made."""
        self.ua = ua
        self.contact = contact or (dialog.contact if dialog is not None else "") or ua.contact
        self.req = req
        self.conn = conn
        self.branch = Via.parse(req.values("Via")[0]).branch  # the top value (§17.2.3)
        self.local_tag = dialog.local_tag if dialog is not None else new_tag()
        self.final = 0
        self.dialog = dialog or Dialog.as_uas(req, self.local_tag, conn, self.contact)
        self.acked = asyncio.Event()
        self.last: Response | None = None
        """Our latest response (sent again when a UDP peer retransmits its INVITE)."""

    async def respond(
        self,
        status: int,
        reason: str,
        *,
        body: bytes = b"",
        extra: Sequence[tuple[str, str]] = (),
        once: bool = False,
    ) -> bool:
        """Send a response (provisional or final); ``False`` when a final one was sent
        already or the connection is gone. ``once``: a refusal not sent again until its ACK
        (to a source that may be forged)."""
        if self.final:
            return False
        resp = reply(self.req, status, reason, to_tag=self.local_tag, extra=list(extra))
        if 100 < status < 300:
            for rr in self.req.all("Record-Route"):
                resp.add("Record-Route", rr)  # §12.1.1: copied into 1xx-with-tag and 2xx
            resp.add("Contact", self.contact)
        if 200 <= status < 300:  # §13.3.1.4: what the call may use, learnt without probing
            resp.add("Allow", self.ua.allow)
            if self.ua.supported:
                resp.add("Supported", ", ".join(self.ua.supported))
        self.last = resp
        if status >= 200:
            self.final = status
            self.ua.remember(resp)
            self.ua.pending.pop(self.key, None)
        if body:
            resp.add("Content-Type", "application/sdp")
            resp.body = body
        try:
            await self.conn.send(resp)
        except (ConnectionError, OSError, TimeoutError, ssl.SSLError) as exc:
            log.warning("SIP call %s: cannot send %d: %s", self.req.call_id, status, exc)
            return False
        if 200 <= status < 300:
            self.ua.awaiting_ack[self.dialog.key] = self
            self.ua.spawn(self._retransmit(resp), f"2xx:{self.req.call_id[:24]}")
        elif status >= 300 and not once and not self.conn.reliable and self._may_resend_refusal():
            # §17.2.1: over UDP a refusal is sent again until its ACK (Timer G): the caller,
            # past our 100, sends its INVITE no more, so a lost refusal was lost for good.
            self.ua.refused[self.refusal_key] = self
            self.ua.spawn(self._retransmit(resp), f"{status}:{self.req.call_id[:24]}")
        return True

    @property
    def key(self) -> tuple[str, str]:
        return self.req.call_id, self.branch

    @property
    def refusal_key(self) -> tuple[str, str]:
        """What the ACK of our refusal carries (:func:`refusal_acked`)."""
        return self.req.call_id, self.local_tag

    def _may_resend_refusal(self) -> bool:
        """Whether a place is left among the refusals sent again (:data:`REFUSALS_KEPT`;
        beyond it, as before, only a retransmitted INVITE brings the refusal again)."""
        return not self.ua.tasks.closed and len(self.ua.refused) < REFUSALS_KEPT

    async def _retransmit(self, resp: Response) -> None:
        """§13.3.1.4: the 2xx again at T1, 2·T1 … T2 until the ACK; BYE after 64·T1. A
        refusal over UDP the same way (§17.2.1, Timer G), given up after 64·T1 (Timer H)."""
        interval, waited = T1, 0.0
        while waited < TIMER_B:
            if await wait_event(self.acked, interval):
                return
            waited += interval
            interval = min(interval * 2, T2)
            if self.conn.open:
                try:
                    await self.conn.send(resp)
                except (ConnectionError, OSError, TimeoutError, ssl.SSLError):
                    pass
        if resp.status >= 300:
            self.ua.refused.pop(self.refusal_key, None)
            log.info("SIP call %s: no ACK for our %d", self.req.call_id, resp.status)
            return
        log.warning("SIP call %s: no ACK for our 200 OK within %gs", self.req.call_id, TIMER_B)
        self.ua.awaiting_ack.pop(self.dialog.key, None)
        await self.ua.handler.ack_timeout(self.dialog)


class ClientTransaction:
    """A request we sent and the responses to it (matched by the top Via's branch)."""

    def __init__(self, req: Request, conn: Connection) -> None:
        self.req = req
        self.conn = conn
        self.key = (Via.parse(req.get("Via")).branch, req.method)
        """Responses match on the top Via's branch and CSeq's method (§17.1.3)."""
        self.responses: asyncio.Queue[Response] = asyncio.Queue(maxsize=32)
        self.heard = asyncio.Event()
        """A response that ends retransmission came (INVITE: any; others: a final one)."""

    async def retransmit(self) -> None:
        """Over UDP, the request again until :attr:`heard` (§17.1.1.2 Timer A: T1 doubling;
        §17.1.2.2 Timer E: capped at T2), for at most Timer B/F (64·T1)."""
        interval, waited = T1, 0.0
        while waited < TIMER_B:
            if await wait_event(self.heard, interval):
                return
            waited += interval
            interval = interval * 2 if self.req.method == "INVITE" else min(interval * 2, T2)
            if not self.conn.open:
                return
            try:
                await self.conn.send(self.req)
            except (ConnectionError, OSError, TimeoutError):
                return

    async def next(self, timeout: float = TIMER_B) -> Response:
        """The next response; a synthetic ``408`` when none comes in time (§8.1.3.1)."""
        try:
            async with asyncio.timeout(timeout):
                return await self.responses.get()
        except TimeoutError:
            return Response(status=408, reason="Request Timeout (no answer)")

    async def final(self, timeout: float = TIMER_B) -> Response:
        while True:
            resp = await self.next(timeout)
            if resp.status >= 200:
                return resp


async def ask(
    ua: TransactionUser, req: Request, conn: Connection, timeout: float = 8.0
) -> Response:
    """Send ``req`` (not an INVITE) on ``conn`` and wait for its final response (``408`` when
    none comes in ``timeout``); sending may raise (the connection's errors)."""
    tx = await ua.send(req, conn)
    try:
        return await tx.final(timeout)
    finally:
        ua.done(tx)


async def answered_again(ua: TransactionUser, req: Request, conn: Connection) -> bool:
    """A request we answered (or are answering) already: our response again (the 2xx of an
    INVITE's dialog is sent again so, §13.3.1.4; its refusal the same, §17.2.1). Over TLS an
    INVITE only: nothing is resent hop by hop there, but Meta resends an INVITE on a new
    connection; an ACK never (it has no response)."""
    if req.method == "ACK" or (conn.reliable and req.method != "INVITE"):
        return False
    branch = Via.parse(req.values("Via")[0]).branch
    pending = ua.pending.get((req.call_id, branch)) if req.method == "INVITE" else None
    again = ua.completed.get(req.call_id, branch, req.cseq) or (pending and pending.last)
    if again:
        await ua.answer(conn, again)
    return bool(again) or pending is not None


async def take_reinvite(
    ua: TransactionUser,
    req: Request,
    conn: Connection,
    dialog: Dialog,
    answer: Callable[[InviteServer], Coroutine[Any, Any, None]],
) -> None:
    """A re-INVITE in ``dialog`` (§14.2): refused when unfit, out of order or overlapping
    another, else handed to ``answer`` as a server transaction in that dialog (its 2xx sent
    again until the ACK, §13.3.1.4)."""
    refusal = unfit_invite(req, ua.supported)
    seq = req.cseq[0]
    if refusal is None and dialog.remote_seq is not None and seq <= dialog.remote_seq:
        # §12.2.2: a request whose CSeq is below the dialog's last one is out of order.
        refusal = reply(req, 500, "Server Internal Error (CSeq out of order)")
    if refusal is None and (
        dialog.key in ua.awaiting_ack or any(tx.dialog is dialog for tx in ua.pending.values())
    ):
        # §14.2: an INVITE of the dialog still awaits our final response (or our 2xx its ACK,
        # which the dialog's key alone finds).
        refusal = reply(req, 500, "Server Internal Error", extra=[("Retry-After", "1")])
    if refusal is not None:
        wait = refusal.get("Retry-After")  # a retry will do: not the PBX's fault
        why = refusal.get("Warning") or refusal.reason
        # Else the PBX's fault: said once per dialog and status (one retried fills the log).
        again = not wait and ua.refused_reinvites.seen(f"{refusal.status} {dialog.key}") > 1
        log.log(
            logging.INFO if wait else logging.DEBUG if again else logging.WARNING,
            "SIP re-INVITE %s refused: %d %s%s",
            req.call_id,
            refusal.status,
            why,
            "" if wait else " (said once for this dialog)",
        )
        await ua.answer(conn, refusal)
        return
    dialog.remote_seq = seq
    tx = InviteServer(ua, req, conn, dialog=dialog)
    ua.pending[tx.key] = tx
    await tx.respond(100, "Trying")
    ua.spawn(answer(tx), f"reinvite:{req.call_id[:24]}")


async def serve(handler: CallHandler, tx: InviteServer) -> None:
    """The handler's answer to a new INVITE; a fault of ours ends it with ``500``
    (§21.5.1), never with silence (it would stay pending for good)."""
    try:
        await handler.invite(tx)
    except Exception:
        log.exception("SIP INVITE %s: failed", tx.req.call_id)
        await tx.respond(500, "Server Internal Error")


async def cancel_pending(ua: TransactionUser, req: Request, conn: Connection) -> None:
    """A CANCEL (§9.2): ``200`` to it and ``487`` to the INVITE it names, still unanswered
    (the handler told); ``200`` alone when that INVITE is answered already (its transaction
    kept: RFC 6026 §8.7), else ``481``."""
    branch = Via.parse(req.values("Via")[0]).branch
    tx = ua.pending.get((req.call_id, branch))
    if tx is None:
        done = ua.completed.get(req.call_id, branch, (req.cseq[0], "INVITE"))
        if done is None:
            await ua.answer(conn, reply(req, 481, "Call/Transaction Does Not Exist"))
        else:  # the INVITE's tag: the CANCEL's response is in its dialog (§9.2)
            await ua.answer(conn, reply(req, 200, "OK", to_tag=Address.parse(done.get("To")).tag))
        return
    await ua.answer(conn, reply(req, 200, "OK", to_tag=tx.local_tag))
    if await tx.respond(487, "Request Terminated"):
        ua.spawn(ua.handler.cancelled(tx), f"cancel:{req.call_id[:24]}")


def early_invite(ua: TransactionUser, req: Request, to_tag: str) -> InviteServer | None:
    """The INVITE still unanswered whose early dialog ``req`` is in (§12.1.1: our tag given
    in a provisional response)."""
    caller = Address.parse(req.get("From")).tag
    for tx in ua.pending.values():
        if tx.dialog.key == (req.call_id, to_tag) and tx.dialog.remote_tag == caller:
            return tx
    return None


async def end_early(ua: TransactionUser, conn: Connection, req: Request, tx: InviteServer) -> None:
    """§15.1.2: the caller's BYE in the early dialog of ``tx`` ends it as a CANCEL would
    (``200`` to the BYE, ``487`` to the INVITE); it got 481 and the INVITE rang on."""
    await ua.answer(conn, reply(req, 200, "OK"))
    if await tx.respond(487, "Request Terminated"):
        ua.spawn(ua.handler.cancelled(tx), f"cancel:{req.call_id[:24]}")


async def end_dialog(ua: TransactionUser, conn: Connection, req: Request, dialog: Dialog) -> None:
    """The peer's BYE in ``dialog``: ``200`` to it, the dialog gone, the handler told; our
    2xx's repeats stop if no ACK came yet (the BYE proves the 2xx came, §13.3.1.4)."""
    ua.dialogs.pop(dialog.key, None)
    if unacked := ua.awaiting_ack.pop(dialog.key, None):
        unacked.acked.set()
    await ua.answer(conn, reply(req, 200, "OK"))
    ua.spawn(ua.handler.bye(dialog, req), f"bye:{req.call_id[:24]}")


def refusal_acked(refused: dict[tuple[str, str], InviteServer], req: Request) -> bool:
    """Whether ``req``, an ACK, is the one of a refusal over UDP we send again until it comes
    (§17.2.1; it ends that transaction). Matched by Call-ID, our tag in its To and CSeq (it
    should carry the INVITE's branch too, §17.1.1.3, but SIPp's scenarios, as RFC 2543
    clients, give it one of its own)."""
    key = (req.call_id, Address.parse(req.get("To")).tag)
    tx = refused.get(key)
    if tx is None or tx.req.cseq[0] != req.cseq[0]:
        return False
    del refused[key]
    tx.acked.set()
    return True
