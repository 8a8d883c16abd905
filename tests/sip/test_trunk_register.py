"""A trunk's REGISTER (``trunks/upkeep.py``) against a registrar played by a bare UDP socket:
a ``423 Interval Too Brief`` is asked again with the registrar's ``Min-Expires`` (RFC 3261
§10.2.8), where it was retried every 30 s with the same refused interval and never
registered; the registration's REGISTERs share one Call-ID, their CSeqs counting up (§10.2)."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry

from bridge.numbers.trunks import Trunk
from bridge.sip import Request, parse
from bridge.trunks.upkeep import Upkeep
from bridge.trunks.upkeep import log as upkeep_log

from .test_udp_tcp import trunk_ua, udp_peer


def answer(req: Request, status: int, reason: str, extra: str = "") -> bytes:
    head = f"SIP/2.0 {status} {reason}\r\n"
    for name in ("Via", "From"):
        head += "".join(f"{name}: {v}\r\n" for v in req.all(name))
    head += f"To: {req.get('To')};tag=reg\r\nCall-ID: {req.call_id}\r\n"
    head += f"CSeq: {req.get('CSeq')}\r\n{extra}Content-Length: 0\r\n\r\n"
    return head.encode()


async def test_a_423_is_asked_again_with_the_registrars_min_expires() -> None:
    ua = await trunk_ua()
    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    trunk = Trunk("trk_reg", "pbx", f"sip:127.0.0.1:{port};transport=udp", username="bridge")
    upkeep = Upkeep(None, CollectorRegistry())  # type: ignore[arg-type]
    upkeep.ua = ua
    state: dict = {}
    sent: list[tuple[str, str]] = []

    async def registrar() -> list[str]:
        asked = []
        while True:
            req = parse((await asyncio.wait_for(peer.got.get(), 3))[0])
            if not isinstance(req, Request) or req.method != "REGISTER":
                continue
            asked.append(req.get("Expires"))
            sent.append((req.call_id, req.get("CSeq")))
            if int(req.get("Expires")) < 600:
                transport.sendto(
                    answer(req, 423, "Interval Too Brief", "Min-Expires: 600\r\n"),
                    ("127.0.0.1", ua.port),
                )
            else:
                contact = req.get("Contact")
                transport.sendto(
                    answer(req, 200, "OK", f"Contact: {contact};expires=600\r\n"),
                    ("127.0.0.1", ua.port),
                )
                return asked

    try:
        serving = asyncio.create_task(registrar())
        wait = await asyncio.wait_for(upkeep._register(trunk, state, 300), 5)
        assert await serving == ["300", "600"]
        assert state["registration"]["state"] == "registered"
        assert wait == 480  # refreshed at 80 % of the 600 s granted
        # The refresh asks the registrar's minimum at once, not the refused interval again.
        serving = asyncio.create_task(registrar())
        await asyncio.wait_for(upkeep._register(trunk, state, 300), 5)
        assert await serving == ["600"]
        # §10.2: one Call-ID for every REGISTER of the registration, its CSeq one more each
        # time (each went with a Call-ID and CSeq 1 of its own: a new binding to a registrar).
        assert [cseq for _, cseq in sent] == ["1 REGISTER", "2 REGISTER", "3 REGISTER"]
        assert len({call_id for call_id, _ in sent}) == 1
    finally:
        transport.close()
        await ua.close()


async def test_a_refused_registration_is_said_once_and_its_return_at_info(caplog) -> None:
    """A registrar that refuses three REGISTERs, then takes one: one WARNING for the refusal
    (its reason unchanged), and the return said at INFO with how many were refused. The
    return was said nowhere: the log's last word on the trunk stayed the refusal."""
    caplog.set_level(logging.INFO, logger="bridge.trunks.upkeep")
    ua = await trunk_ua()
    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    trunk = Trunk("trk_ret", "pbx", f"sip:127.0.0.1:{port};transport=udp", username="bridge")
    registry = CollectorRegistry()
    upkeep = Upkeep(None, registry)  # type: ignore[arg-type]
    upkeep.ua = ua
    state: dict = {}

    async def registrar(status: int, reason: str) -> None:
        while True:
            req = parse((await asyncio.wait_for(peer.got.get(), 3))[0])
            if isinstance(req, Request) and req.method == "REGISTER":
                extra = f"Contact: {req.get('Contact')};expires=300\r\n" if status == 200 else ""
                transport.sendto(answer(req, status, reason, extra), ("127.0.0.1", ua.port))
                return

    async def register(status: int, reason: str) -> None:
        serving = asyncio.create_task(registrar(status, reason))
        await asyncio.wait_for(upkeep._register(trunk, state, 300), 5)
        await serving

    try:
        for _ in range(3):
            await register(403, "Forbidden")
        assert state["registration"]["state"] == "failed"
        assert registry.get_sample_value("bridge_trunk_registered", {"trunk": "trk_ret"}) == 0
        await register(200, "OK")
        assert state["registration"]["state"] == "registered"
        assert registry.get_sample_value("bridge_trunk_registered", {"trunk": "trk_ret"}) == 1
    finally:
        transport.close()
        await ua.close()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == upkeep_log.name]
    assert [level for level, _ in said] == ["WARNING", "INFO"], said
    assert "403 Forbidden" in said[0][1], said
    assert "registered again (3 REGISTERs refused" in said[1][1], said
