"""Meta's SIP edge as it is, over real TLS on loopback: ``received``/``rport`` on the top Via
of every response (RFC 3261 §18.2.1, RFC 3581 §4); a source outside
``BRIDGE_SIP_TRUSTED_NETWORKS`` refused with 403 before any digest work; a client
certificate's name checked when ``BRIDGE_SIP_VERIFY_CLIENT`` asks; and no ALPN in our TLS
client hello (Meta's edge fails the handshake on an ALPN ``sip`` offer)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import struct

import pytest

from bridge.config import ConfigError
from bridge.sip import (
    CertFiles,
    DigestServer,
    PeerPolicy,
    UserAgent,
    Via,
    authorize,
    client_context,
    parse_params,
)
from bridge.sip.transport import Connection, connect

from ..support.tls import TestCA
from .test_ua import NUMBER, PASSWORD, SDP, Client, Handler, ca, request, start_ua

__all__ = ["ca"]  # the fixture, used by name

META_NAME = "client.sip.fbclientcerts.com"


def _top_via(resp) -> Via:
    return Via.parse(resp.values("Via")[0])


async def test_every_response_carries_received_and_rport(ca):
    ua, _, _ = await start_ua(ca, password=PASSWORD)
    c = await Client.open(ua, ca)
    _, client_port = c.conn.writer.get_extra_info("sockname")[:2]
    try:
        # rport asked for (RFC 3581): the source port filled in, received even when equal.
        asked = request("OPTIONS", branch="z9hG4bKr1")
        asked.set("Via", "SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKr1;rport")
        await c.send(asked.to_bytes())
        via = _top_via(await c.recv())
        assert via.params["rport"] == str(client_port) and via.params["received"] == "127.0.0.1"
        assert via.branch == "z9hG4bKr1"
        # A sent-by that is a name (or another address): received only (§18.2.1).
        named = request("INVITE", branch="z9hG4bKr2", body=SDP)
        named.set("Via", "SIP/2.0/TLS edge.wa.meta.vc:5061;branch=z9hG4bKr2, SIP/2.0/TLS x;b=1")
        await c.send(named.to_bytes())
        resp = await c.recv()
        assert resp.status == 407  # the digest challenge carries it too
        vias = resp.values("Via")
        assert Via.parse(vias[0]).params == {"branch": "z9hG4bKr2", "received": "127.0.0.1"}
        assert vias[1] == "SIP/2.0/TLS x;b=1"  # only the top Via is ours to touch
        # The sent-by is the source address and no rport: nothing to add.
        await c.send(request("OPTIONS", branch="z9hG4bKr3").to_bytes())
        assert _top_via(await c.recv()).params == {"branch": "z9hG4bKr3"}
        # A malformed request's 400 (its headers salvaged) carries them as well.
        bad = (
            b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/TLS 10.9.9.9;branch=z9hG4bKr4;rport\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: bad\r\nCSeq: 1 BYE\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        await c.send(bad)
        resp = await c.recv()
        assert resp.status == 400
        assert _top_via(resp).params["received"] == "127.0.0.1"
        assert _top_via(resp).params["rport"] == str(client_port)
    finally:
        await c.close()
        await ua.close()


async def test_untrusted_source_gets_403_before_any_digest_work(ca, caplog):
    """Refused before any digest work, said once per source while its connections are
    refused (it was said again on every connection), its end at INFO."""
    caplog.set_level(logging.INFO, logger="bridge.sip")
    ua, handler, _ = await start_ua(ca, password=PASSWORD)
    ua.policy = PeerPolicy((ipaddress.ip_network("10.0.0.0/8"),))
    assert ua.digest is not None
    checked: list[str] = []
    verify = ua.digest.verify
    ua.digest.verify = lambda method, auth: checked.append(method) or verify(method, auth)  # type: ignore[method-assign]
    c = await Client.open(ua, ca)
    try:
        await c.send(request("INVITE", body=SDP).to_bytes())
        resp = await c.recv()
        assert resp.status == 403 and "untrusted" in resp.reason
        await c.send(request("OPTIONS", branch="z9hG4bKo").to_bytes())
        assert (await c.recv()).status == 403
        assert checked == [] and handler.invites == []  # no digest work, no call
        assert ua.counts["untrusted"] == 2
    finally:
        await c.close()
    c = await Client.open(ua, ca)  # another connection from that source: refused, not said
    try:
        await c.send(request("OPTIONS", branch="z9hG4bKo2").to_bytes())
        assert (await c.recv()).status == 403 and ua.counts["untrusted"] == 3
    finally:
        await c.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    refused = [w for w in warnings if "BRIDGE_SIP_TRUSTED_NETWORKS" in w]
    assert len(refused) == 1 and "127.0.0.1" in refused[0]  # once a source while it lasts
    # From inside the allowed networks: the usual 407, and the refusals' end said at INFO.
    ua.policy = PeerPolicy((ipaddress.ip_network("127.0.0.0/8"),))
    c = await Client.open(ua, ca)
    try:
        await c.send(request("INVITE", body=SDP, call_id="inside").to_bytes())
        assert (await c.recv()).status == 407 and checked == ["INVITE"]
    finally:
        await c.close()
        await ua.close()
    ended = [r for r in caplog.records if "admitted again" in r.getMessage()]
    assert len(ended) == 1 and ended[0].levelno == logging.INFO, ended
    assert "2 connections refused" in ended[0].getMessage(), ended[0].getMessage()


async def _ua_verifying(ca: TestCA, name: str) -> UserAgent:
    pair = ca.issue("bridge", "localhost", "127.0.0.1")
    ua = UserAgent(
        hostname="localhost",
        number=NUMBER,
        certs=CertFiles(str(pair.cert), str(pair.key), client_ca=str(ca.path)),
        client_ctx=client_context(str(ca.path)),
        digest=DigestServer("wa.meta.vc", NUMBER, PASSWORD),
        handler=Handler(),
        policy=PeerPolicy(client_name=name),
    )
    await ua.start("127.0.0.1", 0)
    return ua


async def _open_with_cert(ua: UserAgent, ca: TestCA, cert=None) -> Client:
    ctx = ssl.create_default_context(cafile=str(ca.path))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", ua.port, ssl=ctx, server_hostname="localhost"
    )
    return Client(Connection(reader, writer, inbound=False))


async def test_client_certificate_name_is_checked_when_asked(ca, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    ua = await _ua_verifying(ca, META_NAME)
    try:
        # Meta's certificate, from a CA we trust: on to the digest round.
        c = await _open_with_cert(ua, ca, ca.issue("meta-client", META_NAME))
        await c.send(request("INVITE", body=SDP).to_bytes())
        assert (await c.recv()).status == 407
        await c.close()
        # Another name: 403, and the WARNING names what it carried.
        c = await _open_with_cert(ua, ca, ca.issue("other", "sip.example.org"))
        await c.send(request("INVITE", body=SDP, call_id="other").to_bytes())
        resp = await c.recv()
        assert resp.status == 403
        await c.close()
        # Meta's again: taken, and the source's refusals end (a later one is said anew).
        c = await _open_with_cert(ua, ca, ca.issue("meta-again", META_NAME))
        await c.send(request("INVITE", body=SDP, call_id="again").to_bytes())
        assert (await c.recv()).status == 407
        await c.close()
        # No certificate at all: 403 (asked for, optional at the TLS layer).
        c = await _open_with_cert(ua, ca)
        await c.send(request("INVITE", body=SDP, call_id="none").to_bytes())
        assert (await c.recv()).status == 403
        await c.close()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("names sip.example.org, not " + META_NAME in w for w in warnings), warnings
        assert any("no client certificate" in w for w in warnings), warnings
        # A certificate of Meta's name from a CA we do not trust: the handshake is refused,
        # and said so once at WARNING.
        (tmp_path / "rogue").mkdir()
        rogue = TestCA(tmp_path / "rogue")
        caplog.clear()
        failed = False
        try:
            c = await _open_with_cert(ua, ca, rogue.issue("rogue", META_NAME))
            await c.send(request("OPTIONS").to_bytes())
            await c.recv(timeout=2)  # TLS 1.3: the server's alert comes after the handshake
        except (ssl.SSLError, ConnectionError, AssertionError, TimeoutError):
            failed = True  # refused in the handshake, or hung up right after it
        assert failed
        await asyncio.sleep(0.2)
        refused = [r for r in caplog.records if "client certificate refused" in r.getMessage()]
        assert len(refused) == 1 and refused[0].levelno == logging.WARNING
        assert ua.counts.get("options", 0) == 0  # nothing was served on it
    finally:
        await ua.close()


def _client_hello_extensions(data: bytes) -> dict[int, bytes]:
    """The extensions of a TLS ClientHello (RFC 8446 §4.1.2) from its first record."""
    assert data[0] == 22, "not a handshake record"
    body = data[5:]
    assert body[0] == 1, "not a ClientHello"
    pos = 4 + 2 + 32  # handshake header, legacy_version, random
    pos += 1 + body[pos]  # session id
    pos += 2 + struct.unpack("!H", body[pos : pos + 2])[0]  # cipher suites
    pos += 1 + body[pos]  # compression methods
    end = pos + 2 + struct.unpack("!H", body[pos : pos + 2])[0]
    pos += 2
    out: dict[int, bytes] = {}
    while pos < end:
        kind, length = struct.unpack("!HH", body[pos : pos + 4])
        out[kind] = body[pos + 4 : pos + 4 + length]
        pos += 4 + length
    return out


async def test_our_tls_client_hello_offers_no_alpn(ca):
    """Meta's edge answers an ALPN ``sip`` offer with alert 120 and no handshake; the hello
    we send toward it carries no ALPN extension (16) at all (it does name the host, SNI 0)."""
    hello: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def capture(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(5)
        record = head + await reader.readexactly(struct.unpack("!H", head[3:5])[0])
        hello.set_result(record)
        writer.close()

    server = await asyncio.start_server(capture, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    attempt = asyncio.create_task(connect("localhost", port, client_context(str(ca.path))))
    try:
        extensions = _client_hello_extensions(await asyncio.wait_for(hello, 5))
    finally:
        try:
            await asyncio.wait_for(attempt, 5)
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError):
            pass  # the capture hangs up mid-handshake
        server.close()
        await server.wait_closed()
    assert 16 not in extensions, "ALPN offered"
    assert b"localhost" in extensions[0]  # SNI: the parse above found the real extensions


async def _handshake(ctx: ssl.SSLContext, ca: TestCA) -> None:
    """A TLS handshake with ``ctx`` to a server whose certificate ``ca`` issued."""
    pair = ca.issue("peer", "localhost")
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(pair.cert, pair.key)

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=served)
    try:
        conn = await connect("localhost", server.sockets[0].getsockname()[1], ctx)
        conn.writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_client_context_is_shared_until_its_ca_file_changes(tmp_path):
    """Apps and engines share one client context per CA file (the system's CA store is read
    once a process, not at every start); a CA file rewritten since is read again, so a
    rotated CA verifies, and a context is never shared across different files."""
    (tmp_path / "first").mkdir()
    (tmp_path / "rotated").mkdir()
    first = TestCA(tmp_path / "first")
    assert client_context(str(first.path)) is client_context(str(first.path))
    assert client_context() is client_context()
    assert client_context() is not client_context(str(first.path))
    await _handshake(client_context(str(first.path)), first)

    rotated = TestCA(tmp_path / "rotated", name="Bridge Rotated CA")
    first.path.write_bytes(rotated.path.read_bytes())  # the same path, the new CA in it
    after = client_context(str(first.path))
    await _handshake(after, rotated)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(after, first)  # the old CA is no longer trusted
    # A file that is gone is the setting's fault, said as such (one line at start).
    with pytest.raises(ConfigError, match=r"^BRIDGE_SIP_TRUNK_CA='.*missing.pem': "):
        client_context(str(tmp_path / "missing.pem"), "BRIDGE_SIP_TRUNK_CA")


async def test_our_407_can_offer_sha256_and_md5_and_takes_either_answer(ca):
    """Digest both ways: the UA's own 407 as Meta's edge sends one (RFC 8760 §2.4), each
    challenge with its own nonce and opaque, and a SHA-256 or an MD5 answer accepted."""
    ua, handler, _ = await start_ua(ca, password=PASSWORD)
    ua.digest = DigestServer("wa.meta.vc", NUMBER, PASSWORD, algorithms=("SHA-256", "MD5"))
    c = await Client.open(ua, ca)
    try:
        for n, pick in enumerate((slice(None), slice(1, 2))):  # best of both, then MD5 alone
            invite = request("INVITE", body=SDP, call_id=f"both-{n}", branch=f"z9hG4bKb{n}")
            await c.send(invite.to_bytes())
            resp = await c.recv()
            offered = resp.all("Proxy-Authenticate")
            assert resp.status == 407
            assert [parse_params(v)["algorithm"] for v in offered] == ["SHA-256", "MD5"]
            assert len({parse_params(v)["nonce"] for v in offered}) == 2
            auth = authorize(offered[pick], "INVITE", invite.uri, NUMBER, PASSWORD)
            assert parse_params(auth)["algorithm"] == ("SHA-256", "MD5")[n]
            again = request(
                "INVITE",
                body=SDP,
                call_id=f"both-{n}",
                cseq=2,
                branch=f"z9hG4bKc{n}",
                extra=(("Proxy-Authorization", auth),),
            )
            await c.send(again.to_bytes())
            assert [(await c.recv()).status for _ in range(2)] == [100, 180]
        assert len(handler.invites) == 2
    finally:
        await c.close()
        await ua.close()


async def test_the_settings_reach_the_engines_listener(sip_rig, tmp_path):
    """BRIDGE_SIP_TRUSTED_NETWORKS and BRIDGE_SIP_VERIFY_CLIENT as the engine applies them: a
    loopback INVITE refused when loopback is not listed, and Meta's certificate asked for."""
    rig = await sip_rig(sip_trusted_networks=("192.0.2.0/24",), sip_verify_client=META_NAME)
    ua = rig.engine.ua
    assert ua.transport.certs.context.verify_mode is ssl.CERT_OPTIONAL
    c = await _open_with_cert(ua, rig.ca, rig.ca.issue("meta-client", META_NAME))
    try:
        await c.send(request("INVITE", body=SDP).to_bytes())
        resp = await c.recv()
        assert resp.status == 403 and "untrusted" in resp.reason
        assert ua.counts["untrusted"] == 1 and not rig.engine.calls
    finally:
        await c.close()
