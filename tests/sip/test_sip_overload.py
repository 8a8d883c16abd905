"""The user agent's overload refusals over real SIP on loopback: each is counted and said once
at WARNING while it lasts, its end at INFO (an INVITE refused because too many wait for their
answer; UDP datagrams dropped because too large or too many in hand)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.sip import Message, admission, datagram, parse
from bridge.sip.datagram import DatagramEndpoint
from bridge.sip.headers import new_branch
from bridge.sip.transport import BadMessage, Connection

from ..support.waits import until
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


DATAGRAM = "bridge.sip.datagram"


def infos(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelname == "INFO"]


async def test_datagrams_too_large_are_dropped_counted_for_prometheus_and_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The trunk listener drops three datagrams over the size limit from one source: counted
    in ``bridge_sip_trunk_refused_total{what="datagram",reason="too_large"}``, said at
    WARNING once; the source's next datagram is answered and the end said at INFO."""
    from bridge.numbers.catalog import Catalog
    from bridge.numbers.store import LocalStore, Sealing
    from bridge.trunks import TrunkService

    from ..conftest import settings_for_tests

    caplog.set_level(logging.INFO, logger=DATAGRAM)
    monkeypatch.setattr(datagram, "MAX_DATAGRAM", 1500)
    registry = CollectorRegistry()
    catalog = Catalog(LocalStore(str(tmp_path), Sealing("k" * 32)), None)
    service = TrunkService(settings_for_tests(data_dir=str(tmp_path)), catalog, registry)
    await service.start()
    transport, peer = await udp_peer()
    there = ("127.0.0.1", service.port)
    try:
        big = request("OPTIONS", service.port).replace(b"Max-Forwards", b"X-Pad: " + b"a" * 2000)
        for _ in range(3):
            transport.sendto(big + b"\r\n", there)
        transport.sendto(request("OPTIONS", service.port), there)  # after them (loopback)
        assert parse((await asyncio.wait_for(peer.got.get(), 2))[0]).status == 200
        sample = registry.get_sample_value(
            "bridge_sip_trunk_refused_total", {"what": "datagram", "reason": "too_large"}
        )
        assert sample == 3
        overloaded = {"what": "invite", "reason": "overloaded"}
        assert registry.get_sample_value("bridge_sip_trunk_refused_total", overloaded) == 0
        said = warnings(caplog, DATAGRAM)
        assert len(said) == 1 and "over 1500 bytes" in said[0], said
        assert any("3 too large before" in line for line in infos(caplog, DATAGRAM))
        assert peer.got.empty()  # nothing came for the dropped ones
    finally:
        transport.close()
        await service.close()


async def test_datagrams_beyond_those_in_hand_are_dropped_counted_and_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two messages in hand (their handler still working) fill a cap of two: five more
    datagrams are dropped, counted ``in_hand`` and said at WARNING once; once the two are
    done the next is taken and the end said at INFO."""
    caplog.set_level(logging.INFO, logger=DATAGRAM)
    monkeypatch.setattr(datagram, "MAX_INFLIGHT", 2)
    release = asyncio.Event()
    taken: list[Message] = []

    async def handler(msg: Message, flow: Connection) -> None:
        taken.append(msg)
        await release.wait()

    async def on_bad(bad: BadMessage, flow: Connection) -> None:
        raise AssertionError(bad)

    endpoint = DatagramEndpoint(handler, on_bad)
    await endpoint.start("127.0.0.1", 0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    there = ("127.0.0.1", endpoint.port)
    try:
        for _ in range(2):
            sock.sendto(request("OPTIONS", endpoint.port), there)
        await until(lambda: len(taken) == 2, 2, "two in hand")
        for _ in range(5):
            sock.sendto(request("OPTIONS", endpoint.port), there)
        await until(lambda: endpoint.dropped["in_hand"] == 5, 2, "five dropped")
        said = warnings(caplog, DATAGRAM)
        assert len(said) == 1 and "2 messages in hand" in said[0], said
        release.set()
        await until(lambda: not endpoint.in_hand, 2, "the two done")
        sock.sendto(request("OPTIONS", endpoint.port), there)
        await until(lambda: len(taken) == 3, 2, "the next taken")
        assert endpoint.dropped == {"too_large": 0, "in_hand": 5, "closing": 0}
        assert any("taken in hand again (5 dropped" in line for line in infos(caplog, DATAGRAM))
    finally:
        sock.close()
        await endpoint.close()
