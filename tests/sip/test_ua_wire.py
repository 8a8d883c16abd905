"""The SIP user agent over real TLS on loopback, on messages that are legal but unusual, or
malformed in ways a parser meets (RFC 3261 §7.3.1, §9.2, §20.16): a Via header carrying
several values in one field, digits that are not ASCII."""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest

from bridge.sip import InviteClient, Request, Uri, UserAgent, client_context, reply
from bridge.sip.transport import Connection

from .test_ua import NUMBER, SDP, Client, Handler, ca, request, start_ua

__all__ = ["ca"]  # the fixture, used by name


async def test_cancel_matches_an_invite_whose_via_values_share_one_field(ca) -> None:
    """§7.3.1: ``Via: a, b`` is ``Via: a`` then ``Via: b``; the INVITE's transaction is the
    top value's branch (§17.2.3), which the CANCEL carries (§9.1)."""
    ua, handler, _ = await start_ua(ca)
    c = await Client.open(ua, ca)
    try:
        invite = request("INVITE", branch="z9hG4bKtop", body=SDP)
        invite.set(
            "Via",
            "SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtop, "
            "SIP/2.0/TLS 10.0.0.1:5060;branch=z9hG4bKinner",
        )
        await c.send(invite.to_bytes())
        assert [(await c.recv()).status for _ in range(2)] == [100, 180]
        await c.send(request("CANCEL", branch="z9hG4bKtop").to_bytes())
        got = {(r.status, r.cseq[1]) for r in [await c.recv(), await c.recv()]}
        assert got == {(200, "CANCEL"), (487, "INVITE")}
        assert len(handler.cancels) == 1
    finally:
        await c.close()
        await ua.close()


@pytest.mark.parametrize(
    ("name", "value"),
    [("CSeq", "\u00b2 INVITE"), ("Content-Length", "\u00b2"), ("Via", ",")],
    ids=["cseq-superscript-digit", "content-length-superscript-digit", "via-empty-list"],
)
async def test_a_malformed_header_gets_400_not_an_error(ca, caplog, name, value) -> None:
    """Header values a parser must refuse: CSeq and Content-Length are ASCII digits (§25.1
    DIGIT; ``str.isdigit`` takes ``²``, which ``int`` does not), and a Via is at least one
    value (§8.1.1.7). Each is a ``400`` (§21.4.1), never a fault in the connection's reader."""
    ua, handler, _ = await start_ua(ca)
    c = await Client.open(ua, ca)
    try:
        invite = request("INVITE", body=SDP)
        raw = invite.to_bytes()
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = [
            f"{name}: {value}".encode() if line.split(b":")[0] == name.encode() else line
            for line in head.split(b"\r\n")
        ]
        await c.send(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        resp = await c.recv()
        assert resp.status == 400, resp
        assert not handler.invites
        faults = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not faults, [r.getMessage() for r in faults]
    finally:
        await c.close()
        await ua.close()


async def test_a_quoted_display_name_may_hold_angle_brackets_and_semicolons(ca) -> None:
    """§25.1: a display name is a quoted string, which may hold ``<``, ``>``, ``;`` and an
    escaped quote (a caller's name as they wrote it): their INVITE was a 400 (bad SIP URI)."""
    ua, handler, _ = await start_ua(ca)
    c = await Client.open(ua, ca)
    try:
        invite = request("INVITE", body=SDP)
        invite.set("From", '"Ana <3; \\"Bia\\"" <sip:+15550001111@wa.meta.vc>;tag=meta1')
        await c.send(invite.to_bytes())
        first = await c.recv()
        assert (first.status, first.reason) == (100, "Trying")
        assert (await c.recv()).status == 180
        (tx,) = handler.invites
        assert tx.dialog.remote_tag == "meta1"
        assert tx.dialog.remote_uri.endswith("<sip:+15550001111@wa.meta.vc>")
    finally:
        await c.close()
        await ua.close()


async def test_metas_200_sent_again_over_tls_is_acked_again(ca) -> None:
    """§13.2.2.4: the UAC ACKs each 2xx; Meta's UAS sends its 200 again until an ACK reaches
    it, whatever the transport (§13.3.1.4: the ACK may be lost beyond the first hop), and
    drops the call at ~32 s without one. Over TLS the INVITE's transaction ended at the first
    200, so the same 200 sent again was dropped unACKed."""
    ua, _, _ = await start_ua(ca)
    meta = ca.issue("meta", "127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(meta.cert), str(meta.key))
    acks: asyncio.Queue[Request] = asyncio.Queue()

    async def meta_edge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, inbound=True)
        invite = await conn.read()
        assert isinstance(invite, Request) and invite.method == "INVITE"
        ok = reply(invite, 200, "OK", to_tag="metatag")
        ok.add("Contact", "<sip:+15550001111@127.0.0.1:5999;transport=tls;ob>")
        ok.add("Content-Type", "application/sdp")
        ok.body = SDP
        for _ in range(2):  # the 200, then the same 200 again (its ACK "lost")
            await conn.send(ok)
            ack = await conn.read()
            assert isinstance(ack, Request)
            acks.put_nowait(ack)
        await conn.read()  # until the bridge closes

    server = await asyncio.start_server(meta_edge, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        uac = InviteClient(
            ua,
            meta_uri=f"sip:127.0.0.1:{port};transport=tls",
            callee="15550001111",
            sdp=SDP,
            username=NUMBER,
            password="",
            call_id="bic-200-again",
        )
        final = await asyncio.wait_for(uac.run(lambda _resp: None), 5)
        assert final.status == 200 and uac.dialog is not None
        first = await asyncio.wait_for(acks.get(), 5)
        again = await asyncio.wait_for(acks.get(), 5)
        assert first.method == again.method == "ACK"
        assert again.cseq == (1, "ACK") and again.get("To").endswith(";tag=metatag")
    finally:
        server.close()
        await ua.close()


async def test_a_bye_before_the_ack_ends_our_200s_repeats(ca, monkeypatch, caplog) -> None:
    """The peer's BYE in the dialog proves our 2xx reached it (it made the dialog with it):
    its repeats stop there (§13.3.1.4 sends them so the 2xx gets through), and the call ended
    by the BYE is not also reported as lacking its ACK after 64·T1 (a WARNING naming the ACK
    lost, the known route-set fault, for a call that ended well)."""
    from bridge.sip import transaction

    monkeypatch.setattr(transaction, "T1", 0.05)
    monkeypatch.setattr(transaction, "TIMER_B", 0.6)
    ua, handler, _ = await start_ua(ca, answer=True)
    timeouts: list = []

    async def ack_timeout(dialog) -> None:
        timeouts.append(dialog)

    handler.ack_timeout = ack_timeout
    c = await Client.open(ua, ca)
    try:
        await c.send(request("INVITE", body=SDP).to_bytes())
        statuses = [(await c.recv()).status for _ in range(3)]
        assert statuses == [100, 180, 200]
        (tx,) = handler.invites
        await c.send(request("BYE", to_tag=tx.local_tag, cseq=2, branch="z9hG4bKbye").to_bytes())
        while (resp := await c.recv()).cseq[1] != "BYE":
            pass  # a repeat of the 200 that crossed the BYE
        assert resp.status == 200 and handler.byes
        await asyncio.sleep(0.6 + 0.3)  # 64·T1 here, and a margin
        assert timeouts == []
        assert not [r for r in caplog.records if "no ACK" in r.getMessage()]
    finally:
        await c.close()
        await ua.close()


async def test_our_cancel_waits_for_a_provisional_response(ca) -> None:
    """§9.1: a CANCEL MUST NOT be sent before a provisional response to its INVITE (it could
    reach a server before the INVITE): a hang-up that comes first is held until one comes,
    then the CANCEL goes and the INVITE ends with its 487. It was sent at once."""
    ua, _, _ = await start_ua(ca)
    meta = ca.issue("meta", "127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(meta.cert), str(meta.key))
    heard: asyncio.Queue[Request | bytes] = asyncio.Queue()
    hung_up = asyncio.Event()

    async def meta_edge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, inbound=True)
        invite = await conn.read()
        assert isinstance(invite, Request)
        heard.put_nowait(invite)
        await hung_up.wait()
        # A CRLF ping (RFC 5626): its pong comes after whatever the bridge sent before it.
        await conn.send_raw(b"\r\n\r\n")
        first = await reader.readexactly(2)
        heard.put_nowait(first)  # b"\r\n": nothing came before the pong
        if first != b"\r\n":
            return
        await conn.send(reply(invite, 180, "Ringing", to_tag="metatag"))
        while (msg := await conn.read()) is not None:
            assert isinstance(msg, Request)
            heard.put_nowait(msg)
            if msg.method == "CANCEL":
                await conn.send(reply(msg, 200, "OK", to_tag="metatag"))
                await conn.send(reply(invite, 487, "Request Terminated", to_tag="metatag"))

    server = await asyncio.start_server(meta_edge, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        uac = InviteClient(
            ua,
            meta_uri=f"sip:127.0.0.1:{port};transport=tls",
            callee="15550001111",
            sdp=SDP,
            username=NUMBER,
            password="",
            call_id="bic-cancel-early",
        )
        run = asyncio.create_task(uac.run(lambda _resp: None))
        invite = await asyncio.wait_for(heard.get(), 5)
        assert isinstance(invite, Request) and invite.method == "INVITE"
        await uac.cancel()  # nothing heard yet: the CANCEL waits
        hung_up.set()
        assert await asyncio.wait_for(heard.get(), 5) == b"\r\n"  # no CANCEL before a 1xx
        cancel = await asyncio.wait_for(heard.get(), 5)  # the 180 came: now the CANCEL
        assert isinstance(cancel, Request) and cancel.method == "CANCEL"
        assert cancel.values("Via") == invite.values("Via")  # the INVITE's branch (§9.1)
        assert (await asyncio.wait_for(run, 5)).status == 487
        ack = await asyncio.wait_for(heard.get(), 5)
        assert isinstance(ack, Request) and ack.method == "ACK"
    finally:
        server.close()
        await ua.close()


async def test_a_destination_that_cannot_be_reached_keeps_no_other_waiting(ca, monkeypatch) -> None:
    """One dial a destination at a time, not one for every destination: while a connection to
    a host that never answers its TLS handshake waits out its timeout (10 s in service), a
    connection to another host (Meta's, for a new call or another call's BYE) is made."""
    from bridge.sip import transport

    monkeypatch.setattr(transport, "HANDSHAKE_TIMEOUT", 1.0)
    ua, _, _ = await start_ua(ca)
    meta = ca.issue("meta", "127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(meta.cert), str(meta.key))
    silent = asyncio.Event()

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await silent.wait()
        writer.close()

    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    dead = await asyncio.start_server(never_answers, "127.0.0.1", 0)
    alive = await asyncio.start_server(answers, "127.0.0.1", 0, ssl=ctx)
    dead_uri = Uri.parse(f"sip:127.0.0.1:{dead.sockets[0].getsockname()[1]};transport=tls")
    alive_uri = Uri.parse(f"sip:127.0.0.1:{alive.sockets[0].getsockname()[1]};transport=tls")
    try:
        stuck = asyncio.create_task(ua.connection_to(dead_uri))
        await asyncio.sleep(0)  # its dial under way (waiting for its handshake)
        conn = await asyncio.wait_for(ua.connection_to(alive_uri), 5)
        assert conn.open
        assert not stuck.done()  # still waiting for its handshake: it held nobody up
        with pytest.raises((TimeoutError, OSError)):
            await stuck
    finally:
        silent.set()
        dead.close()
        alive.close()
        await ua.close()


@pytest.mark.parametrize("params", ["", ";transport=tcp", ";transport=udp"])
async def test_a_sips_uri_is_reached_over_tls_only(ca, params: str) -> None:
    """RFC 3261 §19.1.2, §26.2.2 (RFC 5630 §3.1.3): a ``sips:`` URI is reached over TLS, the
    transport parameter naming at most what TLS runs over. A user agent with a UDP socket
    (a trunk's) took a bare ``sips:`` (and its ``transport=udp``) as UDP and ``transport=tcp``
    as plain TCP: the request, its digest and SDES keys in clear text."""
    meta = ca.issue("pbx", "127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(meta.cert), str(meta.key))

    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(answers, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    ua = UserAgent(
        hostname="127.0.0.1",
        number="",
        certs=None,
        client_ctx=client_context(str(ca.path)),
        digest=None,
        handler=Handler(),
        udp=True,
    )
    await ua.start("127.0.0.1", 0)
    try:
        conn = await asyncio.wait_for(
            ua.connection_to(Uri.parse(f"sips:pbx@127.0.0.1:{port}{params}")), 5
        )
        assert conn.via_transport == "TLS" and conn.reliable
        assert conn.writer.get_extra_info("ssl_object") is not None
    finally:
        server.close()
        await ua.close()
