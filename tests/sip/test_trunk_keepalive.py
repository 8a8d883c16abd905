"""A trunk's keep-alive (``trunks/upkeep.py``) against a PBX played by a bare UDP socket: one
that stops answering it well is said once at WARNING while it lasts, and its end at INFO. It
was said nowhere: only ``bridge_trunk_up`` went to 0, and nobody reading the log knew why
calls through the trunk failed."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry

from bridge.numbers.trunks import Trunk
from bridge.sip import Request, parse
from bridge.trunks.upkeep import Upkeep

from .test_trunk_register import answer
from .test_udp_tcp import trunk_ua, udp_peer

UPKEEP = "bridge.trunks.upkeep"


async def test_a_failing_keepalive_is_said_once_and_its_end(caplog) -> None:
    caplog.set_level(logging.INFO, logger=UPKEEP)
    ua = await trunk_ua()
    transport, peer = await udp_peer()
    port = transport.get_extra_info("sockname")[1]
    trunk = Trunk("trk_ka", "pbx", f"sip:127.0.0.1:{port};transport=udp")
    registry = CollectorRegistry()
    upkeep = Upkeep(None, registry)  # type: ignore[arg-type]
    upkeep.ua = ua
    state: dict = {}

    async def pbx(status: int, reason: str) -> None:
        while True:
            req = parse((await asyncio.wait_for(peer.got.get(), 3))[0])
            if isinstance(req, Request) and req.method == "OPTIONS":
                transport.sendto(answer(req, status, reason), ("127.0.0.1", ua.port))
                return

    async def keepalive(status: int, reason: str) -> None:
        serving = asyncio.create_task(pbx(status, reason))
        await asyncio.wait_for(upkeep._options(trunk, state), 5)
        await serving

    try:
        for _ in range(3):
            await keepalive(503, "Service Unavailable")
        assert registry.get_sample_value("bridge_trunk_up", {"trunk": "trk_ka"}) == 0
        await keepalive(200, "OK")
        assert registry.get_sample_value("bridge_trunk_up", {"trunk": "trk_ka"}) == 1
    finally:
        transport.close()
        await ua.close()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == UPKEEP]
    assert len(said) == 2, said
    assert said[0][0] == "WARNING" and "503 Service Unavailable" in said[0][1], said
    assert said[1][0] == "INFO" and "3 failed before" in said[1][1], said
