"""Meta's recordings fetched after their webhook (issue 50: p99 ≤ 10 s, moonshot ≤ 2 s).

The bridge on the Cloud API engine against the tests' fake Meta on loopback (Graph, signed
webhooks, Meta's media store with expiring URLs: the strict fake the tests use). N calls are
placed with ``"recording"``, answered by the fake user and hung up; then, for each call, Meta's
``call_recording_available`` webhook (a 3 s Ogg/Opus file) is posted and the time to the
bridge's ``recording.ready`` (the file looked up at Meta, downloaded, checked, decoded and
stored as the call's WAV) is taken from outside: first one webhook at a time, then all N at
once (Meta announces the recordings of many calls together after a busy hour).

``python -m bench.meta_recordings --calls 50`` writes bench/results/meta-recordings-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from bench.quality import stamped
from bridge.app import create_app
from bridge.config import settings_for_tests
from tests.fakes.cloudapi import FakeMeta
from tests.support.audio_files import make

USER = "15550001111"
PURPOSE = {"purpose": "quality assurance", "announcementLanguage": "en_US"}


class ReadyEvents:
    """``recording.ready`` events from the bridge's SSE stream, by callID, as they come."""

    def __init__(self, stream: aiohttp.ClientResponse) -> None:
        self.stream = stream
        self.arrived: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def run(self) -> None:
        while line := await self.stream.content.readline():
            if line.startswith(b"data: "):
                data = json.loads(line[6:])
                if data["type"] == "recording.ready" and data.get("source") == "meta":
                    self.arrived[data["callID"]] = time.perf_counter()
                    self.changed.set()

    async def wait_for(self, call_ids: set[str], timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while not call_ids <= self.arrived.keys():
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.perf_counter()))


async def place_calls(client: TestClient, meta: FakeMeta, n: int) -> dict[str, str]:
    """N recorded calls made, answered and ended: wacid → callID."""
    calls: dict[str, str] = {}
    for i in range(n):
        resp = await client.post(
            "/call/make", json={"phone": f"+1555{7000000 + i}", "recording": PURPOSE}
        )
        made = await resp.json()
        assert resp.status == 201, made
        wacid, mcall = next((w, c) for w, c in meta.meta_calls.items() if w not in calls)
        calls[wacid] = made["callID"]
        await meta.post(client, meta.envelope(meta.answer_event(mcall)))
        await client.post("/call/hangup", json={"callID": made["callID"]})
    return calls


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


async def run(n: int) -> dict[str, Any]:
    meta = FakeMeta()
    await meta.start()
    with tempfile.TemporaryDirectory() as data:
        settings = settings_for_tests(**meta.bridge_settings(), data_dir=data)
        client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        try:
            stream = await client.get("/call/events")
            ready = ReadyEvents(stream)
            reader = asyncio.create_task(ready.run())
            ogg = make("opus", 523.0, 3.0)
            calls = await place_calls(client, meta, 2 * n)
            wacids = list(calls)
            one_at_a_time: list[float] = []
            for wacid in wacids[:n]:
                body = meta.envelope(
                    meta.media.recording_event(wacid, "15550001111", ogg, "audio/ogg")
                )
                sent = time.perf_counter()
                assert (await meta.post(client, body)).status == 200
                await ready.wait_for({calls[wacid]}, 30.0)
                one_at_a_time.append(ready.arrived[calls[wacid]] - sent)
            burst = wacids[n:]
            sent = time.perf_counter()
            await asyncio.gather(
                *(
                    meta.post(
                        client,
                        meta.envelope(
                            meta.media.recording_event(w, "15550001111", ogg, "audio/ogg")
                        ),
                    )
                    for w in burst
                )
            )
            await ready.wait_for({calls[w] for w in burst}, 60.0)
            together = [ready.arrived[calls[w]] - sent for w in burst]
            reader.cancel()
            stream.close()
        finally:
            await client.close()
            await meta.stop()
    return {
        "what": "Meta's call_recording_available webhook → recording.ready (3 s Ogg/Opus)",
        "one_at_a_time": summary(one_at_a_time),
        "all_at_once": summary(together),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50, help="webhooks per measure")
    parser.add_argument("--out", default="", help="where to write the JSON")
    args = parser.parse_args()
    result = {**stamped("meta-recordings"), **asyncio.run(run(args.calls))}
    out = Path(args.out or f"bench/results/meta-recordings-{time.strftime('%Y%m%d')}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
