"""The SIP user agent core: what arrives on the transport goes to a transaction, a dialog or
a refusal; what we send goes out on the right connection.

Narrow by design (Meta's SIP interface: INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY; no
re-INVITE, UPDATE or REFER). Over TLS no request is retransmitted (§17.1.1.2: Timer A only
on unreliable transports), so a client transaction is a request, its responses, and a
deadline (Timer B/F, 64·T1). A UAS still retransmits its 2xx to an INVITE until the ACK
(§13.3.1.4: the ACK may be lost beyond the first hop), and gives up with a BYE after 64·T1.

Server side, by method (§8.2): a new INVITE is authenticated (``407``, §22) when a password
is set and handed to the :class:`CallHandler`; ``CANCEL`` matches the pending INVITE
(§9.2: ``200`` to it, ``487`` to the INVITE); ``ACK``, ``BYE`` and ``NOTIFY`` go to their
dialog (``481`` without one, §12.2.2); ``OPTIONS`` is answered (§11.2); a re-INVITE gets
``488`` and ``REFER`` ``403`` with a reason saying the bridge does hold and transfer in its
own media; any other method ``501`` with ``Allow`` (§8.2.1); a ``Require`` we do not support
``420`` (§8.2.2.3); a malformed message ``400`` (§8.2 / §21.4.1). Before any of it,
``received``/``rport`` go into the request's top Via so every response carries them (RFC 3261
§18.2.1, RFC 3581 §4), and a connection we accepted from outside the
:class:`~.trust.PeerPolicy` gets ``403`` to every request.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ..tasks import TaskSet
from .dialog import Dialog, new_tag, reply
from .digest import DigestServer, Verdict
from .headers import Address, Uri, Via
from .message import Message, Request, Response, SipParseError
from .transaction import CallHandler, ClientTransaction, InviteServer
from .transport import BadMessage, CertFiles, Connection, Listener, connect, salvage
from .trust import PeerPolicy, stamp_via

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY"
SUPPORTED = ""
"""No SIP extensions (no 100rel, timer, replaces): a ``Require`` of any gets ``420``."""
PENDING_INVITES = 1024
"""INVITE server transactions without a final response at once; more get ``503``."""
WARN_NO_REINVITE = (
    '399 bridge "no re-INVITE: hold, music and transfer happen in the bridge\'s media"'
)


class UserAgent:
    """Owns the listener, the outbound connections, the pending INVITEs and the dialogs."""

    def __init__(
        self,
        *,
        hostname: str,
        number: str,
        certs: CertFiles,
        client_ctx: ssl.SSLContext,
        digest: DigestServer | None,
        handler: CallHandler,
        policy: PeerPolicy | None = None,
    ) -> None:
        self.hostname = hostname
        self.number = number
        self.client_ctx = client_ctx
        self.digest = digest
        self.handler = handler
        self.policy = policy or PeerPolicy()
        """Who may send requests on connections we accepted (:mod:`.trust`)."""
        self.transport = Listener(certs, self._on_message, self._on_bad)
        self.port = 5061
        self.pending: dict[tuple[str, str], InviteServer] = {}
        self.dialogs: dict[tuple[str, str], Dialog] = {}
        self.awaiting_ack: dict[tuple[str, str], InviteServer] = {}
        """Answered INVITEs (by their dialog) whose ACK has not come yet."""
        self.clients: dict[tuple[str, str], ClientTransaction] = {}
        self._outbound: dict[tuple[str, int], Connection] = {}
        self._connecting = asyncio.Lock()
        self.tasks = TaskSet("sip-ua")
        self.counts: dict[str, int] = {}
        """Requests and refusals by kind (``bad``, ``auth``, ``options``, ``refused`` …)."""
        self.on_count: Callable[[str], None] | None = None
        """Told of each count (the engine's statistics)."""

    @property
    def contact(self) -> str:
        return f"<sip:+{self.number}@{self.hostname}:{self.port};transport=tls>"

    @property
    def via_host(self) -> str:
        return f"{self.hostname}:{self.port}"

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
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

    async def close(self) -> None:
        await self.tasks.close(timeout=2.0)
        await self.transport.close()
        for conn in list(self._outbound.values()):
            await conn.close()
        self._outbound.clear()

    # -- sending
    async def connection_to(self, uri: Uri) -> Connection:
        """An open connection to ``uri``'s host and port (reused, else made and served)."""
        dest = uri.destination()
        async with self._connecting:
            conn = self._outbound.get(dest)
            if conn is not None and conn.open:
                return conn
            conn = await connect(dest[0], dest[1], self.client_ctx)
            self._outbound[dest] = conn
            self.transport.serve(conn)
            return conn

    async def send(self, req: Request, conn: Connection) -> ClientTransaction:
        tx = ClientTransaction(req, conn)
        self.clients[tx.key] = tx
        try:
            await conn.send(req)
        except BaseException:
            self.clients.pop(tx.key, None)
            raise
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
    ) -> Response:
        """Send an in-dialog request and wait for its final response (``408`` when none)."""
        req = dialog.request(method, self.via_host, extra=list(extra))
        try:
            tx = await self.send(req, await self.flow_for(dialog))
        except (ConnectionError, OSError, TimeoutError, ssl.SSLError) as exc:
            log.warning("SIP call %s: cannot send %s: %s", dialog.call_id, method, exc)
            return Response(status=503, reason=f"Service Unavailable ({exc})")
        try:
            return await tx.final(timeout)
        finally:
            self.done(tx)

    # -- receiving
    async def _on_bad(self, bad: BadMessage, conn: Connection) -> None:
        self.count("bad")
        if bad.head[:4] == b"SIP/":
            return  # a malformed response is dropped (§18.1.2)
        found = salvage(bad.head)
        resp = Response(status=400, reason=f"Bad Request ({bad.why})")
        for key, name in (("via", "Via"), ("from", "From"), ("to", "To"), ("call-id", "Call-ID")):
            for value in found.get(key, []):
                resp.add(name, value)
        if found.get("cseq"):
            resp.add("CSeq", found["cseq"][0])
        stamp_via(resp, conn.peer)
        try:
            await conn.send(resp)
        except (ConnectionError, OSError, TimeoutError, ssl.SSLError):
            pass

    async def _on_message(self, msg: Message, conn: Connection) -> None:
        try:
            if isinstance(msg, Response):
                self._on_response(msg)
            elif isinstance(msg, Request):
                await self._on_request(msg, conn)
        except SipParseError as exc:  # a header we route on is malformed
            self.count("bad")
            if isinstance(msg, Request) and msg.method != "ACK":
                await self._answer(conn, reply(msg, 400, f"Bad Request ({exc})"))

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
        try:
            tx.responses.put_nowait(resp)
        except asyncio.QueueFull:
            pass

    async def _answer(self, conn: Connection, resp: Response) -> None:
        try:
            await conn.send(resp)
        except (ConnectionError, OSError, TimeoutError, ssl.SSLError) as exc:
            log.info("SIP: cannot answer %d on %r: %s", resp.status, conn, exc)

    async def _on_request(self, req: Request, conn: Connection) -> None:
        method = req.method
        to_tag = Address.parse(req.get("To")).tag
        Address.parse(req.get("From"))  # malformed → 400
        Via.parse(req.values("Via")[0])
        stamp_via(req, conn.peer)  # every response copies the top Via (§18.2.1, RFC 3581)
        if conn.inbound and not self._trusted(conn):
            self.count("untrusted")
            if method != "ACK":
                await self._answer(conn, reply(req, 403, "Forbidden (untrusted source)"))
            return
        self.count(method.lower() if method in ALLOW else "unknown")
        dialog = self.dialogs.get((req.call_id, to_tag)) if to_tag else None
        if method == "ACK":
            await self._on_ack(req, dialog)
        elif method == "CANCEL":
            await self._on_cancel(req, conn)
        elif method == "OPTIONS":
            extra = [("Allow", ALLOW), ("Accept", "application/sdp")]
            await self._answer(conn, reply(req, 200, "OK", to_tag=to_tag or new_tag(), extra=extra))
        elif method == "INVITE" and not to_tag:
            await self._on_invite(req, conn)
        elif method not in ALLOW.split(", ") and method != "REFER":
            self.count("refused")  # UPDATE, INFO, MESSAGE …: not implemented (§8.2.1)
            await self._answer(conn, reply(req, 501, "Not Implemented", extra=[("Allow", ALLOW)]))
        elif dialog is None:
            await self._answer(conn, reply(req, 481, "Call/Transaction Does Not Exist"))
        elif method == "INVITE":
            warn = [("Warning", WARN_NO_REINVITE)]
            await self._answer(conn, reply(req, 488, "Not Acceptable Here", extra=warn))
        elif method == "REFER":
            warn = [("Warning", WARN_NO_REINVITE)]
            await self._answer(
                conn, reply(req, 403, "Forbidden (transfer is done by the bridge)", extra=warn)
            )
        elif method == "BYE":
            self.dialogs.pop(dialog.key, None)
            await self._answer(conn, reply(req, 200, "OK"))
            self._spawn(self.handler.bye(dialog, req), f"bye:{req.call_id[:24]}")
        else:  # NOTIFY in a dialog
            await self._answer(conn, reply(req, 200, "OK"))

    def _trusted(self, conn: Connection) -> bool:
        """Whether ``conn``'s peer may send requests: judged once a connection, its refusal
        logged once (:class:`~.trust.PeerPolicy`), before any digest work."""
        if conn.refusal is None:
            conn.refusal = self.policy.refusal(conn.peer[0], conn.peercert)
            if conn.refusal:
                log.warning("SIP from %s:%d: refused (403): %s", *conn.peer, conn.refusal)
        return not conn.refusal

    async def _on_ack(self, req: Request, dialog: Dialog | None) -> None:
        if dialog is None:
            return  # the ACK of a non-2xx final response: ends its transaction (§17.2.1)
        tx = self.awaiting_ack.pop(dialog.key, None)
        if tx is None:
            return  # a repeated ACK
        tx.acked.set()
        await self.handler.acked(dialog)

    async def _on_cancel(self, req: Request, conn: Connection) -> None:
        branch = Via.parse(req.values("Via")[0]).branch
        tx = self.pending.get((req.call_id, branch))
        if tx is None:
            await self._answer(conn, reply(req, 481, "Call/Transaction Does Not Exist"))
            return
        await self._answer(conn, reply(req, 200, "OK", to_tag=tx.local_tag))
        if await tx.respond(487, "Request Terminated"):
            self._spawn(self.handler.cancelled(tx), f"cancel:{req.call_id[:24]}")

    async def _on_invite(self, req: Request, conn: Connection) -> None:
        branch = Via.parse(req.values("Via")[0]).branch
        if (req.call_id, branch) in self.pending:
            return  # a retransmission (another hop may be unreliable): already in hand
        required = [r for r in req.values("Require") if r.lower() not in SUPPORTED.split(",")]
        if required:
            extra = [("Unsupported", ", ".join(required))]
            await self._answer(conn, reply(req, 420, "Bad Extension", extra=extra))
            return
        if not req.body or "sdp" not in req.get("Content-Type").lower():
            warn = [("Warning", '399 bridge "an INVITE needs an SDP offer"')]
            await self._answer(conn, reply(req, 488, "Not Acceptable Here", extra=warn))
            return
        if self.digest is not None and not await self._authenticated(req, conn):
            return
        if len(self.pending) >= PENDING_INVITES or self.tasks.closed:
            extra = [("Retry-After", "5")]
            await self._answer(conn, reply(req, 503, "Service Unavailable", extra=extra))
            return
        tx = InviteServer(self, req, conn)
        self.pending[tx.key] = tx
        await tx.respond(100, "Trying")
        # The handler's work (the media leg's answer) runs beside this connection's reading:
        # Meta carries many calls, and their CANCELs, on one connection.
        self._spawn(self.handler.invite(tx), f"invite:{req.call_id[:24]}")

    async def _authenticated(self, req: Request, conn: Connection) -> bool:
        assert self.digest is not None
        verdict = self.digest.verify(req.method, req.all("Proxy-Authorization"))
        if verdict is Verdict.OK:
            return True
        self.count("auth")
        if verdict is Verdict.WRONG:
            log.warning(
                "SIP INVITE %s from %s: wrong digest credentials", req.call_id, conn.peer[0]
            )
            await self._answer(conn, reply(req, 403, "Forbidden (wrong credentials)"))
            return False
        # One Proxy-Authenticate per algorithm we offer, the preferred first (RFC 8760 §2.4).
        challenges = self.digest.challenges(stale=verdict is Verdict.STALE)
        extra = [("Proxy-Authenticate", challenge) for challenge in challenges]
        await self._answer(
            conn, reply(req, 407, "Proxy Authentication Required", to_tag=new_tag(), extra=extra)
        )
        return False
