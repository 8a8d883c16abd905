"""Google's libwebrtc (the engine of the Android/iOS WebRTC SDKs), via Node's @roamhq/wrtc,
calls through the bridge: RTCAudioSource in, RTCAudioSink out, frequencies checked both ways."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bridge.api.keys import ENGINE

from ..support.requires import require
from ..support.spectrum import dominant_frequency, steady_level_db

NODE_DIR = Path(__file__).parent / "node"
NODE = shutil.which("node")
HOW = "install Node.js and run `npm ci` in tests/interop/node (or run `make test`, which does)"

require(
    NODE is not None and (NODE_DIR / "node_modules" / "@roamhq" / "wrtc").is_dir(),
    "Node/@roamhq/wrtc",
    HOW,
)


async def test_libwebrtc_peer_audio_both_ways(make_client) -> None:
    client = await make_client(sim_peer="tone", sim_tone_hz=660.0)
    base = str(client.make_url("")).rstrip("/")
    proc = await asyncio.create_subprocess_exec(
        NODE,
        str(NODE_DIR / "call.mjs"),
        base,
        "440",
        "4",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    result = json.loads(out.decode().strip().splitlines()[-1])

    # What the libwebrtc peer heard: the simulated WhatsApp party's 660 Hz tone (0.3 → -13.5 dBFS).
    assert result["connectionState"] == "connected"
    assert result["heardHz"] == pytest.approx(660, abs=3)
    assert result["levelDb"] == pytest.approx(-13.5, abs=2.0)
    assert result["heardSamples"] >= 0.9 * 1.5 * result["heardRate"]

    # What WhatsApp heard from the libwebrtc peer: its 440 Hz tone, on the 16 kHz bus.
    engine = client.app[ENGINE]
    sim_call = next(c for c in engine.calls.values() if c.direction == "outbound")
    pcm = np.concatenate(list(sim_call.heard))
    assert {f.size for f in sim_call.heard} == {320}
    assert dominant_frequency(pcm, 16_000) == pytest.approx(440, abs=3)
    # The tone's level where it plays: a loaded host's stall leaves a gap, judged apart
    # (-11.2 dBFS over the whole call once in a clean-clone run at load 3).
    assert steady_level_db(pcm, 16_000) == pytest.approx(-9.0, abs=2.0)
    snap = await (await client.get(f"/call/{result['callID']}")).json()
    assert snap["state"] == "ended" and snap["endReason"] == "hangup"


async def test_libwebrtc_agent_on_the_connected_leg(make_client) -> None:
    """Issue 49: a libwebrtc app (the mobile SDKs' engine) as an agent on the desk's
    always-connected leg: offered once at connect, the call comes on it when the agent
    accepts (no new offer); then an ICE restart on the same connection and socket (as after a
    lost leg) answered from a fresh bridge peer that joins the call; after it the caller's
    660 Hz is heard by the agent and its 520 Hz by the caller; the agent hangs up on its
    socket."""
    from bridge.api.keys import DESK

    from ..integration.test_desk import incoming, token
    from ..support.calls import peer_heard, wait_state
    from ..support.waits import until

    client = await make_client(sim_peer="tone", sim_tone_hz=660.0)
    base = str(client.make_url("")).rstrip("/")
    proc = await asyncio.create_subprocess_exec(
        NODE,
        "--experimental-websocket",
        "--no-warnings",
        str(NODE_DIR / "leg.mjs"),
        base,
        await token(client, "lib"),
        "520",
        "1.0",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    seen: list[dict] = []

    async def line_of(kind: str, **match: object) -> dict:
        while True:
            raw = await asyncio.wait_for(proc.stdout.readline(), 15)
            assert raw, (seen, (await proc.stderr.read()).decode()[-2000:])
            seen.append(json.loads(raw))
            if seen[-1]["type"] == kind and all(seen[-1].get(k) == v for k, v in match.items()):
                return seen[-1]

    try:
        await line_of("leg", state="connected")
        call_id = await incoming(client)
        assert (await line_of("accepted"))["leg"] is True
        (session,) = client.app[DESK].sessions()
        first = session.leg
        await wait_state(client, call_id, "active")
        await line_of("answer")  # the restart's answer
        await until(lambda: session.leg.attached_to == call_id, 10, "the new leg on the call")
        assert session.leg is not first and first.closed
        proc.stdin.write(b"go\n")  # what it hears from now came over the new leg
        result = await line_of("result")
        assert result["offers"] == 2 and result["connectionState"] == "connected"
        assert result["heardHz"] == pytest.approx(660, abs=3)
        assert result["levelDb"] > -25
        caller = peer_heard(client, call_id, 40)
        assert dominant_frequency(caller, 16_000) == pytest.approx(520, abs=3)
        await line_of("call.ended")
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await wait_state(client, call_id, "ended")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
