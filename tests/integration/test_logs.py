"""BRIDGE_LOG_FORMAT=json: one object per line, the call id on lines about a call, no secrets."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from bridge.logs import JsonFormatter

from ..support.calls import wait_state
from ..support.rtc_client import RtcClient


async def test_json_logs_carry_call_id_and_no_sdp_or_token(make_client) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        client = await make_client(api_tokens=("tok-secret",))
        headers = {"Authorization": "Bearer tok-secret"}
        call = await (
            await client.post("/call/make", json={"phone": "5521999999999"}, headers=headers)
        ).json()
        rtc = RtcClient(client, call["callID"], headers=headers)
        await rtc.offer()
        await wait_state(client, call["callID"], "active", headers=headers)
        await asyncio.sleep(0.3)
        await client.post("/call/hangup", json={"callID": call["callID"]}, headers=headers)
        await rtc.close()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = [ln for ln in stream.getvalue().splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    # (the test server has an access log; the bridge process runs without one)
    about_call = [
        r for r in records if call["callID"] in r["msg"] and r["logger"] != "aiohttp.access"
    ]
    assert len(about_call) >= 3  # dialled, active, ended
    missing = [r for r in about_call if r.get("call_id") != call["callID"]]
    assert not missing, missing
    text = stream.getvalue()
    assert "tok-secret" not in text and "a=fingerprint" not in text and "v=0" not in text
