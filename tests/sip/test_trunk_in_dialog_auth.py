"""A request the bridge sends in a trunk leg's dialog (here its BYE) that the PBX challenges
(``401`` or ``407``): sent again once with the trunk's credentials (RFC 3261 §22.2), CSeq one
up; a second challenge of the same request ends it, said once at WARNING. The PBX is a bare
UDP socket checking the digest with the bridge's own digest server."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.api.keys import TRUNKS
from bridge.media import Role
from bridge.sip import DigestServer, Request, Verdict, parse
from bridge.sip.digest import CHALLENGES

from ..support.calls import wait_state
from ..support.waits import until
from .test_trunk_dialer import SDP_AUDIO, response
from .test_udp_tcp import udp_peer


def challenge(req: Request, status: int, server: DigestServer) -> bytes:
    header = CHALLENGES[status][0]
    reason = "Unauthorized" if status == 401 else "Proxy Authentication Required"
    head, _, rest = response(req, status, reason).partition(b"\r\n")
    extra = "".join(f"{header}: {value}\r\n" for value in server.challenges())
    return head + b"\r\n" + extra.encode() + rest


async def hang_up_challenged(bridge, status: int, *, refuse: bool) -> list[Request]:
    """A SIP participant joined through a trunk with credentials, then hung up: the PBX
    challenges its BYE (each one when ``refuse``) and accepts a right answer. The BYEs it
    got."""
    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    server = DigestServer("pbx", "bridge", "s3cret", algorithms=("SHA-256", "MD5"))
    byes: list[Request] = []

    async def pbx() -> None:
        where = ("127.0.0.1", bridge.app[TRUNKS].port)
        while True:
            msg = parse((await peer.got.get())[0])
            if not isinstance(msg, Request):
                continue
            if msg.method == "INVITE":
                transport.sendto(response(msg, 200, "OK", SDP_AUDIO), where)
            elif msg.method == "BYE":
                byes.append(msg)
                answered = server.verify("BYE", msg.all(CHALLENGES[status][1]))
                if refuse or answered is not Verdict.OK:
                    transport.sendto(challenge(msg, status, server), where)
                else:
                    transport.sendto(response(msg, 200, "OK"), where)

    answering = asyncio.create_task(pbx())
    try:
        trunk = {
            "name": "pbx",
            "uri": f"sip:127.0.0.1:{port};transport=udp",
            "username": "bridge",
            "password": "s3cret",
            "keepalive": 0,
        }
        assert (await bridge.post("/trunks", json=trunk)).status == 201
        made = await (await bridge.post("/call/make", json={"phone": "5521999999999"})).json()
        await wait_state(bridge, made["callID"], "active")
        service = bridge.app[TRUNKS]
        sip = {"uri": f"sip:1001@127.0.0.1:{port}"}
        leg = await service.add_participant(made["callID"], "desk", Role.AGENT, sip)
        await until(lambda: leg.state == "joined", 5, "the leg joined")
        await leg.remove()  # its BYE, followed to its final response
        return byes
    finally:
        answering.cancel()
        transport.close()


@pytest.mark.parametrize("status", [401, 407])
async def test_a_challenged_bye_is_sent_again_with_the_trunks_credentials(
    bridge, caplog, status
) -> None:
    """The BYE was given up at the PBX's challenge: the PBX kept the call up (its phone
    too) while the bridge took it as ended."""
    caplog.set_level(logging.INFO, logger="bridge")
    byes = await hang_up_challenged(bridge, status, refuse=False)
    assert len(byes) == 2, [b.get("CSeq") for b in byes]
    first, again = byes
    assert again.cseq == (first.cseq[0] + 1, "BYE")
    assert again.call_id == first.call_id and again.get("To") == first.get("To")
    assert again.get("From") == first.get("From") and again.uri == first.uri
    assert not first.all(CHALLENGES[status][1]) and again.all(CHALLENGES[status][1])
    assert "algorithm=SHA-256" in again.get(CHALLENGES[status][1])  # the best, RFC 8760
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_a_bye_challenged_again_is_a_failure_said_once(bridge, caplog) -> None:
    """A PBX that challenges our answer too (wrong credentials): the BYE is not sent a third
    time, and the failure is one WARNING saying why."""
    caplog.set_level(logging.INFO, logger="bridge")
    byes = await hang_up_challenged(bridge, 407, refuse=True)
    assert len(byes) == 2
    said = [r for r in caplog.records if "challenged" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text
    assert "BYE" in said[0].getMessage() and "credentials refused" in said[0].getMessage()
