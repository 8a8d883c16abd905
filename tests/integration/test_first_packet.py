"""Meta's timers kept on Graph calls: Meta waits for the business's first media packet and
ends a call whose media stops, so the bridge sends as soon as the WhatsApp-side media is up —
before any browser, agent or engine audio exists — and keeps RTP and RTCP flowing the whole
call: ringing, answered with no browser, on hold, with a browser, after the browser left.
(How soon is a bench figure: ``python -m bench.first_packet``; no timing is asserted here.)"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bridge.api.keys import ENGINE, MANAGER

from ..support.calls import wait_state
from ..support.waits import until, until_passes
from .test_engine_cloudapi import assert_tone, connect_browser, heard


@pytest.fixture
def cclient(make_client, meta):
    async def factory(**kw):
        return await make_client(**{**meta.bridge_settings(), **kw})

    return factory


async def still_flowing(peer, what: str) -> None:
    """Meta keeps getting the bridge's RTP (25 more packets: half a second of 20 ms frames)
    and RTCP (another report)."""
    rtp, rtcp = peer.rtp_count, peer.rtcp_count
    await until(lambda: peer.rtp_count >= rtp + 25, 5, f"RTP to Meta {what}")
    await until(lambda: peer.rtcp_count > rtcp, 5, f"RTCP to Meta {what}")


async def test_inbound_media_reaches_meta_before_any_browser_and_all_call_long(cclient, meta):
    meta.media_timeouts = (2.0, 1.0)  # Meta's 20 s and 30 s, shortened: no gap may reach them
    client = await cclient()
    manager = client.app[MANAGER]
    mcall = await meta.user_calls(client, "15550001212")
    peer = mcall.peer
    await asyncio.wait_for(peer.connected.wait(), 5)
    # Ringing, no browser, no agent, nothing answered: the bridge's packets reach Meta.
    await until(lambda: peer.gate.first_rtp_at, 3, "the first RTP packet with no browser")
    assert manager.registry.by_engine_id(mcall.wacid) is not None
    call_id = manager.registry.by_engine_id(mcall.wacid).id
    assert (await (await client.get(f"/call/{call_id}")).json())["participants"] == []
    print(f"first packet {1000 * (peer.gate.first_rtp_at - peer.connected_at):.1f} ms after DTLS")
    await still_flowing(peer, "while ringing")
    # Meta's side sends nothing while the call rings (its media flows after accept) ...
    assert peer.gate.first_sent_at is None

    assert (await client.post("/call/answer", json={"callID": call_id})).status == 200
    # ... and waits for the business's first packet before it sends any (the fake, as Meta).
    await until(lambda: peer.gate.first_sent_at, 3, "WhatsApp's first RTP packet")
    assert peer.gate.first_sent_at >= peer.gate.first_rtp_at
    await still_flowing(peer, "answered, no browser")
    # What Meta hears with nobody on the line is silence (comfort, not noise).
    await asyncio.sleep(0.5)
    quiet = heard(peer.recorder, 0.4)
    assert quiet.size and float(np.sqrt(np.mean(quiet.astype(np.float64) ** 2))) < 50

    assert (await client.post("/call/hold", json={"callID": call_id, "held": True})).status == 200
    await still_flowing(peer, "on hold")
    assert (await client.post("/call/hold", json={"callID": call_id, "held": False})).ok

    rtc = await connect_browser(client, call_id, freq=440.0)
    await until_passes(
        lambda: assert_tone(
            heard(peer.recorder, 0.8), peer.recorder.rate, 440, "Meta hears the browser"
        )
    )
    resp = await client.post("/call/webrtc/close", json={"callID": call_id})
    assert resp.status == 200
    await rtc.close()
    await still_flowing(peer, "after the browser left")
    assert meta.media_ended == []  # Meta never ended it for want of media
    await client.post("/call/hangup", json={"callID": call_id})


async def test_outbound_media_reaches_meta_with_no_browser(cclient, meta):
    client = await cclient()
    resp = await client.post("/call/make", json={"phone": "5521912120000"})
    assert resp.status == 201
    call = await resp.json()
    mcall = next(c for c in meta.meta_calls.values() if c.opaque == call["callID"])
    body = meta.envelope(meta.answer_event(mcall), meta.status_event(mcall, "ACCEPTED"))
    assert (await meta.post(client, body)).status == 200
    await wait_state(client, call["callID"], "active", timeout=3)
    await asyncio.wait_for(mcall.peer.connected.wait(), 5)
    await until(lambda: mcall.peer.gate.first_rtp_at, 3, "the first RTP packet with no browser")
    await still_flowing(mcall.peer, "with no browser")
    await client.post("/call/hangup", json={"callID": call["callID"]})


async def test_meta_ends_a_call_whose_media_stops(cclient, meta):
    """Meta's other timer, as the fake keeps it: a connected call the business stops sending
    on is ended by Meta (a terminate, FAILED, 138021 media receive timeout); the bridge ends
    it with that reason. Here the bridge's WhatsApp-side sender is cut off mid-call."""
    meta.media_timeouts = (2.0, 1.0)
    client = await cclient()
    manager = client.app[MANAGER]
    mcall = await meta.user_calls(client, "15550001313")
    call = await until(lambda: manager.registry.by_engine_id(mcall.wacid), 3, "ringing")
    assert (await client.post("/call/answer", json={"callID": call.id})).status == 200
    await until(lambda: mcall.peer.gate.first_rtp_at, 3, "the bridge's first RTP packet")
    await still_flowing(mcall.peer, "answered")
    leg = client.app[ENGINE].calls[mcall.wacid].leg.leg
    leg.wire = None  # nothing more leaves for Meta: no RTP, no RTCP
    ended = await wait_state(client, call.id, "ended", timeout=4)
    assert meta.media_ended == [(mcall.wacid, 138021)]
    assert ended["endReason"] == "media_timeout", ended
    assert "138021" in (ended["endDetail"] or ""), ended
