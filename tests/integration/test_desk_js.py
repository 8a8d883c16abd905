"""``BridgeAgent`` (web/bridge-client.js) run by Node against the real app: it connects, is
rung, accepts and gets the call; a refused token rejects ``connect()``."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from ..support.calls import wait_state
from .test_desk import incoming, token

NODE = shutil.which("node")
CLIENT = Path(__file__).resolve().parents[2] / "web" / "bridge-client.js"
SCRIPT = """
import { BridgeAgent } from "%s";
const [base, token] = process.argv.slice(2);
const agent = new BridgeAgent({ baseUrl: base, token, reconnect: false });
const say = (m) => process.stdout.write(JSON.stringify(m) + "\\n");
agent.addEventListener("ringing", (e) => { say(e.detail); agent.accept(e.detail.callID); });
agent.addEventListener("accepted", (e) => say(e.detail));
agent.addEventListener("call.active", (e) => { say(e.detail); agent.close(); process.exit(0); });
setInterval(() => {}, 1000);  // Node's WebSocket alone does not keep the process alive
try { say(await agent.connect()); } catch (err) {
  say({ type: "refused", message: err.message });
  process.exit(0);
}
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed")
async def test_bridge_agent_in_node_accepts_a_call(client, tmp_path) -> None:
    script = tmp_path / "agent.mjs"
    script.write_text(SCRIPT % CLIENT.as_uri())
    base = str(client.make_url("")).rstrip("/")
    good = await token(client, "ann")
    for tok, first in (("agt1.bad.bad", "refused"), (good, "hello")):
        proc = await asyncio.create_subprocess_exec(
            str(NODE),
            "--experimental-websocket",
            "--no-warnings",
            str(script),
            base,
            tok,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        raw = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert raw, (await proc.stderr.read()).decode()
        line = json.loads(raw)
        assert line["type"] == first, line
        if first == "refused":
            await proc.wait()
            continue
        call_id = await incoming(client)
        seen = []
        for _ in range(3):
            raw = await asyncio.wait_for(proc.stdout.readline(), 5)
            assert raw, (seen, (await proc.stderr.read()).decode())
            seen.append(json.loads(raw))
        assert [m["type"] for m in seen] == ["ringing", "accepted", "call.active"]
        assert all(m["callID"] == call_id for m in seen)
        await wait_state(client, call_id, "active")
        await asyncio.wait_for(proc.wait(), 10)
