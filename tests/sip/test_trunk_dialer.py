"""Our INVITE toward a trunk over UDP (``trunks/dialer.py`` on ``sip/outbound_invite.py``),
against a PBX played by a bare UDP socket: a 2xx the PBX sends again (our ACK lost) is ACKed
again (RFC 3261 §13.2.2.4), and a phone that rings on past Timer B is CANCELled when the
ring limit passes, not dropped with the phone still ringing (§17.1.1.2, §9.1)."""

from __future__ import annotations

import asyncio

import pytest

from bridge.api.keys import MANAGER, TRUNKS
from bridge.media import Role
from bridge.sip import Request, parse
from bridge.sip import outbound_invite as sip_outbound
from bridge.sip import transaction as sip_transaction
from bridge.trunks.dialer import Dialer

from ..support.calls import wait_state
from ..support.waits import until
from .test_udp_tcp import trunk_ua, udp_peer

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
SDP_AUDIO = SDP + b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"


def response(req: Request, status: int, reason: str, body: bytes = b"") -> bytes:
    head = f"SIP/2.0 {status} {reason}\r\n"
    for name in ("Via", "From"):
        head += "".join(f"{name}: {v}\r\n" for v in req.all(name))
    head += f"To: {req.get('To')};tag=pbx1\r\nCall-ID: {req.call_id}\r\n"
    head += f"CSeq: {req.get('CSeq')}\r\nContact: <sip:1001@127.0.0.1:9>\r\n"
    if body:
        head += "Content-Type: application/sdp\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def dialer_to(ua, port: int, **options: float) -> Dialer:
    """Our INVITE toward the bare UDP PBX on ``port`` (no credentials)."""
    return Dialer(
        ua,
        proxy=f"sip:127.0.0.1:{port};transport=udp",
        target=f"sip:1001@127.0.0.1:{port}",
        from_uri="sip:+15550001111@127.0.0.1",
        sdp=SDP,
        username="",
        password="",
        **options,
    )


async def next_request(peer, method: str, timeout: float = 3.0) -> Request:
    while True:
        msg = parse((await asyncio.wait_for(peer.got.get(), timeout))[0])
        if isinstance(msg, Request) and msg.method == method:
            return msg


async def test_a_2xx_sent_again_is_acked_again() -> None:
    """The PBX did not hear our ACK (a UDP hop lost it) and sends its 200 again: each one is
    ACKed again, else it gives up on the call after 64·T1 with a BYE (§13.3.1.4)."""
    ua = await trunk_ua()
    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    dialer = dialer_to(ua, port)
    run = asyncio.create_task(dialer.run(lambda _resp: None))
    try:
        invite = await next_request(peer, "INVITE")
        ok = response(invite, 200, "OK", SDP)
        transport.sendto(ok, ("127.0.0.1", ua.port))
        assert (await asyncio.wait_for(run, 3)).status == 200
        first = await next_request(peer, "ACK")
        for _ in range(2):  # the 200 again, as its Timer G fires: the same ACK each time
            transport.sendto(ok, ("127.0.0.1", ua.port))
            again = await next_request(peer, "ACK", 2.0)
            assert again.get("CSeq") == first.get("CSeq") == "1 ACK"
            assert again.get("To") == first.get("To")
    finally:
        run.cancel()
        transport.close()
        await ua.close()


@pytest.mark.parametrize("provisional", [(180, "Ringing"), (100, "Trying")])
async def test_a_phone_ringing_past_the_ring_limit_is_cancelled(monkeypatch, provisional) -> None:
    """A phone that rings (a PBX sends its 180 once and nothing more until the answer) is not
    given up at Timer B with a made-up 408 while it still rings: once the ring limit passes
    our CANCEL goes (§9.1), and the leg ends on the PBX's 487. No ACK goes for a response the
    PBX never sent."""
    monkeypatch.setattr(sip_transaction, "T1", 0.02)
    monkeypatch.setattr(sip_outbound, "TIMER_B", 64 * 0.02)
    ua = await trunk_ua()
    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    dialer = dialer_to(ua, port, ring_limit=2.0)
    progress: list[int] = []
    run = asyncio.create_task(dialer.run(lambda resp: progress.append(resp.status)))
    try:
        invite = await next_request(peer, "INVITE")
        transport.sendto(response(invite, *provisional), ("127.0.0.1", ua.port))
        # Past Timer B (1.28 s here), still ringing: no CANCEL, no ACK, the INVITE in hand.
        await asyncio.sleep(1.6)
        heard = []
        while not peer.got.empty():
            heard.append(parse((await peer.got.get())[0]))
        assert not [m for m in heard if isinstance(m, Request) and m.method != "INVITE"]
        assert not run.done()
        cancel = await next_request(peer, "CANCEL", 3.0)
        assert cancel.get("Via") == invite.get("Via") and cancel.get("CSeq") == "1 CANCEL"
        transport.sendto(response(cancel, 200, "OK"), ("127.0.0.1", ua.port))
        transport.sendto(response(invite, 487, "Request Terminated"), ("127.0.0.1", ua.port))
        final = await asyncio.wait_for(run, 3)
        assert final.status == 487
        ack = await next_request(peer, "ACK")
        assert ack.get("CSeq") == "1 ACK"
    finally:
        run.cancel()
        transport.close()
        await ua.close()


async def test_a_participant_gone_before_its_invite_went_rings_nobody(bridge) -> None:
    """A SIP participant taken off the call (or its call ended) before its leg's INVITE went
    out: the phone is not rung for a leg that is gone, and the RTP socket opened for it is
    closed, not left bound."""
    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    try:
        trunk = {"name": "pbx", "uri": f"sip:127.0.0.1:{port};transport=udp", "keepalive": 0}
        assert (await bridge.post("/trunks", json=trunk)).status == 201
        made = await (await bridge.post("/call/make", json={"phone": "5521999999999"})).json()
        await wait_state(bridge, made["callID"], "active")
        sip = {"uri": f"sip:1001@127.0.0.1:{port}"}
        leg = await bridge.app[TRUNKS].add_participant(made["callID"], "desk", Role.AGENT, sip)
        await leg.remove()  # before its task has run
        await asyncio.sleep(0.5)
        assert peer.got.empty(), parse((await peer.got.get())[0])
        opened = leg._opened
        sock = None if opened is None else opened.socket.transport
        assert sock is None or sock.is_closing()
    finally:
        transport.close()


async def test_an_invite_cancelled_before_it_went_is_not_sent() -> None:
    """``cancel()`` while the next hop is being reached (a TCP or TLS trunk's connect): the
    INVITE is not sent afterwards, and the outcome is a 487."""
    ua = await trunk_ua()
    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    dialer = dialer_to(ua, port)
    run = asyncio.create_task(dialer.run(lambda _resp: None))
    try:
        await dialer.cancel()  # before run() reached the INVITE
        assert (await asyncio.wait_for(run, 3)).status == 487
        await asyncio.sleep(0.3)
        assert peer.got.empty(), parse((await peer.got.get())[0])
    finally:
        run.cancel()
        transport.close()
        await ua.close()


async def test_a_pbx_call_that_ends_as_it_is_answered_is_refused_not_answered(bridge) -> None:
    """The WhatsApp call a PBX placed ends while its answer to the PBX is being made (the
    user answered and hung up at once): the PBX's INVITE gets a final refusal, not a 200 for
    a call that is gone (which left a dialog nobody would end, and its RTP socket bound)."""
    from bridge.numbers.trunks import Trunk
    from bridge.sip import InviteServer
    from bridge.trunks import sdp as trunk_sdp
    from bridge.trunks.participant import SipParticipant

    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    try:
        made = await (await bridge.post("/call/make", json={"phone": "5521999999999"})).json()
        await wait_state(bridge, made["callID"], "active")
        service = bridge.app[TRUNKS]
        runtime = bridge.app[MANAGER].find_runtime(made["callID"])
        invite = parse(
            (
                f"INVITE sip:+5521999999999@127.0.0.1:{service.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKgone;rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:1001@127.0.0.1>;tag=p1\r\n"
                "To: <sip:+5521999999999@127.0.0.1>\r\nCall-ID: gone@pbx\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:1001@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\n"
                f"Content-Length: {len(SDP_AUDIO)}\r\n\r\n"
            ).encode()
            + SDP_AUDIO
        )
        flow = service.ua.datagrams.flow(("127.0.0.1", port))
        tx = InviteServer(service.ua, invite, flow)
        trunk = Trunk("trk_x", "pbx", f"sip:127.0.0.1:{port};transport=udp")
        leg = SipParticipant(service.line, runtime, trunk, "pbx", Role.AGENT, "sip:1001@x", [])
        runtime.attach(leg)
        service.line.active.add(leg)
        await leg.close()  # the call ended: its attachments closed
        remote = trunk_sdp.read(SDP_AUDIO, trunk.codecs, srtp=False)
        assert not await leg.accept(tx, remote)
        resp = parse((await asyncio.wait_for(peer.got.get(), 2))[0])
        assert 400 <= resp.status < 700, resp.status
        assert tx.dialog.key not in service.ua.dialogs and not service.line.legs
        sock = None if leg._opened is None else leg._opened.socket.transport
        assert sock is None or sock.is_closing()
    finally:
        transport.close()


async def test_a_pbx_call_gone_before_its_answer_began_is_refused(bridge) -> None:
    """The same, a step earlier: the call ended (its runtime gone) before the answer to the
    PBX began. The INVITE was left with no final response at all: the PBX waited on, and the
    user agent kept it among its pending INVITEs for good."""
    from bridge.numbers.trunks import Trunk
    from bridge.sip import InviteServer
    from bridge.trunks import sdp as trunk_sdp
    from bridge.trunks.inbound import PbxCall

    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    try:
        made = await (await bridge.post("/call/make", json={"phone": "5521999999999"})).json()
        await wait_state(bridge, made["callID"], "active")
        manager = bridge.app[MANAGER]
        call = manager.get(made["callID"])
        service = bridge.app[TRUNKS]
        invite = parse(
            (
                f"INVITE sip:+5521999999999@127.0.0.1:{service.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKgone2;rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:1001@127.0.0.1>;tag=p2\r\n"
                "To: <sip:+5521999999999@127.0.0.1>\r\nCall-ID: gone2@pbx\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:1001@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\n"
                f"Content-Length: {len(SDP_AUDIO)}\r\n\r\n"
            ).encode()
            + SDP_AUDIO
        )
        tx = InviteServer(service.ua, invite, service.ua.datagrams.flow(("127.0.0.1", port)))
        service.ua.pending[tx.key] = tx
        trunk = Trunk("trk_x", "pbx", f"sip:127.0.0.1:{port};transport=udp")
        placed = PbxCall(service, tx, trunk)
        placed.remote = trunk_sdp.read(SDP_AUDIO, trunk.codecs, srtp=False)
        await manager.hangup(call.id)
        await wait_state(bridge, call.id, "ended")
        await placed._answer(call)
        resp = parse((await asyncio.wait_for(peer.got.get(), 2))[0])
        assert 400 <= resp.status < 700, resp.status
        assert tx.key not in service.ua.pending
    finally:
        transport.close()


async def test_ringing_legs_count_against_the_workers_sip_legs(bridge, monkeypatch) -> None:
    """The bound on a worker's SIP legs counts the ones still ringing (each holds an RTP
    socket and a task): it counted joined legs only, so phones that never answer (or a PBX
    that never answers) could be rung without bound. Past it: 503 with Retry-After."""
    from bridge.trunks import service as trunk_service

    monkeypatch.setattr(trunk_service, "MAX_LEGS", 2)
    transport, _peer = await udp_peer()  # a PBX that never answers
    port = transport.get_extra_info("sockname")[1]
    try:
        trunk = {"name": "pbx", "uri": f"sip:127.0.0.1:{port};transport=udp", "keepalive": 0}
        assert (await bridge.post("/trunks", json=trunk)).status == 201
        made = await (await bridge.post("/call/make", json={"phone": "5521999999999"})).json()
        await wait_state(bridge, made["callID"], "active")
        statuses = []
        for n in range(3):
            body = {
                "callID": made["callID"],
                "participantID": f"desk-{n}",
                "role": "listen",
                "sip": {"uri": f"sip:100{n}@127.0.0.1"},
            }
            resp = await bridge.post("/call/participants", json=body)
            statuses.append(resp.status)
            if resp.status == 503:
                assert resp.headers.get("Retry-After")
                assert (await resp.json())["error"]["code"] == "at_capacity"
        assert statuses == [202, 202, 503]
    finally:
        transport.close()


async def test_the_service_hangs_its_legs_up_together_at_close(bridge) -> None:
    """At shutdown every SIP leg is hung up at once: a PBX that no longer answers (the reason
    many shut down) made each BYE wait out its 4 s in turn, N legs 4·N s (256: 17 minutes).
    Here the PBX answers no BYE, and both legs' BYEs are on the wire before the first has
    been waited out."""
    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    byes: set[str] = set()

    async def pbx() -> None:  # answers every INVITE, never a BYE
        while True:
            msg = parse((await peer.got.get())[0])
            if isinstance(msg, Request) and msg.method == "INVITE":
                where = ("127.0.0.1", bridge.app[TRUNKS].port)
                transport.sendto(response(msg, 200, "OK", SDP_AUDIO), where)
            elif isinstance(msg, Request) and msg.method == "BYE":
                byes.add(msg.call_id)

    answering = asyncio.create_task(pbx())
    try:
        trunk = {"name": "pbx", "uri": f"sip:127.0.0.1:{port};transport=udp", "keepalive": 0}
        assert (await bridge.post("/trunks", json=trunk)).status == 201
        made = await (await bridge.post("/call/make", json={"phone": "5521999999999"})).json()
        await wait_state(bridge, made["callID"], "active")
        for n in range(2):
            body = {
                "callID": made["callID"],
                "participantID": f"desk-{n}",
                "role": "listen",
                "sip": {"uri": f"sip:100{n}@127.0.0.1"},
            }
            assert (await bridge.post("/call/participants", json=body)).status == 202
        service = bridge.app[TRUNKS]
        await until(lambda: len(service.legs) == 2, 5, "both legs joined")
        closing = asyncio.create_task(service.close())
        await until(lambda: len(byes) == 2, 3, "both BYEs sent")
        await closing
    finally:
        answering.cancel()
        transport.close()


async def test_a_leg_whose_closing_caller_is_cancelled_still_leaves_the_call(bridge) -> None:
    """A SIP leg's close is cancelled while its BYE waits for the PBX's answer (its caller
    went away): the close runs on, and once the BYE is answered the leg leaves the call, its
    RTP socket closed. It stayed in the conference, its socket bound, until something closed
    it again (``tasks.CloseOnce``)."""
    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    bye_seen, answer_bye = asyncio.Event(), asyncio.Event()
    service = bridge.app[TRUNKS]

    async def pbx() -> None:  # answers every INVITE; a BYE once the test lets it
        while True:
            msg = parse((await peer.got.get())[0])
            where = ("127.0.0.1", service.port)
            if isinstance(msg, Request) and msg.method == "INVITE":
                transport.sendto(response(msg, 200, "OK", SDP_AUDIO), where)
            elif isinstance(msg, Request) and msg.method == "BYE":
                bye_seen.set()
                await answer_bye.wait()
                transport.sendto(response(msg, 200, "OK"), where)

    answering = asyncio.create_task(pbx())
    try:
        trunk = {"name": "pbx", "uri": f"sip:127.0.0.1:{port};transport=udp", "keepalive": 0}
        assert (await bridge.post("/trunks", json=trunk)).status == 201
        made = await (await bridge.post("/call/make", json={"phone": "5521999999999"})).json()
        await wait_state(bridge, made["callID"], "active")
        body = {
            "callID": made["callID"],
            "participantID": "desk",
            "role": "listen",
            "sip": {"uri": "sip:1001@127.0.0.1"},
        }
        assert (await bridge.post("/call/participants", json=body)).status == 202
        await until(lambda: len(service.legs) == 1, 5, "the leg joined")
        (leg,) = service.legs.values()
        runtime = bridge.app[MANAGER].find_runtime(made["callID"])
        assert "desk" in runtime.bus.conference.participants
        closing = asyncio.create_task(leg.close())
        await asyncio.wait_for(bye_seen.wait(), 3)  # the close waits for the BYE's answer …
        closing.cancel()  # … when its caller goes
        with pytest.raises(asyncio.CancelledError):
            await closing
        answer_bye.set()
        await until(lambda: leg.state == "left", 3, "the leg leaving the call")
        assert "desk" not in runtime.bus.conference.participants
        assert leg._opened is not None and leg._opened.socket.transport.is_closing()
    finally:
        answering.cancel()
        transport.close()


async def test_a_refusal_sent_again_is_acked_again() -> None:
    """The PBX did not hear our ACK of its 486 (a UDP hop lost it) and sends the 486 again,
    as its Timer G fires: each one is ACKed again while our transaction is Completed
    (RFC 3261 §17.1.1.2, Timer D: 32 s over UDP), else the PBX sends it on to Timer H and
    logs a transaction that never completed."""
    ua = await trunk_ua()
    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    dialer = dialer_to(ua, port)
    run = asyncio.create_task(dialer.run(lambda _resp: None))
    try:
        invite = await next_request(peer, "INVITE")
        busy = response(invite, 486, "Busy Here")
        transport.sendto(busy, ("127.0.0.1", ua.port))
        assert (await asyncio.wait_for(run, 3)).status == 486
        first = await next_request(peer, "ACK")
        for _ in range(2):
            transport.sendto(busy, ("127.0.0.1", ua.port))
            again = await next_request(peer, "ACK", 2.0)
            assert again.get("Via") == first.get("Via") == invite.get("Via")  # its branch
            assert again.get("CSeq") == "1 ACK" and again.get("To") == first.get("To")
    finally:
        run.cancel()
        transport.close()
        await ua.close()


async def test_a_second_phones_200_of_a_forked_invite_is_acked_and_hung_up() -> None:
    """A proxy in front (Kamailio's ``lookup`` with two registrations of the extension) forks
    our INVITE and both phones answer: the second 200, of another dialog (its own To tag), is
    ACKed in that dialog and then hung up with a BYE (RFC 3261 §13.2.2.4). It was ACKed with
    the first dialog's tag, which that phone does not match: it sent its 200 for 32 s,
    answered and silent."""
    ua = await trunk_ua()
    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    dialer = dialer_to(ua, port)
    run = asyncio.create_task(dialer.run(lambda _resp: None))
    try:
        invite = await next_request(peer, "INVITE")
        first = response(invite, 200, "OK", SDP)
        transport.sendto(first, ("127.0.0.1", ua.port))
        assert (await asyncio.wait_for(run, 3)).status == 200
        assert (await next_request(peer, "ACK")).get("To").endswith(";tag=pbx1")
        second = first.replace(b";tag=pbx1", b";tag=pbx2")
        transport.sendto(second, ("127.0.0.1", ua.port))
        ack = await next_request(peer, "ACK", 2.0)
        assert ack.get("To").endswith(";tag=pbx2") and ack.get("CSeq") == "1 ACK"
        bye = await next_request(peer, "BYE", 2.0)
        assert bye.get("To").endswith(";tag=pbx2") and bye.call_id == invite.call_id
        assert dialer.dialog is not None and dialer.dialog.remote_tag == "pbx1"  # the call's
    finally:
        run.cancel()
        transport.close()
        await ua.close()
