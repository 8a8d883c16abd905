"""The SIP user agent core over real TLS on loopback: methods answered or refused as RFC 3261
says, digest challenges, CANCEL, hostile clients (garbage, oversized, stalled), certificate
reload, and a seeded fuzz of thousands of mutated INVITEs and in-dialog requests."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl

import pytest

from bridge.sip import (
    Address,
    CertFiles,
    DigestServer,
    Request,
    Response,
    SipParseError,
    UserAgent,
    authorize,
    client_context,
    parse,
)
from bridge.sip import transport as sip_transport
from bridge.sip.transport import Connection

from ..support.tls import TestCA
from ..support.waits import until

NUMBER = "15550009999"
PASSWORD = "s3cret"


class Handler:
    """Records what the UA hands over; rings and (optionally) answers."""

    def __init__(self, answer: bool = False) -> None:
        self.invites: list = []
        self.cancels: list = []
        self.acks: list = []
        self.byes: list = []
        self.answer = answer

    async def invite(self, tx) -> None:
        self.invites.append(tx)
        await tx.respond(180, "Ringing")
        if self.answer:
            await tx.respond(200, "OK", body=b"v=0\r\n")
            tx.ua.dialogs[tx.dialog.key] = tx.dialog

    async def cancelled(self, tx) -> None:
        self.cancels.append(tx)

    async def acked(self, dialog) -> None:
        self.acks.append(dialog)

    async def ack_timeout(self, dialog) -> None:
        pass

    async def bye(self, dialog, req) -> None:
        self.byes.append(dialog)


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path)


async def start_ua(ca, *, password: str = "", answer: bool = False):
    pair = ca.issue("bridge", "localhost", "127.0.0.1")
    handler = Handler(answer)
    digest = DigestServer("wa.meta.vc", NUMBER, password) if password else None
    ua = UserAgent(
        hostname="localhost",
        number=NUMBER,
        certs=CertFiles(str(pair.cert), str(pair.key)),
        client_ctx=client_context(str(ca.path)),
        digest=digest,
        handler=handler,
    )
    await ua.start("127.0.0.1", 0)
    return ua, handler, pair


class Client:
    """A raw SIP-over-TLS client (reads responses with the bridge's own framing)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, ua: UserAgent, ca: TestCA) -> Client:
        ctx = ssl.create_default_context(cafile=str(ca.path))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", ua.port, ssl=ctx, server_hostname="localhost"
        )
        return cls(Connection(reader, writer, inbound=False))

    async def send(self, data: bytes) -> None:
        await self.conn.send_raw(data)

    async def recv(self, timeout: float = 5.0) -> Response:
        msg = await asyncio.wait_for(self.conn.read(), timeout)
        assert isinstance(msg, Response), msg
        return msg

    async def close(self) -> None:
        await self.conn.close()


def request(
    method: str,
    *,
    call_id: str = "outgoing:wacid.ABC",
    branch: str = "z9hG4bK1",
    to_tag: str = "",
    cseq: int = 1,
    body: bytes = b"",
    extra: tuple[tuple[str, str], ...] = (),
) -> Request:
    req = Request(method=method, uri=f"sip:+{NUMBER}@localhost;transport=tls")
    req.add("Via", f"SIP/2.0/TLS 127.0.0.1:5999;branch={branch}")
    req.add("Max-Forwards", "70")
    req.add("From", "<sip:+15550001111@wa.meta.vc>;tag=meta1")
    req.add("To", f"<sip:+{NUMBER}@localhost>" + (f";tag={to_tag}" if to_tag else ""))
    req.add("Call-ID", call_id)
    req.add("CSeq", f"{cseq} {method}")
    req.add("Contact", "<sip:+15550001111@127.0.0.1:5999;transport=tls;ob>")
    for name, value in extra:
        req.add(name, value)
    if body:
        req.add("Content-Type", "application/sdp")
        req.body = body
    return req


SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/SAVP 111\r\n"


async def test_options_unknown_methods_and_dialogless_requests(ca):
    ua, _, _ = await start_ua(ca)
    c = await Client.open(ua, ca)
    try:
        await c.send(request("OPTIONS").to_bytes())
        resp = await c.recv()
        assert resp.status == 200 and "INVITE" in resp.get("Allow")
        await c.send(request("MESSAGE", branch="z9hG4bK2").to_bytes())
        resp = await c.recv()
        assert resp.status == 501 and "BYE" in resp.get("Allow")
        await c.send(request("UPDATE", branch="z9hG4bK3").to_bytes())
        assert (await c.recv()).status == 501
        await c.send(request("BYE", branch="z9hG4bK4", to_tag="nope").to_bytes())
        assert (await c.recv()).status == 481
        await c.send(request("CANCEL", branch="z9hG4bK5").to_bytes())
        assert (await c.recv()).status == 481
        await c.send(
            request(
                "INVITE", branch="z9hG4bK6", body=SDP, extra=(("Require", "100rel"),)
            ).to_bytes()
        )
        resp = await c.recv()
        assert resp.status == 420 and resp.get("Unsupported") == "100rel"
        await c.send(b"\r\n\r\n")  # a CRLF keep-alive ping (RFC 5626): a CRLF pong
        assert await asyncio.wait_for(c.conn.reader.readexactly(2), 5) == b"\r\n"
        await c.send(request("OPTIONS", branch="z9hG4bK7").to_bytes())
        assert (await c.recv()).status == 200
    finally:
        await c.close()
        await ua.close()


async def test_invite_digest_challenge_then_ringing_answer_reinvite_refer_bye(ca):
    ua, handler, _ = await start_ua(ca, password=PASSWORD, answer=True)
    c = await Client.open(ua, ca)
    try:
        invite = request("INVITE", body=SDP)
        await c.send(invite.to_bytes())
        challenge = await c.recv()
        assert challenge.status == 407 and not handler.invites
        value = challenge.get("Proxy-Authenticate")
        assert 'realm="wa.meta.vc"' in value and 'qop="auth"' in value
        auth = authorize(value, "INVITE", invite.uri, NUMBER, PASSWORD)
        again = request(
            "INVITE", body=SDP, cseq=2, branch="z9hG4bK8", extra=(("Proxy-Authorization", auth),)
        )
        await c.send(again.to_bytes())
        assert [(await c.recv()).status for _ in range(3)] == [100, 180, 200]
        assert len(handler.invites) == 1
        tx = handler.invites[0]
        # The same credentials again (a replay): a fresh challenge, stale=true.
        replay = request(
            "INVITE",
            body=SDP,
            cseq=3,
            call_id="other",
            branch="z9hG4bK9",
            extra=(("Proxy-Authorization", auth),),
        )
        await c.send(replay.to_bytes())
        resp = await c.recv()
        assert resp.status == 407 and "stale=true" in resp.get("Proxy-Authenticate")
        # Wrong password: 403.
        wrong = authorize(resp.get("Proxy-Authenticate"), "INVITE", invite.uri, NUMBER, "x")
        await c.send(
            request(
                "INVITE",
                body=SDP,
                call_id="third",
                branch="z9hG4bKa",
                extra=(("Proxy-Authorization", wrong),),
            ).to_bytes()
        )
        assert (await c.recv()).status == 403

        tag = tx.local_tag
        await c.send(request("ACK", cseq=2, to_tag=tag, branch="z9hG4bKb").to_bytes())
        await until(lambda: handler.acks, 2, "the ACK reached the handler")
        await c.send(request("INVITE", cseq=4, to_tag=tag, branch="z9hG4bKc", body=SDP).to_bytes())
        resp = await c.recv()
        assert resp.status == 488 and "re-INVITE" in resp.get("Warning")
        await c.send(request("REFER", cseq=5, to_tag=tag, branch="z9hG4bKd").to_bytes())
        assert (await c.recv()).status == 403
        await c.send(request("BYE", cseq=6, to_tag=tag, branch="z9hG4bKe").to_bytes())
        assert (await c.recv()).status == 200
        await until(lambda: handler.byes, 2, "the handler heard of the BYE")
        assert handler.byes[0].call_id == "outgoing:wacid.ABC"
    finally:
        await c.close()
        await ua.close()


async def test_cancel_before_answer_gets_200_and_487(ca):
    ua, handler, _ = await start_ua(ca)
    c = await Client.open(ua, ca)
    try:
        await c.send(request("INVITE", body=SDP, branch="z9hG4bKinv").to_bytes())
        assert [(await c.recv()).status for _ in range(2)] == [100, 180]
        await c.send(request("CANCEL", branch="z9hG4bKinv").to_bytes())
        got = {(r.status, r.cseq[1]) for r in [await c.recv(), await c.recv()]}
        assert got == {(200, "CANCEL"), (487, "INVITE")}
        await until(lambda: len(handler.cancels) == 1, 2, "the handler heard of the CANCEL")
    finally:
        await c.close()
        await ua.close()


async def test_a_bye_in_the_early_dialog_ends_the_invite_as_a_cancel_does(ca):
    """The caller may end an early dialog with BYE instead of CANCEL (RFC 3261 §15, §15.1.2):
    the BYE gets 200 and the pending INVITE 487, and the call is given up as cancelled. It
    got 481 and the INVITE rang on, its final response due to a caller that had gone."""
    ua, handler, _ = await start_ua(ca)
    c = await Client.open(ua, ca)
    try:
        await c.send(request("INVITE", body=SDP, branch="z9hG4bKinv").to_bytes())
        statuses = [await c.recv() for _ in range(2)]
        assert [r.status for r in statuses] == [100, 180]
        tag = Address.parse(statuses[1].get("To")).tag
        bye = request("BYE", branch="z9hG4bKbye", to_tag=tag, cseq=2)
        await c.send(bye.to_bytes())
        got = {(r.status, r.cseq[1]) for r in [await c.recv(), await c.recv()]}
        assert got == {(200, "BYE"), (487, "INVITE")}
        await until(lambda: len(handler.cancels) == 1, 2, "the handler heard the call given up")
        assert not handler.byes and not ua.pending
    finally:
        await c.close()
        await ua.close()


async def test_malformed_and_oversized_messages_cost_one_connection(ca, monkeypatch):
    monkeypatch.setattr(sip_transport, "MESSAGE_TIMEOUT", 0.3)
    ua, _, _ = await start_ua(ca)
    clients = []
    try:
        # No CSeq: 400 with the reason, the headers it could read copied.
        c = await Client.open(ua, ca)
        clients.append(c)
        bad = request("OPTIONS")
        bad.remove("CSeq")
        await c.send(bad.to_bytes())
        resp = await c.recv()
        assert resp.status == 400 and "CSeq" in resp.reason
        assert resp.call_id == "outgoing:wacid.ABC"
        # Garbage: 400, then the connection is closed (its framing is lost).
        g = await Client.open(ua, ca)
        clients.append(g)
        await g.send(b"\x16\x03garbage garbage\r\n\r\n")
        assert (await g.recv()).status == 400
        assert await asyncio.wait_for(g.conn.reader.read(), 5) == b""
        # Oversized: dropped, never buffered whole.
        big = await Client.open(ua, ca)
        clients.append(big)
        await big.send(b"OPTIONS sip:x@y SIP/2.0\r\nX: " + b"a" * 40_000)
        assert await asyncio.wait_for(big.conn.reader.read(), 5) == b""
        # A client that stalls mid-message: closed after MESSAGE_TIMEOUT.
        stall = await Client.open(ua, ca)
        clients.append(stall)
        await stall.send(b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/TLS")
        # Meanwhile another client is served at once.
        ok = await Client.open(ua, ca)
        clients.append(ok)
        await ok.send(request("OPTIONS").to_bytes())
        assert (await ok.recv()).status == 200
        assert await asyncio.wait_for(stall.conn.reader.read(), 5) == b""
        # A TCP client that never starts its TLS handshake costs one connection too.
        reader, writer = await asyncio.open_connection("127.0.0.1", ua.port)
        writer.write(b"OPTIONS sip:x@y SIP/2.0\r\n\r\n")  # plain text at a TLS port
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await ok.send(request("OPTIONS", branch="z9hG4bK2").to_bytes())
        assert (await ok.recv()).status == 200
    finally:
        for c in clients:
            await c.close()
        await ua.close()


async def test_certificate_reloads_without_dropping_live_connections(ca, monkeypatch):
    monkeypatch.setattr(sip_transport, "RELOAD_EVERY", 0.05)
    ua, _, pair = await start_ua(ca)
    old = await Client.open(ua, ca)
    try:
        first = old.conn.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        renewed = ca.issue("renewed", "localhost", "127.0.0.1")
        pair.cert.write_bytes(renewed.cert.read_bytes())
        pair.key.write_bytes(renewed.key.read_bytes())
        await until(lambda: ua.transport.certs.reloads == 1, 3, "the certificate reloaded")
        new = await Client.open(ua, ca)
        second = new.conn.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert first != second and second == ssl.PEM_cert_to_DER_cert(renewed.cert.read_text())
        # The connection made before the reload still works.
        await old.send(request("OPTIONS").to_bytes())
        assert (await old.recv()).status == 200
        # A half-written pair is not loaded; the last good one stays.
        pair.key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbroken\n")
        await asyncio.sleep(0.2)
        assert ua.transport.certs.reloads == 1
        await new.close()
        again = await Client.open(ua, ca)
        await again.send(request("OPTIONS").to_bytes())
        assert (await again.recv()).status == 200
        await again.close()
    finally:
        await old.close()
        await ua.close()


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random edits: flip, insert, delete, duplicate or cut a span, or swap in a
    SIP-ish token (a colon, CRLF, a huge number, a quote, a bracket)."""
    buf = bytearray(data)
    tokens = [
        b":",
        b"\r\n",
        b"\r\n\r\n",
        b"99999999999",
        b'"',
        b"<",
        b">",
        b";",
        b",",
        b" ",
        b"\x00",
        b"\xff",
        b"SIP/2.0",
        b"Content-Length: 5\r\n",
        b"tag=",
        b"-1",
    ]
    for _ in range(rng.randint(1, 4)):
        if not buf:
            break
        pos = rng.randrange(len(buf))
        op = rng.randrange(6)
        if op == 0:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos:pos] = rng.choice(tokens)
        elif op == 2:
            del buf[pos : pos + rng.randint(1, 20)]
        elif op == 3:
            end = min(len(buf), pos + rng.randint(1, 40))
            buf[pos:pos] = buf[pos:end]
        elif op == 4:
            buf[pos : pos + rng.randint(0, 8)] = rng.choice(tokens)
        else:
            del buf[pos:]
    return bytes(buf)


def seeds() -> list[bytes]:
    sdp = SDP
    return [
        request(
            "INVITE",
            body=sdp,
            extra=(("x-wa-meta-wacid", "wacid.X"), ("Record-Route", "<sip:p1;lr>, <sip:p2;lr>")),
        ).to_bytes(),
        request("BYE", to_tag="t1", cseq=2, extra=(("x-wa-meta-call-duration", "12"),)).to_bytes(),
        request("ACK", to_tag="t1").to_bytes(),
        request("CANCEL").to_bytes(),
        request("OPTIONS").to_bytes(),
        request("INVITE", to_tag="t1", cseq=3, body=sdp).to_bytes(),
    ]


def test_parser_fuzz_raises_only_parse_errors():
    rng = random.Random(20261123)
    parsed = 0
    for i in range(20_000):
        data = mutate(rng, seeds()[i % 6])
        try:
            msg = parse(data)
        except SipParseError:
            continue
        parsed += 1
        parse(msg.to_bytes())  # what parses serialises to something that parses again
    assert parsed > 1000  # the mutator leaves many messages valid: the paths behind run too


async def test_fuzz_over_tls_no_crash_and_options_still_answered(ca, monkeypatch, caplog):
    monkeypatch.setattr(sip_transport, "MESSAGE_TIMEOUT", 0.2)
    ua, _handler, _ = await start_ua(ca, answer=True)
    rng = random.Random(33)
    sent = 0
    conns = 0
    c = await Client.open(ua, ca)
    caplog.set_level(logging.ERROR)
    try:
        base = seeds()
        for i in range(3000):
            data = mutate(rng, base[i % len(base)])
            if i % 7 == 0:
                data = base[i % len(base)]  # keep real dialogs and transactions around
            if not c.conn.open or c.conn.reader.at_eof():
                await c.close()
                c = await Client.open(ua, ca)
                conns += 1
            try:
                await c.send(data)
                sent += 1
            except (ConnectionError, OSError):
                continue
            # Drain what came back so the server never blocks on us.
            while len(c.conn.reader._buffer) > 0:
                c.conn.reader._buffer.clear()
            if i % 50 == 0:
                await asyncio.sleep(0)
        assert sent > 2500
        fresh = await Client.open(ua, ca)
        await fresh.send(request("OPTIONS", branch="z9hG4bKfinal").to_bytes())
        assert (await fresh.recv()).status == 200
        await fresh.close()
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, errors[:3]
        print(f"fuzz: {sent} messages over {conns + 1} connections, counts {ua.counts}")
    finally:
        await c.close()
        await ua.close()


async def test_in_dialog_requests_open_a_connection_to_the_first_route_when_the_flow_is_gone(ca):
    """RFC 3261 §12.2.1.1: with the dialog's own connection closed, the BYE goes to the first
    route's host and port (a loose router), Request-URI the remote target, Route the set."""
    from bridge.sip import Dialog, parse

    ua, _, _ = await start_ua(ca)
    meta = ca.issue("meta", "127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(meta.cert), str(meta.key))
    got: list = []

    async def proxy(reader, writer):
        conn = Connection(reader, writer, inbound=True)
        req = await conn.read()
        got.append(req)
        resp = Response(status=200, reason="OK")
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            resp.add(name, req.get(name))
        await conn.send(resp)

    server = await asyncio.start_server(proxy, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    c = await Client.open(ua, ca)
    try:
        invite = parse(
            request(
                "INVITE",
                body=SDP,
                extra=(
                    ("Record-Route", f"<sip:127.0.0.1:{port};transport=tls;lr>"),
                    ("Record-Route", "<sip:proxy2.wa.meta.vc;transport=tls;lr>"),
                ),
            ).to_bytes()
        )
        dialog = Dialog.as_uas(invite, "ourtag", c.conn, ua.contact)
        await c.close()  # the flow the dialog came on is gone
        resp = await ua.in_dialog(dialog, "BYE")
        assert resp.status == 200
        (bye,) = got
        assert bye.uri == "sip:+15550001111@127.0.0.1:5999;transport=tls;ob"
        assert bye.all("Route") == [
            f"<sip:127.0.0.1:{port};transport=tls;lr>",
            "<sip:proxy2.wa.meta.vc;transport=tls;lr>",
        ]
        assert bye.get("To").endswith(";tag=meta1") and bye.get("From").endswith(";tag=ourtag")
    finally:
        server.close()
        await ua.close()


async def test_in_dialog_requests_reuse_the_open_flow_when_the_contact_listens_nowhere(ca):
    """RFC 5923 / RFC 5626 connection reuse: a peer whose Contact names a port where nothing
    listens for TLS (baresip's names its ``sip_listen`` port) still gets our BYE, on the
    connection its INVITE came on, with no route set."""
    ua, handler, _ = await start_ua(ca, answer=True)
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    c = await Client.open(ua, ca)
    try:
        invite = request("INVITE", body=SDP)
        invite.set("Contact", f"<sip:+15550001111@127.0.0.1:{dead};transport=tls>")
        await c.send(invite.to_bytes())
        statuses = [(await c.recv()).status for _ in range(3)]
        assert statuses == [100, 180, 200]
        (tx,) = handler.invites
        bye_sent = asyncio.ensure_future(ua.in_dialog(tx.dialog, "BYE"))
        bye = await asyncio.wait_for(c.conn.read(), 5)
        assert isinstance(bye, Request) and bye.method == "BYE"
        assert bye.uri == f"sip:+15550001111@127.0.0.1:{dead};transport=tls"
        ok = Response(status=200, reason="OK")
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            ok.add(name, bye.get(name))
        await c.conn.send(ok)
        assert (await bye_sent).status == 200
    finally:
        await c.close()
        await ua.close()


async def test_our_200_is_retransmitted_until_the_ack_then_given_up(ca, monkeypatch):
    """RFC 3261 §13.3.1.4: the 2xx again at T1, 2·T1 … until the ACK; none after 64·T1: the
    handler is told (the engine ends the call with a BYE)."""
    from bridge.sip import transaction

    monkeypatch.setattr(transaction, "T1", 0.05)
    monkeypatch.setattr(transaction, "TIMER_B", 0.6)
    timeouts: list = []
    ua, handler, _ = await start_ua(ca, answer=True)

    async def ack_timeout(dialog) -> None:
        timeouts.append(dialog)

    handler.ack_timeout = ack_timeout
    c = await Client.open(ua, ca)
    try:
        await c.send(request("INVITE", body=SDP).to_bytes())
        statuses = [(await c.recv()).status for _ in range(5)]
        assert statuses == [100, 180, 200, 200, 200]  # the 200 repeats without an ACK
        await until(lambda: timeouts, 3, "the handler heard no ACK came")
        assert timeouts[0].call_id == "outgoing:wacid.ABC"
        # With the ACK the repeats stop.
        await c.send(request("INVITE", body=SDP, call_id="second", branch="z9hG4bK2").to_bytes())
        while (ok := await c.recv()).status != 200 or ok.call_id != "second":
            pass  # the first call's last repeats, then 100 and 180
        tag = ok.get("To").split("tag=")[1]
        await c.send(request("ACK", call_id="second", to_tag=tag, branch="z9hG4bK3").to_bytes())
        await until(lambda: len(handler.acks) == 1, 2, "the ACK reached the handler")
        await asyncio.sleep(0.3)
        c.conn.reader._buffer.clear()
        await asyncio.sleep(0.3)
        assert not c.conn.reader._buffer  # nothing more came
    finally:
        await c.close()
        await ua.close()
