"""Dialogs (RFC 3261 §12) and the responses a UAS builds (§8.2.6).

A :class:`Dialog` holds what in-dialog requests need: Call-ID, both tags, both URIs, the
remote target (the peer's Contact) and the **route set** from ``Record-Route`` — in order at
the UAS (§12.1.1), reversed at the UAC (§12.1.2). :meth:`Dialog.request` builds an
in-dialog request as §12.2.1.1 says: with a loose-routing first hop, the Request-URI is the
remote target and the route set goes into ``Route``; the request is sent to the first route
(its *next hop*). A UA that sends its BYE or ACK straight to the Contact instead loses the
call at Meta's proxies (Meta's SIP notes: the call drops at ~32 s).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from .headers import Address, Uri, Via, new_branch, new_tag
from .message import Request, Response, SipParseError
from .transport import Connection

_local_seq = itertools.count(1)


def reply(
    req: Request,
    status: int,
    reason: str,
    *,
    to_tag: str = "",
    extra: Sequence[tuple[str, str]] = (),
) -> Response:
    """A response to ``req`` (§8.2.6.2): Via, From, Call-ID and CSeq copied, To with our tag
    when it has none (``to_tag``, else a new one: a UAS MUST add one to every response but a
    ``100``, where none is added; a To that cannot be read is copied as it is)."""
    resp = Response(status=status, reason=reason)
    for via in req.all("Via"):
        resp.add("Via", via)
    resp.add("From", req.get("From"))
    to = req.get("To")
    if status > 100:
        with contextlib.suppress(SipParseError):
            addr = Address.parse(to)
            if not addr.tag:
                addr.params["tag"] = to_tag or new_tag()
                to = str(addr)
    resp.add("To", to)
    resp.add("Call-ID", req.call_id)
    resp.add("CSeq", req.get("CSeq"))
    for name, value in extra:
        resp.add(name, value)
    return resp


@dataclass
class Dialog:
    """One confirmed or early dialog (see the module docstring)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    """Our address (From on our requests), without a tag."""
    remote_uri: str
    remote_target: str
    """The peer's Contact URI: the Request-URI of our in-dialog requests."""
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    flow: Connection | None = None
    """The connection the dialog was made on: in-dialog requests reuse it while it is open
    (Meta's Contact carries ``;ob``, RFC 5626 §5.3)."""
    contact: str = ""
    """Our Contact (a target for the peer's requests)."""

    @property
    def key(self) -> tuple[str, str]:
        return self.call_id, self.local_tag

    @classmethod
    def as_uas(cls, invite: Request, local_tag: str, flow: Connection, contact: str) -> Dialog:
        """The dialog an INVITE makes at its UAS (§12.1.1)."""
        contacts = invite.values("Contact")
        target = str(Address.parse(contacts[0]).uri) if contacts else invite.uri
        remote = Address.parse(invite.get("From"))
        local = Address.parse(invite.get("To"))
        remote.params.pop("tag", None)
        local.params.pop("tag", None)
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=Address.parse(invite.get("From")).tag,
            local_uri=str(local),
            remote_uri=str(remote),
            remote_target=target,
            route_set=invite.values("Record-Route"),
            local_seq=next(_local_seq) * 100,
            remote_seq=invite.cseq[0],
            flow=flow,
            contact=contact,
        )

    @classmethod
    def as_uac(cls, invite: Request, resp: Response, flow: Connection, contact: str) -> Dialog:
        """The dialog a 2xx (or 1xx with a To tag) to our INVITE makes (§12.1.2)."""
        contacts = resp.values("Contact")
        target = str(Address.parse(contacts[0]).uri) if contacts else invite.uri
        local = Address.parse(invite.get("From"))
        remote = Address.parse(resp.get("To"))
        local_tag, remote_tag = local.tag, remote.tag
        local.params.pop("tag", None)
        remote.params.pop("tag", None)
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=str(local),
            remote_uri=str(remote),
            remote_target=target,
            route_set=list(reversed(resp.values("Record-Route"))),
            local_seq=invite.cseq[0],
            flow=flow,
            contact=contact,
        )

    def next_hop(self) -> Uri:
        """Where our in-dialog requests go: the first route, else the remote target."""
        first = self.route_set[0] if self.route_set else f"<{self.remote_target}>"
        return Address.parse(first).uri

    def request(
        self,
        method: str,
        via_host: str,
        *,
        seq: int | None = None,
        body: bytes = b"",
        content_type: str = "",
        extra: Sequence[tuple[str, str]] = (),
    ) -> Request:
        """An in-dialog request (§12.2.1.1); ``seq`` reuses a CSeq number (the ACK of a
        2xx carries the INVITE's, §13.2.2.4), else the next one is taken."""
        if seq is None:
            self.local_seq += 1
            seq = self.local_seq
        routes = list(self.route_set)
        uri = self.remote_target
        if routes and not Address.parse(routes[0]).uri.loose:
            # A strict router (§12.2.1.1): it becomes the Request-URI, the target goes last.
            uri = str(Address.parse(routes[0]).uri)
            routes = [*routes[1:], f"<{self.remote_target}>"]
        req = Request(method=method, uri=uri)
        hop = self.flow.via_transport if self.flow is not None else "TLS"
        req.add("Via", str(Via(hop, via_host, None, {"branch": new_branch(), "rport": ""})))
        req.add("Max-Forwards", "70")
        req.add("From", f"{self.local_uri};tag={self.local_tag}")
        req.add("To", f"{self.remote_uri};tag={self.remote_tag}")
        req.add("Call-ID", self.call_id)
        req.add("CSeq", f"{seq} {method}")
        for route in routes:
            req.add("Route", route)
        if self.contact and method in ("INVITE", "UPDATE"):
            req.add("Contact", self.contact)
        for name, value in extra:
            req.add(name, value)
        if body:
            req.add("Content-Type", content_type or "application/sdp")
            req.body = body
        return req


__all__ = ["Dialog", "new_tag", "reply"]
