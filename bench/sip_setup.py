"""Call set-up on Meta's roads (issue 33): how long from Meta's first signalling message of a
user's call to the first audio the agent's browser hears, with the call answered at once
(auto-answer), everything on loopback — Graph + DTLS against SIP + DTLS and SIP + SDES — and,
on SIP, how long after the dialog is confirmed (the ACK) the first SRTP
packet from the bridge reaches Meta.

Meta is the test fake's WebRTC peer (ICE-lite, sha-256, a 660 Hz tone), or on SIP + SDES the
SDES-SRTP endpoint of the tests (``tests/support/sdes_peer.py``), which like Meta starts its
660 Hz tone when the bridge's first packet arrives; its Graph side is the
fake's webhook sender (the signed ``connect`` webhook is the first message), its SIP side a
small scripted UAC here over TLS (the INVITE is the first message; no 407 round, which costs
one loopback round trip). The agent is an aiortc browser peer that offers and answers as soon
as ``call.ringing`` fires; its first audio is the first frame of the tone it plays out.

``python -m bench.sip_setup [--calls 5]`` prints a table and writes
``bench/results/sip-setup-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient, TestServer
from aiortc.rtp import RtpPacket

from bench.quality import RESULTS, machine
from bridge.api.keys import ENGINE, MANAGER
from bridge.app import create_app
from bridge.audio.opus import OpusDecoder
from bridge.config import settings_for_tests
from bridge.sip import Request, Response, client_context
from bridge.sip.headers import Address, new_branch
from bridge.sip.transport import connect
from tests.fakes.cloudapi import FakeMeta, MetaPeer
from tests.support.rtc_client import RtcClient
from tests.support.sdes_peer import SdesEndpoint
from tests.support.tls import TestCA
from tests.support.waits import until

LOUD = 3000
"""Sample magnitude (of 32768) that counts as the tone arriving (it plays at 16384)."""


class AutoAnswer:
    """The agent: on ``call.ringing`` a browser peer offers and the call is answered."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.rtc: RtcClient | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.first_packet_at: float | None = None
        """When the first RTP packet carrying the WhatsApp side's tone reached the browser
        (decrypted, before its jitter buffer): the bridge's part of the set-up ends here."""
        client.app[MANAGER].events.listen(self._on_event)

    def _on_event(self, kind: str, call: Any) -> None:
        if kind == "call.ringing" and self.rtc is None:
            self.rtc = RtcClient(self.client, call.id, freq=440.0)
            self.tasks.append(asyncio.ensure_future(self._answer(call.id)))
            self.tasks.append(asyncio.ensure_future(self._offer(self.rtc)))

    async def _offer(self, rtc: RtcClient) -> None:
        await rtc.offer()
        # Installed before ICE can complete (no await since the answer was applied), so no
        # packet passes unseen. aiortc's own receiver then holds 4 packets (80 ms: its
        # JitterBuffer's prefetch) before it plays the first: a browser's NetEq starts sooner,
        # so first_audio_ms carries that constant on every road alike.
        transport = rtc.pc.getTransceivers()[0].receiver.transport
        handle = transport._handle_rtp_data
        decoder = OpusDecoder(16_000)

        async def timed(data: bytes, arrival_time_ms: int) -> None:
            if self.first_packet_at is None and len(data) >= 12 and not 192 <= data[1] <= 208:
                payload = RtpPacket.parse(data).payload
                if payload and np.abs(decoder.decode(payload)).max() > LOUD:
                    self.first_packet_at = time.monotonic()
            await handle(data, arrival_time_ms=arrival_time_ms)

        transport._handle_rtp_data = timed

    async def _answer(self, call_id: str) -> None:
        resp = await self.client.post("/call/answer", json={"callID": call_id})
        assert resp.status == 200, await resp.text()

    async def first_audio(self, timeout: float = 15.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rec = self.rtc.recorder if self.rtc is not None else None
            if rec is not None:
                for chunk, at in zip(list(rec.chunks), list(rec.times), strict=False):
                    if np.abs(chunk).max() > LOUD:
                        return at
            await asyncio.sleep(0.002)
        raise TimeoutError("the browser heard nothing")

    def timings(self, t0: float, heard: float) -> dict[str, float]:
        """Milliseconds from Meta's first message (``t0``) to the first tone packet at the
        browser and to the first tone it played."""
        assert self.first_packet_at is not None, "no tone packet reached the browser"
        return {
            "first_packet_ms": (self.first_packet_at - t0) * 1000,
            "first_audio_ms": (heard - t0) * 1000,
        }

    async def close(self) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.rtc is not None:
            await self.rtc.close()


async def graph_call() -> dict[str, float]:
    meta = FakeMeta()
    await meta.start()
    client = TestClient(TestServer(create_app(settings_for_tests(**meta.bridge_settings()))))
    await client.start_server()
    agent = AutoAnswer(client)
    try:
        _, event = await meta.user_offer("15550001111")
        t0 = time.monotonic()
        resp = await meta.post(client, meta.envelope(event))
        assert resp.status == 200
        heard = await agent.first_audio()
        return agent.timings(t0, heard)
    finally:
        await agent.close()
        await client.close()
        await meta.stop()


def first_rtp_clock(meta: MetaPeer) -> list[float]:
    """When the bridge's packets reach the Meta peer (decrypted RTP, after the fake's hook)."""
    seen: list[float] = []
    transport = meta.pc.getTransceivers()[0].receiver.transport
    handle = transport._handle_rtp_data

    async def timed(data: bytes, arrival_time_ms: int) -> None:
        if not seen and len(data) >= 12 and not 192 <= data[1] <= 208:
            seen.append(time.monotonic())
        await handle(data, arrival_time_ms=arrival_time_ms)

    transport._handle_rtp_data = timed
    return seen


def invite(port: int, sdp: str) -> Request:
    """Meta's INVITE, its branch and Call-ID new each time: one the user agent answered in the
    last 64·T1 is a retransmission, answered again and not a call (RFC 3261 §17.2.1)."""
    req = Request(method="INVITE", uri=f"sip:+15550009999@localhost:{port};transport=tls")
    req.add("Via", f"SIP/2.0/TLS 127.0.0.1:5061;branch={new_branch()}")
    req.add("Max-Forwards", "70")
    req.add("From", "<sip:+15550001111@wa.meta.vc>;tag=bench")
    req.add("To", "<sip:+15550009999@localhost>")
    req.add("Call-ID", f"outgoing:wacid.bench-{new_branch()[7:]}")
    req.add("CSeq", "1 INVITE")
    req.add("Contact", "<sip:+15550001111@wa.meta.vc;transport=tls;ob>")
    req.add("x-wa-meta-wacid", "wacid.bench")
    req.add("Content-Type", "application/sdp")
    req.body = sdp.encode()
    return req


def ack_for(req: Request, ok: Response) -> Request:
    ack = Request(method="ACK", uri=str(Address.parse(ok.values("Contact")[0]).uri))
    ack.add("Via", f"SIP/2.0/TLS 127.0.0.1:5061;branch={new_branch()}")
    ack.add("Max-Forwards", "70")
    ack.add("From", req.get("From"))
    ack.add("To", ok.get("To"))
    ack.add("Call-ID", req.call_id)
    ack.add("CSeq", "1 ACK")
    return ack


async def sip_call(media: str, tmp: Path) -> dict[str, float]:
    ca = TestCA(tmp)
    pair = ca.issue("bridge", "localhost", "127.0.0.1")
    settings = settings_for_tests(
        engine="cloudapi",
        cloudapi_signalling="sip",
        cloudapi_media=media,
        sip_listen="127.0.0.1:0",
        sip_hostname="localhost",
        sip_cert=str(pair.cert),
        sip_key=str(pair.key),
        sip_number="15550009999",
        sip_ca=str(ca.path),
    )
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    agent = AutoAnswer(client)
    if media == "sdes":
        return await _sdes_call(client, agent, ca)
    meta = MetaPeer(660.0)
    conn = None
    try:
        offer = await meta.offer()
        arrivals = first_rtp_clock(meta)
        port = client.app[ENGINE].ua.port
        conn = await connect("127.0.0.1", port, client_context(str(ca.path)))
        req = invite(port, offer)
        t0 = time.monotonic()
        await conn.send(req)
        while True:
            msg = await asyncio.wait_for(conn.read(), 15)
            if isinstance(msg, Response) and msg.status >= 200:
                break
        assert isinstance(msg, Response) and msg.status == 200, msg
        await meta.apply_answer(msg.body.decode())
        await conn.send(ack_for(req, msg))
        acked = time.monotonic()
        heard = await agent.first_audio()  # the bridge's packets reached Meta long before
        assert arrivals, "Meta heard nothing from the bridge"
        return agent.timings(t0, heard) | {
            "first_srtp_after_ack_ms": (arrivals[0] - acked) * 1000,
            "ok_ms": (acked - t0) * 1000,
        }
    finally:
        await agent.close()
        await client.close()  # the bridge hangs up (BYE on the open connection) first
        if conn is not None:
            await conn.close()
        await meta.close()


async def _sdes_call(client: TestClient, agent: AutoAnswer, ca: TestCA) -> dict[str, float]:
    meta = SdesEndpoint()
    await meta.start()
    conn = None
    tone: asyncio.Task[None] | None = None
    try:
        port = client.app[ENGINE].ua.port
        conn = await connect("127.0.0.1", port, client_context(str(ca.path)))
        req = invite(port, meta.sdp())
        t0 = time.monotonic()
        await conn.send(req)
        while True:
            msg = await asyncio.wait_for(conn.read(), 15)
            if isinstance(msg, Response) and msg.status >= 200:
                break
        assert isinstance(msg, Response) and msg.status == 200, msg
        meta.take(msg.body.decode())
        await conn.send(ack_for(req, msg))
        acked = time.monotonic()
        await until(lambda: meta.packets, 5, "the bridge's first packet", every=0.001)
        tone = asyncio.ensure_future(meta.play_tone(660.0, 16384, 5.0))
        heard = await agent.first_audio()
        assert meta.gate.first_rtp_at is not None
        return agent.timings(t0, heard) | {
            "first_srtp_after_ack_ms": (meta.gate.first_rtp_at - acked) * 1000,
            "ok_ms": (acked - t0) * 1000,
        }
    finally:
        if tone is not None:
            tone.cancel()
            await asyncio.gather(tone, return_exceptions=True)
        await agent.close()
        await client.close()
        if conn is not None:
            await conn.close()
        meta.close()


def summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    keys = runs[0].keys()
    return {
        k: {
            "median": round(statistics.median(r[k] for r in runs), 1),
            "min": round(min(r[k] for r in runs), 1),
            "max": round(max(r[k] for r in runs), 1),
        }
        for k in keys
    } | {"runs": runs}


async def run(calls: int, media: list[str]) -> dict[str, Any]:
    out: dict[str, list[dict[str, float]]] = {"graph+dtls": []}
    for kind in media:
        out[f"sip+{kind}"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(calls):  # interleaved, so load changes hit every road alike
            out["graph+dtls"].append(await graph_call())
            for kind in media:
                sub = Path(tmp) / f"{kind}{i}"
                sub.mkdir()
                out[f"sip+{kind}"].append(await sip_call(kind, sub))
    return {name: summary(runs) for name, runs in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--media", default="dtls", help="SIP media legs, comma-separated")
    args = parser.parse_args()
    result = asyncio.run(run(args.calls, args.media.split(",")))
    stamp = time.strftime("%Y%m%d-%H%M", time.gmtime())
    report = {"machine": machine(), "date": stamp, "calls": args.calls, "result": result}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"sip-setup-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(
        "| road | first tone packet at the browser | first audio it played "
        "| first SRTP after ACK | (ms, median [min-max]) |"
    )
    print("|---|---|---|---|")

    def cell(m: dict[str, float] | None) -> str:
        return f"{m['median']} [{m['min']}-{m['max']}]" if m else "—"

    for name, s in result.items():
        print(
            f"| {name} | {cell(s['first_packet_ms'])} | {cell(s['first_audio_ms'])} "
            f"| {cell(s.get('first_srtp_after_ack_ms'))} |"
        )
    print(f"written {path}")


if __name__ == "__main__":
    main()
