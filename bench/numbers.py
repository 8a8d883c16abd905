"""Numbers at scale (issue 46): a real bridge process with N Cloud API numbers spread over
several Meta apps, created through ``POST /numbers``; measured:

- what a number costs: ``POST /numbers`` latency (its engine up and its Graph token checked
  before the answer), and the bridge's RSS per number;
- the webhook front door: ``POST /engine/webhook`` round trips for signed status webhooks of
  numbers picked at random, next to the same with one number — the latency the routing by
  ``metadata.phone_number_id`` adds (p50, p99).

Meta's side is a tiny Graph stand-in on loopback (``GET /{PHONE_NUMBER_ID}`` for the token
check). ``python -m bench.numbers --numbers 1000`` writes bench/results/numbers-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.quality import stamped
from tests.support.ports import free_port
from tests.support.processes import wait_healthy

APPS = 10
ADMIN = "bench-admin"


async def graph_stand_in() -> tuple[web.AppRunner, str]:
    async def node(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["pnid"]})

    app = web.Application()
    app.router.add_get("/v23.0/{pnid}", node)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/v23.0"


def status_webhook(pnid: str, n: int) -> bytes:
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA",
                "changes": [
                    {
                        "field": "calls",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "1555", "phone_number_id": pnid},
                            "statuses": [
                                {
                                    "id": f"wacid.bench{n}",
                                    "type": "call",
                                    "status": "RINGING",
                                    "timestamp": str(int(time.time())),
                                    "recipient_id": "15550001111",
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(body).encode()


def signature(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def webhook_latencies(
    http: aiohttp.ClientSession, base: str, numbers: list[tuple[str, str]], count: int
) -> list[float]:
    out = []
    for n in range(count):
        pnid, secret = numbers[(n * 7919) % len(numbers)]
        raw = status_webhook(pnid, n)
        headers = {
            "X-Hub-Signature-256": signature(secret, raw),
            "Content-Type": "application/json",
        }
        t0 = time.perf_counter()
        async with http.post(base + "/engine/webhook", data=raw, headers=headers) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def run(count: int, webhooks: int) -> dict[str, Any]:
    graph, graph_url = await graph_stand_in()
    port = free_port()
    data = tempfile.mkdtemp(prefix="bench-numbers-")
    env = {
        **os.environ,
        "BRIDGE_PORT": str(port),
        "BRIDGE_DATA_DIR": data,
        "BRIDGE_API_TOKENS": ADMIN,
        "BRIDGE_RATE_LIMIT": "1000000",
        "BRIDGE_RATE_BURST": "1000000",
        "BRIDGE_LOG_LEVEL": "warning",
        "BRIDGE_STUN_URLS": "",
        "BRIDGE_ICE_ADDRESSES": "127.0.0.1",
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bridge", env=env)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {ADMIN}"}
    result: dict[str, Any] = stamped("numbers")
    try:
        await wait_healthy(base, timeout=20.0)
        async with aiohttp.ClientSession() as http:
            rss0 = rss_mb(proc.pid)
            numbers: list[tuple[str, str]] = []
            create_ms: list[float] = []
            samples: dict[str, Any] = {}
            for i in range(count):
                pnid, secret = f"{7000000 + i}", f"app-secret-{i % APPS}"
                body = {
                    "phone": f"+1555{i:07d}",
                    "engine": "cloudapi",
                    "cloudapi": {
                        "phoneNumberID": pnid,
                        "accessToken": f"token-{i}",
                        "appSecret": secret,
                        "verifyToken": f"verify-{i % APPS}",
                        "graphURL": graph_url,
                    },
                }
                t0 = time.perf_counter()
                async with http.post(base + "/numbers", json=body, headers=auth) as resp:
                    assert resp.status == 201, await resp.text()
                create_ms.append((time.perf_counter() - t0) * 1000)
                numbers.append((pnid, secret))
                if len(numbers) == 1:
                    samples["1"] = await webhook_latencies(http, base, numbers, webhooks)
            samples[str(count)] = await webhook_latencies(http, base, numbers, webhooks)
            rss1 = rss_mb(proc.pid)
        one, many = samples["1"], samples[str(count)]
        result.update(
            {
                "numbers": count,
                "apps": APPS,
                "create_ms": {"p50": pct(create_ms, 0.5), "p99": pct(create_ms, 0.99)},
                "rss_mb": {
                    "before": rss0,
                    "after": rss1,
                    "per_number_kb": (rss1 - rss0) * 1024 / count,
                },
                "webhook_ms": {
                    "one_number": {"p50": pct(one, 0.5), "p99": pct(one, 0.99)},
                    "many_numbers": {"p50": pct(many, 0.5), "p99": pct(many, 0.99)},
                    "added_p50": statistics.median(many) - statistics.median(one),
                    "added_p99": pct(many, 0.99) - pct(one, 0.99),
                },
            }
        )
    finally:
        proc.terminate()
        await proc.wait()
        await graph.cleanup()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=1000)
    parser.add_argument("--webhooks", type=int, default=2000)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    result = asyncio.run(run(args.numbers, args.webhooks))
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"numbers-{time.strftime('%Y%m%d')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
