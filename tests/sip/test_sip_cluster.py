"""Meta's SIP road in a cluster (issue 60): two bridge processes on one real Redis, each with
the number on SIP (its own listener). A user's call is up on A through SIPp behind its TLS
hops; Meta's ``calls`` webhooks (``sip.webhook_delivery``) go to the app's one URL, which may
be any worker's, and must reach the worker that carries the call."""

from __future__ import annotations

import asyncio
import time

import pytest

from ..fakes.cloudapi import FakeMeta, MetaPeer
from ..support.cluster import Bridge, Http, Redis, get, post, start_bridges, wait_call
from ..support.ports import free_port
from ..support.requires import require
from ..support.sipp import Sipp, TlsHops, tools_missing
from ..support.tls import TestCA
from ..support.waits import until
from .conftest import NUMBER, PASSWORD
from .test_sipp_uic import apply_answer

pytestmark = pytest.mark.timeout(60)

WACID = f"wacid.{NUMBER}.cluster"


async def test_metas_terminate_on_another_worker_ends_the_sip_call_where_it_lives(
    redis: Redis, session, tmp_path
) -> None:
    """Meta's terminate for a SIP call whose BYE was lost, posted to the worker that does not
    carry it: that worker's SIP engine named no calls for the router, so it handled the
    webhook itself, found no such call, and the call stayed up on A. Now the router finds the
    call by its wacid in the directory and forwards the webhook to A, whose engine ends the
    call with Meta's reason (``COMPLETED`` once answered: ``remote_hangup``, its duration) and
    closes the dialog with its own BYE."""
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
    workers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        sip_port = free_port()
        listen = {"BRIDGE_SIP_LISTEN": f"127.0.0.1:{sip_port}"}
        workers.append((Bridge(redis, tmp_path / name, env={**env, **listen}), sip_port))
    (a, a_sip), (b, _) = workers
    sipp = Sipp(tmp_path, "uic_bridge_bye.xml")
    peer = MetaPeer(660.0)
    try:
        await start_bridges(session, a, b)
        await hops.start(a_sip, sipp.port)
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
        assert call["owner"] == a.worker_id, call
        status, answered = await post(session, a.base, "/call/answer", {"callID": call["callID"]})
        assert status == 200 and answered["state"] == "active", answered
        await apply_answer(sipp, peer)
        await sipp.wait_log("ACKED")

        item = {"id": WACID, "from": "15550001111", "to": NUMBER, "event": "terminate"}
        item.update(direction="USER_INITIATED", timestamp=str(int(time.time())))
        item.update(status="COMPLETED", duration=7)
        resp = await meta.post(Http(session, b.base), meta.envelope({"calls": [item]}))
        assert resp.status == 200, await resp.text()  # Meta's BYE lost: only the webhook came
        ended = await wait_call(session, a.base, call["callID"], "ended", timeout=6)
        assert ended["endReason"] == "remote_hangup", ended  # Meta's, from A's engine
        await sipp.wait_log("BYE-ROUTED")  # A's BYE closed the dialog Meta lost track of
        assert await sipp.finish() == 0, sipp.report()
    finally:
        await sipp.stop()
        await asyncio.gather(a.stop(), b.stop())
        await hops.stop()
        await peer.close()
        await meta.stop()
