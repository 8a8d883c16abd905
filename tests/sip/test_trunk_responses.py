"""What a PBX reads in the trunk listener's responses (RFC 3261), over UDP on loopback: a To
tag on every response but a 100 (§8.2.6.2), and an ``Allow`` that names every method the
trunk's user agent takes (§20.5: INFO and REFER in a call too), given in the 2xx to an INVITE
with ``Supported`` (§13.3.1.4) so a PBX learns without probing that it may transfer the call
or send keys by INFO, and take a leg over with ``Replaces``."""

from __future__ import annotations

import asyncio

import pytest

from bridge.sip import Response, parse
from bridge.sip.headers import Address, new_branch

from .test_ua import Handler
from .test_udp_tcp import request, trunk_ua, udp_peer


async def answer_to(transport, peer, port: int, data: bytes) -> Response:
    """The first response but a 100 to ``data``, sent to the user agent on ``port``."""
    transport.sendto(data, ("127.0.0.1", port))
    while True:
        msg = parse((await asyncio.wait_for(peer.got.get(), 2))[0])
        assert isinstance(msg, Response)
        if msg.status != 100:
            return msg


def served_like_a_trunk(ua) -> None:
    """What ``TrunkService`` adds to its user agent: INFO and REFER in a call, Replaces."""

    async def in_dialog(dialog, req) -> tuple[int, str, list]:
        return 200, "OK", []

    ua.in_dialog_requests = in_dialog
    ua.supported = ("replaces",)


@pytest.mark.parametrize(
    ("method", "extra", "body", "status"),
    [
        ("INVITE", "", b"", 488),  # no SDP offer
        ("INVITE", "Require: 100rel\r\n", b"v=0\r\n", 420),
        ("BYE", "", b"", 481),
        ("CANCEL", "", b"", 481),
        ("MESSAGE", "", b"", 501),
    ],
)
async def test_every_response_but_a_100_carries_a_to_tag(method, extra, body, status) -> None:
    """§8.2.6.2: a UAS MUST add a tag to the To of a response (but a 100) to a request with
    none: a refusal without one cannot be matched to its ACK by a stateful proxy (Kamailio's
    tm) nor told apart from a fork's, and some stacks drop it."""
    ua = await trunk_ua()
    served_like_a_trunk(ua)
    transport, peer = await udp_peer()
    try:
        data = request(method, ua.port, body=body)
        data = data.replace(b"Max-Forwards", extra.encode() + b"Max-Forwards")
        resp = await answer_to(transport, peer, ua.port, data)
        assert resp.status == status, resp.reason
        assert Address.parse(resp.get("To")).tag, resp.get("To")
        again = await answer_to(transport, peer, ua.port, data)  # a retransmission
        assert again.get("To") == resp.get("To")  # the same response, the same tag
    finally:
        transport.close()
        await ua.close()


async def test_a_trunks_allow_names_info_and_refer() -> None:
    """§20.5: every method the user agent understands MUST be in its Allow: the trunk's takes
    INFO (keys) and REFER (transfer) in a call, and its OPTIONS answer and its 501 left them
    out, so a PBX that reads the Allow (FreeSWITCH, Asterisk's PJSIP) would not send them.
    An INFO outside any dialog is 481 (§12.2.2), not 501 as if INFO were unknown."""
    ua = await trunk_ua()
    served_like_a_trunk(ua)
    transport, peer = await udp_peer()
    try:
        options = await answer_to(transport, peer, ua.port, request("OPTIONS", ua.port))
        allowed = {m.strip() for m in options.get("Allow").split(",")}
        assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "REFER"} <= allowed
        assert options.get("Supported") == "replaces"
        update = await answer_to(transport, peer, ua.port, request("UPDATE", ua.port))
        assert update.status == 501 and update.get("Allow") == options.get("Allow")
        info = request("INFO", ua.port).replace(b"127.0.0.1>\r\n", b"127.0.0.1>;tag=gone\r\n")
        assert (await answer_to(transport, peer, ua.port, info)).status == 481
    finally:
        transport.close()
        await ua.close()


async def test_the_200_to_a_pbxs_invite_says_what_the_call_may_use() -> None:
    """§13.3.1.4: a 2xx to an INVITE SHOULD carry Allow and Supported, for the call's
    duration: without them a PBX does not know it may REFER the call, send INFO keys or
    Replaces the leg."""
    ua = await trunk_ua(Handler(answer=True))
    served_like_a_trunk(ua)
    transport, peer = await udp_peer()
    try:
        invite = request("INVITE", ua.port, branch=new_branch(), body=b"v=0\r\n")
        transport.sendto(invite, ("127.0.0.1", ua.port))
        ok = None
        while ok is None:
            resp = parse((await asyncio.wait_for(peer.got.get(), 2))[0])
            ok = resp if isinstance(resp, Response) and resp.status == 200 else None
        allowed = {m.strip() for m in ok.get("Allow").split(",")}
        assert {"INVITE", "ACK", "BYE", "CANCEL", "INFO", "REFER"} <= allowed
        assert ok.get("Supported") == "replaces"
        assert ok.get("Contact")
    finally:
        transport.close()
        await ua.close()


async def test_a_cancel_that_crosses_our_200_gets_200_not_481() -> None:
    """The PBX hangs up as the WhatsApp user answers: its CANCEL crosses our 200. The INVITE's
    transaction still exists (RFC 6026 §8.7, Accepted), so §9.2 answers the CANCEL ``200``
    (it has no effect: the PBX ACKs the 200 and sends BYE); ``481`` is for a CANCEL matching
    no transaction, and read by some PBXs as a broken call."""
    handler = Handler(answer=True)
    ua = await trunk_ua(handler)
    served_like_a_trunk(ua)
    transport, peer = await udp_peer()
    try:
        branch = new_branch()
        invite = request("INVITE", ua.port, branch=branch, body=b"v=0\r\n")
        transport.sendto(invite, ("127.0.0.1", ua.port))
        ok = None
        while ok is None:
            resp = parse((await asyncio.wait_for(peer.got.get(), 2))[0])
            ok = resp if isinstance(resp, Response) and resp.status == 200 else None
        transport.sendto(request("CANCEL", ua.port, branch=branch), ("127.0.0.1", ua.port))
        got = ok
        while got.cseq[1] != "CANCEL":  # (our 200 again, as it waits for the ACK)
            got = parse((await asyncio.wait_for(peer.got.get(), 2))[0])
        assert got.status == 200, got.reason
        assert Address.parse(got.get("To")).tag == Address.parse(ok.get("To")).tag
        assert not handler.cancels
    finally:
        transport.close()
        await ua.close()
