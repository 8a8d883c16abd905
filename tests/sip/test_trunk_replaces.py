"""An INVITE from a trunk carrying ``Replaces`` (RFC 3891): the bridge supports the header (it
sends it in attended transfers), so it honours it with or without ``Require: replaces`` (§3):
the phone takes the named leg over — the WhatsApp user then heard by it, the old leg hung up —
and a Replaces it cannot follow gets the §3 refusal (400, 481, 486, 603), never a new WhatsApp
call to the Request-URI's user, which is what the header, ignored, made of it. The PBX is a
bare UDP socket on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from bridge.api.keys import ENGINE, TRUNKS
from bridge.audio.g711 import ulaw_decode
from bridge.media import Role
from bridge.sip import Address, Request, Response, parse

from ..support.calls import listed_calls, wait_state
from ..support.spectrum import dominant_frequency
from ..support.waits import until
from .test_trunk_refusals import samples
from .test_udp_tcp import udp_peer

CALLEE = "+5521999999999"
TONE = 440  # the sim WhatsApp user's (the bridge fixture's)


def sdp(port: int) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


@dataclass
class Pbx:
    """The PBX: a UDP socket that answers BYE and CANCEL with 200 and keeps the rest."""

    transport: Any
    port: int
    bridge_port: int
    call_id: str = ""
    """The live WhatsApp call's."""
    requests: asyncio.Queue[Request] = field(default_factory=asyncio.Queue)
    responses: asyncio.Queue[Response] = field(default_factory=asyncio.Queue)

    def send(self, data: bytes) -> None:
        self.transport.sendto(data, ("127.0.0.1", self.bridge_port))

    def answer(self, req: Request, status: int, reason: str, tag: str, body: bytes = b"") -> None:
        """A response with our ``tag`` and our socket as Contact."""
        to = req.get("To") if ";tag=" in req.get("To") else f"{req.get('To')};tag={tag}"
        head = f"SIP/2.0 {status} {reason}\r\n"
        head += "".join(f"Via: {v}\r\n" for v in req.all("Via"))
        head += f"From: {req.get('From')}\r\nTo: {to}\r\nCall-ID: {req.call_id}\r\n"
        head += f"CSeq: {req.get('CSeq')}\r\nContact: <sip:1001@127.0.0.1:{self.port}>\r\n"
        if body:
            head += "Content-Type: application/sdp\r\n"
        self.send((head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)

    async def request(self, method: str) -> Request:
        while True:
            req = await asyncio.wait_for(self.requests.get(), 5)
            if req.method == method:
                return req

    async def final(self, call_id: str) -> Response:
        while True:
            resp = await asyncio.wait_for(self.responses.get(), 5)
            if resp.call_id == call_id and resp.status >= 200:
                return resp

    def invite(self, call_id: str, replaces: list[str], extra: str = "", rtp: int = 9) -> None:
        """The phone's INVITE, to a WhatsApp user's number, with ``Replaces`` values."""
        body = sdp(rtp)
        head = (
            f"INVITE sip:{CALLEE}@127.0.0.1:{self.bridge_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{call_id};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:1002@127.0.0.1>;tag=p2\r\nTo: <sip:{CALLEE}@x>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:1002@127.0.0.1:{self.port}>\r\n"
        )
        head += "".join(f"Replaces: {value}\r\n" for value in replaces) + extra
        head += f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
        self.send(head.encode() + body)

    def ack(self, resp: Response) -> None:
        self.send(
            (
                f"ACK sip:{CALLEE}@127.0.0.1:{self.bridge_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKack{resp.call_id};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: {resp.get('From')}\r\nTo: {resp.get('To')}\r\n"
                f"Call-ID: {resp.call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )


async def pbx_for(bridge, peer: Any, transport: Any) -> tuple[Pbx, asyncio.Task[None]]:
    pbx = Pbx(transport, transport.get_extra_info("sockname")[1], bridge.app[TRUNKS].port)

    async def pump() -> None:
        while True:
            msg = parse((await peer.got.get())[0])
            if isinstance(msg, Response):
                await pbx.responses.put(msg)
            elif msg.method in ("BYE", "CANCEL"):
                pbx.answer(msg, 200, "OK", "pbx1")
                await pbx.requests.put(msg)
            elif msg.method != "ACK":
                await pbx.requests.put(msg)

    return pbx, asyncio.create_task(pump())


@pytest.fixture
async def pbx(bridge):
    """The PBX, its trunk on the bridge (it takes the PBX's INVITEs by address), and a live
    WhatsApp call."""
    transport, peer = await udp_peer()
    made, task = await pbx_for(bridge, peer, transport)
    trunk = {
        "name": "pbx",
        "uri": f"sip:127.0.0.1:{made.port};transport=udp",
        "keepalive": 0,
        "inbound": {"allowFrom": ["127.0.0.1/32"]},
    }
    assert (await bridge.post("/trunks", json=trunk)).status == 201
    call = await (await bridge.post("/call/make", json={"phone": CALLEE[1:]})).json()
    await wait_state(bridge, call["callID"], "active")
    made.call_id = call["callID"]
    yield made
    # The call ended while the PBX still answers: its legs' BYEs are not waited out.
    await bridge.post("/call/hangup", json={"callID": call["callID"]})
    await until(lambda: not bridge.app[TRUNKS].active, 5, "the legs hung up")
    task.cancel()
    transport.close()


async def ring_desk(bridge, pbx: Pbx) -> tuple[Any, Request]:
    """A SIP participant (the call's agent) rung through the trunk: the leg and our INVITE."""
    sip = {"uri": f"sip:1001@127.0.0.1:{pbx.port}"}
    leg = await bridge.app[TRUNKS].add_participant(pbx.call_id, "desk", Role.AGENT, sip)
    return leg, await pbx.request("INVITE")


async def joined_desk(bridge, pbx: Pbx) -> tuple[Any, str]:
    """The desk phone answered: the leg, and the Replaces value naming its dialog."""
    leg, invite = await ring_desk(bridge, pbx)
    pbx.answer(invite, 200, "OK", "pbx1", sdp(9))
    await until(lambda: leg.state == "joined", 5, "the desk leg joined")
    ours = Address.parse(invite.get("From")).tag
    return leg, f"{invite.call_id};to-tag={ours};from-tag=pbx1"


async def heard(sock: Any, seconds: float = 0.6) -> np.ndarray:
    """What arrives as PCMU RTP on ``sock`` over ``seconds`` of audio."""
    loop = asyncio.get_running_loop()
    payload = b""
    while len(payload) < 8000 * seconds:
        packet = await asyncio.wait_for(loop.sock_recv(sock, 2048), 3)
        payload += packet[12:]
    return np.asarray(ulaw_decode(payload))


@pytest.mark.parametrize("extra", ["", "Require: replaces\r\n", "Supported: replaces\r\n"])
async def test_an_invite_with_replaces_takes_the_leg_over(bridge, pbx, extra) -> None:
    """The desk phone's leg is taken over by the phone whose INVITE names its dialog: 200 with
    our SDP, the old leg's BYE, ``participant.transferred``, the phone hears the WhatsApp
    user's tone, and no second WhatsApp call (the header was ignored, and the INVITE called
    its Request-URI's user anew; with ``Require: replaces`` it was a 420)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        rtp.bind(("127.0.0.1", 0))
        rtp.setblocking(False)
        old, replaces = await joined_desk(bridge, pbx)
        pbx.invite("take-1", [replaces], extra, rtp=rtp.getsockname()[1])
        ok = await pbx.final("take-1")
        assert ok.status == 200, (ok.status, ok.reason)
        assert b"m=audio" in ok.body
        pbx.ack(ok)
        bye = await pbx.request("BYE")
        assert bye.call_id == replaces.split(";")[0]
        moved = await until(  # once the old leg's close is over (its BYE answered)
            lambda: [e for e in bridge.events if e.type == "participant.transferred"],
            3,
            "participant.transferred",
        )
        assert moved[0].data["sip"]["uri"] == "sip:1002@127.0.0.1"
        assert len(await listed_calls(bridge)) == 1
        service = bridge.app[TRUNKS]
        new = service.legs[("take-1", Address.parse(ok.get("To")).tag)]
        assert new is not old and new.state == "joined" and new.role is Role.AGENT
        assert old.state == "left"
        samples = await heard(rtp)
        assert dominant_frequency(samples, 8000) == pytest.approx(TONE, abs=5)


async def test_a_leg_still_ringing_is_picked_up_and_cancelled(bridge, pbx) -> None:
    """An early dialog of ours (our INVITE ringing, the phone's tag from its 180): the INVITE
    naming it is answered and our ringing INVITE CANCELled (§3)."""
    leg, invite = await ring_desk(bridge, pbx)
    pbx.answer(invite, 180, "Ringing", "ring1")
    await until(lambda: leg.state == "ringing", 5, "the desk rings")
    ours = Address.parse(invite.get("From")).tag
    pbx.invite("pick-1", [f"{invite.call_id};to-tag={ours};from-tag=ring1"])
    ok = await pbx.final("pick-1")
    assert ok.status == 200, (ok.status, ok.reason)
    pbx.ack(ok)
    cancel = await pbx.request("CANCEL")
    assert cancel.call_id == invite.call_id
    pbx.answer(invite, 487, "Request Terminated", "ring1")
    await until(  # once the old leg's close is over (its CANCEL sent)
        lambda: [e for e in bridge.events if e.type == "participant.transferred"],
        3,
        "participant.transferred",
    )
    assert len(await listed_calls(bridge)) == 1


@pytest.mark.parametrize(
    "case, status",
    [("no_dialog", 481), ("early_only", 486), ("two", 400), ("ended", 603), ("pbx_early", 481)],
)
async def test_a_replaces_that_cannot_be_followed_is_refused(bridge, pbx, case, status) -> None:
    """No such dialog, or an early one the PBX began: 481; ``early-only`` for a confirmed
    dialog: 486; two Replaces: 400; a dialog whose leg has gone: 603 (§3). The leg named, if
    any, stays, and no WhatsApp call is placed."""
    old, replaces = await joined_desk(bridge, pbx)
    values = [replaces]
    if case == "no_dialog":
        values = [replaces.replace("to-tag=", "to-tag=x")]
    elif case == "early_only":
        values = [replaces + ";early-only"]
    elif case == "two":
        values = [replaces, replaces]
    elif case == "ended":
        await old.remove()
        await pbx.request("BYE")
    elif case == "pbx_early":  # the PBX's own INVITE, still ringing the WhatsApp user
        engine = bridge.app[ENGINE]  # who rings until the test is over
        engine.settings = dataclasses.replace(engine.settings, sim_answer_delay=30.0)
        pbx.invite("placing-1", [])
        ringing = None
        while ringing is None or ringing.status != 180:
            ringing = await asyncio.wait_for(pbx.responses.get(), 5)
        values = [f"placing-1;to-tag={Address.parse(ringing.get('To')).tag};from-tag=p2"]
    calls = len(await listed_calls(bridge))
    pbx.invite("refused-1", values)
    refused = await pbx.final("refused-1")
    assert refused.status == status, (refused.status, refused.reason)
    assert len(await listed_calls(bridge)) == calls
    if case != "ended":
        assert old.state == "joined" and old.dialog is not None


def in_dialog(
    pbx: Pbx,
    invite: Request,
    method: str,
    cseq: int,
    replaces: list[str],
    body: bytes | None = None,
) -> None:
    """A request from the phone in the dialog our ``invite`` made (its tag ``pbx1``); an
    INVITE's offer ``body`` (default: PCMU on port 9)."""
    body = (sdp(9) if body is None else body) if method == "INVITE" else b""
    head = (
        f"{method} {Address.parse(invite.get('Contact')).uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{pbx.port};branch=z9hG4bK{method}{cseq};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: {invite.get('To')};tag=pbx1\r\nTo: {invite.get('From')}\r\n"
        f"Call-ID: {invite.call_id}\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: <sip:1001@127.0.0.1:{pbx.port}>\r\n"
    )
    head += "".join(f"Replaces: {value}\r\n" for value in replaces)
    if body:
        head += "Content-Type: application/sdp\r\n"
    pbx.send((head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)


async def test_replaces_outside_an_invite_or_twice_in_a_reinvite_is_a_400(bridge, pbx) -> None:
    """RFC 3891 §3: a request other than INVITE carrying ``Replaces``, and an INVITE with more
    than one, are refused ``400`` — a BYE with one in the desk phone's dialog, an OPTIONS, a
    re-INVITE with two — and the dialog they name, or are in, stays as it was. Before, the BYE
    hung the leg up (200), the OPTIONS was answered 200 and the re-INVITE taken."""
    old, invite = await ring_desk(bridge, pbx)
    pbx.answer(invite, 200, "OK", "pbx1", sdp(9))
    await until(lambda: old.state == "joined", 5, "the desk leg joined")
    replaces = f"{invite.call_id};to-tag={Address.parse(invite.get('From')).tag};from-tag=pbx1"
    in_dialog(pbx, invite, "BYE", 10, [replaces])
    in_dialog(pbx, invite, "INVITE", 11, [replaces, replaces])
    for cseq in (10, 11):
        resp = await pbx.final(invite.call_id)
        assert (resp.status, resp.cseq[0]) == (400, cseq), (resp.status, resp.reason, resp.cseq)
        assert "Replaces" in resp.reason
    pbx.send(
        (
            f"OPTIONS sip:{CALLEE}@127.0.0.1:{pbx.bridge_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{pbx.port};branch=z9hG4bKopt1;rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:1002@127.0.0.1>;tag=o1\r\n"
            f"To: <sip:{CALLEE}@x>\r\nCall-ID: options-1\r\nCSeq: 1 OPTIONS\r\n"
            f"Replaces: {replaces}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    resp = await pbx.final("options-1")
    assert resp.status == 400, (resp.status, resp.reason)
    assert old.state == "joined" and old.dialog is not None
    assert len(await listed_calls(bridge)) == 1


async def test_refusals_a_pbx_repeats_are_each_answered_and_said_once(bridge, pbx, caplog) -> None:
    """A PBX that sends again what the bridge refuses — a re-INVITE dropping the codec in use
    (the trunk's ``488``), one without an SDP offer (the user agent's ``488``), an INVITE whose
    ``Replaces`` names no dialog (``481``) — has each answered, counted, and said once at
    WARNING (a re-INVITE's per dialog, a Replaces' per trunk); the dialog's next re-INVITE
    taken says the run's end at INFO. Before, each was a WARNING line."""
    caplog.set_level(logging.INFO, logger="bridge")
    old, invite = await ring_desk(bridge, pbx)
    pbx.answer(invite, 200, "OK", "pbx1", sdp(9))
    await until(lambda: old.state == "joined", 5, "the desk leg joined")
    pcma = sdp(9).replace(b"AVP 0", b"AVP 8").replace(b"0 PCMU", b"8 PCMA")
    offers = [pcma, pcma, pcma, b"", b"", sdp(9)]
    for cseq, body in enumerate(offers, start=10):
        in_dialog(pbx, invite, "INVITE", cseq, [], body=body)
        resp = await pbx.final(invite.call_id)
        while resp.cseq[0] != cseq:  # (a refusal sent again before its ACK)
            resp = await pbx.final(invite.call_id)
        assert resp.status == (200 if body == sdp(9) else 488), (cseq, resp.status, resp.reason)
        in_dialog(pbx, invite, "ACK", cseq, [])
    wrong = f"{invite.call_id};to-tag=x{Address.parse(invite.get('From')).tag};from-tag=pbx1"
    for n in range(3):
        pbx.invite(f"replaces-{n}", [wrong])
        refused = await pbx.final(f"replaces-{n}")
        assert refused.status == 481, (refused.status, refused.reason)
        pbx.ack(refused)
    assert old.state == "joined"
    text = await (await bridge.get("/metrics")).text()
    counted = samples(text, "bridge_sip_trunk_refused_total", "what", "reason")
    assert counted[("invite", "reinvite_refused")] == 3, counted
    assert counted[("invite", "replaces_refused")] == 3, counted
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    warned = [text for level, text in said if level == "WARNING"]
    for about in ("reinvite_refused", "SDP offer", "replaces_refused"):
        assert len([line for line in warned if about in line]) == 1, (about, warned)
    assert any("taken again (3 refused reinvite_refused" in text for _, text in said), said
