"""A real Prometheus (Debian's package) scrapes the bridge on loopback with the shipped config."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import aiohttp

from ..support.ports import free_port
from ..support.requires import require

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
HOW = "install Debian's prometheus package (`apt-get install prometheus`), or run `make test`"

require(PROMETHEUS is not None and PROMTOOL is not None, "prometheus/promtool", HOW)


async def test_shipped_alert_rules_are_valid() -> None:
    proc = await asyncio.create_subprocess_exec(
        PROMTOOL,
        "check",
        "rules",
        str(DEPLOY / "alerts.yml"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    assert "SUCCESS: 8 rules found" in out.decode()


async def test_prometheus_scrapes_the_bridge(client, tmp_path) -> None:
    bridge = f"127.0.0.1:{client.port}"
    config = (DEPLOY / "prometheus.yml").read_text()
    assert 'targets: ["127.0.0.1:8080"]' in config
    config = config.replace('targets: ["127.0.0.1:8080"]', f'targets: ["{bridge}"]')
    config = config.replace("scrape_interval: 5s", "scrape_interval: 1s")
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(DEPLOY / "alerts.yml", tmp_path / "alerts.yml")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        PROMETHEUS,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    api = f"http://127.0.0.1:{port}"
    try:
        call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(api + "/-/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            series = []
            for _ in range(60):
                async with http.get(
                    api + "/api/v1/query", params={"query": "bridge_calls_active"}
                ) as r:
                    body = await r.json()
                assert body["status"] == "success"
                series = [
                    s for s in body["data"]["result"] if s["metric"].get("direction") == "outbound"
                ]
                if series and float(series[0]["value"][1]) == 1.0:
                    break
                await asyncio.sleep(0.25)
            assert series, body
            assert series[0]["metric"]["job"] == "webrtc-bridge"
            assert series[0]["metric"]["instance"] == bridge
            assert float(series[0]["value"][1]) == 1.0
            async with http.get(api + "/api/v1/rules") as r:
                rules = (await r.json())["data"]["groups"][0]["rules"]
            assert len(rules) == 8 and all(rule["health"] != "err" for rule in rules)
            async with http.get(api + "/api/v1/targets") as r:
                targets = (await r.json())["data"]["activeTargets"]
            assert targets[0]["health"] == "up", targets
        await client.post("/call/hangup", json={"callID": call["callID"]})
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
