"""An offer with no candidate: the browser's address is learned from its checks.

A browser behind a NAT that hides its host addresses (mDNS off, no STUN) may offer
``a=end-of-candidates`` and no candidate at all; the answerer then learns it as a
peer-reflexive candidate from its connectivity checks (RFC 8445 §7.3.1.3). The bridge's answer
must still carry the bridge's own candidates, or nothing can connect.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from ..support.calls import peer_heard, sim_call, wait_state
from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency
from ..support.waits import until

_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ (\w+)", re.M)


def without_candidates(sdp: str) -> str:
    """``sdp`` as a peer-reflexive-only browser sends it: no candidate, the discard address."""
    lines = [ln for ln in sdp.replace("\r\n", "\n").split("\n") if ln]
    out = []
    for ln in lines:
        if ln.startswith("a=candidate:") or ln == "a=end-of-candidates":
            continue
        if ln.startswith("m=audio "):
            parts = ln.split(" ")
            parts[1] = "9"
            ln = " ".join(parts)
        if ln.startswith("c=IN IP4 "):
            ln = "c=IN IP4 0.0.0.0"
        out.append(ln)
        if ln.startswith("a=ice-pwd:"):
            out.append("a=end-of-candidates")
    return "\r\n".join(out) + "\r\n"


async def test_offer_without_candidates_gets_ours_and_connects(client) -> None:
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    rtc = RtcClient(client, call["callID"], freq=440.0)
    try:
        offered: list[str] = []

        def rewrite(sdp: str) -> str:
            offered.append(without_candidates(sdp))
            return offered[0]

        answer = await rtc.offer(rewrite_offer=rewrite)
        assert "a=candidate:" not in offered[0] and "a=end-of-candidates" in offered[0]
        found = _CANDIDATE.findall(answer["sdp"])
        assert found and all(host == "127.0.0.1" for host, _, _ in found), answer["sdp"]
        assert "m=audio 9 " not in answer["sdp"]
        await asyncio.wait_for(rtc.connected.wait(), 10)
        await wait_state(client, call["callID"], "active")
        # The browser's tone reaches the WhatsApp peer: media flows to the learned address.
        peer = sim_call(client, call["callID"])
        start = peer.frames_heard
        await until(lambda: peer.frames_heard >= start + 50, what="a second of uplink audio")
        heard = peer_heard(client, call["callID"], 25)
        assert dominant_frequency(heard, 16_000) == pytest.approx(440, abs=10)
    finally:
        await rtc.close()


def with_mdns_candidates(sdp: str) -> str:
    """``sdp`` as a browser that hides its host addresses sends it (draft-ietf-mmusic-mdns-ice-
    candidates): each candidate's address an mDNS name, then ``a=end-of-candidates``."""
    lines = [ln for ln in sdp.replace("\r\n", "\n").split("\n") if ln]
    out = []
    for n, ln in enumerate(lines):
        if ln == "a=end-of-candidates":
            continue
        if ln.startswith("a=candidate:"):
            fields = ln.split(" ")
            fields[4] = f"0d3a3f2e-1111-2222-3333-{n:012d}.local"
            ln = " ".join(fields)
        out.append(ln)
        if ln.startswith("a=ice-pwd:"):
            out.append("a=end-of-candidates")
    return "\r\n".join(out) + "\r\n"


async def test_offer_with_only_mdns_candidates_gets_ours_and_connects(client, monkeypatch) -> None:
    """Firefox (and Chromium) without a microphone permission offer their host addresses as
    mDNS names, which a server off the browser's link cannot resolve. The bridge resolved them
    (a multicast query, a second's wait) and, none answering, had no candidate left after
    ``a=end-of-candidates``: its answer had none (``m=audio 9``) and the call never connected.
    The browser is learned from its checks instead, and nothing is asked of mDNS."""
    import aioice.ice

    asked: list[str] = []

    class NobodyAnswers:  # a server's link: no mDNS responder for the browser's names
        async def resolve(self, host: str, timeout: float | None = 1.0) -> None:
            asked.append(host)
            return None

    async def mdns(subscriber: object) -> NobodyAnswers:
        return NobodyAnswers()

    async def unref(subscriber: object) -> None:
        return None

    monkeypatch.setattr(aioice.ice, "get_or_create_mdns_protocol", mdns)  # no multicast here
    monkeypatch.setattr(aioice.ice, "unref_mdns_protocol", unref)
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    rtc = RtcClient(client, call["callID"], freq=440.0)
    try:
        offered: list[str] = []

        def rewrite(sdp: str) -> str:
            offered.append(with_mdns_candidates(sdp))
            return offered[0]

        answer = await rtc.offer(rewrite_offer=rewrite)
        assert ".local " in offered[0] and "a=end-of-candidates" in offered[0]
        assert "m=audio 9 " not in answer["sdp"] and _CANDIDATE.findall(answer["sdp"])
        assert asked == []
        await asyncio.wait_for(rtc.connected.wait(), 10)
        await wait_state(client, call["callID"], "active")
        peer = sim_call(client, call["callID"])
        start = peer.frames_heard
        await until(lambda: peer.frames_heard >= start + 50, what="a second of uplink audio")
        heard = peer_heard(client, call["callID"], 25)
        assert dominant_frequency(heard, 16_000) == pytest.approx(440, abs=10)
    finally:
        await rtc.close()


def _candidates_as(sdp: str, transport: str | None = None, address: str | None = None) -> str:
    """``sdp`` with each candidate's transport or address replaced (RFC 8839 §5.1 fields)."""
    out = []
    for ln in sdp.replace("\r\n", "\n").split("\n"):
        if ln.startswith("a=candidate:"):
            fields = ln.split(" ")
            if transport is not None:
                fields[2] = transport
                fields.append("tcptype passive")
            if address is not None:
                fields[4] = address
            ln = " ".join(fields)
        if ln:
            out.append(ln)
    return "\r\n".join(out) + "\r\n"


@pytest.mark.parametrize(
    ("offered", "why"),
    [
        ({"transport": "tcp"}, "TCP"),
        ({"address": "::1"}, "IPv6"),
    ],
)
async def test_an_offer_none_of_whose_candidates_can_pair_with_ours_is_a_400(
    client, offered, why
) -> None:
    """Candidates only over TCP (ICE-TCP, RFC 6544: the bridge's ICE runs over UDP), or only
    of a family the bridge gathers none of (IPv6 here, its candidates IPv4 only): no pair can
    form. Before, the offer was answered 200 and the session failed at once, the browser told
    nothing of why; the call is left as it was, ready for an offer that can connect."""
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    rtc = RtcClient(client, call["callID"], freq=440.0)
    try:
        rtc.pc.addTrack(rtc.track)
        await rtc.pc.setLocalDescription(await rtc.pc.createOffer())
        sdp = _candidates_as(rtc.pc.localDescription.sdp, **offered)
        resp = await client.post(
            "/call/webrtc/offer", json={"callID": call["callID"], "type": "offer", "sdp": sdp}
        )
        body = await resp.json()
        assert resp.status == 400 and body["error"]["code"] == "bad_offer", body
        assert why in body["error"]["message"], body
        snap = await (await client.get(f"/call/{call['callID']}")).json()
        assert snap["transport"] is None and snap["participants"] == []
    finally:
        await rtc.close()
