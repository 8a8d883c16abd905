"""A SIP participant in a WhatsApp call (issue 48): the bridge calls a real phone (baresip,
SIP over UDP, G.711) through a trunk into a sim call's conference. Tones are asserted each way
by frequency and level; the INVITE's identity and WhatsApp headers are read from the phone's
own SIP trace; the phone's hang-up and a busy phone come back as participant events."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from typing import Any

import numpy as np
import pytest

from bridge.api.keys import MANAGER, TRUNKS
from bridge.media.clock import worker_clock
from bridge.metrics import estimate_mos
from bridge.resources import CALL_EVENTS
from bridge.rtc.packets import Bye, parse_rtcp

from ..support.baresip_phone import BaresipPhone
from ..support.calls import peer_heard, wait_state
from ..support.spectrum import dominant_frequency
from ..support.waits import until, until_passes

PEER_HZ, PHONE_HZ = 440, 660
PHONE = "5521999999999"


def level_dbfs(samples: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean((samples / 32768) ** 2)) + 1e-12))


def of(client, kind: str) -> list[Any]:
    return [e for e in client.events if e.type == kind]


async def call_with_trunk(client, phone: BaresipPhone, srtp: str = "off") -> str:
    trunk = {
        "name": "desk phones",
        "uri": f"sip:127.0.0.1:{phone.port};transport=udp",
        "codecs": [phone.codec],
        "srtp": srtp,
    }
    resp = await client.post("/trunks", json=trunk)
    assert resp.status == 201, await resp.text()
    made = await (await client.post("/call/make", json={"phone": PHONE})).json()
    await wait_state(client, made["callID"], "active")
    return made["callID"]


async def add_phone(client, cid: str, phone: BaresipPhone) -> None:
    body = {
        "callID": cid,
        "participantID": "desk",
        "sip": {"uri": f"sip:1001@127.0.0.1:{phone.port}", "headers": {"X-Queue": "sales"}},
    }
    resp = await client.post("/call/participants", json=body)
    assert resp.status == 202, await resp.text()


@pytest.mark.parametrize(
    ("codec", "srtp"),
    [("PCMU", "off"), ("PCMA", "off"), ("G722", "off"), ("PCMU", "sdes"), ("opus", "off")],
)
async def test_a_phone_joins_the_call_and_both_sides_hear_each_other(
    bridge, phone, codec, srtp
) -> None:
    p = await phone(codec, srtp == "sdes")
    cid = await call_with_trunk(bridge, p, srtp)
    await add_phone(bridge, cid, p)
    await until(lambda: of(bridge, "participant.joined"), 10, "participant.joined")
    joined = of(bridge, "participant.joined")[0]
    assert joined.data["participantID"] == "desk" and joined.data["sip"]["codec"] == codec
    snap = await (await bridge.get(f"/call/{cid}")).json()
    shown = [p for p in snap["participants"] if p["participantID"] == "desk"]
    assert shown and shown[0]["sip"]["state"] == "joined" and shown[0]["sip"]["codec"] == codec
    ((_, leg),) = bridge.app[TRUNKS].legs.items()
    assert leg.media is not None and not leg.media.rtcp_mux  # this phone keeps RTCP on port + 1

    def phone_hears_whatsapp() -> None:
        samples, rate = p.heard(1.0)
        heard, level = dominant_frequency(samples, rate), level_dbfs(samples)
        print(f"{codec}/{srtp} phone hears {heard:.1f} Hz at {level:.1f} dBFS")
        assert heard == pytest.approx(PEER_HZ, abs=5) and level > -25

    def whatsapp_hears_phone() -> None:
        samples = peer_heard(bridge, cid, 50)
        heard, level = dominant_frequency(samples, 16000), level_dbfs(samples)
        print(f"{codec}/{srtp} WhatsApp hears {heard:.1f} Hz at {level:.1f} dBFS")
        assert heard == pytest.approx(PHONE_HZ, abs=5) and level > -30

    await until(lambda: p.dump_bytes() > 16000, 10, "the phone's audio")
    await until_passes(phone_hears_whatsapp, 10)
    await until_passes(whatsapp_hears_phone, 10)
    trace = p.log()
    assert f"X-WA-Call-ID: {cid}" in trace and "X-Queue: sales" in trace
    assert f"P-Asserted-Identity: <sip:+{PHONE}@127.0.0.1>" in trace
    assert "X-WA-Wacid: " in trace and f"From: <sip:+{PHONE}@127.0.0.1>" in trace
    # Keys both ways: the phone's RFC 4733 press is the participant's call.dtmf; the WhatsApp
    # user's press reaches the phone as RFC 4733 events.
    await p.command("sndcode", "5")
    await until(lambda: of(bridge, "call.dtmf"), 5, "the phone's key")
    key = of(bridge, "call.dtmf")[0].data
    assert key["digit"] == "5" and key["participantID"] == "desk", key
    runtime = bridge.app[MANAGER].find_runtime(cid)
    runtime.dtmf.on_whatsapp("7", 200)

    def phone_got_key() -> Any:
        return [e for e in p.events if e.get("type") == "CALL_DTMF_START"]

    await until(phone_got_key, 5, "the WhatsApp key at the phone")
    assert "7" in str(phone_got_key()[0]), phone_got_key()
    await p.command("hangup")
    await until(lambda: of(bridge, "participant.left"), 10, "participant.left")
    left = of(bridge, "participant.left")[0]
    assert left.data == {"participantID": "desk", "reason": "hung_up"}
    snap = await (await bridge.get(f"/call/{cid}")).json()
    assert snap["state"] == "active"  # the WhatsApp call goes on
    assert not [p for p in snap["participants"] if p["participantID"] == "desk"]


async def test_g722_carries_the_band_g711_cannot(make_client, tmp_path) -> None:
    """G.722 is wideband end to end (16 kHz, nothing resampled to 8 kHz on the way): tones at
    6 and 5 kHz — above anything G.711's 8 kHz sampling can carry — cross between the WhatsApp
    side and a baresip phone each way, asserted by frequency and level."""
    wa_hz, phone_hz = 6000, 5000
    client = await make_client(
        sim_peer="tone",
        sim_tone_hz=wa_hz,
        data_dir=str(tmp_path),
        sip_trunk_listen="127.0.0.1:0",
    )
    conf = tmp_path / "phone"
    conf.mkdir()
    p = BaresipPhone(conf, "1001", phone_hz, "G722")
    try:
        await p.start_phone()
        client.events = []
        cid = await call_with_trunk(client, p)
        await add_phone(client, cid, p)

        def wideband_both_ways() -> None:
            samples, rate = p.heard(1.0)
            at_phone = dominant_frequency(samples, rate), level_dbfs(samples)
            wa = peer_heard(client, cid, 50)
            at_wa = dominant_frequency(wa, 16000), level_dbfs(wa)
            print(f"G.722: phone hears {at_phone}, WhatsApp hears {at_wa}")
            assert rate == 16000
            assert at_phone[0] == pytest.approx(wa_hz, abs=5) and at_phone[1] > -25
            assert at_wa[0] == pytest.approx(phone_hz, abs=5) and at_wa[1] > -30

        await until(lambda: p.dump_bytes() > 32000, 10, "the phone's audio")
        await until_passes(wideband_both_ways, 10)
    finally:
        await p.stop()


async def test_the_trunk_digest_is_answered_and_a_busy_phone_is_left_busy(bridge, tmp_path) -> None:
    """SIPp plays the PBX: a 401 (MD5) our INVITE answers with the trunk's credentials, which
    SIPp verifies; then ringing and 486 — participant.ringing, participant.left busy."""
    from ..support.sipp import Sipp, tools_missing

    if tools_missing():
        pytest.skip(tools_missing())
    sipp = Sipp(tmp_path, "pbx_phone_busy.xml")
    await sipp.start(
        remote=None,
        keys={},
        server=True,
        transport="u1",
    )
    try:
        trunk = {
            "name": "pbx",
            "uri": f"sip:127.0.0.1:{sipp.port};transport=udp",
            "username": "bridge",
            "password": "trunk-pw",
            "keepalive": 0,  # SIPp's scenario expects the INVITE first
        }
        assert (await bridge.post("/trunks", json=trunk)).status == 201
        made = await (await bridge.post("/call/make", json={"phone": PHONE})).json()
        cid = made["callID"]
        await wait_state(bridge, cid, "active")
        body = {"callID": cid, "participantID": "desk", "sip": {"uri": "sip:1001@pbx.test"}}
        assert (await bridge.post("/call/participants", json=body)).status == 202
        await until(lambda: of(bridge, "participant.left"), 10, "participant.left")
        assert [e.data for e in of(bridge, "participant.ringing")] == [
            {"participantID": "desk", "sipCode": 180}
        ]
        left = of(bridge, "participant.left")[0].data
        assert left == {"participantID": "desk", "reason": "busy", "sipCode": 486}
        assert await sipp.finish() == 0, sipp.report()
        assert "digest OK" in sipp.logged() and f"X-WA-Call-ID {cid}" in sipp.logged()
    finally:
        await sipp.stop()


def first_tone_at(p: BaresipPhone) -> float | None:
    """Seconds into the phone's decoded dump where the tone starts (``None``: not yet)."""
    try:
        samples, rate = p.heard(600.0)
    except (StopIteration, ValueError):
        return None
    loud = np.flatnonzero(np.abs(samples) > 2000)
    return loud[0] / rate if loud.size else None


async def test_a_number_answered_straight_into_the_pbx(bridge, phone) -> None:
    """A trunk that answers the default number's calls: the WhatsApp user's inbound call is
    answered by the bridge and rung through to the phone with no app code; tones both ways;
    the phone's hang-up ends the WhatsApp call. Timed: the call's arrival to the first tone
    decoded at the phone."""
    import time

    p = await phone()
    trunk = {
        "name": "reception",
        "uri": f"sip:127.0.0.1:{p.port};transport=udp",
        "answer": {"numbers": ["default"], "uri": f"sip:1001@127.0.0.1:{p.port}"},
    }
    resp = await bridge.post("/trunks", json=trunk)
    assert resp.status == 201, await resp.text()
    start = time.monotonic()
    resp = await bridge.post("/call/sim/incoming", json={"phone": PHONE})
    assert resp.status == 201, await resp.text()
    cid = (await resp.json())["callID"]
    await until(lambda: first_tone_at(p) is not None, 10, "the tone at the phone")
    arrival = time.monotonic() - start
    print(f"WhatsApp call in → tone decoded at the phone within {arrival * 1000:.0f} ms")
    await wait_state(bridge, cid, "active")

    def both_hear() -> None:
        samples, rate = p.heard(1.0)
        assert dominant_frequency(samples, rate) == pytest.approx(PEER_HZ, abs=5)
        assert level_dbfs(samples) > -25
        wa = peer_heard(bridge, cid, 50)
        assert dominant_frequency(wa, 16000) == pytest.approx(PHONE_HZ, abs=5)
        assert level_dbfs(wa) > -30

    await until_passes(both_hear, 10)
    assert arrival < 1.0
    await p.command("hangup")
    await wait_state(bridge, cid, "ended")


async def test_a_call_goes_from_a_browser_to_a_phone_and_back(bridge, phone) -> None:
    """Roles and hand-offs treat a phone as a browser: the browser agent (1 000 Hz) hands the
    call to the phone warm (a role change: the browser becomes a listener); the phone's call is
    held with music (WhatsApp hears the music, not the phone) and resumed; then a second
    browser (1 300 Hz) takes it cold (``/call/transfer``: the phone is hung up, ``transferred``).
    Who WhatsApp hears is asserted by frequency after each step, and what the phone hears."""
    import aiohttp

    from ..integration.test_participants import join
    from ..support.audio_files import make
    from ..support.spectrum import assert_hears

    first_hz, second_hz, music_hz = 1000.0, 1300.0, 1700.0
    p = await phone()
    cid = await call_with_trunk(bridge, p)
    first = await join(bridge, cid, "agent", "agent", first_hz)
    second = None
    try:
        body = {
            "callID": cid,
            "participantID": "desk",
            "role": "listen",
            "sip": {"uri": f"sip:1001@127.0.0.1:{p.port}"},
        }
        assert (await bridge.post("/call/participants", json=body)).status == 202
        await until(lambda: of(bridge, "participant.joined"), 10, "the phone joined")
        await asyncio.sleep(1.2)
        assert_hears(peer_heard(bridge, cid, 40), 16_000, {first_hz}, {PHONE_HZ})

        # Warm: the phone takes the agent's role; the browser stays, as a listener.
        resp = await bridge.post(
            "/call/participants/role",
            json={"callID": cid, "participantID": "desk", "role": "agent"},
        )
        assert resp.status == 200, await resp.text()
        roles = {x["participantID"]: x["role"] for x in (await resp.json())["participants"]}
        assert roles == {"agent": "listen", "desk": "agent"}, roles
        await asyncio.sleep(1.2)
        assert_hears(peer_heard(bridge, cid, 40), 16_000, {PHONE_HZ}, {first_hz})

        def phone_hears_whatsapp() -> None:
            samples, rate = p.heard(1.0)
            assert dominant_frequency(samples, rate) == pytest.approx(PEER_HZ, abs=5)
            assert level_dbfs(samples) > -25

        await until_passes(phone_hears_whatsapp, 5)

        # Hold with music while the phone is the agent: WhatsApp hears the music alone.
        form = aiohttp.FormData()
        form.add_field("audio", make("wav", music_hz, 2.0), filename="hold.wav")
        asset = await (await bridge.post("/call/audio-assets", data=form)).json()
        hold = {"callID": cid, "held": True, "music": asset["assetId"]}
        # (Each change waited for, bounded: a loaded host played WhatsApp 800 ms of silence
        # 1.2 s after the resume.)
        assert (await bridge.post("/call/hold", json=hold)).status == 200
        await asyncio.sleep(1.2)
        await until_passes(
            lambda: assert_hears(
                peer_heard(bridge, cid, 40), 16_000, {music_hz}, {PHONE_HZ, first_hz}
            )
        )
        assert (await bridge.post("/call/hold", json={**hold, "held": False})).status == 200
        await asyncio.sleep(1.2)
        await until_passes(
            lambda: assert_hears(
                peer_heard(bridge, cid, 40), 16_000, {PHONE_HZ}, {music_hz, first_hz}
            )
        )

        # Cold: a second browser joins as a listener and takes the call; the phone is hung up.
        second = await join(bridge, cid, "next", "listen", second_hz)
        resp = await bridge.post("/call/transfer", json={"callID": cid, "to": "next"})
        assert resp.status == 200, await resp.text()
        await until(lambda: of(bridge, "participant.left"), 10, "the phone left")
        left = of(bridge, "participant.left")[0].data
        assert left == {"participantID": "desk", "reason": "transferred"}, left
        moved = of(bridge, "call.transferred")[-1].data
        assert moved["participantID"] == "next" and moved["fromParticipantID"] == "desk", moved
        await until(
            lambda: [e for e in p.events if e.get("type") == "CALL_CLOSED"], 5, "the phone's BYE"
        )
        await asyncio.sleep(1.2)
        assert_hears(peer_heard(bridge, cid, 40), 16_000, {second_hz}, {PHONE_HZ, first_hz})
        snap = await (await bridge.get(f"/call/{cid}")).json()
        roles = {x["participantID"]: x["role"] for x in snap["participants"]}
        assert roles == {"agent": "listen", "next": "agent"}, roles
    finally:
        await first.close()
        if second is not None:
            await second.close()


@pytest.mark.parametrize("codec", ["PCMU", "opus"])
async def test_a_cloud_api_call_reaches_a_phone(make_client, meta, phone, tmp_path, codec) -> None:
    """The same phone on a Cloud API call (the fake Meta's WebRTC user, 440 Hz): answered with
    no browser, the phone called in as the agent; tones both ways by frequency and level, on
    G.711 (WhatsApp's Opus decoded and coded again) and on Opus, where each side's packets are
    forwarded to the other untouched (counted on both legs)."""
    meta.user_tone_hz = PEER_HZ
    client = await make_client(
        **meta.bridge_settings(), data_dir=str(tmp_path), sip_trunk_listen="127.0.0.1:0"
    )
    p = await phone(codec)
    trunk = {"name": "desk phones", "uri": f"sip:127.0.0.1:{p.port};transport=udp"}
    resp = await client.post("/trunks", json={**trunk, "codecs": [codec]})
    assert resp.status == 201, await resp.text()
    mcall = await meta.user_calls(client, "15550007777")

    async def ringing() -> list[Any]:
        return (await (await client.get("/call/status")).json())["calls"]

    calls: list[Any] = []
    for _ in range(250):
        if calls := await ringing():
            break
        await asyncio.sleep(0.02)
    cid = calls[0]["callID"]
    assert (await client.post("/call/answer", json={"callID": cid})).status == 200
    await wait_state(client, cid, "active")
    await asyncio.wait_for(mcall.peer.connected.wait(), 10)
    body = {"callID": cid, "participantID": "desk", "role": "agent"}
    body["sip"] = {"uri": f"sip:1001@127.0.0.1:{p.port}"}
    assert (await client.post("/call/participants", json=body)).status == 202

    def phone_hears_whatsapp() -> None:
        samples, rate = p.heard(1.0)
        heard, level = dominant_frequency(samples, rate), level_dbfs(samples)
        print(f"{codec}: the phone hears {heard:.1f} Hz at {level:.1f} dBFS")
        assert heard == pytest.approx(PEER_HZ, abs=5) and level > -30

    def whatsapp_hears_phone() -> None:
        assert mcall.peer.recorder.chunks, "WhatsApp hears nothing yet"  # polled, not raised
        samples = np.concatenate(mcall.peer.recorder.chunks[-50:]).astype(np.float64)
        rate = mcall.peer.recorder.rate
        heard, level = dominant_frequency(samples, rate), level_dbfs(samples)
        print(f"{codec}: the WhatsApp user hears {heard:.1f} Hz at {level:.1f} dBFS")
        assert heard == pytest.approx(PHONE_HZ, abs=5) and level > -30

    await until(lambda: p.dump_bytes() > 16000, 10, "the phone's audio")
    await until_passes(phone_hears_whatsapp, 10)
    await until_passes(whatsapp_hears_phone, 10)
    runtime = client.app[MANAGER].find_runtime(cid)
    (leg,) = runtime.attached("sip")

    def forwarded() -> tuple[int, int]:
        to_whatsapp = runtime.media.webrtc_leg.leg_json()["framesForwarded"]
        return leg.media.track.forwarded_frames, to_whatsapp

    if codec == "opus":  # each side's packets reach the other untouched (calls/forwarding.py)
        await until(lambda: min(forwarded()) > 50, 5, "a second forwarded each way")
    else:
        await asyncio.sleep(1.0)
        assert forwarded() == (0, 0)
    print(f"{codec}: packets forwarded to the phone, to WhatsApp: {forwarded()}")
    await asyncio.sleep(1.0)  # what each side heard this last second came through as it was sent
    phone_hears_whatsapp()
    whatsapp_hears_phone()
    # Recorded as any call is (both sides still decoded while forwarded): WhatsApp's 440 Hz in
    # the inbound track, the phone's 660 Hz in the outbound one.
    from ..integration.test_playback_recording import read_wav
    from ..support.spectrum import band_energy

    assert (await client.post("/call/record", json={"callID": cid})).status == 201
    await asyncio.sleep(1.5)
    stopped = await (await client.post("/call/record/stop", json={"callID": cid})).json()
    tracks = {r["kind"]: r for r in stopped["recordings"]}
    for kind, hz, other in (("inbound", PEER_HZ, PHONE_HZ), ("outbound", PHONE_HZ, PEER_HZ)):
        pcm, rate = read_wav(tmp_path / tracks[kind]["path"])
        tail = pcm[4000:]
        assert band_energy(tail, rate, hz) > 0.8 and band_energy(tail, rate, other) < 0.02, kind
    await client.post("/call/hangup", json={"callID": cid})
    await wait_state(client, cid, "ended")


@pytest.mark.parametrize("srtp", ["off", "sdes"])
async def test_a_phone_that_multiplexes_rtcp_gets_our_reports_and_we_read_its(
    make_client, tmp_path, srtp
) -> None:
    """RTCP on a trunk leg (RFC 3550 with RFC 5761 multiplexing, both SDPs saying
    ``a=rtcp-mux``): the phone's receiver reports reach the leg's session and name our SSRC
    with no loss; its report's LSR echoes one of our sender reports, so a round trip is
    measured (proof both ways: it got ours, we got its); what we count of the phone's stream
    has no loss and a jitter of a few milliseconds. A phone without ``a=rtcp-mux`` gets none
    (the leg's RTCP stays off: ``rtcp_mux`` false), as the other tests' phones. In the clear
    and under SDES (SRTCP). The call's report shows the phone's leg from its RTP session."""
    bridge = await make_client(
        sim_peer="tone",
        sim_tone_hz=440,
        data_dir=str(tmp_path),
        sip_trunk_listen="127.0.0.1:0",
        call_reports=True,
    )
    events: list[Any] = []
    bridge.app[CALL_EVENTS].observe(lambda event, call: events.append(event))
    bridge.events = events
    conf = tmp_path / "muxphone"
    conf.mkdir()
    p = BaresipPhone(conf, "1001", PHONE_HZ)
    try:
        await p.start_phone(srtp=srtp == "sdes", rtcp_mux=True)
        cid = await call_with_trunk(bridge, p, srtp)
        clock = worker_clock()
        skipped_before = clock.skipped
        await add_phone(bridge, cid, p)
        await until(lambda: of(bridge, "participant.joined"), 10, "participant.joined")
        ((_, leg),) = bridge.app[TRUNKS].legs.items()
        media = leg.media
        assert media is not None and media.rtcp_mux
        assert "a=rtcp-mux" in leg.sdp_sent.decode() and "a=rtcp-mux" in p.log()
        reports = media.leg.reports
        # Our first report within one interval (5 s ± 50 %), the phone's answer to it next.
        await until(lambda: reports.far.rtt_s is not None, 20, "a round trip from RTCP")
        far, received = reports.far, reports.reception
        print(
            f"phone reports: {reports.far_reports}, loss {far.fraction_lost:.3f}, "
            f"rtt {far.rtt_s * 1000:.1f} ms; we: {received.packets_received} received, "
            f"{received.packets_lost} lost, jitter {received.jitter_s * 1000:.2f} ms"
        )
        assert far.fraction_lost == 0 and far.packets_lost == 0
        assert 0 <= far.rtt_s < 0.2  # loopback, both ends' report handling included
        # The newest of our packets it had seen then: a few seconds behind ours at most.
        assert (media.leg.stream.next_seq - far.highest_sequence) & 0xFFFF < 500
        assert received.packets_received > 100 and received.packets_lost == 0
        assert received.jitter_s < 0.02
        socket = media.socket
        assert socket is not None and socket.rtcp_sent >= 1 and socket.rtcp_received >= 1

        # The call's report has the phone's leg a row a second: its packets (50 a second of
        # G.711 at 64 kbit/s each way, none lost), and from the first sample after the phone's
        # report, the round trip and the loss it reports of ours.
        async def phone_rows() -> list[dict[str, Any]]:
            report = await (await bridge.get(f"/call/{cid}/report")).json()
            assert report["summary"]["setup"]["sip:desk"]["receivedS"] is not None
            return [r for r in report["timeline"] if r["leg"] == "sip:desk"]

        rows: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + 5
        while not any(r["rttMs"] is not None for r in rows):
            assert asyncio.get_running_loop().time() < deadline, rows
            await asyncio.sleep(0.2)
            rows = await phone_rows()
        full = rows[1:]  # the first row covers the second the leg joined in
        assert full and all(r["packetsLost"] == 0 for r in rows), rows
        # 50 packets a second over each row's own span. A row's ``t`` is rounded to 0.1 s, so
        # one span is known to ±0.1 s (±5 packets: 50 in a "1.1 s" row, 54 in a "1.0 s" one,
        # both seen) and a packet more or less meets the edges; over all the rows the
        # rounding is the ends' only, to the same ±6 packets in some 300. The phone keeps its
        # own clock: on a loaded host baresip's sender thread stalls and sends the stalled
        # packets in a burst, so one second may carry up to a quarter second of the next's
        # (once on CI, a row outside ±6), and a stall at the last sample leaves its packets out
        # of the total; a doubled or missing stream is ±50 a row and ±300 in all.
        spans = [(r["packetsReceived"], r["t"] - before["t"]) for before, r in pairwise(rows)]
        assert all(n == pytest.approx(50 * span, abs=13) for n, span in spans), (spans, rows)
        total = sum(n for n, _ in spans)
        assert total == pytest.approx(50 * sum(span for _, span in spans), abs=13), (spans, rows)
        # G.711's 64 kbit/s: on average to 2 kbit/s, each second to 7 (a sampler's second
        # that meets the leg's ticks early or late on a loaded host counts a packet or three
        # more or less; a second codec or a doubled stream would be far off both). Less only
        # by the ticks the worker's clock skipped (a stall past its resync: the phone was sent
        # nothing for them, as every leg on the clock; on CI once, 14 ticks in one second).
        # A shorter stall is caught up tick by tick, so up to ``resync`` of packets (10) may
        # go out in the second after the one they were due in (seen: 60.2 then 71.7).
        catch_up = 64 * clock.resync
        skipped_s = (clock.skipped - skipped_before) * clock.period
        sent = [(r["kbpsSent"], r["t"] - before["t"]) for before, r in pairwise(rows)]
        sent = sent[:-1]  # the newest second may be partial
        seconds = sum(span for _, span in sent)
        kbit = sum(kbps * span for kbps, span in sent)
        assert 62 * seconds - 64 * skipped_s <= kbit <= 66 * seconds, (sent, skipped_s)
        assert all(
            57 - catch_up - 64 * skipped_s / span <= kbps <= 71 + catch_up for kbps, span in sent
        ), (
            sent,
            skipped_s,
        )
        reported = [r for r in rows if r["rttMs"] is not None][-1]
        assert reported["lossReportedPercent"] == 0, reported
        # The score is the E-model's of the second's own measures: on loopback nothing is
        # lost, so only what the receiver concealed (a starved host delivers a packet late)
        # takes it below G.711's ceiling: 4.41 with none, above 4 up to 2 % concealed.
        concealed = reported["concealedMs"] / 1000
        expected = estimate_mos(concealed, reported["jitterMs"] / 1000, reported["rttMs"] / 1000)
        assert reported["mos"] == pytest.approx(expected, abs=0.02), reported
        assert reported["mos"] > 4 or reported["concealedMs"] > 0, reported
        # The phone hangs up: the leg's last RTCP packet ends with a BYE (RFC 3550 §6.6).
        sent: list[bytes] = []
        send_rtcp = socket.send_rtcp
        socket.send_rtcp = lambda plain: (sent.append(plain), send_rtcp(plain))[1]
        await p.command("hangup")
        await until(lambda: of(bridge, "participant.left"), 10, "participant.left")
        assert sent and isinstance(parse_rtcp(sent[-1])[-1], Bye)
        assert parse_rtcp(sent[-1])[-1].sources == [media.leg.stream.ssrc]
    finally:
        await p.stop()
