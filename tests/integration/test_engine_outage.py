"""Engine outages ride through, and no call is left open on the engine (issue 14).

The fake ZuckZapGo really goes away (its server is closed, its port refuses connections) and
comes back on the same port with its calls, as an engine behind a partition or one that keeps
its calls across a restart does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from typing import BinaryIO

import aiohttp
import numpy as np
import pytest

from bridge.audio import rms_dbfs

from ..fakes.common import FakeCall
from ..support.calls import wait_state
from ..support.ports import free_port
from ..support.processes import spawn_bridge, wait_healthy
from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency
from ..support.waits import until

AUDIBLE_RMS = 300.0  # int16 scale; the tones are sent at 0.4 of full scale (~9000 RMS)


def port_refuses(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def first_audible_client(rtc: RtcClient, t0: float) -> float | None:
    """Arrival time of the first non-silent frame the browser played after ``t0``."""
    for chunk, t in zip(rtc.recorder.chunks, rtc.recorder.times, strict=True):
        if t >= t0 and np.sqrt(np.mean(chunk**2)) > AUDIBLE_RMS:
            return t
    return None


def first_audible_engine(call: FakeCall, t0: float) -> float | None:
    """Arrival time of the first non-silent frame the engine received after ``t0``."""
    for data, t in zip(call.received, call.received_at, strict=True):
        if t >= t0:
            pcm = np.frombuffer(data, dtype="<i2").astype(np.float64)
            if pcm.size and np.sqrt(np.mean(pcm**2)) > AUDIBLE_RMS:
                return t
    return None


def engine_heard_since(call: FakeCall, t0: float) -> np.ndarray:
    parts = [d for d, t in zip(call.received, call.received_at, strict=True) if t >= t0]
    return np.frombuffer(b"".join(parts), dtype="<i2")


async def active_call_with_audio(client, zuckzapgo) -> tuple[dict, RtcClient, FakeCall]:
    resp = await client.post("/call/make", json={"phone": "5521999999999"})
    assert resp.status == 201
    call = await resp.json()
    rtc = RtcClient(client, call["callID"], freq=440.0)
    await rtc.offer()
    await wait_state(client, call["callID"], "active")
    await asyncio.wait_for(rtc.connected.wait(), 10)
    await rtc.recorder.tone_arrives(700)
    t0 = time.monotonic()
    await asyncio.sleep(1.0)
    engine_call = next(iter(zuckzapgo.calls.values()))
    assert dominant_frequency(rtc.recorder.since(t0), rtc.recorder.rate) == pytest.approx(
        700, abs=5
    )
    assert dominant_frequency(engine_heard_since(engine_call, t0), 16_000) == pytest.approx(
        440, abs=5
    )
    return call, rtc, engine_call


async def test_engine_back_after_10_s_call_stays_active_and_audio_resumes(zclient, zuckzapgo):
    client = await zclient()
    call, rtc, engine_call = await active_call_with_audio(client, zuckzapgo)
    cid = call["callID"]

    await zuckzapgo.stop()
    t_down = time.monotonic()
    assert port_refuses(zuckzapgo.port)
    await asyncio.sleep(2.0)
    # Meanwhile: the call is active, the browser still gets packets, and they are silence.
    t_quiet = time.monotonic()
    await asyncio.sleep(6.0)
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["state"] == "active" and snap["webrtc"]["state"] == "connected"
    quiet = rtc.recorder.since(t_quiet)
    assert quiet.size > 0.8 * 6.0 * rtc.recorder.rate  # the browser's stream never stopped
    assert rms_dbfs(quiet / 32768) < -50
    ready = await client.get("/readyz")
    assert ready.status == 503  # the engine is reported down meanwhile
    await asyncio.sleep(max(0.0, 10.0 - (time.monotonic() - t_down)))
    assert port_refuses(zuckzapgo.port)

    await zuckzapgo.start()
    t_back = time.monotonic()
    # How soon it resumes is the bench's to measure; here, that it does (both ways).
    await until(lambda: first_audible_client(rtc, t_back), 5.0, "the browser to hear the engine")
    await until(lambda: first_audible_engine(engine_call, t_back), 5.0, "the engine to hear us")

    t1 = time.monotonic()
    await asyncio.sleep(1.5)
    heard = rtc.recorder.since(t1)
    assert dominant_frequency(heard, rtc.recorder.rate) == pytest.approx(700, abs=5)
    assert rms_dbfs(heard / 32768) == pytest.approx(-11.0, abs=2.0)
    pcm = engine_heard_since(engine_call, t1)
    assert dominant_frequency(pcm, 16_000) == pytest.approx(440, abs=3)
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["state"] == "active" and snap["webrtc"]["state"] == "connected"
    assert engine_call.state == "active" and engine_call.connects == 2
    await rtc.close()


async def test_engine_down_past_the_window_call_is_hung_up_when_it_is_back(
    zclient, zuckzapgo, caplog
):
    client = await zclient(engine_reconnect_window=3.0)
    call, rtc, engine_call = await active_call_with_audio(client, zuckzapgo)
    cid = call["callID"]
    with caplog.at_level(logging.WARNING):
        await zuckzapgo.stop()
        assert port_refuses(zuckzapgo.port)
        ended = await wait_state(client, cid, "ended", timeout=12)
        assert ended["endReason"] == "failed"
        await asyncio.sleep(1.0)
    # Ended here, but the engine (unreachable) still has it.
    assert engine_call.state == "active"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("not back within 3 s" in m for m in warnings), warnings
    assert any("could not hang up engine call" in m for m in warnings), warnings

    await zuckzapgo.start()
    await until(lambda: engine_call.state == "ended", 10, "the engine to drop the call")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{zuckzapgo.url}/call/status", headers={"token": "ztok"}) as r,
    ):
        assert (await r.json())["data"]["calls"] == []
    assert ("POST", "/call/hangup", {"callId": engine_call.id}) in zuckzapgo.requests
    await rtc.close()


async def test_hangup_during_an_outage_reaches_the_engine_when_it_is_back(zclient, zuckzapgo):
    client = await zclient()
    resp = await client.post("/call/make", json={"phone": "5521999999999"})
    cid = (await resp.json())["callID"]
    await wait_state(client, cid, "active")
    engine_call = next(iter(zuckzapgo.calls.values()))
    await zuckzapgo.stop()
    resp = await client.post("/call/hangup", json={"callID": cid})
    assert resp.status == 200 and (await resp.json())["endReason"] == "hangup"
    await asyncio.sleep(1.0)
    assert engine_call.state == "active"
    await zuckzapgo.start()
    await until(lambda: engine_call.state == "ended", 10, "the hang-up to reach the engine")


class Bridge:
    """A real ``python -m bridge`` process on the fake engine; its log goes to a file."""

    def __init__(self, engine_url: str, log_path: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.engine_url = engine_url
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = dict(
            os.environ,
            BRIDGE_ICE_ADDRESSES="127.0.0.1",
            BRIDGE_STUN_URLS="",
            BRIDGE_ENGINE="zuckzapgo",
            BRIDGE_ENGINE_URL=self.engine_url,
            BRIDGE_ENGINE_TOKEN="ztok",
            BRIDGE_ENGINE_POLL_INTERVAL="0.2",
        )
        with self._open_log() as log:  # the shared launcher, its log to a file
            self.proc = await spawn_bridge(env, "--port", str(self.port), stderr=log.fileno())
        await wait_healthy(self.base)

    def _open_log(self) -> BinaryIO:
        return open(self.log_path, "ab")

    async def kill(self, sig: int) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)  # by pid: this process only
        return await asyncio.wait_for(self.proc.wait(), 15)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()


async def test_sigkilled_bridge_hangs_up_its_orphaned_call_at_restart(zuckzapgo, tmp_path) -> None:
    async with aiohttp.ClientSession() as session:
        first = Bridge(zuckzapgo.url, str(tmp_path / "first.log"))
        await first.start()
        try:
            async with session.post(
                first.base + "/call/make", json={"phone": "5521999999999"}
            ) as r:
                assert r.status == 201
                call = await r.json()
            async with aiohttp.ClientSession(base_url=first.base) as at_first:
                await wait_state(at_first, call["callID"], "active")  # type: ignore[arg-type]
            engine_call = next(iter(zuckzapgo.calls.values()))
            assert engine_call.state == "active"
        finally:
            assert await first.kill(signal.SIGKILL) == -signal.SIGKILL
        await asyncio.sleep(0.5)
        assert engine_call.state == "active"  # nobody hung it up: the bridge died
        inbound = zuckzapgo.ring_inbound("15550001111")  # rings while no bridge runs

        second = Bridge(zuckzapgo.url, str(tmp_path / "second.log"))
        await second.start()
        try:
            await until(lambda: engine_call.state == "ended", 10, "the orphan to be hung up")
            # A ringing inbound call is not an orphan: it is offered as a new call.
            async with session.get(second.base + "/call/status") as r:
                calls = (await r.json())["calls"]
            assert [(c["direction"], c["state"]) for c in calls] == [("inbound", "ringing")]
            assert zuckzapgo.calls[inbound].state == "ringing"
        finally:
            assert await second.kill(signal.SIGTERM) == 0
    log = second.log()
    orphan_lines = [line for line in log.splitlines() if "orphaned" in line]
    assert len(orphan_lines) == 1, log
    assert engine_call.id in orphan_lines[0] and "WARNING" in orphan_lines[0]
    assert "hanging it up" in orphan_lines[0]
    assert "Traceback" not in log, log
