"""Kamailio as the PBX's proxy and registrar (issue 48): baresip registers behind it as
extension 1001, the bridge registers as an extension of its own (``"register": true``, digest,
refreshed; its state in ``GET /trunks/{id}`` and ``bridge_trunk_registered``) and keeps the
trunk alive with OPTIONS; a WhatsApp call then rings ``sip:1001@…`` through Kamailio, the phone
answers, tones are asserted each way, and the bridge's BYE follows Kamailio's Record-Route."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.api.keys import MANAGER
from bridge.resources import CALL_EVENTS
from bridge.trunks import upkeep

from ..support import kamailio
from ..support.baresip_phone import BaresipPhone
from ..support.calls import peer_heard, wait_state
from ..support.kamailio import Kamailio, missing
from ..support.spectrum import dominant_frequency
from ..support.twinkle import Twinkle
from ..support.twinkle import missing as twinkle_missing
from ..support.waits import until, until_passes
from .test_sip_participant import PEER_HZ, PHONE, PHONE_HZ, level_dbfs
from .test_udp_tcp import udp_peer

TWINKLE_HZ = 880
pytestmark = pytest.mark.skipif(bool(missing()), reason=missing() or "ok")


@asynccontextmanager
async def phone_at(
    kam: Kamailio, tmp_path: Path, codec: str = "PCMU"
) -> AsyncIterator[BaresipPhone]:
    """Kamailio started, baresip registered behind it as 1001 (both stopped after)."""
    await kam.start()
    conf = tmp_path / "phone"
    conf.mkdir()
    phone = BaresipPhone(conf, "1001", PHONE_HZ, codec)
    try:
        await phone.start_phone(registrar=f"127.0.0.1:{kam.port}", password="ext-pw")
        await until(lambda: "REGISTERED 1001" in kam.logged(), 10, "baresip registered")
        yield phone
    finally:
        await phone.stop()
        await kam.stop()


async def bridge_with_events(make_client: Any, tmp_path: Path, **extra: Any) -> Any:
    """The bridge (sim peer at PEER_HZ, a trunk listener), its events in ``client.events``."""
    client = await make_client(
        sim_peer="tone",
        sim_tone_hz=PEER_HZ,
        data_dir=str(tmp_path),
        sip_trunk_listen="127.0.0.1:0",
        **extra,
    )
    client.events = []
    client.app[CALL_EVENTS].observe(lambda event, call: client.events.append(event))
    return client


async def call_rings_1001(client: Any, phone: BaresipPhone, trunk_id: str) -> None:
    """A WhatsApp call rings sip:1001 through the trunk; tones each way by frequency and
    level; our BYE reaches the phone."""
    call = await (await client.post("/call/make", json={"phone": PHONE})).json()
    cid = call["callID"]
    await wait_state(client, cid, "active")
    sip = {"uri": "sip:1001@127.0.0.1", "trunkID": trunk_id}
    body = {"callID": cid, "participantID": "ext", "sip": sip}
    assert (await client.post("/call/participants", json=body)).status == 202
    await until(lambda: [e for e in client.events if e.type == "participant.joined"], 10, "joined")

    def both_hear() -> None:
        samples, rate = phone.heard(1.0)
        at_phone = dominant_frequency(samples, rate), level_dbfs(samples)
        wa = peer_heard(client, cid, 50)
        at_wa = dominant_frequency(wa, 16000), level_dbfs(wa)
        print(f"via Kamailio: phone hears {at_phone}, WhatsApp hears {at_wa}")
        assert at_phone[0] == pytest.approx(PEER_HZ, abs=5) and at_phone[1] > -25
        assert at_wa[0] == pytest.approx(PHONE_HZ, abs=5) and at_wa[1] > -30

    await until(lambda: phone.dump_bytes() > 16000, 10, "the phone's audio")
    await until_passes(both_hear, 10)
    assert (await client.post("/call/hangup", json={"callID": cid})).status == 200
    await until(lambda: "BYE sip:" in phone.log(), 10, "the BYE at the phone")


async def test_a_whatsapp_call_rings_an_extension_registered_at_kamailio(
    make_client, tmp_path, monkeypatch
):
    monkeypatch.setattr(upkeep, "EXPIRES", 4)  # the bridge asks 4 s: a refresh within the test
    kam = Kamailio(tmp_path, "ext-pw", max_expires=60)
    async with phone_at(kam, tmp_path) as phone:
        client = await bridge_with_events(make_client, tmp_path)
        trunk = {
            "name": "kamailio",
            "uri": f"sip:127.0.0.1:{kam.port};transport=udp",
            "username": "bridge",
            "password": "ext-pw",
            "register": True,
        }
        made = await (await client.post("/trunks", json=trunk)).json()
        tid = made["trunkID"]

        async def registered() -> Any:
            got = await (await client.get(f"/trunks/{tid}")).json()
            reg, options = got.get("registration") or {}, got.get("options") or {}
            return reg.get("state") == "registered" and options.get("up") and got

        got = await until(registered, 10, "the bridge registered at Kamailio")
        print("trunk state:", got["registration"], got["options"])
        # Asked and granted 4 s, the registration is refreshed at 80 % of it (3.2 s).
        await until(lambda: kam.logged().count("REGISTERED bridge") >= 2, 8, "a refresh")
        metrics = await (await client.get("/metrics")).text()
        assert f'bridge_trunk_registered{{trunk="{tid}"}} 1.0' in metrics
        assert f'bridge_trunk_up{{trunk="{tid}"}} 1.0' in metrics
        await call_rings_1001(client, phone, tid)
        assert "RELAY INVITE 1001" in kam.logged()
        await client.close()  # before Kamailio: its un-REGISTER answered, not timed out (3 s)


async def test_a_tls_trunk_registers_and_calls_through_kamailio(make_client, tmp_path) -> None:
    """A ``transport=tls`` trunk to Kamailio's TLS module (its certificate from a private CA
    the bridge trusts through ``BRIDGE_SIP_TRUNK_CA``): the bridge registers over TLS and a
    WhatsApp call rings ``sip:1001`` through it, tones each way; a second trunk naming Kamailio
    by a name its certificate does not carry never registers (TLS is never quietly plain)."""
    from ..support.tls import TestCA

    ca = TestCA(tmp_path)
    kam = Kamailio(tmp_path, "ext-pw", tls=ca.issue("kamailio", "127.0.0.1"))
    async with phone_at(kam, tmp_path) as phone:
        client = await bridge_with_events(make_client, tmp_path, sip_trunk_ca=str(ca.path))
        trunk = {
            "name": "kamailio-tls",
            "uri": f"sip:127.0.0.1:{kam.tls_port};transport=tls",
            "username": "bridge",
            "password": "ext-pw",
            "register": True,
        }
        tid = (await (await client.post("/trunks", json=trunk)).json())["trunkID"]
        wrong = {
            **trunk,
            "name": "wrong-name",
            "uri": f"sip:localhost:{kam.tls_port};transport=tls",
        }
        bad = (await (await client.post("/trunks", json=wrong)).json())["trunkID"]

        async def state(trunk_id: str) -> dict[str, Any]:
            return dict(await (await client.get(f"/trunks/{trunk_id}")).json())

        async def registered() -> bool:
            return ((await state(tid)).get("registration") or {}).get("state") == "registered"

        await until(registered, 10, "the bridge registered at Kamailio over TLS")
        assert "REGISTERED bridge from 127.0.0.1" in kam.logged()
        assert " over tls" in kam.logged().split("REGISTERED bridge", 1)[1].splitlines()[0]
        await call_rings_1001(client, phone, tid)
        reg = (await state(bad)).get("registration") or {}
        print("the misnamed trunk:", reg)
        assert reg.get("state") != "registered", reg
        assert kam.logged().count("REGISTERED bridge") == 1


@pytest.mark.parametrize("codec", ["PCMU", "opus"])
async def test_a_cloud_api_call_rings_an_extension_behind_kamailio(
    make_client, meta, tmp_path, codec
) -> None:
    """A Cloud API call (the fake Meta's WebRTC user, 440 Hz) answered with no browser rings
    sip:1001 behind Kamailio; baresip answers; tones each way by frequency and level, on G.711
    and on Opus (WhatsApp's packets and the phone's forwarded untouched: counted)."""
    meta.user_tone_hz = PEER_HZ
    kam = Kamailio(tmp_path, "ext-pw")
    async with phone_at(kam, tmp_path, codec) as phone:
        client = await make_client(
            **meta.bridge_settings(), data_dir=str(tmp_path), sip_trunk_listen="127.0.0.1:0"
        )
        trunk = {"name": "kamailio", "uri": f"sip:127.0.0.1:{kam.port};transport=udp"}
        trunk |= {"username": "bridge", "password": "ext-pw", "register": True}
        resp = await client.post("/trunks", json={**trunk, "codecs": [codec]})
        assert resp.status == 201, await resp.text()
        mcall = await meta.user_calls(client, "15550007777")
        calls: list[Any] = []
        for _ in range(250):
            if calls := (await (await client.get("/call/status")).json())["calls"]:
                break
            await asyncio.sleep(0.02)
        cid = calls[0]["callID"]
        assert (await client.post("/call/answer", json={"callID": cid})).status == 200
        await asyncio.wait_for(mcall.peer.connected.wait(), 10)
        body = {"callID": cid, "participantID": "ext", "role": "agent"}
        body["sip"] = {"uri": "sip:1001@127.0.0.1"}
        assert (await client.post("/call/participants", json=body)).status == 202

        def both_hear() -> None:
            samples, rate = phone.heard(1.0)
            at_phone = dominant_frequency(samples, rate), level_dbfs(samples)
            assert mcall.peer.recorder.chunks, "WhatsApp hears nothing yet"  # polled, not raised
            wa = np.concatenate(mcall.peer.recorder.chunks[-50:]).astype(np.float64)
            at_wa = dominant_frequency(wa, mcall.peer.recorder.rate), level_dbfs(wa)
            print(f"{codec} via Kamailio: phone hears {at_phone}, WhatsApp hears {at_wa}")
            assert at_phone[0] == pytest.approx(PEER_HZ, abs=5) and at_phone[1] > -30
            assert at_wa[0] == pytest.approx(PHONE_HZ, abs=5) and at_wa[1] > -30

        await until(lambda: phone.dump_bytes() > 16000, 10, "the phone's audio")
        await until_passes(both_hear, 10)
        assert "RELAY INVITE 1001" in kam.logged()
        (leg,) = client.app[MANAGER].find_runtime(cid).attached("sip")
        forwarded = leg.media.track.forwarded_frames
        assert (forwarded > 0) == (codec == "opus"), forwarded
        await client.post("/call/hangup", json={"callID": cid})
        await until(lambda: "BYE sip:" in phone.log(), 10, "the BYE at the phone")
        await client.close()  # before Kamailio: its un-REGISTER answered, not timed out (3 s)


@pytest.mark.skipif(bool(twinkle_missing()), reason=twinkle_missing() or "ok")
async def test_a_second_phone_twinkle_behind_kamailio_answers_a_whatsapp_call(
    make_client, tmp_path
):
    """A second user agent behind Kamailio: Twinkle (a SIP stack of its own — its parser, its
    digest, ccRTP) registers as extension 1002; a WhatsApp call rings it through the trunk and
    Kamailio, it answers by itself, each side hears the other's tone (G.711 µ-law), keys
    cross both ways, and our BYE reaches it along Kamailio's Record-Route."""
    kam = Kamailio(tmp_path, "ext-pw")
    await kam.start()
    twinkle = Twinkle(tmp_path, "1002", TWINKLE_HZ, "ext-pw")
    try:
        await twinkle.start(f"127.0.0.1:{kam.port}")
        await until(lambda: "REGISTERED 1002" in kam.logged(), 10, "twinkle registered")
        client = await make_client(
            sim_peer="tone",
            sim_tone_hz=PEER_HZ,
            data_dir=str(tmp_path),
            sip_trunk_listen="127.0.0.1:0",
        )
        events: list[Any] = []
        client.app[CALL_EVENTS].observe(lambda event, call: events.append(event))
        trunk = {"name": "kamailio", "uri": f"sip:127.0.0.1:{kam.port};transport=udp"}
        assert (await client.post("/trunks", json=trunk)).status == 201
        call = await (await client.post("/call/make", json={"phone": PHONE})).json()
        cid = call["callID"]
        await wait_state(client, cid, "active")
        body = {"callID": cid, "participantID": "desk", "sip": {"uri": "sip:1002@127.0.0.1"}}
        assert (await client.post("/call/participants", json=body)).status == 202
        try:
            joined = await until(
                lambda: [e for e in events if e.type == "participant.joined"], 10, "joined"
            )
        except AssertionError:  # once in CI: say what each side saw
            raise AssertionError(
                f"no participant.joined; events {[(e.type, e.data) for e in events]}\n"
                f"kamailio: {kam.logged()[-1500:]}\ntwinkle: {twinkle.log()[-3000:]}\n"
                f"twinkle's output: {twinkle.output()[-1000:]}"
            ) from None
        assert joined[0].data["sip"]["codec"] == "PCMU"
        assert "RELAY INVITE 1002" in kam.logged()

        def both_hear() -> None:
            samples, rate = twinkle.heard(1.0)
            at_phone = dominant_frequency(samples, rate), level_dbfs(samples)
            wa = peer_heard(client, cid, 50)
            at_wa = dominant_frequency(wa, 16000), level_dbfs(wa)
            print(f"twinkle via Kamailio: it hears {at_phone}, WhatsApp hears {at_wa}")
            assert at_phone[0] == pytest.approx(PEER_HZ, abs=5) and at_phone[1] > -25
            # Twinkle's tone is sent at half scale (−9 dBFS): it arrives at that level.
            assert at_wa[0] == pytest.approx(TWINKLE_HZ, abs=5)
            assert at_wa[1] == pytest.approx(-9.0, abs=2)

        await until(lambda: twinkle.heard_bytes() > 16000, 10, "twinkle's audio")
        await until_passes(both_hear, 10)
        # Keys both ways (RFC 4733): Twinkle's 5 is the participant's call.dtmf; the WhatsApp
        # user's 7 is detected by Twinkle.
        await twinkle.command("dtmf 5")
        keys = await until(lambda: [e for e in events if e.type == "call.dtmf"], 5, "its key")
        assert keys[0].data["digit"] == "5" and keys[0].data["participantID"] == "desk"
        client.app[MANAGER].find_runtime(cid).dtmf.on_whatsapp("7", 200)
        await until(lambda: "DTMF detected: 7" in twinkle.output(), 5, "the key at twinkle")
        assert (await client.post("/call/hangup", json={"callID": cid})).status == 200
        await until(lambda: "BYE sip:" in twinkle.log(), 10, "the BYE at twinkle")
        # Its SIP went to Kamailio alone: nothing to a port another test may hold.
        sent_to = set(re.findall(r"^Send to: (\S+)$", twinkle.log(), re.M))
        assert sent_to == {f"udp:127.0.0.1:{kam.port}"}, sent_to
    finally:
        await twinkle.stop()
        await kam.stop()


async def test_kamailio_is_started_once_it_answers_not_once_it_logs(tmp_path, monkeypatch):
    """Kamailio logs its first lines before it has read its modules and bound its sockets; a
    phone whose REGISTER went then was refused by the kernel (ICMP), and Twinkle tries again
    only 30 s later. Here Kamailio is held there (its cfgutils module reads a FIFO as its hash
    file, until we write it); once ``start()`` returns, one OPTIONS (never sent again) is
    answered."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    kex = 'loadmodule "kex.so"'
    held = f'loadmodule "cfgutils.so"\nmodparam("cfgutils", "hash_file", "{gate}")\n{kex}'
    monkeypatch.setattr(kamailio, "CONFIG", kamailio.CONFIG.replace(kex, held))
    kam = Kamailio(tmp_path, "ext-pw")

    def opened() -> int:
        with contextlib.suppress(OSError):  # ENXIO: Kamailio has not opened it yet
            return os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
        return 0

    async def let_go() -> None:
        await until(lambda: "INFO: <core>" in kam.logged(), 10, "kamailio's first lines")
        fd = await until(opened, 10, "kamailio reading the gate")
        try:
            await asyncio.sleep(0.3)  # (the former start() returned on those first lines)
            os.write(fd, b"x")
        finally:
            os.close(fd)  # its end of file: Kamailio goes on

    releasing = asyncio.ensure_future(let_go())
    try:
        await kam.start()
        transport, replies = await udp_peer()
        port = transport.get_extra_info("sockname")[1]
        transport.sendto(kamailio.options_request(kam.port, port), ("127.0.0.1", kam.port))
        data, _ = await asyncio.wait_for(replies.got.get(), 5)
        assert data.startswith(b"SIP/2.0 200 "), data[:40]
        transport.close()
    finally:
        releasing.cancel()
        await kam.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await releasing  # (its failure, if it failed, is the test's)
