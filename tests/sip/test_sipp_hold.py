"""Hold by re-INVITE from the PBX (issue 48): SIPp plays a phone that answers the bridge's
INVITE as the call's agent and streams its own tone (660 Hz, G.711 µ-law), then holds with a
re-INVITE ``a=sendonly`` and resumes with ``a=sendrecv`` (RFC 3264 §8.4). Asserted on the audio:
while the phone holds, the WhatsApp side (the sim peer) hears the trunk's hold music (1 700 Hz)
and not the phone, though the phone still sends its tone, and the bridge sends the phone
nothing; once resumed it hears the phone again and the music is gone. A phone that is not the agent
(``barge``) holds only itself: WhatsApp hears neither it nor any music. Asserted on the wire
(SIPp checks and logs each answer): ``a=recvonly`` then ``a=sendrecv``, the o= version one up
each time, a session refresh answered with the very same SDP, and PCMA offered mid-call
refused with ``488`` and a Warning. And a call the PBX placed (SIPp as the PBX's UAC, its media
echoed back) held and resumed the same way: WhatsApp hears itself, the music, itself again;
and one its first INVITE opens already held, answered ``a=recvonly`` (RFC 3264 §6.1)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import numpy as np
import pytest

from bridge.api.keys import MANAGER, TRUNKS
from bridge.audio.g711 import ulaw_encode

from ..support.audio_files import make
from ..support.calls import peer_heard, sim_call, wait_state
from ..support.loops import LoopLag
from ..support.sipp import Sipp, tools_missing
from ..support.spectrum import assert_hears
from ..support.waits import until, until_passes
from .test_sip_participant import level_dbfs

pytestmark = pytest.mark.skipif(bool(tools_missing()), reason=tools_missing() or "ok")

PHONE_HZ, MUSIC_HZ, PEER_HZ = 660.0, 1700.0, 440.0
PHONE = "5521999999999"


def of(client: Any, kind: str) -> list[Any]:
    return [e for e in client.events if e.type == kind]


def tone_file(path, hz: float) -> str:
    """One second of ``hz`` as raw µ-law (SIPp's rtp_stream loops it: a whole number of
    cycles, so the loop has no seam)."""
    t = np.arange(8000) / 8000
    path.write_bytes(ulaw_encode((np.sin(2 * np.pi * hz * t) * 0.3 * 32767).astype(np.int16)))
    return str(path)


@pytest.mark.parametrize("role", ["agent", "barge"])
async def test_the_phone_holds_and_resumes_by_re_invite_and_whatsapp_hears_the_music(
    bridge, tmp_path, role
) -> None:
    """``agent``: the call is held with the music. ``barge`` (heard by WhatsApp, not the
    agent): only the phone is held — WhatsApp hears it no more, and no music (the call is not
    held)."""
    form = aiohttp.FormData()
    form.add_field("audio", make("wav", MUSIC_HZ, 2.0), filename="hold.wav")
    asset = await (await bridge.post("/call/audio-assets", data=form)).json()
    subst = {
        "TONE": tone_file(tmp_path / "phone.ulaw", PHONE_HZ),
        "TALK_MS": "3000",
        "HOLD_MS": "4000",
    }
    sipp = Sipp(tmp_path, "pbx_phone_hold.xml", subst)
    media = ("-mi", "127.0.0.1")
    await sipp.start(remote=None, keys={}, server=True, transport="u1", extra=media)
    try:
        trunk = {
            "name": "desk phones",
            "uri": f"sip:127.0.0.1:{sipp.port};transport=udp",
            "keepalive": 0,  # SIPp's scenario expects the INVITE first
            "holdMusic": asset["assetId"],
        }
        resp = await bridge.post("/trunks", json=trunk)
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["holdMusic"] == asset["assetId"]
        made = await (await bridge.post("/call/make", json={"phone": PHONE})).json()
        cid = made["callID"]
        await wait_state(bridge, cid, "active")
        body = {
            "callID": cid,
            "participantID": "desk",
            "role": role,
            "sip": {"uri": f"sip:1001@127.0.0.1:{sipp.port}"},
        }
        assert (await bridge.post("/call/participants", json=body)).status == 202
        await until(lambda: of(bridge, "participant.joined"), 10, "the phone joined")
        (leg,) = bridge.app[MANAGER].find_runtime(cid).attached("sip")

        def whatsapp_hears_the_phone() -> None:
            assert_hears(peer_heard(bridge, cid, 40), 16_000, {PHONE_HZ}, {MUSIC_HZ})

        heard_by_whatsapp = sim_call(bridge, cid).heard
        await until(lambda: len(heard_by_whatsapp) >= 40, 5, "WhatsApp's first second")
        await until_passes(whatsapp_hears_the_phone, 3)

        # The phone holds (a=sendonly): the call is held with the trunk's music.
        await until(lambda: of(bridge, "participant.held"), 6, "participant.held")
        held = of(bridge, "participant.held")[0].data
        assert held == {"participantID": "desk", "sip": {"direction": "sendonly"}}, held
        agent = role == "agent"
        if agent:  # held once its music is open (a file is opened off the loop)
            await until(lambda: of(bridge, "call.held"), 3, "call.held")
        snap = await (await bridge.get(f"/call/{cid}")).json()
        assert snap["held"] is agent
        await asyncio.sleep(1.2)
        assert bool(of(bridge, "call.held")) is agent, "only an agent's hold holds the call"
        rtp = leg.media.leg  # the phone leg's RTP: its stream out, its session in
        sent_to_phone = rtp.stream.packets
        received = rtp.session.audio_packets
        heard = peer_heard(bridge, cid, 40)
        if agent:
            assert_hears(heard, 16_000, {MUSIC_HZ}, {PHONE_HZ, PEER_HZ})
        else:  # nobody else speaks to WhatsApp: silence, no music
            assert level_dbfs(heard) < -60, level_dbfs(heard)
        await asyncio.sleep(0.6)
        assert rtp.stream.packets == sent_to_phone, "nothing is sent to a holding phone"
        assert rtp.session.audio_packets > received + 20, "the holding phone still sends its tone"
        print(f"{role} held: {rtp.session.audio_packets - received} packets from the phone unheard")

        # The phone resumes (a=sendrecv): both sides hear each other again, no music.
        await until(lambda: of(bridge, "participant.unheld"), 8, "participant.unheld")
        unheld = of(bridge, "participant.unheld")[0].data
        assert unheld == {"participantID": "desk", "sip": {"direction": "sendrecv"}}, unheld
        assert bool(of(bridge, "call.unheld")) is agent
        await asyncio.sleep(1.2)
        assert_hears(peer_heard(bridge, cid, 40), 16_000, {PHONE_HZ}, {MUSIC_HZ})
        sent_to_phone = rtp.stream.packets
        async with LoopLag() as lag:  # a stall of this process past the clock's resync skips
            await asyncio.sleep(0.4)  # ticks (once on a loaded host: 9 packets in 0.4 s)
        assert rtp.stream.packets >= sent_to_phone + 15 - lag.frames, (
            "the phone hears WhatsApp again",
            lag.worst,
        )

        # The refresh and the refused codec change (SIPp checks them), then the bridge's BYE.
        await sipp.wait_log(r"refused with .*\n", timeout=10)
        assert (await bridge.post("/call/hangup", json={"callID": cid})).status == 200
        assert await sipp.finish() == 0, sipp.report()
    finally:
        await sipp.stop()
    log = sipp.logged()
    answers = {
        name: re.search(rf"{name}<<(.*?)>>", log, re.S) for name in ("HELD", "RESUMED", "REFRESHED")
    }
    assert all(answers.values()), log
    held_sdp, resumed_sdp, refreshed_sdp = (m.group(1) for m in answers.values() if m)
    assert "a=recvonly" in held_sdp and "a=sendrecv" in resumed_sdp
    for sdp in (held_sdp, resumed_sdp):  # the codec in use alone, on the same port
        assert "m=audio " in sdp and " RTP/AVP 0 101" in sdp and "PCMA" not in sdp
    origins = [re.search(r"o=- (\d+) (\d+) ", sdp) for sdp in (held_sdp, resumed_sdp)]
    assert all(origins), log
    (session, held_version), (same_session, resumed_version) = (
        (int(m.group(1)), int(m.group(2))) for m in origins if m
    )
    assert same_session == session and resumed_version == held_version + 1  # RFC 3264 §8
    assert refreshed_sdp == resumed_sdp  # a refresh: the very same SDP, version too
    warning = re.search(r"refused with (.*)", log)
    assert warning and "399 bridge" in warning.group(1) and "PCMU" in warning.group(1), log


async def test_the_pbx_holds_a_call_it_placed_and_whatsapp_hears_the_music(
    bridge, tmp_path
) -> None:
    """The PBX called the WhatsApp user (its leg the call's agent, answered by our 200) and
    holds it by re-INVITE: SIPp checks the answers (a=recvonly, then a=sendrecv); WhatsApp
    hears itself through the PBX's echo, then the trunk's music alone, then itself again."""
    form = aiohttp.FormData()
    form.add_field("audio", make("wav", MUSIC_HZ, 2.0), filename="hold.wav")
    asset = await (await bridge.post("/call/audio-assets", data=form)).json()
    trunk = {
        "name": "pbx",
        "uri": "sip:127.0.0.1:5999;transport=udp",
        "inbound": {"allowFrom": ["127.0.0.1/32"]},
        "keepalive": 0,
        "holdMusic": asset["assetId"],
    }
    assert (await bridge.post("/trunks", json=trunk)).status == 201
    # The hold lasts 6 s: the check of its music below (after call.held and 1.2 s of music)
    # must not reach past the PBX's unhold on a loaded host.
    sipp = Sipp(tmp_path, "pbx_call_hold.xml", {"TALK_MS": "3000", "HOLD_MS": "6000"})
    echo = ("-mi", "127.0.0.1", "-rtp_echo")
    await sipp.start(
        remote=bridge.app[TRUNKS].port, keys={"callee": "+" + PHONE}, transport="u1", extra=echo
    )
    try:
        await until(lambda: of(bridge, "participant.joined"), 10, "the PBX's leg joined")
        cid = of(bridge, "participant.joined")[0].call["callID"]
        heard_by_whatsapp = sim_call(bridge, cid).heard
        await until(lambda: len(heard_by_whatsapp) >= 40, 5, "WhatsApp's first second")

        def whatsapp_hears_itself_through_the_pbx() -> None:
            assert_hears(peer_heard(bridge, cid, 40), 16_000, {PEER_HZ}, {MUSIC_HZ})

        await until_passes(whatsapp_hears_itself_through_the_pbx, 3)
        await until(lambda: of(bridge, "participant.held"), 6, "participant.held")
        await until(lambda: of(bridge, "call.held"), 3, "call.held")  # once its music is open
        await asyncio.sleep(1.2)
        held_music = peer_heard(bridge, cid, 40)
        assert not of(bridge, "participant.unheld"), "the PBX resumed before the music was judged"
        assert_hears(held_music, 16_000, {MUSIC_HZ}, {PEER_HZ})
        await until(lambda: of(bridge, "participant.unheld"), 10, "participant.unheld")
        await asyncio.sleep(1.2)
        whatsapp_hears_itself_through_the_pbx()
        assert await sipp.finish() == 0, sipp.report()
    finally:
        await sipp.stop()


async def test_a_call_the_pbx_places_on_hold_is_answered_recvonly(bridge, tmp_path) -> None:
    """The PBX's first offer is already ``a=sendonly`` (a held call it transfers on): our 200
    answers ``a=recvonly`` (RFC 3264 §6.1: a sendonly stream MUST be answered recvonly or
    inactive; it was answered sendrecv) and the bridge sends the phone nothing; SIPp checks the
    answer and that its Allow names REFER and INFO."""
    trunk = {
        "name": "pbx",
        "uri": "sip:127.0.0.1:5999;transport=udp",
        "inbound": {"allowFrom": ["127.0.0.1/32"]},
        "keepalive": 0,
    }
    assert (await bridge.post("/trunks", json=trunk)).status == 201
    sipp = Sipp(tmp_path, "pbx_call_held_from_start.xml", {"TALK_MS": "1000"})
    media = ("-mi", "127.0.0.1")
    await sipp.start(
        remote=bridge.app[TRUNKS].port, keys={"callee": "+" + PHONE}, transport="u1", extra=media
    )
    try:
        await until(lambda: of(bridge, "participant.joined"), 3, "the PBX's leg joined")
        (leg,) = bridge.app[TRUNKS].active
        assert leg.media is not None and leg.media.track.sending is False
        assert await sipp.finish() == 0, sipp.report()
    finally:
        await sipp.stop()
