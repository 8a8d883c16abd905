"""Meta's voicemail against the fake Meta: after a rejected inbound call Meta delivers the
caller's message as an audio message whose id is the call's wacid; it becomes the call's
``voicemail`` recording (the Ogg/Opus tone asserted in the stored WAV) and ``call.voicemail``.
A number that forbids recording keeps none; the ``voicemail`` setting is checked (≤ 30 s, its
``triggers`` ``REJECT`` and ``TIMEOUT`` each at most once), sent in Meta's names and read back."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bridge.api.keys import RECORDINGS
from bridge.engines.cloudapi.artifacts_wire import voicemail_item

from ..support.audio_files import make
from ..support.calls import wait_state
from ..support.waits import until
from .test_meta_recordings import mclient, next_event, no_event, wav_tone

__all__ = ["mclient"]


async def _rejected(client: Any, meta: Any, user: str, number: str | None = None) -> Any:
    """``user`` calls, the app rejects the ringing call: Meta's call and the bridge's."""
    mcall = await meta.user_calls(client, user, number=number)

    async def ringing() -> dict[str, Any] | None:
        calls = (await (await client.get("/call/status")).json())["calls"]
        return next((c for c in calls if c["state"] == "ringing"), None)

    call = await until(ringing, 5.0, "the ringing call")
    assert (await client.post("/call/hangup", json={"callID": call["callID"]})).status == 200
    await wait_state(client, call["callID"], "ended")
    assert any(a.get("action") == "reject" for a in meta.actions)
    return mcall, call


async def test_metas_voicemail_of_a_rejected_call_is_stored_and_announced(mclient, meta, tmp_path):
    client = await mclient()
    events = await client.get("/call/events")
    mcall, call = await _rejected(client, meta, "15550004444")
    ogg = make("opus", 660.0, 2.0)
    body = meta.envelope(
        meta.media.voicemail_event(mcall.wacid, "15550004444", ogg), field="messages"
    )
    assert (await meta.post(client, body)).status == 200
    voicemail = await next_event(events, "call.voicemail")
    assert voicemail["callID"] == call["callID"] and voicemail["mediaID"]
    assert voicemail["durationMs"] == pytest.approx(2000, abs=100)
    rec = client.app[RECORDINGS].index[voicemail["recordingID"]]
    assert rec.kind == "voicemail" and rec.call_id == call["callID"]
    freq, seconds = wav_tone(tmp_path / "data" / rec.relative)
    assert freq == pytest.approx(660.0, abs=5) and seconds == pytest.approx(2.0, abs=0.1)
    events.close()


async def test_the_voicemail_of_a_call_turned_away_busy_is_kept(mclient, meta, tmp_path):
    """A call the bridge rejects at once, busy (no room: ``max_calls``), is a call the business
    rejected to Meta (trigger ``REJECT``): its voicemail is that call's, as any other's. The
    bridge knew its calls by ``call.created`` alone, which a call turned away never has: the
    voicemail was dropped as an unknown call's."""
    client = await mclient(max_calls=1)
    events = await client.get("/call/events")
    await meta.user_calls(client, "15550004444")  # rings: the bridge is full
    busy = await meta.user_calls(client, "15550006666")
    await until(lambda: any(a.get("action") == "reject" for a in meta.actions), 5, "reject")
    ended = (await next_event(events, "call.ended"))["call"]
    assert ended["endReason"] == "busy" and ended["peer"].startswith("15550006666")
    ogg = make("opus", 660.0, 1.0)
    item = meta.media.voicemail_event(busy.wacid, "15550006666", ogg)
    body = meta.envelope(item, field="messages")
    assert (await meta.post(client, body)).status == 200
    voicemail = await next_event(events, "call.voicemail")
    assert voicemail["callID"] == ended["callID"]
    rec = client.app[RECORDINGS].index[voicemail["recordingID"]]
    freq, seconds = wav_tone(tmp_path / "data" / rec.relative)
    assert freq == pytest.approx(660.0, abs=5) and seconds == pytest.approx(1.0, abs=0.1)
    events.close()


async def test_a_forbidden_number_keeps_no_voicemail_and_the_setting_is_checked(
    mclient, meta, tmp_path, caplog
):
    client = await mclient()
    resp = await client.patch(
        "/numbers/default/settings", json={"voicemail": {"status": "ENABLED", "timeoutSeconds": 31}}
    )
    error = (await resp.json())["error"]
    assert resp.status == 400 and "voicemail/timeoutSeconds" in error["message"], error
    assert error["code"] == "invalid_settings"
    assert not meta.account.settings_posts
    resp = await client.patch(
        "/numbers/default/settings", json={"voicemail": {"status": "ENABLED", "timeoutSeconds": 20}}
    )
    assert resp.status == 200, await resp.text()
    assert meta.account.settings_posts[-1] == {
        "calling": {"voicemail": {"status": "ENABLED", "timeout_seconds": 20}}
    }
    assert (await resp.json())["voicemail"] == {"status": "ENABLED", "timeoutSeconds": 20}

    meta.add_number("2098765432", "second-token")
    cloudapi = meta.number_fields("2098765432")
    body = {"phone": "+15550783000", "engine": "cloudapi", "recording": "forbidden"}
    resp = await client.post("/numbers", json={**body, "cloudapi": cloudapi})
    assert resp.status == 201, await resp.text()
    events = await client.get("/call/events")
    mcall, _ = await _rejected(client, meta, "15550005555", number="2098765432")
    caplog.set_level(logging.WARNING)
    item = meta.media.voicemail_event(mcall.wacid, "15550005555", make("opus", 660.0, 1.0))
    await meta.post(client, meta.envelope(item, field="messages", number="2098765432"))
    await until(lambda: meta.media.downloads == 1 or None, 5.0, "Meta's file fetched")
    await no_event(events, "call.voicemail", 1.0)
    said = [r for r in caplog.records if "voicemail discarded (recording forbidden" in r.message]
    assert len(said) == 1
    assert not client.app[RECORDINGS].index
    assert not list((tmp_path / "data").glob("files/**/*.wav"))
    events.close()


def test_only_an_audio_message_naming_a_call_is_a_voicemail():
    audio = {"id": "1234", "mime_type": "audio/ogg; codecs=opus"}
    by_context = {"id": "wamid.X", "type": "audio", "audio": audio, "context": {"id": "wacid.A"}}
    found = voicemail_item(by_context)
    assert found is not None and (found.wacid, found.media_id) == ("wacid.A", "1234")
    assert found.mime_type == "audio/ogg"
    assert voicemail_item({"id": "wamid.X", "type": "audio", "audio": audio}) is None
    assert voicemail_item({"id": "wacid.A", "type": "text", "text": {"body": "hi"}}) is None
    assert voicemail_item({"id": "wacid.A", "type": "audio", "audio": {}}) is None


async def test_voicemail_triggers_are_checked_sent_as_metas_and_read_back(mclient, meta):
    client = await mclient()
    for triggers in (["REJECT", "REJECT"], ["HANGUP"], [], "REJECT"):
        voicemail = {"status": "ENABLED", "triggers": triggers}
        resp = await client.patch("/numbers/default/settings", json={"voicemail": voicemail})
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == "invalid_settings", (triggers, error)
        assert "voicemail/triggers" in error["message"], (triggers, error)
    assert not meta.account.settings_posts
    voicemail = {"status": "ENABLED", "timeoutSeconds": 20, "triggers": ["REJECT", "TIMEOUT"]}
    resp = await client.patch("/numbers/default/settings", json={"voicemail": voicemail})
    assert resp.status == 200, await resp.text()
    assert meta.account.settings_posts[-1] == {
        "calling": {
            "voicemail": {
                "status": "ENABLED",
                "timeout_seconds": 20,
                "triggers": ["REJECT", "TIMEOUT"],
            }
        }
    }
    assert (await resp.json())["voicemail"] == voicemail
    got = await (await client.get("/numbers/default/settings")).json()
    assert got["voicemail"] == voicemail
    resp = await client.patch(
        "/numbers/default/settings",
        json={"voicemail": {"status": "ENABLED", "triggers": ["TIMEOUT"]}},
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["voicemail"]["triggers"] == ["TIMEOUT"]


async def test_the_fake_refuses_voicemail_settings_meta_refuses(meta):
    """The fake Meta is as strict as Meta: a repeated or unknown trigger, or a field Meta does
    not name, is its error 100 and nothing is stored."""
    import aiohttp

    auth = {"Authorization": f"Bearer {meta.token}"}
    url = f"{meta.graph_url}/{meta.phone_number_id}/settings"
    wrong = [
        {"status": "ENABLED", "triggers": ["REJECT", "REJECT"]},
        {"status": "ENABLED", "triggers": ["BUSY"]},
        {"status": "ENABLED", "triggers": []},
        {"status": "ENABLED", "triggers": "TIMEOUT"},
        {"status": "ENABLED", "timeoutSeconds": 20},
    ]
    async with aiohttp.ClientSession(headers=auth) as http:
        for voicemail in wrong:
            async with http.post(url, json={"calling": {"voicemail": voicemail}}) as resp:
                answer = await resp.json()
            assert resp.status == 400 and answer["error"]["code"] == 100, (voicemail, answer)
        assert "voicemail" not in meta.account.calling
        good = {"status": "ENABLED", "timeout_seconds": 15, "triggers": ["TIMEOUT", "REJECT"]}
        async with http.post(url, json={"calling": {"voicemail": good}}) as resp:
            assert resp.status == 200, await resp.text()
        async with http.get(url) as resp:
            assert (await resp.json())["calling"]["voicemail"] == good
