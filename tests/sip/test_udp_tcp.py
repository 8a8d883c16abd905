"""SIP over UDP and plain TCP (a trunk's transports, RFC 3261 §18) on loopback: answers with
``received``/``rport``, our INVITE retransmitted over UDP until a response (Timer A), a
retransmitted request answered again without a second call, hostile datagrams answered 400
or dropped while the socket keeps answering."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import time

import pytest

from bridge.sip import Request, UserAgent, parse
from bridge.sip import transaction as sip_transaction
from bridge.sip.headers import Uri, Via, new_branch

from .test_ua import Handler


async def trunk_ua(handler: Handler | None = None) -> UserAgent:
    ua = UserAgent(
        hostname="127.0.0.1",
        number="",
        certs=None,
        client_ctx=None,
        digest=None,
        handler=handler or Handler(),
        udp=True,
    )
    await ua.start("127.0.0.1", 0)
    return ua


def request(method: str, port: int, *, branch: str = "", body: bytes = b"") -> bytes:
    branch = branch or new_branch()
    head = (
        f"{method} sip:+15550001111@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.9:9;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:pbx@127.0.0.1>;tag=a1\r\n"
        "To: <sip:+15550001111@127.0.0.1>\r\n"
        f"Call-ID: {branch}@pbx\r\nCSeq: 1 {method}\r\nContact: <sip:pbx@127.0.0.1:9>\r\n"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr) -> None:
        self.got.put_nowait((data, time.monotonic()))


async def udp_peer() -> tuple[asyncio.DatagramTransport, Udp]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
    return transport, proto


async def test_options_over_udp_and_tcp_are_answered_with_received_and_rport() -> None:
    ua = await trunk_ua()
    try:
        transport, peer = await udp_peer()
        transport.sendto(request("OPTIONS", ua.port), ("127.0.0.1", ua.port))
        data, _ = await asyncio.wait_for(peer.got.get(), 5)
        resp = parse(data)
        via = Via.parse(resp.values("Via")[0])
        assert resp.status == 200 and via.params["received"] == "127.0.0.1"
        assert via.params["rport"] == str(transport.get_extra_info("sockname")[1])
        transport.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", ua.port)
        writer.write(request("OPTIONS", ua.port))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"SIP/2.0 200")
        writer.close()
    finally:
        await ua.close()


# Serial: Timer A's intervals are asserted to tens of milliseconds (beside three other workers
# a 100 ms interval came 183 ms after the last send).
@pytest.mark.serial
async def test_our_invite_over_udp_is_retransmitted_until_a_response(monkeypatch) -> None:
    monkeypatch.setattr(sip_transaction, "T1", 0.05)
    monkeypatch.setattr(sip_transaction, "TIMER_B", 64 * 0.05)
    ua = await trunk_ua()
    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    try:
        conn = await ua.connection_to(Uri.parse(f"sip:1001@127.0.0.1:{port};transport=udp"))
        assert conn.via_transport == "UDP" and not conn.reliable
        req = Request(method="INVITE", uri=f"sip:1001@127.0.0.1:{port}")
        req.add("Via", str(Via("UDP", ua.via_host, None, {"branch": new_branch(), "rport": ""})))
        for name, value in (
            ("From", "<sip:bridge@127.0.0.1>;tag=x"),
            ("To", "<sip:1001@127.0.0.1>"),
            ("Call-ID", "retx@bridge"),
            ("CSeq", "1 INVITE"),
            ("Max-Forwards", "70"),
        ):
            req.add(name, value)
        tx = await ua.send(req, conn)
        times = [(await asyncio.wait_for(peer.got.get(), 2))[1] for _ in range(4)]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        print("Timer A gaps (s):", [round(g, 3) for g in gaps])
        assert gaps[0] == pytest.approx(0.05, abs=0.04)
        assert gaps[1] == pytest.approx(0.10, abs=0.05)
        assert gaps[2] == pytest.approx(0.20, abs=0.07)
        first = parse((await peer.got.get())[0]) if not peer.got.empty() else req
        ringing = (
            b"SIP/2.0 180 Ringing\r\n"
            + f"Via: {req.get('Via')}\r\nFrom: {req.get('From')}\r\n"
            "To: <sip:1001@127.0.0.1>;tag=p\r\n"
            f"Call-ID: retx@bridge\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".encode()
        )
        assert first.method == "INVITE"
        transport.sendto(ringing, ("127.0.0.1", ua.port))
        assert (await tx.next(2)).status == 180
        await asyncio.sleep(0.5)
        while not peer.got.empty():  # what was in flight when the 180 came
            await peer.got.get()
        await asyncio.sleep(0.5)
        assert peer.got.empty(), "retransmitted after a provisional response"
    finally:
        transport.close()
        await ua.close()


async def test_a_retransmitted_request_is_answered_again_not_handled_twice() -> None:
    handler = Handler()
    ua = await trunk_ua(handler)
    transport, peer = await udp_peer()
    try:
        invite = request("INVITE", ua.port, branch=new_branch(), body=b"v=0\r\n")
        for _ in range(3):
            transport.sendto(invite, ("127.0.0.1", ua.port))
            await asyncio.sleep(0.05)
        statuses = []
        while not peer.got.empty():
            statuses.append(parse((await peer.got.get())[0]).status)
        assert len(handler.invites) == 1, statuses
        assert statuses.count(100) >= 1 and 180 in statuses
        bye = request("BYE", ua.port, branch=new_branch())
        transport.sendto(bye, ("127.0.0.1", ua.port))
        transport.sendto(bye, ("127.0.0.1", ua.port))
        a = parse((await asyncio.wait_for(peer.got.get(), 2))[0])
        b = parse((await asyncio.wait_for(peer.got.get(), 2))[0])
        assert a.status == b.status == 481
    finally:
        transport.close()
        await ua.close()


async def test_a_final_refusal_over_udp_is_sent_again_until_its_ack(monkeypatch) -> None:
    """Over UDP a non-2xx final response to an INVITE (here the 487 after a CANCEL) is sent
    again at T1, 2·T1 … until the caller's ACK (RFC 3261 §17.2.1, Timer G): the caller
    retransmits its INVITE no more once it had our 100, so a lost refusal was never sent
    again and the caller's call hung in Proceeding. The ACK stops it."""
    monkeypatch.setattr(sip_transaction, "T1", 0.05)
    handler = Handler()
    ua = await trunk_ua(handler)
    transport, peer = await udp_peer()
    try:
        branch = new_branch()
        invite = request("INVITE", ua.port, branch=branch, body=b"v=0\r\n")
        transport.sendto(invite, ("127.0.0.1", ua.port))
        ringing = None
        while ringing is None:
            resp = parse((await asyncio.wait_for(peer.got.get(), 2))[0])
            ringing = resp if resp.status == 180 else None
        transport.sendto(request("CANCEL", ua.port, branch=branch), ("127.0.0.1", ua.port))
        finals = []
        while len(finals) < 3:  # the first 487 and two more: no ACK yet
            resp = parse((await asyncio.wait_for(peer.got.get(), 2))[0])
            if resp.cseq[1] == "INVITE" and resp.status == 487:
                finals.append(resp)
        ack = request("ACK", ua.port, branch=branch).replace(
            b"To: <sip:+15550001111@127.0.0.1>", f"To: {finals[0].get('To')}".encode()
        )
        transport.sendto(ack, ("127.0.0.1", ua.port))
        await asyncio.sleep(0.3)
        while not peer.got.empty():  # what was under way as the ACK went
            await peer.got.get()
        await asyncio.sleep(0.6)
        assert peer.got.empty(), parse((await peer.got.get())[0])
        assert not ua.pending
    finally:
        transport.close()
        await ua.close()


async def test_an_invite_whose_handler_fails_gets_a_500_not_silence(caplog) -> None:
    """A fault of ours while an INVITE is handled (past its 100 Trying) ends it with 500
    (§21.5.1), said at ERROR: it got no final response, its caller waited on, and the user
    agent kept it among its pending INVITEs for good (1 024 of them refuse every INVITE)."""

    class Failing(Handler):
        async def invite(self, tx) -> None:
            raise RuntimeError("a bug")

    ua = await trunk_ua(Failing())
    transport, peer = await udp_peer()
    try:
        invite = request("INVITE", ua.port, branch=new_branch(), body=b"v=0\r\n")
        transport.sendto(invite, ("127.0.0.1", ua.port))
        statuses = []
        while not statuses or statuses[-1] < 200:
            statuses.append(parse((await asyncio.wait_for(peer.got.get(), 2))[0]).status)
        assert statuses[-1] == 500 and not ua.pending
        assert "a bug" in caplog.text
    finally:
        transport.close()
        await ua.close()


async def test_hostile_datagrams_cost_nothing_and_the_socket_keeps_answering(caplog) -> None:
    ua = await trunk_ua()
    rng = random.Random(48)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    base = request("INVITE", ua.port, body=b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n")
    try:
        for i in range(3000):
            data = bytearray(base)
            for _ in range(rng.randint(1, 12)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            if i % 7 == 0:
                data = data[: rng.randrange(len(data))]
            sock.sendto(bytes(data), ("127.0.0.1", ua.port))
            if i % 50 == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0.5)
        transport, peer = await udp_peer()
        transport.sendto(request("OPTIONS", ua.port), ("127.0.0.1", ua.port))
        data, _ = await asyncio.wait_for(peer.got.get(), 5)
        assert parse(data).status == 200
        transport.close()
        print("bad:", ua.counts.get("bad", 0), "dropped:", ua.datagrams.dropped)
        crashes = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
        assert not crashes, crashes[:3]
    finally:
        sock.close()
        await ua.close()


async def test_a_second_worker_finds_the_trunk_listener_taken_and_uses_its_own_port(
    tmp_path, caplog
) -> None:
    from bridge.numbers.catalog import Catalog
    from bridge.numbers.store import LocalStore, Sealing
    from bridge.trunks import TrunkService

    from ..conftest import settings_for_tests

    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    settings = settings_for_tests(sip_trunk_listen=f"127.0.0.1:{port}", data_dir=str(tmp_path))
    catalog = Catalog(LocalStore(str(tmp_path), Sealing("k" * 32)), None)
    service = TrunkService(settings, catalog)
    try:
        await service.start()
        assert service.port not in (0, port)
        assert "is taken" in caplog.text
    finally:
        await service.close()
        taken.close()
