"""Messages over the listener's size limits, on TLS and on UDP (RFC 3261 §21.5.11, §18.1.1):
a request whose headers can be read gets ``513 Message Too Large`` with its Via, From, To,
Call-ID and CSeq; a stream whose framing is lost with it is then closed; what cannot be read
is dropped without an answer."""

from __future__ import annotations

import asyncio

from bridge.sip import parse
from bridge.sip.headers import new_branch
from bridge.sip.message import MAX_BODY, MAX_HEAD

from .test_ua import SDP, Client, ca, request, start_ua
from .test_udp_tcp import request as udp_request
from .test_udp_tcp import trunk_ua, udp_peer

__all__ = ["ca"]  # the fixture, used by name

PAD = tuple(("X-Pad", "p" * 1000) for _ in range(MAX_HEAD // 1000 + 2))
"""Header fields that take a head past ``MAX_HEAD`` (each line within ``MAX_LINE``)."""


def assert_answers(resp, sent) -> None:
    """``resp`` is a 513 to ``sent``: its transaction's headers copied (§8.2.6.2)."""
    assert (resp.status, resp.reason) == (513, "Message Too Large"), resp
    assert resp.get("Via").split(";branch=")[1].startswith(sent.get("Via").split("branch=")[1])
    assert (resp.call_id, resp.cseq) == (sent.call_id, sent.cseq)
    assert resp.get("From") == sent.get("From")


async def test_over_tls_a_request_too_large_gets_513_then_the_connection_closes(ca) -> None:
    """Headers over the limit and a body over it, each on its own connection: a 513 with the
    request's headers (it was nothing at all: the connection just ended, and the caller
    waited out its transaction), then the end of a connection whose framing is lost."""
    ua, handler, _ = await start_ua(ca)
    clients: list[Client] = []
    try:
        # The pads after the transaction's headers, as a proxy adds its own at the end.
        big_head = request("INVITE", branch="z9hG4bKhead", body=SDP, extra=PAD)
        big_body = request("OPTIONS", branch="z9hG4bKbody", call_id="body-call")
        big_body.add("Content-Type", "application/sdp")
        big_body.body = b"a=x\r\n" * (MAX_BODY // 5 + 10)
        for sent in (big_head, big_body):
            c = await Client.open(ua, ca)
            clients.append(c)
            await c.send(sent.to_bytes())
            assert_answers(await c.recv(), sent)
            assert await asyncio.wait_for(c.conn.reader.read(), 5) == b""
        # Nothing of a request whose Via comes past the limit can be answered: it is closed.
        lost = request("OPTIONS", branch="z9hG4bKlost")
        lost.headers = [*PAD, *lost.headers]
        c = await Client.open(ua, ca)
        clients.append(c)
        await c.send(lost.to_bytes())
        assert await asyncio.wait_for(c.conn.reader.read(), 5) == b""
        assert not handler.invites
        assert ua.counts.get("bad") == 3
    finally:
        for c in clients:
            await c.close()
        await ua.close()


async def test_over_udp_a_request_too_large_gets_513_and_garbage_is_dropped() -> None:
    """A datagram with headers over the limit, and one whose body (no Content-Length: the
    rest of the datagram, §18.3) is over it: each gets a 513 (the first got a 400, the second
    was taken whole). A datagram too large with nothing to answer to gets nothing."""
    ua = await trunk_ua()
    transport, peer = await udp_peer()
    try:
        pads = b"".join(f"{name}: {value}\r\n".encode() for name, value in PAD)
        big_head = udp_request("OPTIONS", ua.port, branch=new_branch()).replace(
            b"Content-Length", pads + b"Content-Length"
        )
        big_body = udp_request("MESSAGE", ua.port, branch=new_branch()).replace(
            b"Content-Length: 0\r\n\r\n", b"\r\n" + b"a" * (MAX_BODY + 100)
        )
        garbage = b"\x00" * 100 + b"\r\n" + b"z" * (MAX_HEAD + 100) + b"\r\n\r\n"
        for sent in (big_head, garbage, big_body):
            assert len(sent) > MAX_HEAD
            transport.sendto(sent, ("127.0.0.1", ua.port))
            await asyncio.sleep(0.05)  # in this order
        for sent in (big_head, big_body):
            data, _ = await asyncio.wait_for(peer.got.get(), 5)
            assert_answers(parse(data), parse_head_only(sent))
        probe = udp_request("OPTIONS", ua.port, branch=new_branch())
        transport.sendto(probe, ("127.0.0.1", ua.port))
        data, _ = await asyncio.wait_for(peer.got.get(), 5)
        assert parse(data).call_id == parse(probe).call_id  # nothing came for the garbage
    finally:
        transport.close()
        await ua.close()


def parse_head_only(data: bytes):
    """A message's head as a message (its body, its length and the pads left out)."""
    lines = data.partition(b"\r\n\r\n")[0].split(b"\r\n")
    kept = [line for line in lines if not line.startswith((b"X-Pad", b"Content-Length"))]
    return parse(b"\r\n".join(kept) + b"\r\n\r\n")


async def test_a_malformed_request_whose_end_is_known_costs_its_400_only(ca, caplog) -> None:
    """Meta carries many calls on one TLS connection: a request that does not parse but whose
    end is known (its Content-Length readable) gets its 400 and the connection reads on, the
    call ringing on it still cancellable there. It was closed after the 400, every call on it
    lost. Said at WARNING once while the source sends no good message."""
    ua, handler, _ = await start_ua(ca)
    c = await Client.open(ua, ca)
    try:
        await c.send(request("INVITE", branch="z9hG4bKcall", body=SDP).to_bytes())
        assert [(await c.recv()).status for _ in range(2)] == [100, 180]
        # A header line without a colon, and a body that reads as a request if not skipped.
        inner = request("OPTIONS", branch="z9hG4bKinner", call_id="inner").to_bytes()
        broken = request("MESSAGE", branch="z9hG4bKbroken", call_id="broken")
        broken.add("Content-Type", "message/sipfrag")
        broken.body = inner
        raw = broken.to_bytes().replace(b"Max-Forwards: 70", b"Max-Forwards 70")
        no_cseq = request("OPTIONS", branch="z9hG4bKnocseq", call_id="no-cseq")
        no_cseq.remove("CSeq")
        await c.send(raw + no_cseq.to_bytes())
        first, second = await c.recv(), await c.recv()
        assert (first.status, first.call_id) == (400, "broken"), first
        assert (second.status, second.call_id) == (400, "no-cseq"), second
        assert "CSeq" in second.reason
        await c.send(request("CANCEL", branch="z9hG4bKcall").to_bytes())
        got = {(r.status, r.cseq[1]) for r in [await c.recv(), await c.recv()]}
        assert got == {(200, "CANCEL"), (487, "INVITE")}
        assert len(handler.cancels) == 1 and ua.counts.get("bad") == 2
        said = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
        assert len(said) == 1 and "said once" in said[0], said
    finally:
        await c.close()
        await ua.close()
