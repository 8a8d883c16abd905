"""``BridgeClient.subscribeEvents`` (web/bridge-client.js) in Node, on a stand-in
``EventSource``: a ``replay.unavailable`` from the bridge (what the stream missed cannot be
replayed: docs/api.md) is handed to the app and followed by a new stream from now. A browser's
``EventSource`` would come back with the same ``Last-Event-ID`` and be told the same, every
two seconds, for ever."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NODE = shutil.which("node")
CLIENT = Path(__file__).resolve().parents[2] / "web" / "bridge-client.js"
SCRIPT = """
const made = [];
globalThis.EventSource = class {
  constructor(url) { this.url = url; this.listeners = {}; this.closed = false; made.push(this); }
  addEventListener(type, f) { (this.listeners[type] ||= []).push(f); }
  close() { this.closed = true; }
  fire(type, data) {
    for (const f of this.listeners[type] || []) f({ data: JSON.stringify(data) });
  }
};
const { BridgeClient } = await import("%s");
const client = new BridgeClient({ baseUrl: "http://127.0.0.1:9", token: "t", audioElement: {} });
const told = [];
client.addEventListener("replay.unavailable", (e) => told.push(e.detail));
client.subscribeEvents("c1");
const body = { lastEventId: "1-1", code: "replay_unavailable", message: "gone" };
made[0].fire("replay.unavailable", body);
made[0].fire("replay.unavailable", body);  // (the closed stream's: not followed again)
console.log(JSON.stringify({ made: made.map((s) => [s.url, s.closed]), told }));
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_a_replay_the_bridge_cannot_serve_is_told_and_a_new_stream_follows(tmp_path: Path) -> None:
    script = tmp_path / "events.mjs"
    script.write_text(SCRIPT % CLIENT.as_uri())
    assert NODE is not None
    out = subprocess.run([NODE, str(script)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    url = "http://127.0.0.1:9/call/events?token=t&callID=c1"
    assert got["made"] == [[url, True], [url, False]]
    assert got["told"] == [{"lastEventId": "1-1", "code": "replay_unavailable", "message": "gone"}]


def documented_event_types() -> set[str]:
    """The call event types docs/api.md lists for ``GET /call/events`` (``a.b``/``c``: both
    ``a.b`` and ``a.c``)."""
    doc = (CLIENT.parents[1] / "docs" / "api.md").read_text()
    row = next(ln for ln in doc.splitlines() if ln.startswith("| `GET /call/events`"))
    types: set[str] = set()
    for group in re.findall(r"`[a-z_]+(?:\.[a-z_]+)+`(?:/`[a-z_]+`)*", row):
        names = re.findall(r"`([a-z_.]+)`", group)
        prefix = names[0].rsplit(".", 1)[0]
        types.add(names[0])
        types.update(f"{prefix}.{name}" for name in names[1:])
    return types


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_every_documented_call_event_reaches_the_app(tmp_path: Path) -> None:
    """``subscribeEvents`` hands the app each call event as a ``call`` event, but an
    ``EventSource`` hears a named event only when listened for, and the client listened for
    a fixed list: ``playback.finished``, ``recording.ready``, ``call.quality``, ``agent.*`` and
    more never reached an app."""
    script = tmp_path / "types.mjs"
    script.write_text(
        f'const {{ BridgeClient }} = await import("{CLIENT.as_uri()}");\n'
        "console.log(JSON.stringify(BridgeClient.EVENT_TYPES));\n"
    )
    assert NODE is not None
    out = subprocess.run([NODE, str(script)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    forwarded = set(json.loads(out.stdout))
    documented = documented_event_types() - {"replay.unavailable"}  # the stream's own: apart
    assert {"playback.finished", "call.voicemail", "participant.left"} <= documented
    assert documented - forwarded == set()
