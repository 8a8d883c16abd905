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
from bridge.audio import rms_dbfs

from ..support.requires import require
from ..support.spectrum import dominant_frequency

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
    assert rms_dbfs(pcm) == pytest.approx(-9.0, abs=2.0)
    snap = await (await client.get(f"/call/{result['callID']}")).json()
    assert snap["state"] == "ended" and snap["endReason"] == "hangup"
