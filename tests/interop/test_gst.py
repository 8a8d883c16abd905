"""A GStreamer webrtcbin peer (RSA DTLS certificate) calls through the bridge, in each DTLS role.

webrtcbin runs in Debian's python3 (python3-gi) as a subprocess: tests/interop/gst/peer.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ..support.calls import wait_state
from ..support.processes import stop_process
from ..support.requires import needs
from ..support.spectrum import dominant_frequency

SYSTEM_PYTHON = "/usr/bin/python3"
PEER = Path(__file__).parent / "gst" / "peer.py"


def _gst_available() -> bool:
    if not os.path.exists(SYSTEM_PYTHON) or shutil.which("gst-inspect-1.0") is None:
        return False
    probe = (
        "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstWebRTC','1.0');"
        "gi.require_version('Nice','0.1'); from gi.repository import Gst, GstWebRTC, Nice;"
        "Gst.init(None); import sys;"
        "sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
        "('webrtcbin','nicesrc','opusenc','opusdec','rtpopuspay','audiotestsrc','appsink'))"
        " else 1)"
    )
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


needs_gst = needs(
    _gst_available(),
    "GStreamer's webrtcbin",
    "`make test` installs gstreamer1.0-plugins-bad, gstreamer1.0-nice, python3-gi, "
    "gir1.2-nice-0.1 ... (see SYSTEM_PKGS in the Makefile)",
)


class GstPeer:
    """The webrtcbin subprocess and its line protocol."""

    def __init__(self, out: Path, freq: float, seconds: float) -> None:
        self.out = out
        self.args = [
            SYSTEM_PYTHON,
            str(PEER),
            "--freq",
            str(freq),
            "--seconds",
            str(seconds),
            "--out",
            str(out),
        ]
        self.proc: asyncio.subprocess.Process | None = None
        self.states: list[str] = []

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )

    async def read(self, timeout: float = 20) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                err = await self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"GStreamer peer exited: {err.decode()[-2000:]}")
            msg = json.loads(line)
            if "state" in msg:
                self.states.append(msg["state"])
                continue
            if "error" in msg:
                raise AssertionError(f"GStreamer peer: {msg['error']}")
            return msg

    def answer(self, sdp: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"answer": sdp}) + "\n").encode())

    async def stop(self) -> None:
        await stop_process(self.proc)


@needs_gst
@pytest.mark.parametrize("bridge_role", ["client", "server"])
async def test_webrtcbin_rsa_peer_hears_its_echo(make_client, tmp_path, bridge_role) -> None:
    client = await make_client(sim_echo_delay=0.1)
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    peer = GstPeer(tmp_path / "heard.s16", freq=440.0, seconds=4.0)
    await peer.start()
    try:
        offer = (await peer.read())["offer"]
        assert "a=setup:actpass" in offer
        if bridge_role == "server":
            # The peer insists on being the DTLS client: the bridge must answer passive.
            offer = offer.replace("a=setup:actpass", "a=setup:active")
        resp = await client.post(
            "/call/webrtc/offer", json={"callID": call["callID"], "type": "offer", "sdp": offer}
        )
        body = await resp.json()
        assert resp.status == 200, body
        answer = body["sdp"]
        expected = "a=setup:active" if bridge_role == "client" else "a=setup:passive"
        assert expected in answer, answer
        # webrtcbin takes its own role from the answer (active there makes it the DTLS
        # server, passive the client): its certificate is RSA either way.
        peer.answer(answer)
        await wait_state(client, call["callID"], "active", timeout=15)
        done = await peer.read(timeout=40)
        assert done["done"] and done["samples"] > 0
        snap = await (await client.get(f"/call/{call['callID']}")).json()
        assert snap["webrtc"]["state"] == "connected"
        stats = await (await client.get(f"/call/{call['callID']}/stats")).json()
        assert stats["webrtc"]["uplinkFrames"] > 50  # the bridge got webrtcbin's audio
        await client.post("/call/hangup", json={"callID": call["callID"]})
    finally:
        await peer.stop()
    pcm = np.frombuffer(peer.out.read_bytes(), dtype="<i2").astype(np.float64)
    tail = pcm[-48_000 * 2 :]  # the last 2 s: echo settled
    assert_echoed_tone(tail, 440.0)


def assert_echoed_tone(tail: np.ndarray, freq: float) -> None:
    """``tail`` (48 kHz) holds the tone, loud, in nearly every 100 ms of it: in each window
    most of the energy lies within 60 Hz of the tone. This test is the RSA peer's DTLS and
    media both ways; how whole the tone is belongs to the quality tests. Under a loaded full
    run the peer's process stalls and its stream arrives in bursts: the receiver conceals and
    stretches, and the echo's tone breaks up (window peaks at 411-459 Hz for 440, a third of
    the energy within 15 Hz, twice in a day). A tone broken up every 20 ms still keeps ~90 % of
    its energy within 60 Hz; silence, a whisper, noise or a wrong tone (a rate mismatch moves
    it by a third or more) keep none."""
    windows = tail[: tail.size - tail.size % 4800].reshape(-1, 4800)
    loud = [w for w in windows if np.sqrt(np.mean(w**2)) > 300]  # a tone, not a whisper of one
    spectra = [np.abs(np.fft.rfft(w * np.hanning(w.size))) ** 2 for w in loud]
    near = np.abs(np.fft.rfftfreq(4800, 1 / 48_000) - freq) < 60
    shares = [float(s[near].sum() / s.sum()) for s in spectra]
    held = [  # what each loud window held, for the message: its peak and the tone's share
        (round(dominant_frequency(w, 48_000), 1), round(share, 2))
        for w, share in zip(loud, shares, strict=True)
    ]
    tonal = [share for share in shares if share > 0.5]
    assert len(tonal) >= 0.8 * len(windows), (len(windows), len(loud), len(tonal), held)
    # and at the tone's own pitch: a broken-up tone's window peaks scatter around it (a clock
    # off by 9 %, 48 000 against 44 100, would hold it 40 Hz off in every window)
    assert abs(np.median([peak for peak, _ in held]) - freq) <= 15, held
