"""The user agent's overload refusals over real SIP on loopback: each is counted and said once
at WARNING while it lasts, its end at INFO (an INVITE refused because too many wait for their
answer; UDP datagrams dropped because too large or too many in hand)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.sip import admission, parse
from bridge.sip.headers import new_branch

from .test_udp_tcp import request, trunk_ua, udp_peer

ADMISSION = "bridge.sip.admission"


def warnings(caplog: pytest.LogCaptureFixture, logger: str = ADMISSION) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelname == "WARNING"]


async def test_invites_over_the_pending_cap_get_503_counted_and_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two INVITEs ringing fill a cap of two: five more are refused ``503`` with
    ``Retry-After``, counted ``overloaded`` and said at WARNING once; once a CANCEL frees a
    place the next INVITE is taken and the end is said at INFO."""
    caplog.set_level(logging.INFO, logger=ADMISSION)
    monkeypatch.setattr(admission, "PENDING_INVITES", 2)
    ua = await trunk_ua()
    transport, peer = await udp_peer()
    there = ("127.0.0.1", ua.port)

    async def answer_to(call_id: str, *, method: str = "INVITE") -> tuple[int, str]:
        """The first response to ``call_id``'s ``method`` other than a 100."""
        while True:
            resp = parse((await asyncio.wait_for(peer.got.get(), 2))[0])
            if resp.call_id == call_id and resp.cseq[1] == method and resp.status != 100:
                return resp.status, resp.get("Retry-After")

    async def invite(branch: str = "") -> tuple[int, str]:
        sent = request("INVITE", ua.port, branch=branch or new_branch(), body=b"v=0\r\n")
        transport.sendto(sent, there)
        return await answer_to(parse(sent).call_id)

    try:
        ringing = [new_branch(), new_branch()]
        for branch in ringing:
            assert (await invite(branch))[0] == 180
        for _ in range(5):
            assert await invite() == (503, "5")
        assert ua.counts["overloaded"] == 5
        said = warnings(caplog)
        assert len(said) == 1 and "refused 503" in said[0], said

        transport.sendto(request("CANCEL", ua.port, branch=ringing[0]), there)
        assert (await answer_to(f"{ringing[0]}@pbx"))[0] == 487  # its place is free
        assert (await invite())[0] == 180
        ended = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
        assert any("taken again (5 refused 503" in line for line in ended), ended
        assert ua.counts["overloaded"] == 5 and len(warnings(caplog)) == 1
    finally:
        transport.close()
        await ua.close()
