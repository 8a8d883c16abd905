"""Meta's SIP + SDES road against a real, independent SIP/SRTP stack: baresip (Debian's
``baresip`` 1.0, ``tests/support/baresip.py``) plays Meta's side over SIP/TLS with
``mediaenc=srtp-mand`` (RTP/SAVP, ``a=crypto`` AES_CM_128_HMAC_SHA1_80) and Opus, its voice a
660 Hz tone; what it decodes is read from its ``sndfile`` dump while the call runs. The agents
are aiortc browser peers with tones of their own. Every check is on what each end heard.

* A call the bridge places (BIC): tones both ways, the Opus payloads forwarded byte for byte
  both ways while nothing mixes (baresip's SRTP taken at the bridge's socket and decrypted by
  the test with the SDPs' keys, against what the browser sent and got), RFC 4733 key presses
  both ways, a recording holding both sides, and baresip's BYE ending the call.
* A call baresip places into the bridge's TLS listener (UIC), through the bridge's ``407``:
  hold with music heard by baresip, a cold transfer to a second browser, and the bridge's BYE
  (API hang-up) reaching baresip over the connection its INVITE came on.

baresip 1.0 cannot add headers to its INVITE (``ua_set_custom_hdrs`` has no command), so the
x-wa-meta headers stay with the SIPp tests; without ``x-wa-meta-wacid`` the engine names the
call by its Call-ID.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import time
import wave

import aiohttp
import numpy as np
import pytest

from bridge.audio.analysis import rms_dbfs

from ..integration.test_engine_cloudapi import assert_tone, heard
from ..support.audio_files import make
from ..support.baresip import Baresip
from ..support.calls import wait_state
from ..support.payloads import RtcPayloads, SrtpTap, forwarded_runs, sdes_key
from ..support.requires import needs
from ..support.rtc_client import RtcClient
from ..support.spectrum import assert_hears, dominant_frequency
from ..support.waits import until, until_passes
from .conftest import NUMBER, PASSWORD

pytestmark = needs(shutil.which("baresip") is not None, "baresip", "apt-get install baresip")

CALLEE = "+5521999999999"
HOST = "127.0.0.1"
"""Our SIP hostname (Contact, From): baresip resolves names with its own DNS client, and no
DNS server answers here, so its ACK and BYE to ``localhost`` would never leave."""
BARESIP_HZ, AGENT_HZ, NEXT_HZ, MUSIC_HZ = 660.0, 440.0, 880.0, 1000.0


def assert_baresip_hears(baresip: Baresip, freq: float, what: str) -> None:
    said, rate = baresip.heard(1.0)
    assert said.size == rate, (what, said.size)
    assert dominant_frequency(said, rate) == pytest.approx(freq, abs=5), what
    assert rms_dbfs(said / 32768) > -20.0, (what, rms_dbfs(said / 32768))


async def baresip_comes_to_hear(
    baresip: Baresip, present: set[float], absent: set[float], what: str, timeout: float = 5.0
) -> None:
    """Wait until the last second baresip decoded holds ``present`` and none of ``absent``
    (``assert_hears``), on a loaded runner too; a failure says whether baresip went on
    decoding at all (its dump growing) and what it heard last."""
    last: list[str] = []
    grown = [baresip.dump_bytes()]

    def hears() -> bool:
        said, rate = baresip.heard(1.0)
        grown.append(baresip.dump_bytes())
        try:
            assert_hears(said, rate, present, absent)
        except AssertionError as failed:
            last[:] = [str(failed)]
            return False
        return True

    try:
        await until(hears, timeout, what, every=0.1)
    except AssertionError:
        raise AssertionError(
            f"{what}: its dump {grown[0]} -> {grown[-1]} bytes in {timeout} s; last {last}"
        ) from None


async def hang_up_and_see_baresip_close(client, baresip: Baresip, cid: str) -> None:
    """Our hang-up: a BYE to baresip, whose Contact names a port nothing listens on
    (``sip_listen``'s, with ``transport=tls``): it goes on the connection baresip's INVITE came
    on, the dialog's flow, and baresip closes its call."""
    resp = await client.post("/call/hangup", json={"callID": cid})
    assert resp.status == 200, await resp.text()
    await until(lambda: "terminated (duration" in baresip.log(), 3, "baresip closed the call")
    assert baresip.running()
    assert (await wait_state(client, cid, "ended"))["endReason"] == "hangup"


@pytest.mark.serial
async def test_bic_tones_bit_exact_opus_dtmf_recording_and_baresips_bye(sip_rig, tmp_path):
    conf = tmp_path / "baresip"
    conf.mkdir()
    baresip = Baresip(conf, CALLEE, tone_hz=int(BARESIP_HZ))
    rtc = None
    try:
        rig = await sip_rig(
            cloudapi_media="sdes",
            sip_hostname=HOST,
            sip_meta_uri=f"sip:127.0.0.1:{baresip.tls_port};transport=tls",
            data_dir=str(tmp_path / "data"),
        )
        await baresip.start(rig.ca)
        resp = await rig.client.post("/call/make", json={"phone": CALLEE})
        assert resp.status == 201, await resp.text()
        cid = (await resp.json())["callID"]
        await wait_state(rig.client, cid, "active", timeout=8)
        (sip_call,) = rig.engine.calls.values()
        assert sip_call.uac is not None and sip_call.uac.final is not None
        ours, theirs = sip_call.uac.sdp.decode(), sip_call.uac.final.body.decode()
        tap = SrtpTap(sip_call.leg.socket, sdes_key(theirs), sdes_key(ours))
        rtc = RtcClient(rig.client, cid, freq=AGENT_HZ)
        await rtc.offer()
        browser = RtcPayloads(rtc.pc)
        resp = await rig.client.post("/call/record", json={"callID": cid})
        assert resp.status == 201, await resp.text()
        # Tones both ways.
        await until_passes(
            lambda: assert_tone(
                heard(rtc.recorder), rtc.recorder.rate, BARESIP_HZ, "agent hears baresip"
            )
        )
        await until_passes(lambda: assert_baresip_hears(baresip, AGENT_HZ, "baresip hears agent"))
        assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in baresip.log()
        # Nothing mixes (one agent, a recording is no mix): baresip's packets reach the
        # browser byte for byte, and the browser's reach baresip, numbers mapped in order.
        await until(lambda: len(tap.came) > 80 and len(browser.sent) > 80, 10, "1.6 s each way")
        came = dict(list(tap.came.items())[:-10])  # what had time to reach the browser
        went_to = dict(list(browser.sent.items())[:-10])
        await asyncio.sleep(0.3)
        # One run each way (serial: a host starved for 250 ms would send the sender back to
        # encoding for a moment, by design, and a second run would follow, numbered on).
        for source, sink in ((came, browser.received), (went_to, tap.went)):
            runs, missing, leading = forwarded_runs(source, sink)
            # (Before the first forwarded packet the bridge still encoded: 4 such once in a
            # clean-clone run, where at most 3 missing in all were allowed.)
            assert len(source) > 60 and missing <= 3 and len(runs) == 1, (
                len(source),
                runs,
                missing,
                leading,
            )
            assert sum(runs) >= 50, (runs, missing, leading)  # a second of it forwarded
        stats = await (await rig.client.get(f"/call/{cid}/stats")).json()
        print("bit-exact:", len(came), "down,", len(went_to), "up;", stats.get("webrtc"))
        # Key presses both ways (RFC 4733): baresip's 5 as a call event, our 7 in its log.
        await baresip.command("sndcode", "5")
        await until(
            lambda: any(e.type == "call.dtmf" and e.data.get("digit") == "5" for e in rig.events),
            3,
            "baresip's key press in the call's events",
        )
        resp = await rig.client.post("/call/dtmf", json={"callID": cid, "digits": "7"})
        assert resp.status == 202 and (await resp.json())["method"] == "rfc4733"
        await until(lambda: "received event: '7'" in baresip.log(), 3, "baresip heard 7")
        # The recording holds both sides: baresip's tone inbound, the agent's outbound.
        resp = await rig.client.post("/call/record/stop", json={"callID": cid})
        recordings = {r["kind"]: r for r in (await resp.json())["recordings"]}
        for kind, present, absent in (
            ("inbound", BARESIP_HZ, AGENT_HZ),
            ("outbound", AGENT_HZ, BARESIP_HZ),
        ):
            url = f"/call/recordings/{recordings[kind]['recordingId']}"
            with wave.open(io.BytesIO(await (await rig.client.get(url)).read())) as w:
                pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            assert pcm.size > 16_000 * 1.5, (kind, pcm.size)
            assert_hears(pcm[8000:].astype(np.float64), 16_000, {present}, {absent})
        await hang_up_and_see_baresip_close(rig.client, baresip, cid)
    finally:
        if rtc is not None:
            await rtc.close()
        await baresip.stop()


async def test_uic_from_baresip_hold_music_transfer_and_its_bye(sip_rig, tmp_path):
    conf = tmp_path / "baresip"
    conf.mkdir()
    baresip = Baresip(conf, CALLEE, tone_hz=int(BARESIP_HZ))
    agents: list[RtcClient] = []
    try:
        rig = await sip_rig(cloudapi_media="sdes", sip_hostname=HOST)
        # Meta's digest: the business number and its SIP password (the bridge's 407).
        await baresip.start(rig.ca, f";auth_user={NUMBER};auth_pass={PASSWORD}")
        await baresip.command(
            "dial",
            f"sip:+{NUMBER}@127.0.0.1:{rig.engine.ua.port}",  # TLS: the account's transport
        )

        async def ringing() -> str | None:
            calls = (await (await rig.client.get("/call/status")).json())["calls"]
            return next((c["callID"] for c in calls if c["state"] == "ringing"), None)

        cid = await until(ringing, 8, "baresip's call ringing at the bridge")
        assert rig.engine.ua.counts.get("challenged", 0) >= 1  # it came through our 407
        agent = RtcClient(rig.client, cid, freq=AGENT_HZ, participant={"participantID": "agent"})
        agents.append(agent)
        await agent.offer()
        resp = await rig.client.post("/call/answer", json={"callID": cid})
        assert resp.status == 200, await resp.text()
        await until(lambda: "Call established" in baresip.log(), 5, "baresip's call up")
        await until_passes(
            lambda: assert_tone(
                heard(agent.recorder), agent.recorder.rate, BARESIP_HZ, "agent hears baresip"
            )
        )
        await until_passes(lambda: assert_baresip_hears(baresip, AGENT_HZ, "baresip hears agent"))
        # Hold: baresip hears the music, never the agent (no re-INVITE: the bridge's media).
        form = aiohttp.FormData()
        form.add_field("audio", make("wav", MUSIC_HZ, 3.0), filename="hold.wav")
        asset = await (await rig.client.post("/call/audio-assets", data=form)).json()
        resp = await rig.client.post(
            "/call/hold", json={"callID": cid, "held": True, "music": asset["assetId"]}
        )
        assert resp.status == 200 and (await resp.json())["held"] is True
        await baresip_comes_to_hear(baresip, {MUSIC_HZ}, {AGENT_HZ}, "baresip hears the music")
        resp = await rig.client.post("/call/hold", json={"callID": cid, "held": False})
        assert (await resp.json())["held"] is False
        # A cold transfer to a second browser: baresip hears it, and it hears baresip.
        nxt = RtcClient(
            rig.client, cid, freq=NEXT_HZ, participant={"participantID": "next", "role": "listen"}
        )
        agents.append(nxt)
        await nxt.offer()
        await asyncio.wait_for(nxt.connected.wait(), 10)
        resp = await rig.client.post("/call/transfer", json={"callID": cid, "to": "next"})
        assert resp.status == 200, await resp.text()
        await baresip_comes_to_hear(
            baresip, {NEXT_HZ}, {AGENT_HZ, MUSIC_HZ}, "baresip hears the next agent"
        )
        t0 = time.monotonic() - 1.0
        assert_tone(nxt.recorder.since(t0), nxt.recorder.rate, BARESIP_HZ, "next hears baresip")
        await hang_up_and_see_baresip_close(rig.client, baresip, cid)
    finally:
        for rtc in agents:
            await rtc.close()
        await baresip.stop()
