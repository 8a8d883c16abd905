"""User-initiated calls on Meta's SIP road, Meta played by the real SIPp over TLS (Debian's
sip-tester behind socat's TLS), with Meta's media an aiortc peer (ICE-lite, sha-256 only) and
the agent a browser-like aiortc peer: the INVITE with Record-Route through two proxies and
Meta's x-wa-meta headers, a 407 round or none, 100/180/200, ACK, BYE either way (the
bridge's along the route set), CANCEL before the answer."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from ..fakes.cloudapi import MetaPeer
from ..integration.test_engine_cloudapi import heard, hears_tone
from ..support.audio_files import make
from ..support.calls import wait_state
from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency
from ..support.waits import until
from .conftest import NUMBER, PASSWORD

MUSIC_HZ = 1000.0


def keys(rig, sdp: str, wacid: str = "wacid.HBgLMTU1NTAwMDExMTEVAgARGBQz") -> dict[str, str]:
    return {
        "business": NUMBER,
        "bridge_host": "localhost",
        "rr1": f"sip:127.0.0.1:{rig.hops.from_bridge};transport=tls;lr",
        "wacid": wacid,
        "cta": "button:support-42",
        "sdp": sdp.replace("\r\n", "\n").strip(),
        "username": NUMBER,
        "password": PASSWORD,
        "caller": "+15550001111",
        "user_id": "BR.5b1e2c9d",
    }


async def ringing_call(client, timeout: float = 10.0) -> dict:
    async def one():
        calls = (await (await client.get("/call/status")).json())["calls"]
        return calls[0] if calls else None

    found: dict = {}

    async def poll():
        while not found:
            if (call := await one()) is not None:
                found.update(call)
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)
    return found


async def apply_answer(sipp, meta: MetaPeer) -> str:
    m = await sipp.wait_log(r"ANSWER-BEGIN(.*?)ANSWER-END")
    answer = m.group(1).strip().replace("\r\n", "\n").replace("\n", "\r\n") + "\r\n"
    await meta.apply_answer(answer)
    return answer


@pytest.mark.parametrize("challenge", [True, False], ids=["407", "no-407"])
async def test_uic_audio_both_ways_metadata_and_meta_bye(sip_rig, challenge):
    rig = await sip_rig(**({} if challenge else {"sip_password": ""}))
    sipp = rig.sipp("uic.xml")
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    meta = MetaPeer(660.0)
    rtc = None
    try:
        offer = await meta.offer()
        await sipp.start(remote=rig.hops.to_bridge, keys=keys(rig, offer), pause_ms=6000)
        call = await ringing_call(rig.client)
        assert (call["state"], call["direction"]) == ("ringing", "inbound")
        assert call["peer"] == "15550001111@s.whatsapp.net"
        assert call["metadata"] == {
            "whatsapp": {
                "ctaPayload": "button:support-42",
                "deeplinkPayload": "deeplink-42",
                "userId": "BR.5b1e2c9d",  # the BSUID era's headers, as Meta's SIP sends them
                "username": "ana.sales",
            }
        }
        rtc = RtcClient(rig.client, call["callID"], freq=440.0)
        await rtc.offer()
        resp = await rig.client.post("/call/answer", json={"callID": call["callID"]})
        assert resp.status == 200, await resp.text()
        answer = await apply_answer(sipp, meta)
        assert "a=fingerprint:sha-256" in answer and "a=setup:active" in answer
        await asyncio.wait_for(meta.connected.wait(), 10)
        await asyncio.sleep(1.5)
        await hears_tone(rtc.recorder, 660, "agent hears the WhatsApp user")
        await hears_tone(meta.recorder, 440, "WhatsApp user hears agent")
        # DTMF both ways on the SIP call's leg (RFC 4733 on 126, as on Graph calls).
        await meta.send_dtmf("5")
        await until(
            lambda: any(e.type == "call.dtmf" and e.data.get("digit") == "5" for e in rig.events),
            3,
            "the user's key press reached the call's events",
        )
        resp = await rig.client.post("/call/dtmf", json={"callID": call["callID"], "digits": "7"})
        assert resp.status == 202 and (await resp.json())["method"] == "rfc4733"
        await until(lambda: meta.dtmf_received, 3, "Meta heard the agent's key press")
        assert meta.dtmf_received[0].payload[0] == 7

        assert await sipp.finish() == 0, sipp.report()
        ended = await wait_state(rig.client, call["callID"], "ended", timeout=5)
        assert ended["endReason"] == "remote_hangup"
        event = await until(lambda: rig.ended(call["callID"]), 10, "call.ended")
        assert event is not None and event.data["engineDurationS"] == 7
        trace = sipp.sent_and_received()
        assert ("SIP/2.0 407" in trace) is challenge
        assert "Proxy-Authorization: Digest" in trace if challenge else True
    finally:
        if rtc is not None:
            await rtc.close()
        await meta.close()


BSUID = "US.13491208655302741918"


@pytest.mark.parametrize(
    ("caller", "user_id"), [("anonymous", BSUID), (BSUID, BSUID), (f"+{BSUID}", "")]
)
async def test_a_user_who_shows_no_phone_calls_as_their_bsuid(sip_rig, caller, user_id):
    """A user with a username may show the business no phone number: Meta's INVITE then
    names no number in its From, and the user is their BSUID (``x-wa-meta-user-id``, else the
    From's user when it is one), as on Graph calls. The From's user was stripped to its
    digits: a BSUID's became a phone number that is not the user's (a call back would ring a
    stranger), an anonymous one no peer."""
    rig = await sip_rig(sip_password="")
    sipp = rig.sipp("uic.xml")
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    meta = MetaPeer(660.0)
    try:
        ids = {"caller": caller, "user_id": user_id}
        await sipp.start(remote=rig.hops.to_bridge, keys={**keys(rig, await meta.offer()), **ids})
        call = await ringing_call(rig.client)
        assert call["peer"] == f"{BSUID}@s.whatsapp.net", call
        assert call["metadata"]["whatsapp"].get("userId") == (user_id or None)
        resp = await rig.client.post("/call/hangup", json={"callID": call["callID"]})
        assert resp.status == 200
        ended = await wait_state(rig.client, call["callID"], "ended", timeout=5)
        assert ended["peer"] == f"{BSUID}@s.whatsapp.net"
        assert await sipp.finish() != 0  # uic.xml waits for a 200 that never comes
    finally:
        await meta.close()


async def test_uic_hold_with_music_in_the_bridge_then_bye_along_the_route_set(sip_rig):
    """Hold is the bridge's business, never signalled to Meta: the WhatsApp user hears the
    music instead of the agent, then the agent again; then the bridge's BYE follows the
    route set."""
    rig = await sip_rig()
    form = aiohttp.FormData()
    form.add_field("audio", make("wav", MUSIC_HZ, 2.0), filename="hold.wav")
    asset = await (await rig.client.post("/call/audio-assets", data=form)).json()
    sipp = rig.sipp("uic_bridge_bye.xml")
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    meta = MetaPeer(660.0)
    rtc = None
    try:
        await sipp.start(remote=rig.hops.to_bridge, keys=keys(rig, await meta.offer()))
        call = await ringing_call(rig.client)
        rtc = RtcClient(rig.client, call["callID"], freq=440.0)
        await rtc.offer()
        resp = await rig.client.post("/call/answer", json={"callID": call["callID"]})
        assert resp.status == 200
        await apply_answer(sipp, meta)
        await sipp.wait_log("ACKED")
        await asyncio.wait_for(meta.connected.wait(), 10)
        await asyncio.sleep(1.0)
        held = {"callID": call["callID"], "held": True, "music": asset["assetId"]}
        assert (await rig.client.post("/call/hold", json=held)).status == 200
        await until(lambda: near(heard_hz(meta), MUSIC_HZ), 5, "the user hears the music")
        unheld = {"callID": call["callID"], "held": False}
        assert (await rig.client.post("/call/hold", json=unheld)).status == 200
        await until(lambda: near(heard_hz(meta), 440.0), 5, "the user hears the agent again")

        resp = await rig.client.post("/call/hangup", json={"callID": call["callID"]})
        assert resp.status == 200
        # SIPp checks the BYE's Request-URI (Meta's Contact) and its Route set, in order.
        await sipp.wait_log("BYE-ROUTED")
        assert await sipp.finish() == 0, sipp.report()
        ended = await wait_state(rig.client, call["callID"], "ended", timeout=5)
        assert ended["endReason"] == "hangup"
        # Hold was never signalled: Meta received nothing from the bridge but responses and BYE.
        got = re.findall(r"message received \[\d+\] bytes :\s+(\S+)", sipp.sent_and_received())
        assert {m for m in got if not m.startswith("SIP/")} == {"BYE"}, got
    finally:
        if rtc is not None:
            await rtc.close()
        await meta.close()


def near(hz: float, want: float) -> bool:
    return abs(hz - want) <= 5.0


def heard_hz(meta: MetaPeer) -> float:
    samples = heard(meta.recorder, 0.5)
    return dominant_frequency(samples, meta.recorder.rate)


async def test_uic_cancel_before_answer_ends_the_call(sip_rig):
    rig = await sip_rig(sip_password="")
    sipp = rig.sipp("uic_cancel.xml")
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    meta = MetaPeer(660.0)
    try:
        await sipp.start(remote=rig.hops.to_bridge, keys=keys(rig, await meta.offer()))
        call = await ringing_call(rig.client)
        assert await sipp.finish() == 0, sipp.report()
        ended = await wait_state(rig.client, call["callID"], "ended", timeout=5)
        assert ended["endReason"] == "remote_canceled"
        assert not rig.engine.calls  # nothing of the call stays in the engine
    finally:
        await meta.close()


async def test_a_draining_bridge_serves_its_sip_call_until_meta_ends_it(sip_rig):
    """SIP calls cannot move to another worker (their dialog and TLS flow live here): a
    draining bridge refuses new calls but keeps this one until Meta's BYE ends it."""
    from bridge.api.keys import HANDOVER, MANAGER

    rig = await sip_rig(sip_password="")
    sipp = rig.sipp("uic.xml")
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    meta = MetaPeer(660.0)
    try:
        await sipp.start(
            remote=rig.hops.to_bridge, keys=keys(rig, await meta.offer()), pause_ms=1500
        )
        call = await ringing_call(rig.client)
        resp = await rig.client.post("/call/answer", json={"callID": call["callID"]})
        assert resp.status == 200
        await apply_answer(sipp, meta)
        await sipp.wait_log("ACKED")
        rig.client.app[MANAGER].shutting_down = True
        handover = rig.client.app[HANDOVER]
        await handover.drain()  # nothing can move: the call stays here
        assert (await (await rig.client.get(f"/call/{call['callID']}")).json())["state"] == "active"
        await asyncio.wait_for(handover.wait_unmovable(), 10)  # returns once the call ended
        ended = await wait_state(rig.client, call["callID"], "ended", timeout=1)
        assert ended["endReason"] == "remote_hangup"  # Meta's BYE, not the shutdown
        assert await sipp.finish() == 0, sipp.report()
    finally:
        await meta.close()


async def test_a_draining_bridge_answers_a_new_invite_busy(sip_rig):
    from bridge.api.keys import MANAGER

    rig = await sip_rig(sip_password="")
    rig.client.app[MANAGER].shutting_down = True
    sipp = rig.sipp("uic_busy.xml")
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    meta = MetaPeer(660.0)
    try:
        await sipp.start(remote=rig.hops.to_bridge, keys=keys(rig, await meta.offer()))
        assert await sipp.finish() == 0, sipp.report()  # 486, ACKed
        await until(lambda: not rig.engine.calls, 2, "the engine kept nothing of it")
    finally:
        await meta.close()


async def test_uic_meta_bye_with_an_error_code_ends_with_metas_reason(sip_rig):
    """Meta's BYE naming one of its calling error codes (a Reason header, RFC 3326) ends the
    call with that code's reason and Meta's words in endDetail, as a Graph terminate does."""
    rig = await sip_rig(sip_password="")
    sipp = rig.sipp("uic_meta_error.xml")
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    meta = MetaPeer(660.0)
    try:
        await sipp.start(remote=rig.hops.to_bridge, keys=keys(rig, await meta.offer()))
        call = await ringing_call(rig.client)
        resp = await rig.client.post("/call/answer", json={"callID": call["callID"]})
        assert resp.status == 200
        await apply_answer(sipp, meta)
        assert await sipp.finish() == 0, sipp.report()
        ended = await wait_state(rig.client, call["callID"], "ended", timeout=5)
        assert ended["endReason"] == "media_timeout", ended
        assert (
            ended["endDetail"].startswith("138021: ")
            and "Media receive timeout" in (ended["endDetail"])
        )
        assert "billablePulses" not in ended  # a user-initiated call is free
    finally:
        await meta.close()


async def test_uic_cancel_before_the_bridge_rings_leaves_nothing(sip_rig, monkeypatch):
    from bridge.engines.cloudapi.peer import WhatsAppPeer

    answer = WhatsAppPeer.answer
    cancelled = asyncio.Event()

    async def slow_answer(self, offer, *rest):  # the CANCEL arrives while the leg answers
        await asyncio.wait_for(cancelled.wait(), 5)
        return await answer(self, offer, *rest)

    monkeypatch.setattr(WhatsAppPeer, "answer", slow_answer)
    rig = await sip_rig(sip_password="")
    sipp = rig.sipp("uic_cancel_early.xml")
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    meta = MetaPeer(660.0)
    try:
        await sipp.start(remote=rig.hops.to_bridge, keys=keys(rig, await meta.offer()))
        await until(lambda: rig.engine.ua.counts.get("cancel"), 5, "the CANCEL arrived")
        cancelled.set()
        assert await sipp.finish() == 0, sipp.report()  # 200 to the CANCEL, 487, ACK
        await until(lambda: not rig.engine.calls, 2, "the engine kept nothing of it")
        calls = (await (await rig.client.get("/call/status")).json())["calls"]
        assert calls == [] and "SIP/2.0 180" not in sipp.sent_and_received()
    finally:
        await meta.close()
