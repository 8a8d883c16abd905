"""The PBX calls WhatsApp users (issue 48): SIPp plays a PBX sending INVITEs to
``sip:+<E.164>@<bridge>`` on the trunk listener (UDP). The bridge challenges (407), places the
business-initiated call on the sim network, maps ringing and the answer, carries the media (the
PBX echoes it back: the WhatsApp side hears its own tone through the PBX), and ends on either
side's BYE or the PBX's CANCEL; refusals come back as SIP codes with a Reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bridge.api.keys import MANAGER, TRUNKS
from bridge.calls.model import EndReason
from bridge.errors import AtCapacity, MetaLimit, NoCallPermission
from bridge.resources import CALL_EVENTS

from ..support.calls import listed_calls, peer_heard, sim_call
from ..support.sipp import Sipp, tools_missing
from ..support.spectrum import dominant_frequency
from ..support.waits import until, until_passes
from .test_sip_participant import level_dbfs

pytestmark = pytest.mark.skipif(bool(tools_missing()), reason=tools_missing() or "ok")

CALLEE = "+5521999999999"
TONE = 440


async def bridge_with(make_client, tmp_path, inbound: dict[str, Any], **settings: Any):
    client = await make_client(
        sim_peer="tone",
        sim_tone_hz=TONE,
        data_dir=str(tmp_path),
        sip_trunk_listen="127.0.0.1:0",
        **settings,
    )
    events: list[Any] = []
    client.app[CALL_EVENTS].observe(lambda event, call: events.append(event))
    client.events = events
    trunk = {"name": "pbx", "uri": "sip:127.0.0.1:5999;transport=udp", "inbound": inbound}
    resp = await client.post("/trunks", json=trunk)
    assert resp.status == 201, await resp.text()
    return client


async def run_sipp(
    client, tmp_path, scenario: str, *, subst=None, pause_ms=0, auth=None, echo=False
):
    sipp = Sipp(tmp_path, scenario, subst)
    keys = {"callee": CALLEE, **(auth or {})}
    extra = ("-mi", "127.0.0.1", "-rtp_echo") if echo else ()
    await sipp.start(
        remote=client.app[TRUNKS].port, keys=keys, pause_ms=pause_ms, transport="u1", extra=extra
    )
    return sipp


async def test_the_pbx_calls_a_whatsapp_user_with_digest_and_hangs_up(make_client, tmp_path):
    # SIPp answers only the first challenge and only MD5: the trunk offers MD5 alone.
    inbound = {"username": "pbx", "password": "pbx-pw", "digest": ["MD5"]}
    client = await bridge_with(make_client, tmp_path, inbound, sim_answer_delay=0.3)
    sipp = await run_sipp(
        client,
        tmp_path,
        "pbx_call.xml",
        pause_ms=2500,
        echo=True,
        auth={"username": "pbx", "password": "pbx-pw"},
    )
    try:
        calls = await until(lambda: listed_calls(client), 10, "the WhatsApp call")
        call = calls[0]
        assert call["direction"] == "outbound" and call["peer"].startswith(CALLEE[1:])
        cid = call["callID"]
        await until(
            lambda: any(e.type == "participant.joined" for e in client.events), 10, "PBX leg"
        )

        def whatsapp_hears_itself_through_the_pbx() -> None:
            assert sim_call(client, cid).heard, "nothing heard yet"
            samples = peer_heard(client, cid, 50)
            heard, level = dominant_frequency(samples, 16000), level_dbfs(samples)
            print(f"WhatsApp hears {heard:.1f} Hz at {level:.1f} dBFS back from the PBX")
            assert heard == pytest.approx(TONE, abs=5) and level > -30

        await until_passes(whatsapp_hears_itself_through_the_pbx, 5)
        assert await sipp.finish() == 0, sipp.report()
        snap = await (await client.get(f"/call/{cid}")).json()
        await until(lambda: client.app[MANAGER].get(cid).state == "ended", 5, "the call ended")
        assert snap["peer"].startswith(CALLEE[1:])
        msgs = sipp.sent_and_received()
        assert "algorithm=MD5" in msgs and "algorithm=SHA-256" not in msgs  # as configured
    finally:
        await sipp.stop()


async def test_the_whatsapp_user_hangs_up_and_the_pbx_gets_bye(make_client, tmp_path):
    client = await bridge_with(
        make_client,
        tmp_path,
        {"username": "x", "password": "y", "digest": ["MD5"]},
        sim_answer_delay=0.2,
        sim_hangup_after=1.0,
    )
    sipp = await run_sipp(
        client, tmp_path, "pbx_call_bridge_bye.xml", auth={"username": "x", "password": "y"}
    )
    try:
        assert await sipp.finish() == 0, sipp.report()
    finally:
        await sipp.stop()


async def test_the_pbx_cancels_while_whatsapp_rings(make_client, tmp_path):
    client = await bridge_with(
        make_client, tmp_path, {"allowFrom": ["127.0.0.1/32"]}, sim_answer_delay=30
    )
    sipp = await run_sipp(client, tmp_path, "pbx_cancel.xml")
    try:
        assert await sipp.finish() == 0, sipp.report()
        calls = client.app[MANAGER].registry
        ended = [e for e in client.events if e.type == "call.ended"]
        await until(lambda: [e for e in client.events if e.type == "call.ended"], 5, "call.ended")
        assert calls is not None and ended is not None
    finally:
        await sipp.stop()


REFUSALS = [
    ("make", NoCallPermission("the user gave no call permission"), "403", "no_call_permission", ""),
    (
        "make",
        MetaLimit("calls with this user per 24 h", code="call_limit_reached", retry_after=60),
        "429",
        "call_limit_reached",
        "60",
    ),
    ("make", AtCapacity("no room", retry_after=5), "503", "at_capacity", "5"),
    ("end", EndReason.REJECTED, "603", "rejected", ""),
    ("end", EndReason.BUSY, "486", "busy", ""),
    ("end", EndReason.NO_ANSWER, "480", "no_answer", ""),
]


@pytest.mark.parametrize(("how", "what", "code", "reason", "retry"), REFUSALS)
async def test_refusals_are_sip_codes_with_a_reason(
    make_client, tmp_path, monkeypatch, how, what, code, reason, retry
):
    client = await bridge_with(
        make_client, tmp_path, {"allowFrom": ["127.0.0.1/32"]}, sim_answer_delay=30
    )
    manager = client.app[MANAGER]
    if how == "make":

        async def refuse(*args: Any, **kwargs: Any) -> Any:
            raise what

        monkeypatch.setattr(manager, "make", refuse)
    else:

        def end_on_ringing(event: Any, call: Any) -> None:
            if event.type == "call.ringing" and call is not None:
                client.app[TRUNKS].spawn(manager.end(call, what), "end")

        client.app[CALL_EVENTS].observe(end_on_ringing)
    sipp = await run_sipp(client, tmp_path, "pbx_call_refused.xml", subst={"CODE": code})
    try:
        assert await sipp.finish() == 0, sipp.report()
        logged = sipp.logged()
        assert f'cause={code};text="{reason}:' in logged, logged
        if retry:
            assert f"Retry-After: {retry}" in logged, logged
    finally:
        await sipp.stop()


async def test_an_invite_from_outside_every_trunk_is_403_before_any_digest(make_client, tmp_path):
    client = await bridge_with(make_client, tmp_path, {"allowFrom": ["10.0.0.0/8"]})
    sipp = await run_sipp(client, tmp_path, "pbx_call_refused.xml", subst={"CODE": "403"})
    try:
        assert await sipp.finish() == 0, sipp.report()
        assert "Proxy-Authenticate" not in sipp.sent_and_received()
        assert not await listed_calls(client)
    finally:
        await sipp.stop()


@pytest.mark.parametrize("attended", [False, True])
async def test_a_refer_from_the_pbx_moves_the_whatsapp_caller_to_another_phone(
    make_client, tmp_path, attended
):
    """SIPp (the PBX) calls a WhatsApp user, presses 5 by SIP INFO (the participant's key),
    then REFERs the call to a baresip phone: the
    bridge calls it through the trunk, NOTIFYs 100 then 200, hangs the old leg up; the phone
    and the WhatsApp user then hear each other's tones. Attended (RFC 3891): the Refer-To
    carries ``?Replaces=`` naming the PBX user's consultation call, and the bridge's INVITE to
    the phone carries it as its ``Replaces`` header."""
    async with transfer_target(make_client, tmp_path) as (phone, client, events):
        sipp = Sipp(tmp_path, "pbx_refer.xml")
        replaces = "?Replaces=consult-1%40pbx%3Bto-tag%3Dt1%3Bfrom-tag%3Df1" if attended else ""
        await sipp.start(
            remote=client.app[TRUNKS].port,
            keys={"callee": CALLEE, "target": f"sip:2002@127.0.0.1:{phone.port}{replaces}"},
            transport="u1",
        )
        try:
            assert await sipp.finish() == 0, sipp.report()
            assert "NOTIFY SIP/2.0 200 OK" in sipp.logged()
            moved = [e for e in events if e.type == "participant.transferred"]
            assert moved and moved[0].data["sip"]["uri"].startswith("sip:2002@")
            cid = (
                moved[0].call_id
                if hasattr(moved[0], "call_id")
                else (await listed_calls(client))[0]["callID"]
            )

            await both_hear(phone, client, cid)
            assert client.app[MANAGER].get(cid).live  # the WhatsApp call went on
            invite = phone.log().split("INVITE sip:2002", 1)[1]
            assert ("Replaces: consult-1@pbx;to-tag=t1;from-tag=f1" in invite) == attended
        finally:
            await sipp.stop()


async def test_a_pbx_that_hangs_up_once_its_refer_is_accepted_still_transfers(
    make_client, tmp_path
):
    """A blind transfer whose transferor hangs up as soon as the REFER is accepted (its BYE
    right after the NOTIFY of 100 Trying, as desk phones do): the transfer goes on, and the
    WhatsApp call with it — the PBX's leg ending was taken as the end of the call it placed,
    and the call was hung up with the new phone still ringing. The new phone answers, the
    WhatsApp user and it hear each other, and nothing more goes to the old dialog. The new
    phone answers once the PBX's BYE is answered and it rings (told to: it answered at once by
    itself, and on a loaded host its answer beat the PBX's BYE, whose scenario then met the
    NOTIFY of 200)."""
    target = transfer_target(make_client, tmp_path, answermode="manual")
    async with target as (phone, client, events):
        sipp = Sipp(tmp_path, "pbx_refer_hangs_up.xml")
        await sipp.start(
            remote=client.app[TRUNKS].port,
            keys={"callee": CALLEE, "target": f"sip:2002@127.0.0.1:{phone.port}"},
            transport="u1",
        )
        try:
            await sipp.wait_log("HUNG-UP")
            # The bridge dials the phone once the PBX has the NOTIFY of 100, as the PBX sends
            # its BYE: on a loaded host the BYE's answer may come first, and an accept the
            # phone gets before the INVITE answers nothing (it then rang until torn down).
            await until(
                lambda: [e for e in phone.events if e.get("type") == "CALL_INCOMING"],
                10,
                "the new phone ringing",
            )
            await phone.command("accept")
            assert await sipp.finish() == 0, sipp.report()
            await until(
                lambda: [e for e in events if e.type == "participant.transferred"],
                10,
                "participant.transferred",
            )
            cid = (await listed_calls(client))[0]["callID"]
            assert client.app[MANAGER].get(cid).live  # the WhatsApp call went on

            await both_hear(phone, client, cid)
            left = [e.data for e in events if e.type == "participant.left"]
            assert left == [], left  # the old leg went silently, as transferred
        finally:
            await sipp.stop()


@asynccontextmanager
async def transfer_target(
    make_client: Any, tmp_path: Any, answermode: str = "auto"
) -> AsyncIterator[tuple[Any, Any, list]]:
    """A baresip phone (2002, a 660 Hz tone; answering as ``answermode`` says) a PBX's REFER
    moves the call to, a bridge with a trunk to it that takes the PBX's INVITEs, and the
    bridge's call events."""
    from ..support.baresip_phone import BaresipPhone

    conf = tmp_path / "phone"
    conf.mkdir()
    phone = BaresipPhone(conf, "2002", 660)
    await phone.start_phone(answermode=answermode)
    try:
        client = await make_client(
            sim_peer="tone",
            sim_tone_hz=TONE,
            data_dir=str(tmp_path),
            sip_trunk_listen="127.0.0.1:0",
            sim_answer_delay=0.2,
        )
        events: list[Any] = []
        client.app[CALL_EVENTS].observe(lambda event, call: events.append(event))
        trunk = {
            "name": "pbx",
            "uri": f"sip:127.0.0.1:{phone.port};transport=udp",
            "inbound": {"allowFrom": ["127.0.0.1/32"]},
        }
        assert (await client.post("/trunks", json=trunk)).status == 201
        yield phone, client, events
    finally:
        await phone.stop()


async def both_hear(phone: Any, client: Any, cid: str) -> None:
    """After the transfer the new phone hears the WhatsApp user's tone and WhatsApp the
    phone's 660 Hz."""

    def heard() -> None:
        samples, rate = phone.heard(1.0)
        assert dominant_frequency(samples, rate) == pytest.approx(TONE, abs=5)
        wa = peer_heard(client, cid, 25)
        got = dominant_frequency(wa, 16000)
        print(f"after the transfer WhatsApp hears {got:.1f} Hz at {level_dbfs(wa):.1f} dBFS")
        assert got == pytest.approx(660, abs=5) and level_dbfs(wa) > -30

    await until(lambda: phone.dump_bytes() > 16000, 10, "the new phone's audio")
    await until_passes(heard, 10)
