"""A re-INVITE reaching a trunk's user agent over UDP on loopback (RFC 3261 §14.2): refused
while our 2xx to the dialog's last INVITE awaits its ACK or another re-INVITE awaits our final
response (500 with Retry-After), out of order (500, §12.2.2), without an SDP offer (488 with a
Warning) or outside any dialog (481); else handed to ``UserAgent.reinvites`` in its dialog, its
100 sent at once, its 2xx retransmitted until the ACK (§13.3.1.4) and a retransmitted
re-INVITE answered again without a second hand-over."""

from __future__ import annotations

import asyncio
import logging

from bridge.sip import parse
from bridge.sip import transaction as sip_transaction
from bridge.sip.headers import Address, new_branch

from .test_ua import Handler
from .test_udp_tcp import request, trunk_ua, udp_peer

SDP = b"v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def in_dialog(
    method: str, port: int, call_id: str, to_tag: str, seq: int, *, body: bytes = SDP, branch=""
) -> bytes:
    head = (
        f"{method} sip:bridge@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch={branch or new_branch()};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:pbx@127.0.0.1>;tag=a1\r\n"
        f"To: <sip:+15550001111@127.0.0.1>;tag={to_tag}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {seq} {method}\r\nContact: <sip:pbx@127.0.0.1:9>\r\n"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def test_re_invites_are_checked_then_answered_in_their_dialog(monkeypatch, caplog) -> None:
    monkeypatch.setattr(sip_transaction, "T1", 0.05)
    caplog.set_level(logging.INFO, logger="bridge.sip")
    ua = await trunk_ua(Handler(answer=True))
    release = asyncio.Event()
    handed: list = []

    async def answer(tx) -> None:
        handed.append(tx)
        await release.wait()
        await tx.respond(200, "OK", body=b"v=0\r\n")

    ua.reinvites = answer
    transport, peer = await udp_peer()
    to_ua = ("127.0.0.1", ua.port)

    async def final(wanted: int | None = None):
        while True:
            resp = parse((await asyncio.wait_for(peer.got.get(), 3))[0])
            if resp.status >= 200 and (wanted is None or resp.cseq[0] == wanted):
                return resp

    try:
        invite = request("INVITE", ua.port, body=SDP)
        transport.sendto(invite, to_ua)
        answered = await final()
        assert answered.status == 200
        call_id, tag = answered.call_id, Address.parse(answered.get("To")).tag

        def send(method: str, seq: int, **kw) -> None:
            transport.sendto(in_dialog(method, ua.port, call_id, tag, seq, **kw), to_ua)

        # Our 200 to the INVITE is not ACKed yet: the dialog's next INVITE waits (§14.2).
        send("INVITE", 2)
        resp = await final(2)
        assert resp.status == 500 and resp.get("Retry-After") == "1", resp
        send("ACK", 1, body=b"")
        send("INVITE", 3, body=b"")
        resp = await final(3)
        assert resp.status == 488 and "SDP offer" in resp.get("Warning"), resp
        # Handed over: 100 at once; another re-INVITE meanwhile is 500 with Retry-After.
        branch = new_branch()
        send("INVITE", 4, branch=branch)
        trying = parse((await asyncio.wait_for(peer.got.get(), 3))[0])
        assert trying.status == 100 and trying.cseq == (4, "INVITE")
        await asyncio.sleep(0.05)
        assert len(handed) == 1 and handed[0].dialog.key == (call_id, tag)
        send("INVITE", 5)
        resp = await final(5)
        assert resp.status == 500 and resp.get("Retry-After"), resp
        send("INVITE", 4, branch=branch)  # a retransmission: the 100 again, not a 2nd hand-over
        release.set()
        first = await final(4)
        again = await final(4)  # §13.3.1.4: the 2xx again until the ACK
        assert first.status == again.status == 200 and len(handed) == 1
        assert Address.parse(first.get("To")).tag == tag and first.get("Contact")
        send("ACK", 4, body=b"")
        await asyncio.sleep(0.3)
        while not peer.got.empty():
            assert parse(peer.got.get_nowait()[0]).status != 200, "retransmitted after the ACK"
        # Below the dialog's last CSeq: out of order (§12.2.2); another dialog: 481.
        send("INVITE", 3)
        resp = await final(3)
        assert resp.status == 500 and "out of order" in resp.reason, resp
        transport.sendto(in_dialog("INVITE", ua.port, call_id, "nosuchtag", 9), to_ua)
        assert (await final(9)).status == 481
        refusals = [r for r in caplog.records if "re-INVITE" in r.getMessage()]
        # What the PBX got wrong is a WARNING each; a retry later is not its fault.
        assert [r.levelname for r in refusals] == ["INFO", "WARNING", "INFO", "WARNING"], [
            r.getMessage() for r in refusals
        ]
    finally:
        transport.close()
        await ua.close()
