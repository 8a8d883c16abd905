"""Answer → first audio through a real Chromium softphone on its connected leg (issue 49).

The bridge runs in this process (test settings on loopback, the sim's WhatsApp user a 660 Hz
tone); one headless Chromium page is the demo softphone (``web/softphone.js``), its microphone
a 500 Hz WebAudio oscillator, its media the always-connected leg offered once when it
connects. For each of ``--calls`` calls, one after the other: the call rings the page, the page
clicks *Answer* (``performance.now()`` taken in the same turn as the click), and then

* **the agent hears the caller**: the page's own WebAudio analyser on the leg's receiving track
  (what Chromium's NetEq plays out), polled every 2 ms in a 256-sample window at 48 kHz, first
  RMS above −40 dBFS; time taken on the page's clock;
* **the caller hears the agent**: the sim WhatsApp user's received frames, polled every 2 ms
  in this process, first 20 ms frame above −40 dBFS whose dominant tone is the agent's 500 Hz;
  time taken from just before the click was sent to the page (so it includes Playwright's
  hop to the page: an over-estimate by about a millisecond).

The call is hung up from the softphone and the next one rings. Last, Chromium's own floor in
the same browser (``CHROMIUM_LOOP_JS``): a tone step through two of its peer connections. Results in
``bench/results/softphone-latency-<date>.json``; docs/agents-routing.md quotes them.

    python -m bench.softphone_latency --calls 10
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.config import settings_for_tests
from tests.integration.test_desk import incoming, token
from tests.integration.test_desk_routes import route
from tests.interop.test_softphone_browser import MIC_AND_LOOPBACK
from tests.support.calls import sim_call, wait_state
from tests.support.chromium import CHROMIUM, CHROMIUM_ARGS, async_playwright, wait_for
from tests.support.spectrum import dominant_frequency

CALLER_HZ = 660.0
AGENT_HZ = 500.0
RING_S = 2.0
"""How long a call rings before the agent answers (a person takes a moment)."""
THRESHOLD = 10 ** (-40 / 20)
"""−40 dBFS, as a fraction of full scale."""

LISTEN_JS = """() => {
  const agent = window.softphone.agent;
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 256;
  const track = agent.pc.getReceivers()[0].track;
  ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  window.__heardAt = null;
  window.__packetAt = null;
  window.__armed = false;
  const received = async () => {
    let n = 0;
    (await agent.pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp") n += s.packetsReceived;
    });
    return n;
  };
  // The leg's RTP reaching Chromium (before its jitter buffer and playout): getStats polled.
  (async () => {
    for (;;) {
      const before = await received();
      while (!window.__armed) await new Promise((r) => setTimeout(r, 2));
      let base = before;
      while (window.__packetAt === null) {
        const n = await received();
        if (n > base) { window.__packetAt = performance.now(); break; }
        await new Promise((r) => setTimeout(r, 2));
      }
      while (window.__armed) await new Promise((r) => setTimeout(r, 2));
    }
  })();
  setInterval(() => {
    if (!window.__armed || window.__heardAt !== null) return;
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const x of buf) sum += x * x;
    if (Math.sqrt(sum / buf.length) > %f) window.__heardAt = performance.now();
  }, 2);
}"""

JITTER_JS = """async () => {
  let out = {};
  (await window.softphone.agent.pc.getStats()).forEach((s) => {
    const n = s.jitterBufferEmittedCount;
    if (s.type === "inbound-rtp") out = {
      jitterBufferMs: Math.round(1000 * s.jitterBufferDelay / n),
      jitterBufferTargetMs: Math.round(1000 * s.jitterBufferTargetDelay / n),
    };
  });
  return out;
}"""

ANSWER_JS = """(callID) => {
  window.__heardAt = null;
  window.__packetAt = null;
  window.__armed = true;
  window.__clickedAt = performance.now();
  document.querySelector(`#sp-ring-${callID} button.primary`).click();
}"""


CHROMIUM_LOOP_JS = """async () => {
  (await navigator.mediaDevices.getUserMedia({audio: true})).getTracks().forEach((t) => t.stop());
  const ctx = new AudioContext();
  const osc = ctx.createOscillator(); osc.frequency.value = 660;
  const gain = ctx.createGain(); gain.gain.value = 0;
  const dest = ctx.createMediaStreamDestination();
  osc.connect(gain).connect(dest); osc.start();
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  // Only loopback candidates: every packet stays on 127.0.0.1.
  const loop = (to) => (e) => {
    const c = e.candidate;
    if (c && c.candidate.includes(" 127.0.0.1 ")) to.addIceCandidate(c);
  };
  a.onicecandidate = loop(b);
  b.onicecandidate = loop(a);
  const got = new Promise((r) => b.ontrack = (e) => r(e.track));
  dest.stream.getTracks().forEach((t) => a.addTrack(t, dest.stream));
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  const track = await got;
  const el = new Audio(); el.srcObject = new MediaStream([track]); el.muted = true; await el.play();
  const rctx = new AudioContext();
  const an = rctx.createAnalyser(); an.fftSize = 256;
  rctx.createMediaStreamSource(new MediaStream([track])).connect(an);
  await new Promise((r) => setTimeout(r, 3000));  // the stream runs (silence) for 3 s
  const buf = new Float32Array(256);
  const out = [];
  for (let i = 0; i < 10; i++) {
    gain.gain.setValueAtTime(0.3, ctx.currentTime);
    const t0 = performance.now();
    let heard = null;
    while (heard === null && performance.now() - t0 < 2000) {
      an.getFloatTimeDomainData(buf);
      let s = 0; for (const x of buf) s += x * x;
      if (Math.sqrt(s / 256) > 0.01) heard = performance.now() - t0;
      await new Promise((r) => setTimeout(r, 2));
    }
    out.push(heard);
    gain.gain.setValueAtTime(0, ctx.currentTime);
    await new Promise((r) => setTimeout(r, 1500));
  }
  return out;
}"""
"""Chromium's own floor: two peer connections in one page on loopback, a steady stream (3 s
of silence first), a 660 Hz step at the sender's WebAudio gain timed to the receiver's
analyser as above (its capture, encoder, NetEq and playout): what any WebRTC audio costs
inside Chromium, to set the connected leg's figure against."""


def _machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line),
            platform.processor(),
        )
    except OSError:
        model = platform.processor()
    return f"{model}, {len(__import__('os').sched_getaffinity(0))} CPUs"


async def caller_hears_agent(client: TestClient, call_id: str, since: float) -> float:
    """Seconds from ``since`` to the first frame the sim caller heard with the agent's tone."""
    heard = sim_call(client, call_id).heard
    while time.monotonic() - since < 5:
        # Frames arrive every 20 ms and this looks every 2 ms: the last two cover them all.
        for frame in list(heard)[-2:]:
            x = frame.astype(np.float64)
            if np.sqrt(np.mean(x * x)) / 32768 > THRESHOLD and (
                abs(dominant_frequency(x, 16_000) - AGENT_HZ) < 30
            ):
                return time.monotonic() - since
        await asyncio.sleep(0.002)
    raise TimeoutError("the caller never heard the agent")


async def one_call(client: TestClient, page: Any) -> dict[str, float]:
    call_id = await incoming(client)
    await page.wait_for_selector(f"#sp-ring-{call_id}", timeout=5000)
    await asyncio.sleep(RING_S)  # the agent takes a moment to answer; the parked leg idles
    # The caller's frames from now on: what it heard while ringing is silence or nothing.
    heard = sim_call(client, call_id).heard
    heard.clear()
    since = time.monotonic()
    caller = asyncio.ensure_future(caller_hears_agent(client, call_id, since))
    await page.evaluate(ANSWER_JS, call_id)
    try:
        caller_s = await caller
    finally:
        caller.cancel()
    await wait_for(page, "window.__heardAt !== null", timeout=5)
    agent_ms = await page.evaluate("window.__heardAt - window.__clickedAt")
    packet_ms = await page.evaluate("window.__packetAt - window.__clickedAt")
    await asyncio.sleep(1.0)
    jb = await page.evaluate(JITTER_JS)
    await page.evaluate("window.__armed = false")
    await wait_state(client, call_id, "active")
    await page.click("#sp-hangup")
    await wait_state(client, call_id, "ended")
    await wait_for(page, "window.softphone.callID === null")
    await asyncio.sleep(0.3)
    return {
        "agentHearsCallerMs": round(agent_ms, 1),
        "firstPacketAtAgentMs": round(packet_ms, 1),
        "callerHearsAgentMs": round(caller_s * 1000, 1),
        **jb,
    }


async def main(calls: int) -> dict[str, Any]:
    settings = settings_for_tests(sim_peer="tone", sim_tone_hz=CALLER_HZ)
    client = TestClient(TestServer(create_app(settings), host="127.0.0.1"))
    await client.start_server()
    try:
        await route(client, [{"ring": {"group": "sales", "timeoutS": 30}}])
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.add_init_script(MIC_AND_LOOPBACK % AGENT_HZ)
                await page.goto(str(client.make_url("/")))
                await page.fill("#sp-token", await token(client, "ann", ["sales"]))
                await page.click("#sp-connect")
                await wait_for(page, "document.getElementById('sp-leg').textContent == 'connected'")
                await page.evaluate(LISTEN_JS % THRESHOLD)
                runs = []
                for i in range(calls):
                    run = await one_call(client, page)
                    print(f"call {i + 1}: {run}")
                    runs.append(run)
                loop_page = await browser.new_page()
                await loop_page.goto(str(client.make_url("/")))
                chromium_loop = [round(x, 1) for x in await loop_page.evaluate(CHROMIUM_LOOP_JS)]
                print(f"Chromium's own loop: {chromium_loop} ms")
            finally:
                await browser.close()
    finally:
        await client.close()

    def summary(key: str) -> dict[str, float]:
        values = [r[key] for r in runs]
        return {
            "first": values[0],
            "median": round(statistics.median(values), 1),
            "max": max(values),
            "min": min(values),
        }

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "chromium": CHROMIUM,
        "calls": calls,
        "runs": runs,
        "agentHearsCaller": summary("agentHearsCallerMs"),
        "firstPacketAtAgent": summary("firstPacketAtAgentMs"),
        "callerHearsAgent": summary("callerHearsAgentMs"),
        "chromiumOwnLoopMs": {
            "median": round(statistics.median(chromium_loop), 1),
            "min": min(chromium_loop),
            "max": max(chromium_loop),
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    result = asyncio.run(main(args.calls))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    stamp = f"{datetime.date.today():%Y%m%d}"
    out = Path(__file__).parent / "results" / f"softphone-latency-{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"→ {out}")
