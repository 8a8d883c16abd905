"""N WhatsApp ↔ SIP calls at once (issue 48's benchmark, in small): N sim calls, each with a SIP
participant SIPp answers and echoes (G.711 µ-law); the bridge's CPU per call over a few seconds
of steady media, next to the same N sim calls with the WhatsApp side alone mixing nothing."""

from __future__ import annotations

import asyncio
import time

import pytest

from ..support.calls import wait_state
from ..support.sipp import Sipp, tools_missing
from ..support.waits import until
from .test_sip_participant import of

pytestmark = [
    pytest.mark.skipif(bool(tools_missing()), reason=tools_missing() or "ok"),
    pytest.mark.serial,  # CPU per call
]

N = 8
WINDOW = 3.0


async def cpu_over(seconds: float) -> float:
    start_cpu, start = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    return (time.process_time() - start_cpu) / (time.monotonic() - start)


async def test_cpu_per_whatsapp_to_sip_call(bridge, tmp_path) -> None:
    sipp = Sipp(tmp_path, "pbx_phone_answer.xml")
    await sipp.start(
        remote=None,
        keys={},
        server=True,
        transport="u1",
        extra=("-mi", "127.0.0.1", "-rtp_echo", "-m", str(N)),
    )
    try:
        trunk = {"name": "pbx", "uri": f"sip:127.0.0.1:{sipp.port};transport=udp", "keepalive": 0}
        assert (await bridge.post("/trunks", json=trunk)).status == 201
        cids = []
        for i in range(N):
            made = await (
                await bridge.post("/call/make", json={"phone": f"55219999{i:05d}"})
            ).json()
            cids.append(made["callID"])
        for cid in cids:
            await wait_state(bridge, cid, "active")
        idle = await cpu_over(WINDOW)  # N sim calls, nothing attached: no media runs
        for cid in cids:
            body = {"callID": cid, "participantID": "desk", "sip": {"uri": "sip:phone@127.0.0.1"}}
            assert (await bridge.post("/call/participants", json=body)).status == 202
        await until(lambda: len(of(bridge, "participant.joined")) == N, 10, "every leg joined")
        await asyncio.sleep(1.0)
        loaded = await cpu_over(WINDOW)
        per_call = (loaded - idle) / N * 100
        print(
            f"{N} WhatsApp <-> SIP calls (G.711, sim WhatsApp side): "
            f"{loaded * 100:.1f} % of a core (idle calls {idle * 100:.1f} %): "
            f"{per_call:.2f} % per call"
        )
        assert per_call < 10.0
        for cid in cids:
            await bridge.post("/call/hangup", json={"callID": cid})
        assert await sipp.finish() == 0, sipp.report()
        for cid in cids:
            await wait_state(bridge, cid, "ended")
    finally:
        await sipp.stop()
