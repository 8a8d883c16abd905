"""Meta's SIP road in a cluster (issue 60): two bridge processes on one real Redis, each with
the number on SIP (its own listener). A call is up on A through SIPp behind its TLS hops;
Meta's ``calls`` webhooks (``sip.webhook_delivery``) go to the app's one URL, which may be any
worker's, and must reach the worker that carries the call."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.cluster.redis_writes import P

from ..fakes.cloudapi import BRIDGE_MID, FakeMeta, MetaPeer, sip_answer
from ..support.cluster import (
    Bridge,
    Http,
    Redis,
    get,
    post,
    start_bridges,
    wait_call,
)
from ..support.ports import free_port
from ..support.requires import require
from ..support.sipp import Sipp, TlsHops, tools_missing
from ..support.tls import TestCA
from ..support.waits import until
from .conftest import NUMBER, PASSWORD
from .test_sipp_uic import apply_answer

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def sip_cluster(redis: Redis, session: Any, tmp_path: Any) -> AsyncIterator[tuple]:
    """Meta's fake (Graph, signed webhooks), its SIP side's TLS hops, and workers A and B with
    the settings' number on SIP, each on its own listener: ``(meta, hops, a, a's SIP port,
    b)``."""
    why = tools_missing()
    require(not why, why, "make system-deps (Debian sip-tester and socat)")
    meta = FakeMeta()
    await meta.start()
    ca = TestCA(tmp_path)
    bridge_cert = ca.issue("bridge", "localhost", "127.0.0.1")
    hops = TlsHops(ca, ca.issue("meta", "127.0.0.1", "localhost"), tmp_path)
    settings = {
        **meta.bridge_settings(),
        "cloudapi_signalling": "sip",
        "sip_hostname": "localhost",
        "sip_cert": str(bridge_cert.cert),
        "sip_key": str(bridge_cert.key),
        "sip_number": NUMBER,
        "sip_password": PASSWORD,
        "sip_meta_uri": f"sip:127.0.0.1:{hops.from_bridge};transport=tls",
        "sip_ca": str(ca.path),
    }
    env = {f"BRIDGE_{name.upper()}": str(value) for name, value in settings.items()}
    sip_a = free_port()
    workers = []
    for name, port in (("a", sip_a), ("b", free_port())):
        (tmp_path / name).mkdir()
        listen = {"BRIDGE_SIP_LISTEN": f"127.0.0.1:{port}"}
        workers.append(Bridge(redis, tmp_path / name, env={**env, **listen}))
    a, b = workers
    try:
        await start_bridges(session, a, b)
        yield meta, hops, a, sip_a, b
    finally:
        await asyncio.gather(a.stop(), b.stop())
        await hops.stop()
        await meta.stop()


async def user_calls_a(
    session: Any, hops: TlsHops, a: Bridge, sip_a: int, sipp: Sipp, peer: MetaPeer
) -> dict[str, Any]:
    """Meta's INVITE to A (``uic_bridge_bye.xml``), answered there: its snapshot."""
    await hops.start(sip_a, sipp.port)
    keys = {
        "business": NUMBER,
        "bridge_host": "localhost",
        "username": NUMBER,
        "password": PASSWORD,
        "rr1": f"sip:127.0.0.1:{hops.from_bridge};transport=tls;lr",
        "wacid": WACID,
        "cta": "button:support-42",
        "sdp": (await peer.offer()).replace("\r\n", "\n").strip(),
    }
    await sipp.start(remote=hops.to_bridge, keys=keys)

    async def ringing() -> list:
        return (await get(session, a.base, "/call/status"))[1]["calls"]

    [call] = await until(ringing, 10, "Meta's call ringing on A")
    status, answered = await post(session, a.base, "/call/answer", {"callID": call["callID"]})
    assert status == 200 and answered["state"] == "active", answered
    await apply_answer(sipp, peer)
    await sipp.wait_log("ACKED")
    return answered


async def a_calls_the_user(
    session: Any, hops: TlsHops, a: Bridge, sip_a: int, sipp: Sipp, peer: MetaPeer
) -> dict[str, Any]:
    """A's INVITE to Meta (``bic.xml``: Meta's 200 names the wacid), answered: the call's id."""
    answer = sip_answer(await peer.offer(mid=BRIDGE_MID), opus_pt=96)
    keys = {
        "sdp": answer.replace("\r\n", "\n").strip(),
        "rr1": f"sip:127.0.0.1:{hops.from_bridge};transport=tls;lr",
    }
    await sipp.start(remote=None, keys=keys, server=True)
    await hops.start(sip_a, sipp.port)
    status, made = await post(session, a.base, "/call/make", {"phone": "+15550001111"})
    assert status == 201, made
    return await wait_call(session, a.base, made["callID"], "active", timeout=5)


WACID = f"wacid.{NUMBER}.cluster"
FLOWS = {
    "USER_INITIATED": ("uic_bridge_bye.xml", user_calls_a, WACID),
    "BUSINESS_INITIATED": ("bic.xml", a_calls_the_user, "wacid.BIC1"),
}


@pytest.mark.parametrize("direction", list(FLOWS))
async def test_metas_terminate_on_another_worker_ends_the_sip_call_where_it_lives(
    redis: Redis, session, tmp_path, direction
) -> None:
    """Meta's terminate for a SIP call whose BYE was lost, posted to the worker that does not
    carry it: that worker's SIP engine named no calls for the router, so it handled the
    webhook itself, found no such call, and the call stayed up on its owner. Now the router
    finds the call by its wacid in the directory (Meta's INVITE's; for ours, the one Meta's
    200 named) and forwards the webhook to the owner, whose engine ends the call with Meta's
    reason (``COMPLETED`` once answered: ``remote_hangup``) and closes the dialog with its own
    BYE."""
    scenario, flow, wacid = FLOWS[direction]
    async with sip_cluster(redis, session, tmp_path) as (meta, hops, a, sip_a, b):
        sipp = Sipp(tmp_path, scenario)
        peer = MetaPeer(660.0)
        try:
            call = await flow(session, hops, a, sip_a, sipp, peer)
            owner, other = (a, b) if call["owner"] == a.worker_id else (b, a)
            user = {"from": "15550001111", "to": NUMBER}
            if direction == "BUSINESS_INITIATED":
                user = {"from": NUMBER, "to": "15550001111"}
            item = {"id": wacid, **user, "event": "terminate", "direction": direction}
            item.update(timestamp=str(int(time.time())), status="COMPLETED", duration=7)
            resp = await meta.post(Http(session, other.base), meta.envelope({"calls": [item]}))
            assert resp.status == 200, await resp.text()  # Meta's BYE lost: only the webhook
            ended = await wait_call(session, owner.base, call["callID"], "ended", timeout=6)
            assert ended["endReason"] == "remote_hangup", ended  # Meta's, from its owner's engine
            await sipp.wait_log("BYE-ROUTED")  # A's BYE closed the dialog Meta lost track of
            assert await sipp.finish() == 0, sipp.report()
        finally:
            await sipp.stop()
            await peer.close()


async def test_metas_terminate_on_one_worker_refuses_its_late_invite_on_another(
    redis: Redis, session, tmp_path
) -> None:
    """Meta's terminate overtakes its INVITE (the user hung up while it was on its way) and
    lands on B, which carries no such call; the INVITE then reaches A. A single worker refuses
    that INVITE with ``487`` (the terminate remembered); in a cluster only B remembered it, so
    A rang a call Meta had already ended. Now B remembers it in the directory for every worker
    (``over:{wacid}``, expiring) and A, finding it there, refuses the INVITE the same way: no
    call on either worker, no call event."""
    wacid = f"wacid.{NUMBER}.overtaken"
    async with sip_cluster(redis, session, tmp_path) as (meta, hops, a, sip_a, b):
        item = {"id": wacid, "from": "15550001111", "to": NUMBER, "event": "terminate"}
        item.update(direction="USER_INITIATED", timestamp=str(int(time.time())))
        resp = await meta.post(Http(session, b.base), meta.envelope({"calls": [item]}))
        assert resp.status == 200, await resp.text()
        client = aioredis.from_url(redis.url, decode_responses=True)
        try:  # B's inbox works through the webhook after its 200
            await until(lambda: client.exists(f"{P}over:{wacid}"), 5, "B took the terminate")
        finally:
            await client.aclose()
        events = session.get(a.base + "/call/events", timeout=aiohttp.ClientTimeout(total=None))
        sipp, peer = Sipp(tmp_path, "uic.xml"), MetaPeer(660.0)
        try:
            async with events as stream:
                await stream.content.readuntil(b": connected\n")  # following from now on
                await hops.start(sip_a, sipp.port)
                offer = (await peer.offer()).replace("\r\n", "\n").strip()
                keys = {"business": NUMBER, "bridge_host": "localhost", "username": NUMBER}
                keys.update(password=PASSWORD, wacid=wacid, cta="", sdp=offer, user_id="")
                keys.update(rr1=f"sip:127.0.0.1:{hops.from_bridge};transport=tls;lr")
                await sipp.start(remote=hops.to_bridge, keys={**keys, "caller": "+15550001111"})
                assert await sipp.finish(timeout=5) != 0  # uic.xml waits for a 200 never sent
                said = sipp.sent_and_received()
                assert "SIP/2.0 487 Request Terminated" in said, sipp.report()
                assert "SIP/2.0 180" not in said, sipp.report()
                for worker in (a, b):
                    assert (await get(session, worker.base, "/call/status"))[1]["calls"] == []
                streamed = stream.content.read_nowait()  # every event of the cluster meanwhile
        finally:
            await sipp.stop()
            await peer.close()
        assert b"event: call." not in streamed, streamed
