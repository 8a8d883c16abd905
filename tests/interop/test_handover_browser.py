"""Real Chromium with the bundled ``web/bridge-client.js`` through a deploy: the worker that
owns the call gets SIGTERM, the call moves to the other worker, and the client offers again by
itself on ``call.moved`` (no page code involved); the browser hears the engine again and the
engine hears the browser's (fake) microphone."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import wave

import aiohttp
import numpy as np
import pytest

from bridge.audio import tone

from ..fakes.zuckzapgo import FakeZuckZapGo
from ..support.chromium import (
    CHROMIUM,
    CHROMIUM_ARGS,
    async_playwright,
    loopback_only,
    require_chromium,
    wait_for,
)
from ..support.cluster import Bridge, require_redis
from ..support.spectrum import band_energy

require_chromium()
require_redis()

pytestmark = pytest.mark.timeout(90)

ENGINE_HZ = 700.0
MIC_HZ = 440.0

FREQ_JS = """async () => {
  const a = window.client.outputAnalyser;
  if (!a) return null;
  a.fftSize = 16384;
  await new Promise(r => setTimeout(r, 600));
  const bins = new Float32Array(a.frequencyBinCount);
  a.getFloatFrequencyData(bins);
  let k = 1;
  for (let i = 1; i < bins.length; i++) if (bins[i] > bins[k]) k = i;
  return {hz: k * a.context.sampleRate / a.fftSize, level: window.client.outputLevel()};
}"""

TONE_HEARD = "window.client.outputLevel() > -30"
"""The page plays the engine's tone (waited for, bounded, before :data:`FREQ_JS` judges it)."""

CONNECT_JS = """async (callID) => {
  const { BridgeClient } = await import("/web/bridge-client.js");
  const c = new BridgeClient({ baseUrl: location.origin });
  window.client = c;
  window.moves = [];
  c.addEventListener("moved", (e) => window.moves.push(e.detail));
  c.subscribeEvents(callID);
  await c.connect(callID);
}"""


@pytest.fixture
def mic_wav(tmp_path) -> str:
    path = tmp_path / "mic440.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(tone(MIC_HZ, 48_000 * 30, 48_000, 0.5).astype("<i2").tobytes())
    return str(path)


async def test_the_bundled_client_follows_its_call_to_the_new_worker_by_itself(
    redis, tmp_path, mic_wav
) -> None:
    fake = FakeZuckZapGo(tone_hz=ENGINE_HZ)
    await fake.start()
    env = {
        "BRIDGE_ENGINE": "zuckzapgo",
        "BRIDGE_ENGINE_URL": fake.url,
        "BRIDGE_ENGINE_TOKEN": "ztok",
        "BRIDGE_ENGINE_POLL_INTERVAL": "0.2",
        "BRIDGE_SHUTDOWN_CALLS": "handover",
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Bridge(redis, tmp_path / "a", env=env)
    b = Bridge(redis, tmp_path / "b", env=env)
    async with aiohttp.ClientSession() as session:
        await a.start(session)
        await b.start(session)
        try:
            async with session.post(a.base + "/call/make", json={"phone": "5521999999999"}) as r:
                made = await r.json()
            assert made["owner"] == a.worker_id
            call_id = made["callID"]
            async with async_playwright() as p:
                browser = await p.chromium.launch(
                    executable_path=CHROMIUM,
                    args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={mic_wav}"],
                )
                try:
                    page = await browser.new_page()
                    await page.route("**/call/webrtc/offer", loopback_only)
                    # The page talks to B, as to a load balancer: B forwards to the owner.
                    await page.goto(b.base + "/")
                    await page.evaluate(CONNECT_JS, call_id)
                    await wait_for(page, "window.client.pc.connectionState === 'connected'")
                    await wait_for(page, TONE_HEARD)
                    before = await page.evaluate(FREQ_JS)
                    assert before["hz"] == pytest.approx(ENGINE_HZ, abs=8), before

                    a.proc.send_signal(signal.SIGTERM)
                    await wait_for(page, "window.moves.length > 0", timeout=15)
                    moves = await page.evaluate("window.moves")
                    assert moves[0]["to"] == b.worker_id and moves[0]["reason"] == "drain"
                    await wait_for(
                        page, "window.client.pc.connectionState === 'connected'", timeout=15
                    )
                    await wait_for(page, TONE_HEARD)
                    after = await page.evaluate(FREQ_JS)
                    assert after["hz"] == pytest.approx(ENGINE_HZ, abs=8), after
                    t0 = time.monotonic()
                    await asyncio.sleep(1.0)
                    call = fake.calls[next(iter(fake.calls))]
                    heard = b"".join(
                        f for f, t in zip(call.received, call.received_at, strict=True) if t >= t0
                    )
                    assert band_energy(np.frombuffer(heard, "<i2"), 16_000, MIC_HZ) > 0.3
                    async with session.get(b.base + f"/call/{call_id}") as r:
                        snap = await r.json()
                    assert snap["state"] == "active" and snap["owner"] == b.worker_id, snap
                    assert snap["webrtc"]["state"] == "connected"
                    assert call.state == "active"
                    assert not [q for q in fake.requests if q[1] == "/call/hangup"]
                    errors = await page.evaluate("JSON.stringify(window.errors || [])")
                    assert json.loads(errors) == []
                finally:
                    await browser.close()
        finally:
            await a.stop()
            await b.stop()
            await fake.stop()
