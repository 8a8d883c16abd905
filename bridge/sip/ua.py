"""The SIP user agent core: what arrives on the transport goes to a transaction, a dialog or
a refusal; what we send goes out on the right connection.

Narrow by design (Meta's SIP interface: INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY; no
re-INVITE, UPDATE or REFER). Over TLS no request is retransmitted (§17.1.1.2: Timer A only
on unreliable transports), so a client transaction is a request, its responses, and a
deadline (Timer B/F, 64·T1). A UAS still retransmits its 2xx to an INVITE until the ACK
(§13.3.1.4: the ACK may be lost beyond the first hop), or the peer's BYE, which proves the
2xx came, and gives up with a BYE after 64·T1.

Server side, by method (§8.2): a new INVITE is authenticated (``407``, §22) when a password
is set and handed to the :class:`CallHandler`; ``CANCEL`` matches the pending INVITE
(§9.2: ``200`` to it, ``487`` to the INVITE; one already answered: ``200`` alone), and so
does the caller's ``BYE`` in its early dialog (§15.1.2); ``ACK``, ``BYE`` and ``NOTIFY`` go
to their dialog (``481`` without one, §12.2.2); ``OPTIONS`` is answered (§11.2); a re-INVITE goes to
:attr:`UserAgent.reinvites` when set (a trunk's: hold from the PBX, RFC 3264 §8.4) as an
:class:`InviteServer` in its dialog, else gets ``488``, and ``REFER`` ``403``, with a reason
saying the bridge does hold and transfer in its own media (Meta's road); any other method
``501`` with ``Allow`` (§8.2.1); a ``Require`` naming an extension not in
:attr:`UserAgent.supported` (Meta's road: none; a trunk's: ``replaces``) ``420``
(§8.2.2.3); a malformed message ``400`` (§8.2 / §21.4.1), and so is, where ``replaces`` is
supported, a ``Replaces`` in a request other than INVITE or twice in one (RFC 3891 §3).
Before any of it, ``received``/``rport`` go into the request's top Via so every response
carries them (RFC 3261 §18.2.1, RFC 3581 §4), and a connection we accepted from outside the
:class:`~.trust.PeerPolicy` gets ``403`` to every request.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from ..logs import Repeats
from ..tasks import TaskSet
from .admission import InviteAdmission, Lookup
from .challenged import exchange
from .completed import Completed
from .datagram import DatagramEndpoint
from .dialog import Dialog, reply
from .digest import DigestServer
from .extensions import capabilities, misplaced_replaces, not_implemented
from .headers import Address, Uri, Via
from .listener import Listener
from .malformed import Malformed
from .message import Message, Request, Response, SipParseError
from .transaction import (
    TIMER_B,
    CallHandler,
    ClientTransaction,
    InviteServer,
    answered_again,
    ask,
    cancel_pending,
    early_invite,
    end_dialog,
    end_early,
    refusal_acked,
    serve,
    take_reinvite,
)
from .transport import BadMessage, CertFiles, Connection, bad_request
from .trust import PeerPolicy, stamp_via

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY"
METHODS = ALLOW.split(", ")
IN_DIALOG = ("INFO", "REFER")
"""Methods a trunk's user agent takes in a dialog (:attr:`UserAgent.in_dialog_requests`)."""
REQUESTS = (*(method.lower() for method in (*METHODS, *IN_DIALOG)), "unknown")
"""The counts of requests served, by method (``unknown``: one not in :data:`ALLOW` nor
:data:`IN_DIALOG`); every other count is a refusal (``trunks/refusals.py`` reports both)."""
InDialog = Callable[[Dialog, Request], Awaitable[tuple[int, str, Sequence[tuple[str, str]]]]]
"""Answers an in-dialog INFO or REFER: the status, reason phrase and headers to send."""
ReInvite = Callable[[InviteServer], Coroutine[Any, Any, None]]
"""Answers a re-INVITE through its transaction (``tx.dialog``: the dialog it came in)."""
WARN_NO_REINVITE = (
    '399 bridge "no re-INVITE: hold, music and transfer happen in the bridge\'s media"'
)


def allow_of(in_dialog: bool) -> str:
    """A user agent's ``Allow``: every method it takes (§20.5), ``in_dialog``: INFO and REFER
    in a call too (a trunk's, :attr:`UserAgent.in_dialog_requests`)."""
    return ", ".join((*METHODS, *IN_DIALOG) if in_dialog else METHODS)


class UserAgent:
    """Owns the listener, the outbound connections, the pending INVITEs and the dialogs."""

    def __init__(
        self,
        *,
        hostname: str,
        number: str,
        certs: CertFiles | None,
        client_ctx: ssl.SSLContext | None,
        digest: DigestServer | None,
        handler: CallHandler,
        policy: PeerPolicy | None = None,
        udp: bool = False,
    ) -> None:
        """``certs`` ``None``: a plain TCP listener (a trunk's), with ``udp`` a UDP socket on
        the same port too (RFC 3261 §18: UDP and TCP both)."""
        self.hostname = hostname
        self.number = number
        self.client_ctx = client_ctx
        self.digest = digest
        self.handler = handler
        self.policy = policy or PeerPolicy()
        """Who may send requests on connections we accepted (:mod:`.trust`)."""
        self.transport = Listener(certs, self._on_message, self._on_bad, self.policy)
        self.datagrams = DatagramEndpoint(self._on_message, self._on_bad) if udp else None
        self.completed = Completed(TIMER_B)
        """Our final responses for 64·T1: a retransmitted request is answered with them again
        (over TLS an INVITE's only)."""
        self.port = 5061
        self.pending: dict[tuple[str, str], InviteServer] = {}
        self.dialogs: dict[tuple[str, str], Dialog] = {}
        self.awaiting_ack: dict[tuple[str, str], InviteServer] = {}
        """Answered INVITEs (by their dialog) whose ACK has not come yet."""
        self.refused: dict[tuple[str, str], InviteServer] = {}
        """Refused over UDP, sent again until the ACK (:func:`refusal_acked`)."""
        self.clients: dict[tuple[str, str], ClientTransaction] = {}
        self.tasks = TaskSet("sip-ua")
        self.counts: dict[str, int] = {}
        """Requests by method (:data:`REQUESTS`) and refusals by reason (``bad``, ``auth``,
        ``not_implemented`` …)."""
        self.on_count: Callable[[str], None] | None = None
        """Told of each count (the engine's statistics)."""
        self.in_dialog_requests: InDialog | None = None
        self.reinvites: ReInvite | None = None
        """A trunk's user agent takes INFO and REFER, and re-INVITEs (hold from the PBX), in a
        dialog; without them they are refused as Meta's road wants (501, 403, 488)."""
        self.lookup: Lookup | None = None  # a listener numbers share (front.py): 404 if none
        self.supported: tuple[str, ...] = ()  # option tags a Require may name (else 420)
        self.misplaced = Repeats()  # sources of a Replaces RFC 3891 §3 refuses (said once)
        self.malformed = Malformed()  # sources of malformed messages (said once)
        self.unserved = Repeats()  # sources of methods we do not implement (said once)
        self.strangers = Repeats()  # sources the policy refuses (said once while it lasts)
        self.refused_reinvites = Repeats()  # dialogs and statuses of re-INVITEs refused
        self.admission = InviteAdmission(self)
        """Whether a new INVITE is taken (:mod:`.admission`)."""

    contact = property(lambda self: self.contact_for(self.number, self.hostname))
    allow = property(lambda self: allow_of(self.in_dialog_requests is not None))

    def contact_for(self, number: str, hostname: str) -> str:
        hop = "tls" if self.transport.certs is not None else "udp" if self.datagrams else "tcp"
        user = f"+{number}@" if number else ""
        return f"<sip:{user}{hostname}:{self.port};transport={hop}>"

    @property
    def closing(self) -> bool:
        return self.tasks.closed

    @property
    def via_host(self) -> str:
        return f"{self.hostname}:{self.port}"

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` as the user agent's task; dropped once it is closing."""
        if self.tasks.closed:  # closing: what arrives now is not served
            work.close()
            return
        self.tasks.spawn(work, name)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        if self.on_count is not None:
            self.on_count(what)

    async def start(self, host: str, port: int) -> None:
        await self.transport.start(host, port)
        self.port = port or self.transport.port
        if self.datagrams is not None:
            await self.datagrams.start(host, self.port)

    async def close(self) -> None:
        await self.tasks.close(timeout=2.0)
        await self.transport.close()
        if self.datagrams is not None:
            await self.datagrams.close()

    # -- sending
    async def connection_to(self, uri: Uri) -> Connection:
        """An open connection to ``uri``'s host and port (reused, else made and served); by
        its ``transport`` parameter a UDP flow, a TCP or a TLS connection (§18.1.1); a
        ``sips:`` URI over TLS whatever its parameter says (§26.2.2, RFC 5630 §3.1.3)."""
        hop = uri.params.get("transport", "tls" if self.datagrams is None else "udp").lower()
        hop = "tls" if uri.scheme == "sips" else hop
        dest = uri.destination(5061 if hop == "tls" or uri.scheme == "sips" else 5060)
        if hop == "udp" and self.datagrams is not None:
            return self.datagrams.flow(dest)
        if hop == "tls" and self.client_ctx is None:  # never TLS quietly downgraded to TCP
            raise ConnectionError(f"no TLS client context for {uri}")
        return await self.transport.dial(dest, self.client_ctx if hop == "tls" else None)

    async def send(self, req: Request, conn: Connection) -> ClientTransaction:
        tx = ClientTransaction(req, conn)
        self.clients[tx.key] = tx
        try:
            await conn.send(req)
        except BaseException:
            self.clients.pop(tx.key, None)
            raise
        if not conn.reliable:
            self.spawn(tx.retransmit(), f"timer-a:{req.call_id[:24]}")
        return tx

    def done(self, tx: ClientTransaction) -> None:
        self.clients.pop(tx.key, None)

    async def flow_for(self, dialog: Dialog) -> Connection:
        """The dialog's own connection while it is open (RFC 5626 flows), else one to the
        next hop of its route set (§12.2.1.1)."""
        if dialog.flow is not None and dialog.flow.open:
            return dialog.flow
        dialog.flow = await self.connection_to(dialog.next_hop())
        return dialog.flow

    async def in_dialog(
        self,
        dialog: Dialog,
        method: str,
        *,
        extra: Sequence[tuple[str, str]] = (),
        timeout: float = 8.0,
        body: bytes = b"",
        content_type: str = "",
        credentials: tuple[str, str] | None = None,
    ) -> Response:
        """Send an in-dialog request and wait for its final response (``408`` when none); a
        challenge is answered once with ``credentials`` (:func:`.challenged.exchange`), and
        one we do not get past is said at WARNING."""

        def build(auth: tuple[str, str] | None) -> Request:
            more = [*extra, auth] if auth else extra
            return dialog.request(
                method, self.via_host, extra=more, body=body, content_type=content_type
            )

        try:
            flow = await self.flow_for(dialog)
            resp, refused = await exchange(
                lambda req: ask(self, req, flow, timeout), build, credentials=credentials
            )
        except (ConnectionError, OSError, TimeoutError, ssl.SSLError) as exc:
            log.warning("SIP call %s: cannot send %s: %s", dialog.call_id, method, exc)
            return Response(status=503, reason=f"Service Unavailable ({exc})")
        if refused:
            log.warning("SIP call %s: our %s was challenged: %s", dialog.call_id, method, refused)
        return resp

    # -- receiving
    async def _on_bad(self, bad: BadMessage, conn: Connection) -> None:
        self.count("bad")
        self.malformed.seen(conn.peer, "too large" if bad.status == 513 else "malformed", bad.why)
        if bad.head[:4] in (b"SIP/", b"ACK "):
            return  # a malformed response is dropped (§18.1.2); an ACK is never answered
        resp = bad_request(bad)
        if resp is not None:
            stamp_via(resp, conn.peer)
            await self.answer(conn, resp)

    async def _on_message(self, msg: Message, conn: Connection) -> None:
        try:
            if isinstance(msg, Response):
                self._on_response(msg)
            elif isinstance(msg, Request):
                await self._on_request(msg, conn)
        except SipParseError as exc:  # a header we route on is malformed
            self.count("bad")
            self.malformed.seen(conn.peer, "malformed", str(exc))
            if isinstance(msg, Request) and msg.method != "ACK":
                await self.answer(conn, reply(msg, 400, f"Bad Request ({exc})"))

    def _on_response(self, resp: Response) -> None:
        vias = resp.values("Via")
        if not vias:
            return
        try:
            method = resp.cseq[1]
        except SipParseError:
            return
        tx = self.clients.get((Via.parse(vias[0]).branch, method))
        if tx is None:
            return  # a stray or late response (a retransmitted 2xx after our ACK)
        if method == "INVITE" or resp.status >= 200:
            tx.heard.set()  # stops Timer A/E (§17.1.1.2, §17.1.2.2)
        try:
            tx.responses.put_nowait(resp)
        except asyncio.QueueFull:
            pass

    def remember(self, resp: Response) -> None:
        """Keep a final response for a retransmission of its request (bounded)."""
        self.completed.remember(resp)

    async def answer(self, conn: Connection, resp: Response) -> None:
        """Send ``resp`` (a final one kept for its request's retransmissions, :meth:`remember`)."""
        if resp.status >= 200:
            self.remember(resp)
        try:
            await conn.send(resp)
        except (ConnectionError, OSError, TimeoutError, ssl.SSLError) as exc:
            log.info("SIP: cannot answer %d on %r: %s", resp.status, conn, exc)

    async def _on_request(self, req: Request, conn: Connection) -> None:
        method = req.method
        to_tag = Address.parse(req.get("To")).tag
        Address.parse(req.get("From"))  # malformed → 400
        Via.parse(req.values("Via")[0])
        self.malformed.well_formed(conn.peer[0])
        stamp_via(req, conn.peer)  # every response copies the top Via (§18.2.1, RFC 3581)
        if await answered_again(self, req, conn):
            return
        if conn.inbound and not self.policy.admits(conn, self.strangers):
            self.count("untrusted")
            if method != "ACK":
                await self.answer(conn, reply(req, 403, "Forbidden (untrusted source)"))
            return
        self.count(method.lower() if method in (*METHODS, *IN_DIALOG) else "unknown")
        if misplaced := misplaced_replaces(req, self.supported, self.misplaced, conn.peer[0]):
            self.count("bad")
            await self.answer(conn, misplaced)
            return
        dialog = self.dialogs.get((req.call_id, to_tag)) if to_tag else None
        if method == "ACK":
            await self._on_ack(req, dialog)
        elif method == "CANCEL":
            await cancel_pending(self, req, conn)
        elif method == "OPTIONS":
            await self.answer(conn, capabilities(req, self.allow, self.supported))
        elif method == "INVITE" and not to_tag:
            await self._on_invite(req, conn)
        elif method in ("INFO", "REFER") and dialog and self.in_dialog_requests:
            status, reason, more = await self.in_dialog_requests(dialog, req)
            await self.answer(conn, reply(req, status, reason, extra=more))
        elif method not in self.allow.split(", ") and method != "REFER":
            self.count("not_implemented")  # UPDATE, MESSAGE …: 501 (§8.2.1)
            await self.answer(conn, not_implemented(req, self.allow, self.unserved, conn.peer[0]))
        elif dialog is None and method == "BYE" and (early := early_invite(self, req, to_tag)):
            await end_early(self, conn, req, early)
        elif dialog is None:
            await self.answer(conn, reply(req, 481, "Call/Transaction Does Not Exist"))
        elif method == "INVITE" and self.reinvites is not None:
            await take_reinvite(self, req, conn, dialog, self.reinvites)
        elif method == "INVITE":
            warn = [("Warning", WARN_NO_REINVITE)]
            await self.answer(conn, reply(req, 488, "Not Acceptable Here", extra=warn))
        elif method == "REFER":
            warn = [("Warning", WARN_NO_REINVITE)]
            await self.answer(
                conn, reply(req, 403, "Forbidden (transfer is done by the bridge)", extra=warn)
            )
        elif method == "BYE":
            await end_dialog(self, conn, req, dialog)
        else:  # NOTIFY in a dialog
            await self.answer(conn, reply(req, 200, "OK"))

    async def _on_ack(self, req: Request, dialog: Dialog | None) -> None:
        if refusal_acked(self.refused, req):
            return
        if dialog is None:
            return
        tx = self.awaiting_ack.pop(dialog.key, None)
        if tx is None:
            return  # a repeated ACK
        tx.acked.set()
        await self.handler.acked(dialog)

    async def _on_invite(self, req: Request, conn: Connection) -> None:
        branch = Via.parse(req.values("Via")[0]).branch
        if (req.call_id, branch) in self.pending:
            return  # a retransmission (another hop may be unreliable): already in hand
        judged = self.admission.judge(req, conn.peer[0])
        if isinstance(judged, Response):
            await self.answer(conn, judged)
            return
        tx = InviteServer(self, req, conn, judged)
        self.pending[tx.key] = tx
        await tx.respond(100, "Trying")
        # The handler's work (the media leg's answer) runs beside this connection's reading:
        # Meta carries many calls, and their CANCELs, on one connection.
        self.spawn(serve(self.handler, tx), f"invite:{req.call_id[:24]}")
