"""The first media packet on Graph calls (issue 34): Meta waits for the business's first SRTP
packet before it sends any, and ends a call that stays silent, so the bridge must send as soon
as the WhatsApp-side media is up — with no browser, agent or engine audio yet.

Measured on loopback against the test fake's Meta peer (ICE-lite, sha-256, the bridge's real
WhatsApp-side peer connection): the time from ICE + DTLS up on Meta's side to the bridge's
first RTP packet arriving there, with no browser joined — for user-initiated calls (while they
ring after ``pre_accept``) and business-initiated ones (after Meta's answer is applied). Calls
run one after the other, so the figure is the bridge's own delay, not a queue.

``python -m bench.first_packet [--calls 20]`` prints a table and writes
``bench/results/first-packet-<date>.json``. Goal ≤ 40 ms, moonshot ≤ 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from bench.quality import RESULTS, machine
from bridge.app import create_app
from bridge.config import settings_for_tests
from tests.fakes.cloudapi import FakeMeta
from tests.support.waits import until


async def _one(client: TestClient, meta: FakeMeta, direction: str, i: int) -> float:
    if direction == "inbound":
        mcall = await meta.user_calls(client, f"1555{i:07d}")
    else:
        resp = await client.post("/call/make", json={"phone": f"5521{i:09d}"})
        call = await resp.json()
        mcall = next(c for c in meta.meta_calls.values() if c.opaque == call["callID"])
        body = meta.envelope(meta.answer_event(mcall), meta.status_event(mcall, "ACCEPTED"))
        await meta.post(client, body)
    peer = mcall.peer
    await asyncio.wait_for(peer.connected.wait(), 10)
    await until(lambda: peer.gate.first_rtp_at, 5, "the first packet")
    assert peer.connected_at is not None and peer.gate.first_rtp_at is not None
    delay = peer.gate.first_rtp_at - peer.connected_at
    for live in (await (await client.get("/call/status")).json())["calls"]:
        await client.post("/call/hangup", json={"callID": live["callID"]})
    return delay


async def run(calls: int) -> dict[str, Any]:
    meta = FakeMeta()
    await meta.start()
    settings = settings_for_tests(**meta.bridge_settings())
    client = TestClient(TestServer(create_app(settings), host="127.0.0.1"))
    await client.start_server()
    out: dict[str, Any] = {}
    try:
        for direction in ("inbound", "outbound"):
            await _one(client, meta, direction, 0)  # warm-up (imports, codec set-up)
            delays = [await _one(client, meta, direction, i + 1) for i in range(calls)]
            ms = sorted(1000 * d for d in delays)
            out[direction] = {
                "calls": calls,
                "median_ms": round(statistics.median(ms), 1),
                "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1),
                "max_ms": round(ms[-1], 1),
                "min_ms": round(ms[0], 1),
            }
    finally:
        await client.close()
        await meta.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    results = asyncio.run(run(args.calls))
    print("first packet after WhatsApp-side media up, no browser (ms)")
    print(f"{'direction':<10} {'calls':>5} {'min':>7} {'median':>7} {'p95':>7} {'max':>7}")
    for direction, r in results.items():
        print(
            f"{direction:<10} {r['calls']:>5} {r['min_ms']:>7} {r['median_ms']:>7} "
            f"{r['p95_ms']:>7} {r['max_ms']:>7}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"first-packet-{time.strftime('%Y%m%d')}.json"
    path.write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
