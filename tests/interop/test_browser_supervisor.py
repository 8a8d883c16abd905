"""Two real Chromiums on one simulated call through the demo page: an agent, and a supervisor
who listens, then barges in, puts the customer on hold with music, and takes the call over.

Each browser has its own fake microphone (a WAV tone): the agent 440 Hz, the supervisor
1250 Hz (no harmonic or intermodulation product of 440/660 lands there); the simulated
WhatsApp peer sends 660 Hz. Assertions are on the spectrum each side receives and on the
state the pages show (participants list, role, held), never on timing.
"""

from __future__ import annotations

import asyncio
import base64
import time
import wave
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from bridge.audio import tone

from ..support.audio_files import make
from ..support.calls import participant_heard, peer_heard, wait_state
from ..support.chromium import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    async_playwright,
    loopback_only,
    require_chromium,
    wait_for,
)
from ..support.spectrum import assert_hears, levels_db
from ..support.waits import until_passes

require_chromium()

AGENT, SUPERVISOR, PEER, MUSIC = 440.0, 1250.0, 660.0, 1000.0
SETTINGS = {"sim_peer": "tone", "sim_tone_hz": PEER}


# The last 683 ms the page played (its analyser's input, 32768 samples at the context's rate),
# after as long a wait, so that two looks never overlap; as one base64 string of s16 samples,
# not an array: Playwright decodes an array number by number, and a look took the bridge's
# event loop (in this process) long enough to starve both pages of packets for seconds.
PLAYED_JS = """async () => {
  const a = window.demo.client.outputAnalyser;
  if (!a) return null;
  a.fftSize = 32768;
  await new Promise(r => setTimeout(r, 700));
  const x = new Float32Array(a.fftSize);
  a.getFloatTimeDomainData(x);
  const pcm = Int16Array.from(x, v => Math.max(-32768, Math.min(32767, Math.round(v * 32767))));
  const bytes = new Uint8Array(pcm.buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return [a.context.sampleRate, btoa(s)];
}"""

PARTICIPANTS_JS = """() => [...document.querySelectorAll('#participants li')]
  .map(li => [li.dataset.pid, li.dataset.role])"""


def tone_file(path: Path, freq: float) -> str:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(tone(freq, 48_000 * 10, 48_000, 0.5).astype("<i2").tobytes())
    return str(path)


@pytest.fixture
async def browsers(tmp_path):
    """Two Chromiums, each with its own fake microphone tone."""
    async with async_playwright() as p:
        launched = []
        for name, freq in (("agent", AGENT), ("supervisor", SUPERVISOR)):
            wav = tone_file(tmp_path / f"{name}.wav", freq)
            launched.append(
                await p.chromium.launch(
                    executable_path=CHROMIUM,
                    args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"],
                )
            )
        yield launched
        for b in launched:
            await b.close()


LOOKS = 3
"""Looks an absent tone gets: :func:`~tests.support.spectrum.assert_hears` judges a track that is
mostly breaks (a starved page's playout, concealing the present tone for much of a look) by
the whole track too, where the breaks' skirt may still read as the absent tone; the next look
is another 683 ms. A tone that is really mixed in is there in every look."""

GAP_S = 0.005
"""Exact zeros for this long are a gap in what the page played (on a loaded machine its jitter
buffer ran dry, or its audio graph was starved), not audio: a look is judged on its longest
stretch without one. Nothing mixed in can hide in a gap: it would not be zeros."""
STRETCH_S = 0.2
"""The shortest stretch judged (five of ``tone_damage``'s windows); a look with none is no look."""


def longest_played(pcm: np.ndarray, rate: int) -> np.ndarray:
    """The longest stretch of ``pcm`` with no gap (:data:`GAP_S`) in it."""
    zero = np.r_[False, pcm == 0, False]
    edges = np.flatnonzero(zero[1:] != zero[:-1])  # each run of zeros: its start, its end
    runs = edges.reshape(-1, 2)
    gaps = runs[runs[:, 1] - runs[:, 0] >= GAP_S * rate]
    bounds = np.r_[0, gaps.ravel(), pcm.size].reshape(-1, 2)
    start, end = max(bounds, key=lambda b: b[1] - b[0])
    return pcm[start:end]


async def hears(page, present: set[float], absent: set[float], timeout: float = 10.0) -> None:
    """What the page's call audio holds, judged as the bridge's mix is
    (:func:`~tests.support.spectrum.assert_hears`, on what the page played in its last 683 ms,
    :func:`longest_played`): the present tones at -30 dB or more (waited for, bounded: under
    load the page's jitter buffer plays a change later than a fixed sleep allowed, and beside
    two CPU burners a page played silence for up to 2.2 s at a time: the bridge, starved in
    the test's process, sent a half to a third of its frames), the absent ones judged in one
    of :data:`LOOKS` looks that hold the present ones.

    Judged in time, not by one spectrum of the look: on a starved machine the supervisor's tone
    breaks (concealed by the bridge's receiver for its leg and by the page's), and one look's
    spectrum put the breaks' skirt 250 Hz below it, where the hold music is, at -13 to -23 dB
    in three looks in a row (a full run); music mixed in is additive, leaves the tone whole,
    and shows in the windows where it is. And a look of silence (the page starved of packets
    or of CPU) holds no tone at all: judged by one spectrum, every band of it read 0 dB, the
    music's too."""
    freqs = sorted(present | absent)
    deadline = time.monotonic() + timeout
    looks: list[str] = []
    db: dict[float, float] = {}
    while True:
        rate, played = await page.evaluate(PLAYED_JS)
        samples = np.frombuffer(base64.b64decode(played), dtype="<i2")
        pcm = longest_played(samples.astype(np.float64), rate)
        if pcm.size >= STRETCH_S * rate:
            db = levels_db(pcm, rate, freqs)
        if db and all(db[f] >= -30 for f in present):
            try:
                assert_hears(pcm, rate, present, absent)
                return
            except AssertionError as failed:
                looks.append(str(failed))
            if len(looks) >= LOOKS:
                raise AssertionError(f"heard {sorted(absent)} in every look: {looks}")
        elif time.monotonic() > deadline:
            raise AssertionError(f"not all of {sorted(present)} heard within {timeout} s: {db}")
        else:
            await asyncio.sleep(0.1)
        db = {}


async def participants_shown(page, expected: list[list[str]]) -> None:
    try:
        await wait_for(page, f"JSON.stringify(({PARTICIPANTS_JS})()) === '{_json(expected)}'")
    except AssertionError:
        raise AssertionError(await page.evaluate(PARTICIPANTS_JS)) from None


def _json(value: object) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


async def test_supervisor_listens_barges_holds_and_takes_over(make_client, browsers) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    client = await make_client(**SETTINGS)
    form = aiohttp.FormData()
    form.add_field("audio", make("wav", MUSIC, 2.0), filename="hold.wav")
    asset = await (await client.post("/call/audio-assets", data=form)).json()

    # Page A: the agent dials from the demo page.
    agent = await browsers[0].new_page()
    await agent.route("**/call/webrtc/offer", loopback_only)
    await agent.goto(str(client.make_url("/")))
    await agent.click("#call")
    await wait_for(agent, "document.getElementById('state').textContent.includes('active')")
    await wait_for(agent, "window.demo.client.pc?.connectionState === 'connected'")
    cid = await agent.evaluate("window.demo.client.callID")
    await wait_state(client, cid, "active")

    # Page B: a supervisor (its own participant id) joins the call in progress as a listener.
    sup = await browsers[1].new_page()
    await sup.route("**/call/webrtc/offer", loopback_only)
    await sup.goto(str(client.make_url("/?pid=sup-1")))
    await sup.wait_for_selector(f"#live li[data-callid='{cid}'] button.supervise", timeout=5000)
    assert await sup.input_value("#join-role") == "listen"
    await sup.click(f"#live li[data-callid='{cid}'] button.supervise")
    await wait_for(sup, "window.demo.client.pc?.connectionState === 'connected'")
    assert await sup.text_content("#role") == "listen"
    await participants_shown(sup, [["agent", "agent"], ["sup-1", "listen"]])
    await participants_shown(agent, [["agent", "agent"], ["sup-1", "listen"]])
    snap = await (await client.get(f"/call/{cid}")).json()
    assert [(p["participantID"], p["role"]) for p in snap["participants"]] == [
        ("agent", "agent"),
        ("sup-1", "listen"),
    ]

    await asyncio.sleep(2.0)
    # Listening: the supervisor hears both sides; nobody hears the supervisor's microphone.
    await hears(sup, {AGENT, PEER}, set())
    await hears(agent, {PEER}, {SUPERVISOR})
    assert_hears(peer_heard(client, cid), 16_000, {AGENT}, {SUPERVISOR})
    await sup.screenshot(path=str(ARTIFACTS / "supervisor-listen.png"), full_page=True)

    # Barge: one click on page B; both sides hear the supervisor from then on.
    await sup.click("#roles button[data-role='barge']")
    await wait_for(sup, "document.getElementById('role').textContent === 'barge'")
    assert await sup.get_attribute("#roles button[data-role='barge']", "aria-pressed") == "true"
    await participants_shown(agent, [["agent", "agent"], ["sup-1", "barge"]])
    await participants_shown(sup, [["agent", "agent"], ["sup-1", "barge"]])
    # What WhatsApp heard in the last 500 ms, once the change has reached the mix (waited for,
    # bounded: under load it gets there later than the 1.5 s first given).
    await asyncio.sleep(1.5)
    await until_passes(
        lambda: assert_hears(peer_heard(client, cid, 25), 16_000, {AGENT, SUPERVISOR}, set())
    )
    await hears(agent, {PEER, SUPERVISOR}, set())
    await hears(sup, {AGENT, PEER}, set())
    await agent.screenshot(path=str(ARTIFACTS / "agent-with-barge.png"), full_page=True)
    await sup.screenshot(path=str(ARTIFACTS / "supervisor-barge.png"), full_page=True)

    # Hold with the uploaded music, from the supervisor's page: WhatsApp hears the music and
    # neither microphone; both pages show it held; resume brings the voices back.
    agent_mix = participant_heard(client, cid, "agent", 25)
    await sup.select_option("#music", asset["assetId"])
    await sup.click("#hold")
    await wait_for(agent, "document.getElementById('held').textContent === 'yes'")
    await wait_for(sup, "document.getElementById('hold').textContent === 'Resume'")
    await asyncio.sleep(1.5)
    await until_passes(
        lambda: assert_hears(peer_heard(client, cid, 25), 16_000, {MUSIC}, {AGENT, SUPERVISOR})
    )
    # The agent and the supervisor still talk, and the agent never hears the music: in the
    # bridge's mix for it (the last 500 ms), then in its page.
    await until_passes(
        lambda: assert_hears(
            np.concatenate(agent_mix).astype(np.float64), 16_000, {SUPERVISOR}, {MUSIC}
        )
    )
    await hears(agent, {SUPERVISOR}, {MUSIC})
    await sup.screenshot(path=str(ARTIFACTS / "supervisor-hold.png"), full_page=True)
    await sup.click("#hold")
    await wait_for(agent, "document.getElementById('held').textContent === 'no'")
    await asyncio.sleep(1.5)
    await until_passes(
        lambda: assert_hears(peer_heard(client, cid, 25), 16_000, {AGENT, SUPERVISOR}, {MUSIC})
    )

    # The keypad POSTs /call/dtmf {callID, digits}; the page shows the digits once sent
    # (call.dtmf.sent). Without the DTMF route (404/405) only the request's shape is checked.
    async with sup.expect_response("**/call/dtmf") as info:
        await sup.click("#keypad button[data-digit='5']")
    response = await info.value
    assert response.request.method == "POST"
    assert response.request.post_data_json == {"callID": cid, "digits": "5"}
    if response.status in (404, 405):
        print("POST /call/dtmf is not on this branch: only the keypad's request was checked")
    else:
        assert response.status == 202, await response.text()
        assert (await response.json())["method"] == "inband"  # the sim engine carries PCM
        await wait_for(agent, "document.getElementById('dtmf-sent').textContent === '5'")

    # Warm hand-off: the barging supervisor takes over; the old agent's page follows its
    # demotion to listener (from the events), and WhatsApp now hears only the new agent.
    await sup.click("#roles button[data-role='agent']")
    await wait_for(agent, "document.getElementById('role').textContent === 'listen'")
    await participants_shown(sup, [["agent", "listen"], ["sup-1", "agent"]])
    await asyncio.sleep(1.5)
    await until_passes(
        lambda: assert_hears(peer_heard(client, cid, 25), 16_000, {SUPERVISOR}, {AGENT})
    )
    await hears(agent, {SUPERVISOR, PEER}, set())

    # The old agent leaves; the new agent's list follows; the call stays up.
    await agent.click("#leave")
    await participants_shown(sup, [["sup-1", "agent"]])
    assert (await (await client.get(f"/call/{cid}")).json())["state"] == "active"
    await sup.screenshot(path=str(ARTIFACTS / "supervisor-took-over.png"), full_page=True)
    await sup.click("#hangup")
    await wait_state(client, cid, "ended")
    await sup.close()
    await agent.close()
