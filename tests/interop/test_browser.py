"""Real Chromium (Debian's package, driven by Playwright) through the demo page and
bridge-client.js, with a fake microphone playing a WAV tone."""

from __future__ import annotations

import asyncio
import re

import pytest

from bridge.audio import tone
from bridge.rtc import aiortc_seam

from ..support import waits
from ..support.calls import wait_state
from ..support.chromium import (
    ARTIFACTS,
    chromium_hearing,
    loopback_only,
    mic_wav,
    require_chromium,
    wait_for,
)

require_chromium()


@pytest.fixture(scope="module")
def tone_wav(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("mic") / "tone440.wav"
    return mic_wav(path, tone(440.0, 48_000 * 10, 48_000, 0.5))


@pytest.fixture
async def browser(tone_wav):
    async with chromium_hearing(tone_wav) as b:
        yield b


FREQ_JS = """async () => {
  const a = window.demo.client.outputAnalyser;
  if (!a) return null;
  a.fftSize = 16384;
  await new Promise(r => setTimeout(r, 600));
  const bins = new Float32Array(a.frequencyBinCount);
  a.getFloatFrequencyData(bins);
  let k = 1;
  for (let i = 1; i < bins.length; i++) if (bins[i] > bins[k]) k = i;
  const level = window.demo.client.outputLevel();
  return {hz: k * a.context.sampleRate / a.fftSize, peakDb: bins[k], level};
}"""

ECHO_HEARD = "window.demo.client.outputLevel() > -30"
"""The page plays the echo (waited for, bounded, before :data:`FREQ_JS` judges it)."""


async def test_demo_page_call_echo_mute_hangup_and_inbound(client, browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = await browser.new_page()
    await page.route("**/call/webrtc/offer", loopback_only)
    await page.goto(str(client.make_url("/")))
    await page.click("#call")
    await wait_for(page, "document.getElementById('state').textContent.includes('active')")
    await wait_for(
        page, "window.demo.client.pc && window.demo.client.pc.connectionState === 'connected'"
    )
    await wait_for(page, ECHO_HEARD)
    echo = await page.evaluate(FREQ_JS)
    await page.screenshot(path=str(ARTIFACTS / "demo-in-call.png"))
    assert echo["hz"] == pytest.approx(440, abs=8), echo
    assert echo["level"] > -30, echo

    # Mute: the WhatsApp side hears silence, so the echo goes silent.
    await page.click("#mute")
    await asyncio.sleep(1.5)
    muted = await page.evaluate("window.demo.client.outputLevel()")
    assert muted < -50, muted
    snap = (await (await client.get("/call/status")).json())["calls"][0]
    assert snap["muted"] is True
    await page.click("#mute")

    # Recovery: a new offer on the same call (what the client does by itself when the
    # connection fails) replaces the peer connection, and the echo comes back.
    first_pc = await page.evaluate_handle("window.firstPc = window.demo.client.pc")
    await page.evaluate("window.demo.client.reconnect()")
    await wait_for(
        page,
        "window.demo.client.pc && window.demo.client.pc !== window.firstPc && "
        "window.demo.client.pc.connectionState === 'connected'",
    )
    # Up again: a later loss gets its own maxRecoveries offers.
    assert await page.evaluate("window.demo.client.recoveries") == 0
    assert await page.evaluate("pc => pc.connectionState", first_pc) == "closed"
    await wait_for(page, ECHO_HEARD)
    echo = await page.evaluate(FREQ_JS)
    assert echo["hz"] == pytest.approx(440, abs=8), echo
    metrics = await (await client.get("/metrics")).text()
    assert 'bridge_webrtc_offers_total{result="answered"} 2.0' in metrics
    same = await (await client.get(f"/call/{snap['callID']}")).json()
    assert same["state"] == "active" and same["webrtc"]["state"] == "connected"

    await page.click("#hangup")
    ended = await wait_state(client, snap["callID"], "ended", timeout=5)
    assert ended["endReason"] == "hangup"

    async def page_says_ended() -> bool:
        return "ended" in (await page.text_content("#state") or "")

    await waits.until(page_says_ended, 5.0, "the page to show the call ended", every=0.05)

    # An inbound simulated call rings in the page and can be answered there.
    resp = await client.post("/call/sim/incoming", json={"phone": "+15550001111"})
    inbound = await resp.json()
    await page.wait_for_selector(
        f"li[data-callid='{inbound['callID']}'] button.answer", timeout=5000
    )
    await page.screenshot(path=str(ARTIFACTS / "demo-ringing.png"))
    await page.click(f"li[data-callid='{inbound['callID']}'] button.answer")
    await wait_for(
        page, "window.demo.client.pc && window.demo.client.pc.connectionState === 'connected'"
    )
    # The page joins first (its peer connection may connect before the answer's request has
    # been served), then answers: wait for the answer rather than race it.
    answered = await wait_state(client, inbound["callID"], "active")
    assert answered["transport"] == "webrtc"
    await wait_for(page, ECHO_HEARD)
    echo = await page.evaluate(FREQ_JS)
    assert echo["hz"] == pytest.approx(440, abs=8), echo
    await page.close()


async def test_chromium_rtcdtmfsender_digits_become_events(client, browser) -> None:
    """The bridge answers telephone-event, so Chromium's RTCDTMFSender works: insertDTMF("123")
    gives three call.dtmf events (source agent), passed on to the (sim) WhatsApp side as
    in-band tones. (The sim peer echoes what it hears, so the bridge's in-band detector may
    also report some of them back with source whatsapp: not counted here.)"""
    from bridge.api.keys import MANAGER

    page = await browser.new_page()
    await page.route("**/call/webrtc/offer", loopback_only)
    await page.goto(str(client.make_url("/")))
    async with client.app[MANAGER].events.subscribe() as sub:
        await page.click("#call")
        await wait_for(
            page, "window.demo.client.pc && window.demo.client.pc.connectionState === 'connected'"
        )
        await wait_for(page, "document.getElementById('state').textContent.includes('active')")
        can = await page.evaluate(
            "window.demo.client.pc.getSenders().find(s => s.track && s.track.kind === 'audio')"
            ".dtmf.canInsertDTMF"
        )
        assert can is True
        await page.evaluate(
            "window.demo.client.pc.getSenders().find(s => s.track && s.track.kind === 'audio')"
            ".dtmf.insertDTMF('123', 100, 70)"
        )
        events = []
        deadline = asyncio.get_running_loop().time() + 5
        while len([e for e in events if e.data.get("source") == "agent"]) < 3:
            assert asyncio.get_running_loop().time() < deadline, [e.type for e in events]
            try:
                event = await sub.get(0.1)
            except TimeoutError:
                continue
            if event is not None and event.type.startswith("call.dtmf"):
                events.append(event)
        while len([e for e in events if e.type == "call.dtmf.sent"]) < 3:
            assert asyncio.get_running_loop().time() < deadline, [e.type for e in events]
            try:
                event = await sub.get(0.1)
            except TimeoutError:
                continue
            if event is not None and event.type.startswith("call.dtmf"):
                events.append(event)
    presses = [e.data for e in events if e.type == "call.dtmf" and e.data["source"] == "agent"]
    assert [p["digit"] for p in presses] == ["1", "2", "3"], presses
    assert all(p["participantID"] == "agent" for p in presses)
    assert all(80 <= p["durationMs"] <= 140 for p in presses), presses
    sent = [e.data for e in events if e.type == "call.dtmf.sent"]
    assert [s["digits"] for s in sent] == ["1", "2", "3"]
    assert all(s["method"] == "inband" and s["source"] == "agent" for s in sent)
    await page.close()


async def test_chromium_agent_on_a_cloudapi_call(make_client, meta, browser) -> None:
    """Real Chromium answers a WhatsApp user's Cloud API call: two WebRTC legs, one bus."""
    import numpy as np

    from bridge.audio import rms_dbfs

    from ..support.spectrum import dominant_frequency

    client = await make_client(**meta.bridge_settings())
    page = await browser.new_page()
    await page.route("**/call/webrtc/offer", loopback_only)
    await page.goto(str(client.make_url("/")))
    await asyncio.sleep(0.5)  # the page's event stream is up
    mcall = await meta.user_calls(client, "15550007777")

    async def listed() -> list:
        return (await (await client.get("/call/status")).json())["calls"]

    calls = await waits.until(listed, 5.0, "the call to be listed", every=0.05)
    call_id = calls[0]["callID"]
    await page.wait_for_selector(f"li[data-callid='{call_id}'] button.answer", timeout=5000)
    await page.click(f"li[data-callid='{call_id}'] button.answer")
    await wait_for(
        page, "window.demo.client.pc && window.demo.client.pc.connectionState === 'connected'"
    )
    # The page joins first (its peer connection may connect before Meta took the accept),
    # then answers: wait for the answer rather than race it.
    answered = await wait_state(client, call_id, "active")
    assert answered["transport"] == "webrtc"
    assert any(a["action"] == "accept" for a in meta.actions) and not meta.refused
    await asyncio.sleep(2.0)
    heard = await page.evaluate(FREQ_JS)
    assert heard["hz"] == pytest.approx(660, abs=8), heard  # the WhatsApp user's tone
    assert heard["level"] > -30, heard
    rec = mcall.peer.recorder
    pcm = np.concatenate(rec.chunks)[-rec.rate :]
    assert dominant_frequency(pcm, rec.rate) == pytest.approx(440, abs=5)  # Chromium's mic
    # Chromium processes its (fake) microphone (AGC, noise suppression): about -25 dBFS here.
    assert rms_dbfs(pcm / 32768) > -35
    await page.click("#hangup")
    ended = await wait_state(client, call_id, "ended", timeout=5)
    assert ended["endReason"] == "hangup"
    assert [a["action"] for a in meta.actions if a.get("call_id") == mcall.wacid][-1] == "terminate"
    await page.close()


@pytest.fixture
async def warbling_browser(tmp_path):
    """Chromium whose fake microphone plays a tone wavering like a voice (±40 Hz at 4 Hz):
    libopus codes a steady tone with almost no FEC data, a voice with plenty."""
    import numpy as np

    t = np.arange(48_000 * 20) / 48_000
    pcm = np.sin(2 * np.pi * (440 * t + 10 * np.sin(2 * np.pi * 4 * t))) * 0.5 * 32767
    async with chromium_hearing(mic_wav(tmp_path / "warble.wav", pcm)) as b:
        yield b


async def lossy_call(client, browser, *, until) -> tuple[dict, dict, float]:
    """A demo-page call whose Chromium loses 15 % of its packets on the way to the bridge
    (seeded, before aiortc: its RTCP reports the loss); polls the call's stats until
    ``until(receiver)``; returns the uplink receiver's numbers, the session's, and the echo's
    level."""
    import random

    from bridge.api.keys import MANAGER

    page = await browser.new_page()
    await page.route("**/call/webrtc/offer", loopback_only)
    await page.goto(str(client.make_url("/")))
    await page.click("#call")
    await wait_for(
        page, "window.demo.client.pc && window.demo.client.pc.connectionState === 'connected'"
    )
    answer = await page.evaluate("window.demo.client.pc.remoteDescription.sdp")
    assert "useinbandfec=1" in answer and "stereo=0" in answer
    snap = (await (await client.get("/call/status")).json())["calls"][0]
    session = client.app[MANAGER].runtime(snap["callID"]).participants.agent
    dtls = next(t.receiver for t in session.pc.getTransceivers() if t.kind == "audio").transport
    # The datagrams as they reach the leg's RTP session (rtc/dtls_srtp.py, once attached).
    connection = aiortc_seam.ice_connection(dtls.transport)
    # aiortc starts the receiver just after the connection is up.
    await waits.until(lambda: "data_received" in vars(connection), 5.0, "the session's wire")
    handle = aiortc_seam.taken_datagrams(connection)
    assert handle == session._wire.datagram
    rng = random.Random(9)

    def lossy(data, component, at):  # SRTP only: SRTCP and DTLS go through
        srtp = 128 <= data[0] <= 191 and not 192 <= data[1] <= 223
        if not srtp or rng.random() >= 0.15:
            handle(data, component, at)

    vars(connection)["_bridge_datagrams"] = lossy  # where the guard hands the leg its media
    rx: dict = {}
    for _ in range(150):
        await asyncio.sleep(0.1)
        webrtc = (await (await client.get(f"/call/{snap['callID']}/stats")).json())["webrtc"]
        rx = webrtc["receiver"]
        if until(rx):
            break
    await asyncio.sleep(3.0)  # a few more seconds at the steady state, for the figures
    webrtc = (await (await client.get(f"/call/{snap['callID']}/stats")).json())["webrtc"]
    echo = await page.evaluate(FREQ_JS)
    await page.close()
    return webrtc["receiver"], webrtc, echo["level"]


async def test_chromium_sends_fec_once_the_bridge_reports_loss(
    make_client, warbling_browser
) -> None:
    """The bridge's answer asks for in-band FEC (useinbandfec=1): once the bridge's RTCP
    reports loss, Chromium's Opus encoder puts LBRR data in its packets, and the bridge's
    receiver rebuilds lost frames from it (aiortc answered with no Opus parameters before,
    and no browser sent any FEC). RED off, so FEC is all there is."""
    client = await make_client(opus_red=False)
    rx, webrtc, level = await lossy_call(
        client, warbling_browser, until=lambda rx: rx["fecPacketsReceived"] >= 10
    )
    assert rx["fecPacketsReceived"] >= 10, rx
    assert rx["packetsLost"] > rx["fecPacketsReceived"]  # FEC rebuilt some, not all
    assert webrtc["redPackets"] == 0
    assert level > -30  # the echo of the warble still plays
    print(
        "Chromium, FEC only:",
        {
            k: rx[k]
            for k in (
                "packetsLost",
                "fecPacketsReceived",
                "concealedSamples",
                "jitterBufferEmittedCount",
            )
        },
    )


async def test_chromium_red_replaces_lost_packets_with_their_copies(
    make_client, warbling_browser
) -> None:
    """Chromium offers RED (RFC 2198) over Opus; answered with it, it sends each frame twice
    and the bridge's receiver replaces a lost packet with its copy from the next one."""
    from ..support.loops import LoopLag

    client = await make_client()
    async with LoopLag() as lag:  # the bridge's receiver shares this process's loop
        rx, webrtc, level = await lossy_call(
            client, warbling_browser, until=lambda rx: rx["redRecoveredPackets"] >= 20
        )
    assert webrtc["redPackets"] > 100
    assert rx["redRecoveredPackets"] >= 20, rx
    # A single lost packet costs nothing: most losses never reach concealment. (A stall of
    # this process conceals what came late, lost or not: 75 frames for 115 lost once at load
    # 3.7, in a clean-clone run.)
    concealed_frames = rx["concealedSamples"] / 320
    assert concealed_frames < 0.5 * rx["packetsLost"] + lag.frames, (rx, lag.stalled)
    assert level > -30
    print(
        "Chromium, RED:",
        {
            k: rx[k]
            for k in (
                "packetsLost",
                "redRecoveredPackets",
                "fecPacketsReceived",
                "concealedSamples",
                "jitterBufferEmittedCount",
            )
        },
    )


INBOUND_JS = """async () => {
  const stats = await window.demo.client.pc.getStats();
  for (const s of stats.values())
    if (s.type === 'inbound-rtp' && s.kind === 'audio')
      return {concealed: s.concealedSamples, total: s.totalSamplesReceived,
              lost: s.packetsLost, received: s.packetsReceived};
  return null;
}"""


async def downlink_concealment(client, browser, window: int = 48_000 * 6) -> tuple[float, dict]:
    """A demo-page call (the sim echoes the warble) whose bridge loses 15 % of the packets it
    sends Chromium (seeded, after SRTP: Chromium's RTCP receiver reports tell the bridge).
    Once the bridge protects the downlink, Chromium's own ``getStats()`` is read over
    ``window`` samples received: returns the share of them NetEq concealed, and the session's
    stats."""
    import random

    from bridge.api.keys import MANAGER

    from ..support.loops import LoopLag
    from ..support.waits import until

    page = await browser.new_page()
    await page.route("**/call/webrtc/offer", loopback_only)
    await page.goto(str(client.make_url("/")))
    await page.click("#call")
    await wait_for(
        page, "window.demo.client.pc && window.demo.client.pc.connectionState === 'connected'"
    )
    answer = await page.evaluate("window.demo.client.pc.remoteDescription.sdp")
    snap = (await (await client.get("/call/status")).json())["calls"][0]
    lean = client.app[MANAGER].runtime(snap["callID"]).participants.agent.leg.sender
    await until(lambda: lean.running, what="the bridge's sender")
    send, rng = lean.send_rtp, random.Random(21)

    def lossy(data: bytes) -> None:  # the sender's RTP to its wire (synchronous; RTCP goes on)
        if rng.random() >= 0.15:
            send(data)

    lean.send_rtp = lossy

    async def protection() -> dict:
        stats = await (await client.get(f"/call/{snap['callID']}/stats")).json()
        return stats["webrtc"]

    for _ in range(100):  # Chromium reports every second or so; protection follows at once
        webrtc = await protection()
        shown = webrtc["downlinkProtection"]
        if shown["lossEstimate"] and (shown["expectedLoss"] or shown["redDepth"]):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # the protected packets reach Chromium's jitter buffer
    # This process sends the bridge's packets: a stall of it makes NetEq conceal what came
    # late, with or without RED (a loaded full run: 4 % concealed with RED). A window in which
    # it stalled past 100 ms in all is measured again, up to three; the least stalled counts.
    windows = []
    for _ in range(3):
        async with LoopLag() as lag:
            first = await page.evaluate(INBOUND_JS)
            await wait_for(
                page,
                f"window.demo.client.pc.getStats().then(r => [...r.values()].some(s => "
                f"s.type === 'inbound-rtp' && s.totalSamplesReceived >= "
                f"{first['total'] + window}))",
                timeout=30,
            )
            last = await page.evaluate(INBOUND_JS)
        windows.append((lag.stalled, first, last))
        if lag.stalled < 0.1:
            break
    _stalled, first, last = min(windows, key=lambda w: w[0])
    webrtc = await protection()
    # A stall of this process leaves report intervals in which it sent nothing: Chromium
    # reports no loss, the estimate decays (rtc/protection.py) and RED's depth steps down to
    # one, FEC's plan to nothing, until a lossy report comes (seen at loads 8-11). What the
    # loss makes of the protection is judged: read again for up to 3 s until it shows (FEC
    # planned, or RED at its full depth); never, and the callers' checks fail.
    for _ in range(30):
        shown = webrtc["downlinkProtection"]
        if shown["expectedLoss"] or shown["redDepth"] >= 2:
            break
        await asyncio.sleep(0.1)
        webrtc = await protection()
    await page.close()
    lost = last["lost"] - first["lost"]
    assert lost > 0.08 * (last["received"] - first["received"]), (first, last)
    webrtc["answer"] = answer
    webrtc["stalledShare"] = _stalled * 48_000 / window  # what this process's stalls explain
    return (last["concealed"] - first["concealed"]) / (last["total"] - first["total"]), webrtc


async def test_chromium_hears_red_from_the_bridge_under_loss(make_client, warbling_browser) -> None:
    """The bridge sends RED (RFC 2198) to a Chromium that offered it, once Chromium's reports
    show loss: under 15 % loss NetEq conceals at most half as much audio as with in-band FEC
    alone (the same call with RED off: the bridge neither answers nor sends it)."""
    fec_share, fec = await downlink_concealment(await make_client(opus_red=False), warbling_browser)
    assert fec["downlinkProtection"]["expectedLoss"] > 0, fec
    assert fec["downlinkProtection"]["redPackets"] == 0
    assert "red/48000/2" not in fec["answer"]
    red_share, red = await downlink_concealment(await make_client(), warbling_browser)
    shown = red["downlinkProtection"]
    # The answer carries RED over Opus as RFC 2198 §5 and Chromium's offer have it.
    opus = re.search(r"a=rtpmap:(\d+) opus/48000/2", red["answer"])
    red_pt = re.search(r"a=rtpmap:(\d+) red/48000/2", red["answer"])
    assert opus and red_pt, red["answer"]
    assert f"a=fmtp:{red_pt[1]} {opus[1]}/{opus[1]}" in red["answer"]
    assert shown["redDepth"] == 2 and shown["redPackets"] > 200, shown
    print(f"Chromium concealed under 15 % downlink loss: FEC {fec_share:.3f}, RED {red_share:.3f}")
    # The loss was heard: with FEC a packet is concealed when the next is lost too, 15 % x 15 %
    # = 2.25 % expected, ± 0.9 % over the window's 300 packets (0.0172 in one clean-clone run
    # against the 0.02 this asked); without loss it is ~0.
    assert fec_share > 0.01
    # A stall of this process in RED's window is concealed with or without RED (0.0095 against
    # 0.0166 once, a helper's tests loading the host): what it explains is allowed beside.
    allowed = 0.5 * fec_share + red["stalledShare"]
    assert red_share <= allowed, (red_share, fec_share, red["stalledShare"])


@pytest.fixture
async def pausing_browser(tmp_path):
    """Chromium whose fake microphone plays 2 s of a 440 Hz tone, then 2 s of digital silence,
    over and over (Chromium loops the file)."""
    import numpy as np

    pcm = np.concatenate([tone(440.0, 2 * 48_000, 48_000, 0.5), np.zeros(2 * 48_000)])
    async with chromium_hearing(mic_wav(tmp_path / "pauses.wav", pcm)) as b:
        yield b


PACKETS_RECEIVED_JS = """async () => {
  const report = await window.demo.client.pc.getStats();
  for (const s of report.values())
    if (s.type === 'inbound-rtp' && s.kind === 'audio') return s.packetsReceived;
  return null;
}"""


@pytest.mark.serial  # at most one concealment in 8 s: a starved host's late packets are not DTX's
async def test_chromium_in_dtx_both_ways_keeps_the_sound_and_drops_the_silence(
    make_client, pausing_browser
) -> None:
    """With BRIDGE_OPUS_UPLINK_DTX the answer asks Chromium for usedtx=1, and its silences come
    as DTX: the bridge plays them as silence, not as loss. An offer that asks for DTX gets the
    echo's silences as DTX in turn, and Chromium still hears every spurt of the tone."""
    import json

    from bridge.rtc.browser_sdp import opus_parameters, with_opus_fmtp

    client = await make_client(opus_uplink_dtx=True)
    page = await pausing_browser.new_page()

    async def asking_for_dtx(route) -> None:
        body = route.request.post_data_json
        sdp = "\r\n".join(
            ln
            for ln in body["sdp"].split("\r\n")
            if not ln.startswith("a=candidate:") or " 127.0.0.1 " in ln
        )
        body["sdp"] = with_opus_fmtp(sdp, (*opus_parameters(sdp).items(), ("usedtx", "1")))
        await route.continue_(post_data=json.dumps(body))

    await page.route("**/call/webrtc/offer", asking_for_dtx)
    await page.goto(str(client.make_url("/")))
    await page.click("#call")
    await wait_for(
        page, "window.demo.client.pc && window.demo.client.pc.connectionState === 'connected'"
    )
    answer = await page.evaluate("window.demo.client.pc.remoteDescription.sdp")
    assert opus_parameters(answer)["usedtx"] == "1"
    snap = (await (await client.get("/call/status")).json())["calls"][0]
    stats_url = f"/call/{snap['callID']}/stats"
    await asyncio.sleep(2.0)  # past the start
    # An 8 s window: two tone spurts and two silences each way. Its concealments are judged
    # below; a window whose packets a stall of the host delayed (one full run saw 6 events
    # while helpers started) is listened to again, up to three: silences taken for loss are
    # concealed in every window.
    for _window in range(3):
        before = (await (await client.get(stats_url)).json())["webrtc"]["receiver"]
        heard_before = await page.evaluate(PACKETS_RECEIVED_JS)
        levels = []
        for _ in range(80):
            levels.append(await page.evaluate("window.demo.client.outputLevel()"))
            await asyncio.sleep(0.1)
        after = (await (await client.get(stats_url)).json())["webrtc"]["receiver"]
        heard = await page.evaluate(PACKETS_RECEIVED_JS) - heard_before
        concealed = {k: after[k] - before[k] for k in ("concealmentEvents", "concealedSamples")}
        if concealed["concealmentEvents"] <= 1:
            break
    await page.close()
    received = after["packetsReceived"] - before["packetsReceived"]
    dtx = (after["dtxSamples"] - before["dtxSamples"]) / 16_000
    print("Chromium in DTX:", {"uplink packets": received, "dtx s": dtx, "downlink packets": heard})
    # Uplink: Chromium sent its silences as DTX, and the bridge played them as such.
    assert dtx > 2.0 and received < 0.75 * 8 * 50, (received, dtx)
    assert concealed["concealmentEvents"] <= 1, (concealed, after)
    # Downlink: the echo's silences went to Chromium as DTX; its tone spurts still play.
    assert heard < 0.75 * 8 * 50, heard
    assert max(levels) > -20 and min(levels) < -60, levels
