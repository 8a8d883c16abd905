"""The PBX calls a WhatsApp user: an INVITE from a trunk to ``sip:+<E.164>@<bridge>`` places a
business-initiated WhatsApp call (as ``POST /call/make`` does, with its permission rules; what
the PBX hears is docs/sip.md, *The PBX calls WhatsApp users*).

**Who may.** The request's source against each trunk's ``inbound.allowFrom``, and a digest
(``Proxy-Authorization``, MD5 or SHA-256, RFC 8760) when the trunk has inbound credentials.
Nothing matches: ``403`` before any digest work or media port. The call goes out on the number
``X-WA-Number`` names, else the trunk's tenant's only number. Answered, the PBX's leg joins the
call as its agent (:class:`SipParticipant` in answer mode); refusals carry a ``Reason``
(RFC 3326).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Coroutine
from typing import Any, Protocol

from ..calls import CallManager
from ..calls.model import Call, EndReason
from ..errors import AtCapacity, BadOffer, BadRequest, BridgeError, Forbidden, RateLimited
from ..media import Role
from ..numbers.catalog import Catalog
from ..numbers.trunks import Trunk
from ..sip import DigestServer, InviteServer
from ..sip.admission import refusal_of
from ..sip.digest import parse_params
from ..sip.headers import warning
from . import sdp
from .participant import SipParticipant, TrunkLine
from .refusals import TrunkRefusals

E164 = re.compile(r"^\+?([1-9][0-9]{6,14})$")
ENDED: dict[EndReason | None, tuple[int, str]] = {
    EndReason.REJECTED: (603, "Decline"),
    EndReason.BUSY: (486, "Busy Here"),
    EndReason.NO_ANSWER: (480, "Temporarily Unavailable (no answer)"),
    EndReason.CANCELED: (487, "Request Terminated"),
    EndReason.NO_CALL_PERMISSION: (403, "Forbidden (no call permission)"),
    EndReason.CALL_LIMIT_REACHED: (429, "Too Many Requests (call limit)"),
    EndReason.PERMISSION_REQUEST_LIMIT: (429, "Too Many Requests (permission requests)"),
    EndReason.NUMBER_AT_CAPACITY: (503, "Service Unavailable (number at capacity)"),
    EndReason.CALLING_PAUSED: (503, "Service Unavailable (calling paused)"),
}
"""How a WhatsApp call that ended before its answer is told to the PBX (else 480)."""


class PlacesCalls(Protocol):
    """What a PBX's call uses of the trunk service (``TrunkService`` is one): the calls and
    the numbers it is placed with, the calls placed so far, the line its leg joins on, where
    its refusals are counted and said, and the service's tasks and hang-ups."""

    manager: CallManager | None
    catalog: Catalog
    placing: dict[str, PbxCall]
    line: TrunkLine
    refusals: TrunkRefusals

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None: ...

    async def hang_up(self, call: Call) -> None: ...

    def end_with(self, call: Call, reason: str) -> None: ...


class InboundDigests:
    """The digest servers that check trunks' INVITEs, one a trunk's credentials (its nonces
    live as long as it), in realm ``realm`` (owned by ``TrunkService``)."""

    def __init__(self, realm: str) -> None:
        self.realm = realm
        self._servers: dict[tuple[str, ...], DigestServer] = {}

    def server_for(self, trunk: Trunk) -> DigestServer:
        key = (
            trunk.trunk_id,
            trunk.inbound_username,
            trunk.inbound_password,
            *trunk.inbound_digest,
        )
        server = self._servers.get(key)
        if server is None:
            if len(self._servers) > 1024:
                self._servers.clear()
            server = self._servers[key] = DigestServer(
                self.realm,
                trunk.inbound_username,
                trunk.inbound_password,
                algorithms=trunk.inbound_digest,
            )
        return server


STRANGER = "Forbidden (not a trunk's source)"
"""The refusal of an INVITE from a source no trunk takes (the service counts it and says it
once a source; a wrong digest is counted and said by :func:`~bridge.sip.admission.refusal_of`)."""


def identify(
    trunks: Collection[Trunk],
    digest_for: Callable[[Trunk], DigestServer],
    invite: InviteServer,
) -> tuple[Trunk | None, tuple[int, str, list[tuple[str, str]]] | None]:
    """The trunk of ``trunks`` an INVITE comes through (its digest checked by the server
    ``digest_for`` keeps for it), or the refusal to send (status, reason, headers)."""
    source = invite.conn.peer[0]
    by_net = [t for t in trunks if t.allow_from and t.admits(source)]
    for trunk in by_net:
        if not trunk.inbound_password:
            return trunk, None
    candidates = [t for t in by_net if t.inbound_password] or [
        t for t in trunks if not t.allow_from and t.inbound_password
    ]
    if not candidates:
        why = f"{source} is in no trunk's inbound.allowFrom and no trunk takes a digest"
        return None, (403, STRANGER, [reason_header("untrusted", why, 403)])
    offered = _digest_username(invite)
    trunk = next((t for t in candidates if t.inbound_username == offered), candidates[0])
    refusal = refusal_of(digest_for(trunk), invite.req, source, invite.ua.count)
    if refusal is None:
        return trunk, None
    headers = [(n, v) for n, v in refusal.headers if n.lower() == "proxy-authenticate"]
    return None, (refusal.status, refusal.reason, headers)


def _digest_username(invite: InviteServer) -> str:
    for value in invite.req.all("Proxy-Authorization"):
        return parse_params(value).get("username", "")
    return ""


def refusal(exc: BridgeError) -> tuple[int, str, list[tuple[str, str]]]:
    """``POST /call/make``'s refusal as a SIP final response."""
    retry = getattr(exc, "retry_after", None)
    after = [("Retry-After", str(int(retry)))] if retry else []
    if isinstance(exc, Forbidden):
        return 403, "Forbidden", []
    if isinstance(exc, RateLimited):
        return 429, "Too Many Requests", after or [("Retry-After", "60")]
    if isinstance(exc, AtCapacity):
        return 503, "Service Unavailable", after or [("Retry-After", "5")]
    if isinstance(exc, BadRequest):
        return 484, "Address Incomplete", []
    return 503, "Service Unavailable", [("Retry-After", "5")]


def reason_header(code: str, text: str, status: int) -> tuple[str, str]:
    """RFC 3326 ``Reason``: the SIP status as its cause, the bridge's code and words as text."""
    clean = re.sub(r'["\\\r\n]', "", text)[:160]
    return "Reason", f'SIP;cause={status};text="{code}: {clean}"'


class PbxCall:
    """One INVITE from a trunk and the WhatsApp call it placed (see the module docstring)."""

    def __init__(self, service: PlacesCalls, tx: InviteServer, trunk: Trunk) -> None:
        self.service, self.tx, self.trunk = service, tx, trunk
        self.call: Call | None = None
        self.remote: sdp.Remote | None = None
        self.answered = False

    async def place(self) -> None:
        assert self.service.manager is not None
        req, refusals = self.tx.req, self.service.refusals
        source = self.tx.conn.peer[0]
        user = req.uri.partition(":")[2].partition("@")[0].split(";")[0]
        phone = E164.match(user)
        if phone is None:
            refusals.refused(source, "invalid_phone", f"{user[:40]!r} is no E.164 number (484)")
            why = reason_header("invalid_phone", user[:40], 484)
            await self.tx.respond(484, "Address Incomplete", extra=[why])
            return
        try:
            self.remote = sdp.read(req.body, self.trunk.codecs, srtp=self.trunk.srtp == "sdes")
        except BadOffer as exc:
            refusals.refused(source, "bad_offer", f"trunk {self.trunk.trunk_id}'s offer: {exc}")
            await self.tx.respond(488, "Not Acceptable Here", extra=[warning(exc)])
            return
        catalog = self.service.catalog
        try:
            number = catalog.resolve_from(
                req.get("X-WA-Number") or None, self.trunk.tenant_id or None, field="X-WA-Number"
            )
            tenant = catalog.tenants.get(number.tenant_id)
            metadata = {"sip": {"trunkID": self.trunk.trunk_id, "callID": req.call_id[:128]}}
            call = await self.service.manager.make(  # for a leg of the PBX's codec
                phone.group(1),
                metadata,
                number=number,
                tenant=tenant,
                other_leg=(self.remote.codec,),
            )
        except BridgeError as exc:
            status, reason, extra = refusal(exc)
            refusals.refused(
                source,
                "unknown_number" if exc.code == "unknown_number" else "not_placed",
                f"the call from trunk {self.trunk.trunk_id} to +{phone.group(1)}: {exc.message} "
                f"({status})",
            )
            await self.tx.respond(
                status, reason, extra=[*extra, reason_header(exc.code, exc.message, status)]
            )
            return
        refusals.placed(source)
        self.call = call
        self.service.placing[call.id] = self
        if self.tx.final:  # cancelled while the call was being placed
            await self.service.hang_up(call)

    def on_event(self, kind: str, call: Call) -> None:
        """The WhatsApp call moved (``CallEvents`` observer: work is queued, never awaited)."""
        if kind == "call.ringing" and not self.answered:
            self.service.spawn(self.tx.respond(180, "Ringing"), f"180:{call.id[:12]}")
        elif kind == "call.active" and not self.answered:
            self.answered = True
            self.service.spawn(self._answer(call), f"200:{call.id[:12]}")
        elif kind == "call.ended":
            self.service.placing.pop(call.id, None)
            if not self.answered:
                reason = call.end_reason
                status, words = ENDED.get(reason, (480, "Temporarily Unavailable"))
                header = reason_header(
                    str(reason or "ended"), call.end_detail or str(reason or ""), status
                )
                self.service.spawn(
                    self.tx.respond(status, words, extra=[header]), f"end:{call.id[:12]}"
                )

    async def _answer(self, call: Call) -> None:
        assert self.service.manager is not None and self.remote is not None
        runtime = self.service.manager.find_runtime(call.id)
        if self.tx.final:
            return
        if runtime is None or not call.live:  # ended before its answer began: a final still
            await self.tx.respond(480, "Temporarily Unavailable (the call has ended)")
            return
        target = str(self.tx.req.get("From")).partition("<")[2].partition(">")[0] or "sip:pbx"
        line = self.service.line
        leg = SipParticipant(line, runtime, self.trunk, "pbx", Role.AGENT, target, [])
        runtime.attach(leg)
        line.active.add(leg)
        leg.on_left = lambda reason: self.service.end_with(call, reason)
        await leg.accept(self.tx, self.remote)

    async def cancelled(self) -> None:
        """The PBX gave up before the answer: the WhatsApp call is hung up."""
        if self.call is not None and self.call.live:
            await self.service.hang_up(self.call)
