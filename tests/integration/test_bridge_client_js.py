"""``BridgeClient`` (web/bridge-client.js) run by Node against the real bridge: its connection's
life as an app meets it. Node has no browser media, so the script stands in for what only a
browser has (``getUserMedia``, ``AudioContext``, ``RTCPeerConnection``: one that offers a real
Chromium offer, ``tests/fixtures/offers/chromium.sdp``, and whose connection state the script
sets); every request goes to the bridge. The client's backoff timers run 20 times faster."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bridge.api.keys import MANAGER

from ..support.calls import wait_state

NODE = shutil.which("node")
ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "web" / "bridge-client.js"
OFFER = ROOT / "tests" / "fixtures" / "offers" / "chromium.sdp"

BROWSER = """
import { readFileSync } from "node:fs";
const [base, callID, offerPath] = process.argv.slice(2);
const OFFER = readFileSync(offerPath, "utf8");
const say = (m) => process.stdout.write(JSON.stringify(m) + "\\n");
const fast = globalThis.setTimeout;
globalThis.setTimeout = (f, ms, ...a) => fast(f, (ms || 0) / 20, ...a);
const sleep = (ms) => new Promise((r) => fast(r, ms));
async function until(check, what) {
  for (let i = 0; i < 500; i++) { if (check()) return; await sleep(10); }
  throw new Error(`timed out waiting for ${what}`);
}

class Track { constructor() { this.kind = "audio"; this.enabled = true; this.stopped = false; }
  stop() { this.stopped = true; } }
class Stream { constructor() { this.track = new Track(); }
  getAudioTracks() { return [this.track]; } getTracks() { return [this.track]; } }
const mics = [];
let permission = null;  // a pending getUserMedia: the browser asking the user
globalThis.navigator = { mediaDevices: { getUserMedia: () => {
  const stream = new Stream();
  mics.push(stream);
  if (!permission) return Promise.resolve(stream);
  return permission.then(() => stream);
} } };
globalThis.AudioContext = class {
  createAnalyser() { return { fftSize: 2048 }; }
  createMediaStreamSource() { return { connect() {} }; }
  resume() { return Promise.resolve(); }
};
const pcs = [];
globalThis.RTCPeerConnection = class {
  constructor(config) {
    this.config = config;
    this.connectionState = "new";
    this.signalingState = "stable";
    this.iceGatheringState = "new";
    this.localDescription = this.remoteDescription = null;
    pcs.push(this);
  }
  addTrack() {}
  getSenders() { return []; }
  addEventListener() {} removeEventListener() {}
  async createOffer() { return { type: "offer", sdp: OFFER }; }
  async setLocalDescription(d) { this.localDescription = d; this.iceGatheringState = "complete"; }
  async setRemoteDescription(d) { this.remoteDescription = d; }
  async getStats() { return new Map(); }
  close() { this.connectionState = "closed"; this.signalingState = "closed"; }
  set(state) { this.connectionState = state; this.onconnectionstatechange?.(); }
};
const { BridgeClient } = await import(process.argv[5]);
"""

CLOSED_WHILE_ASKING = """
let allow;
permission = new Promise((r) => { allow = r; });
const client = new BridgeClient({ baseUrl: base, audioElement: {}, statsIntervalMs: 50 });
const connecting = client.connect(callID).then(() => "connected", (e) => e.code || String(e));
await client.close();  // the user gave up while the browser asked for the microphone
allow();               // ... and then allowed it
const outcome = await connecting;
await sleep(100);
say({ outcome, pcs: pcs.length, micStopped: mics.every((m) => m.track.stopped) });
process.exit(0);
"""

RECOVERS_EVERY_TIME = """
const client = new BridgeClient({ baseUrl: base, audioElement: {}, statsIntervalMs: 0 });
const errors = [];
client.addEventListener("error", (e) => errors.push(String(e.detail?.message || e.detail)));
await client.connect(callID);
const failures = 5;  // over a long call: more network losses than maxRecoveries (3)
for (let i = 1; i <= failures; i++) {
  pcs[i - 1].set("connected");
  pcs[i - 1].set("failed");
  await until(() => pcs.length > i && pcs[i].remoteDescription || errors.length, `recovery ${i}`)
    .catch(() => {});
  if (errors.length || pcs.length <= i) break;
}
say({ offers: pcs.length, answered: pcs.filter((p) => p.remoteDescription).length, errors });
client.close();
process.exit(0);
"""


HANGUP_AFTER_THE_END = """
const client = new BridgeClient({ baseUrl: base, audioElement: {}, statsIntervalMs: 50 });
await client.connect(callID);
await fetch(base + "/call/hangup", { method: "POST", body: JSON.stringify({ callID }) });
const outcome = await client.hangup().then(() => "ok", (e) => e.code || String(e));
say({ outcome, micStopped: mics.every((m) => m.track.stopped), pc: client.pc,
  pcClosed: pcs.every((p) => p.connectionState === "closed") });
process.exit(0);
"""


EVENT_SOURCE = """
const streams = [];
globalThis.EventSource = class {
  constructor(url) { this.url = url; this.listeners = {}; streams.push(this); }
  addEventListener(type, f) { (this.listeners[type] ||= []).push(f); }
  close() {}
  fire(type, data) {
    for (const f of this.listeners[type] || []) f({ data: JSON.stringify(data) });
  }
};
"""
"""A stand-in for the browser's ``EventSource``: the script fires the bridge's events on
it (``streams[0].fire(type, data)``)."""


ENDED_UNDER_IT = (
    EVENT_SOURCE
    + """
const client = new BridgeClient({ baseUrl: base, audioElement: {}, statsIntervalMs: 50 });
const states = [];
client.addEventListener("state", (e) => states.push(e.detail.state));
client.subscribeEvents();
await client.connect(callID);
pcs[0].set("connected");
// The WhatsApp user hangs up: the bridge ends the call and says so.
const ended = await (await fetch(base + "/call/hangup", { method: "POST",
  body: JSON.stringify({ callID }) })).json();
streams[0].fire("call.ended", { type: "call.ended", callID, call: ended });
await sleep(50);
say({ states, micStopped: mics.every((m) => m.track.stopped), pc: client.pc,
  pcClosed: pcs.every((p) => p.connectionState === "closed") });
process.exit(0);
"""
)


FAILED_BY_THE_BRIDGE = (
    EVENT_SOURCE
    + """
const client = new BridgeClient({ baseUrl: base, audioElement: {}, statsIntervalMs: 0 });
client.subscribeEvents();
await client.connect(callID);
pcs[0].set("connected");
// The bridge failed this browser's session (no RTP for BRIDGE_MEDIA_TIMEOUT): its event.
const call = await (await fetch(base + "/call/" + callID)).json();
call.participants = [{ participantID: "agent", role: "agent", webrtc: { state: "failed" } }];
streams[0].fire("webrtc.state", { type: "webrtc.state", callID, call, participantID: "agent",
  reason: "timeout" });
await until(() => pcs.length > 1 && pcs[1].remoteDescription, "a new offer").catch(() => {});
say({ offers: pcs.length, answered: pcs.filter((p) => p.remoteDescription).length,
  firstState: pcs[0].connectionState });
client.close();
process.exit(0);
"""
)


async def run_browser(client: Any, call_id: str, scenario: str, tmp_path: Path) -> dict[str, Any]:
    script = tmp_path / "browser.mjs"
    script.write_text(BROWSER + scenario)
    base = str(client.make_url("")).rstrip("/")
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(
        NODE,
        str(script),
        base,
        call_id,
        str(OFFER),
        CLIENT.as_uri(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0 and out, err.decode()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


@pytest.mark.skipif(NODE is None, reason="node is not installed")
async def test_closing_while_the_microphone_is_asked_for_joins_nothing(client, tmp_path) -> None:
    """An app's user leaves (``close()``) while the browser still asks for the microphone. The
    client went on when the permission came: it kept the microphone open (the browser's
    recording light on for good), sent its offer and joined the call it had left."""
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    got = await run_browser(client, call["callID"], CLOSED_WHILE_ASKING, tmp_path)
    runtime = client.app[MANAGER].find_runtime(call["callID"])
    assert runtime.participants.sessions == {}  # the bridge never heard an offer
    assert got["outcome"] == "closed" and got["pcs"] == 0, got
    assert got["micStopped"], got
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert snap["transport"] is None and snap["participants"] == []


@pytest.mark.skipif(NODE is None, reason="node is not installed")
async def test_every_lost_connection_is_recovered_not_only_the_first_three(
    client, tmp_path
) -> None:
    """``maxRecoveries`` (3) bounds the offers tried for one loss. It was never counted anew
    once a recovery connected, so over a long call the fourth network loss was given up
    ("connection failed after 3 recoveries") and the app's user heard nothing more."""
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    got = await run_browser(client, call["callID"], RECOVERS_EVERY_TIME, tmp_path)
    assert got["errors"] == [] and got["offers"] == 6 and got["answered"] == 6, got


@pytest.mark.skipif(NODE is None, reason="node is not installed")
async def test_hanging_up_a_call_that_already_ended_still_closes(client, tmp_path) -> None:
    """``hangup()`` on a call that had ended meanwhile (the WhatsApp user hung up first): the
    bridge's 409 was thrown before the client closed, so the microphone stayed open and the
    peer connection up after the user pressed hang up."""
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    got = await run_browser(client, call["callID"], HANGUP_AFTER_THE_END, tmp_path)
    assert got["outcome"] == "invalid_call_state", got  # the app still hears why
    assert got["micStopped"] and got["pcClosed"] and got["pc"] is None, got


@pytest.mark.skipif(NODE is None, reason="node is not installed")
async def test_a_call_that_ends_closes_the_client_that_follows_its_events(client, tmp_path) -> None:
    """The WhatsApp user hangs up. A client following the call's events (as the docs' example
    does) kept its microphone open and its peer connection "connected" to a peer the bridge
    had closed (Chromium noticed only when ICE consent failed, ~30 s later, and then offered
    again for an ended call: 409). It closes on the call's ``call.ended`` now."""
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    got = await run_browser(client, call["callID"], ENDED_UNDER_IT, tmp_path)
    assert got["micStopped"] and got["pcClosed"] and got["pc"] is None, got
    assert got["states"][-1] == "closed", got


@pytest.mark.skipif(NODE is None, reason="node is not installed")
async def test_a_session_the_bridge_failed_is_recovered_at_once(client, tmp_path) -> None:
    """The bridge fails a browser's session on its own (no RTP for ``BRIDGE_MEDIA_TIMEOUT``,
    not connected in time) and says so (``webrtc.state``, the participant ``failed``). The
    client following the events learned nothing from it: its peer connection stayed
    "connected" (Chromium notices a closed peer only when ICE consent fails, ~30 s later)
    and the call was silent until then. It offers again at once now."""
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    got = await run_browser(client, call["callID"], FAILED_BY_THE_BRIDGE, tmp_path)
    assert got == {"offers": 2, "answered": 2, "firstState": "closed"}, got
