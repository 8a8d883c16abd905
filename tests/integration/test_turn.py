"""TURN: credentials, providers, the config route, a real coturn relay, and dead servers."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCSessionDescription
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from bridge.config import settings_for_tests
from bridge.rtc import TurnGrant, advertise_public_ip, rest_credential
from bridge.rtc.turn import RestSecretTurn, parse_ice_servers, pick_server_turn_url

from ..support.calls import wait_state
from ..support.requires import needs
from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency
from ..support.turnserver import TURNSERVER, Coturn

needs_coturn = needs(TURNSERVER is not None, "coturn", "apt-get install coturn, or run `make test`")


def test_rest_credential_known_answer() -> None:
    # openssl: printf 1700003600:alice | openssl dgst -sha1 -hmac north-secret -binary | base64
    assert rest_credential("north-secret", "alice", 1700003600) == (
        "1700003600:alice",
        "Ji4axghh2/aljHmsPgH9mtDGVLw=",
    )


async def test_rest_secret_provider_expiry_from_ttl() -> None:
    settings = settings_for_tests(
        turn_urls=("turn:t.example:3478",), turn_secret="north-secret", turn_ttl=3600
    )
    grant = await RestSecretTurn(settings.ice, clock=lambda: 1700000000).grant("alice")
    assert grant.status == "ephemeral" and grant.ttl == 3600
    assert grant.servers[0] == {
        "urls": ["turn:t.example:3478"],
        "username": "1700003600:alice",
        "credential": "Ji4axghh2/aljHmsPgH9mtDGVLw=",
    }


async def test_config_route_per_provider(make_client) -> None:
    urls = (
        "turn:t.example:3478",
        "turn:t.example:3478?transport=tcp",
        "turns:t.example:5349?transport=tcp",
    )
    client = await make_client(
        stun_urls=("stun:s.example:3478",),
        turn_urls=urls,
        turn_secret="north-secret",
        ice_policy="relay",
    )
    first = await (await client.get("/call/webrtc/config")).json()
    assert first["iceTransportPolicy"] == "relay"
    assert first["turn"] == {"enabled": True, "status": "ephemeral", "ttl": 3600}
    assert first["iceServers"][0] == {"urls": ["stun:s.example:3478"]}
    turn = first["iceServers"][1]
    assert turn["urls"] == list(urls)
    expiry, user = turn["username"].split(":", 1)
    assert int(expiry) == pytest.approx(time.time() + 3600, abs=5)
    assert rest_credential("north-secret", user, int(expiry))[1] == turn["credential"]
    second = await (await client.get("/call/webrtc/config")).json()
    assert second["iceServers"][1]["username"] != turn["username"]  # minted per request
    assert "north-secret" not in str(first) + str(second)

    static = await make_client(turn_urls=urls[:1], turn_username="u", turn_password="p")
    body = await (await static.get("/call/webrtc/config")).json()
    assert body["turn"] == {"enabled": True, "status": "static", "ttl": None}
    assert body["iceServers"] == [{"urls": [urls[0]], "username": "u", "credential": "p"}]


class FixedProvider:
    """A user's own provider, loaded by import path."""

    def __init__(self, settings) -> None:
        self.settings = settings

    async def grant(self, user: str) -> TurnGrant:
        return TurnGrant(
            ({"urls": ["turn:mine.example:3478"], "username": "me", "credential": "x"},), "static"
        )

    async def close(self) -> None:
        pass


async def test_custom_provider_by_import_path(make_client) -> None:
    client = await make_client(turn_provider="tests.integration.test_turn:FixedProvider")
    body = await (await client.get("/call/webrtc/config")).json()
    assert body["iceServers"][-1]["urls"] == ["turn:mine.example:3478"]


async def test_http_provider_shapes_and_cache(make_client, aiohttp_server) -> None:
    hits = []

    async def cloudflare(request: web.Request) -> web.Response:
        hits.append(request.headers.get("Authorization"))
        return web.json_response(
            {
                "iceServers": {
                    "urls": [
                        "stun:stun.cloudflare.com:3478",
                        "turn:turn.cloudflare.com:3478?transport=udp",
                    ],
                    "username": f"user{len(hits)}",
                    "credential": "cred",
                }
            }
        )

    app = web.Application()
    app.router.add_post("/creds", cloudflare)
    server = await aiohttp_server(app)
    client = await make_client(
        turn_http_url=str(server.make_url("/creds")), turn_http_token="api-key"
    )
    a = await (await client.get("/call/webrtc/config")).json()
    b = await (await client.get("/call/webrtc/config")).json()
    assert a == b and len(hits) == 1 and hits[0] == "Bearer api-key"  # cached (TTL/2)
    assert a["turn"]["status"] == "ephemeral" and a["iceServers"][-1]["username"] == "user1"

    servers, ttl = parse_ice_servers(
        {
            "ice_servers": [
                {
                    "url": "stun:global.stun.twilio.com:3478",
                    "urls": "stun:global.stun.twilio.com:3478",
                },
                {
                    "url": "turn:global.turn.twilio.com:3478?transport=udp",
                    "username": "tw",
                    "credential": "c",
                },
            ],
            "ttl": "86400",
        }
    )
    assert ttl == 86400 and servers[1]["username"] == "tw"


async def test_cached_credentials_say_the_ttl_that_remains(make_client, aiohttp_server) -> None:
    """Credentials the http provider serves from its cache say what remains of their TTL in
    ``turn.ttl``: before, every answer said the full TTL, so a client that renewed by it kept
    credentials past their expiry (TURN then refuses them)."""
    hits: list[int] = []

    async def service(request: web.Request) -> web.Response:
        hits.append(1)
        creds = {"urls": ["turn:t.example:3478"], "username": "u1", "credential": "c"}
        return web.json_response({"iceServers": creds, "ttl": 20})

    app = web.Application()
    app.router.add_post("/creds", service)
    server = await aiohttp_server(app)
    client = await make_client(turn_http_url=str(server.make_url("/creds")), turn_http_token="k")
    first = await (await client.get("/call/webrtc/config")).json()
    assert first["turn"]["ttl"] == 20, first["turn"]
    await asyncio.sleep(1.1)
    later = await (await client.get("/call/webrtc/config")).json()
    assert hits == [1], hits  # served from the cache (fresh for half the TTL)
    assert later["iceServers"] == first["iceServers"]
    assert later["turn"]["ttl"] <= 19, later["turn"]


async def test_a_dead_credential_service_is_a_documented_503(make_client, aiohttp_server) -> None:
    """``BRIDGE_TURN_PROVIDER=http`` with its service failing and nothing cached: the config
    route answers 503 ``turn_unavailable`` with the error body, a status its OpenAPI entry did
    not list (an app generated from the document had no case for it)."""
    import yaml

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": "down"}, status=500)

    app = web.Application()
    app.router.add_post("/creds", broken)
    server = await aiohttp_server(app)
    client = await make_client(turn_http_url=str(server.make_url("/creds")), turn_http_token="k")
    resp = await client.get("/call/webrtc/config")
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "turn_unavailable"
    doc = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "bridge" / "api" / "openapi.yaml").read_text()
    )
    responses = doc["paths"]["/call/webrtc/config"]["get"]["responses"]
    assert responses.get("503") == {"$ref": "#/components/responses/Unavailable"}, responses
    assert "turn_unavailable" in doc["components"]["responses"]["Unavailable"]["description"]


async def test_a_failing_credential_service_is_asked_once_and_never_serves_expired(
    make_client, aiohttp_server, caplog
) -> None:
    """The http provider's service fails once its credentials are stale (half their TTL). It
    was asked again at every config request and every offer (each waiting for its timeout,
    up to 3 s), a WARNING said each time, and its credentials were served past their full
    TTL, when TURN refuses them. Now: asked again after a pause, said once, and 503 once the
    cached credentials have expired."""
    hits: list[int] = []

    async def service(request: web.Request) -> web.Response:
        hits.append(1)
        if len(hits) > 1:
            return web.json_response({"error": "down"}, status=500)
        creds = {"urls": ["turn:t.example:3478"], "username": "u1", "credential": "c"}
        return web.json_response({"iceServers": creds, "ttl": 1})

    app = web.Application()
    app.router.add_post("/creds", service)
    server = await aiohttp_server(app)
    client = await make_client(turn_http_url=str(server.make_url("/creds")), turn_http_token="k")
    first = await (await client.get("/call/webrtc/config")).json()
    assert first["iceServers"][-1]["username"] == "u1" and hits == [1]
    await asyncio.sleep(0.6)  # past half the TTL: stale, not expired
    for _ in range(5):
        body = await (await client.get("/call/webrtc/config")).json()
        assert body["iceServers"][-1]["username"] == "u1"  # still valid: served
    assert len(hits) == 2, hits  # the failing service asked once, not five times
    await asyncio.sleep(0.6)  # past the full TTL
    resp = await client.get("/call/webrtc/config")
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "turn_unavailable"
    asked = len(hits)
    resp = await client.get("/call/webrtc/config")  # at once again: not asked (its pause)
    assert resp.status == 503 and len(hits) == asked, hits
    said = [r for r in caplog.records if "TURN credential service failed" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]


def test_server_turn_url_choice_and_public_ip() -> None:
    assert (
        pick_server_turn_url(
            ["turns:a:5349?transport=tcp", "turn:a:3478?transport=tcp", "turn:a:3478"]
        )
        == "turn:a:3478"
    )
    assert pick_server_turn_url(["turns:a:5349?transport=tcp", "turn:a:3478?transport=tcp"]) == (
        "turn:a:3478?transport=tcp"
    )
    # turns: means TLS over TCP without saying so (RFC 7065 §3): a TLS-only TURN deployment's
    # one URL was passed over, and the bridge gathered no relay candidate.
    assert pick_server_turn_url(["turns:a:5349"]) == "turns:a:5349"
    assert pick_server_turn_url(["turns:a:5349", "turn:a:3478?transport=tcp"]) == (
        "turn:a:3478?transport=tcp"
    )
    assert pick_server_turn_url(["turn:a:3478?transport=sctp", "turns:a:443?transport=udp"]) is None
    sdp = (
        "v=0\r\nc=IN IP4 10.0.0.5\r\n"
        "a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\n"
        "a=candidate:2 1 udp 1694498815 198.51.100.9 40000 typ srflx raddr 10.0.0.5 rport 40000\r\n"
    )
    v6 = "a=candidate:3 1 udp 2130706175 2001:db8::5 40002 typ host\r\n"
    out = advertise_public_ip(sdp + v6, "203.0.113.7")
    assert "a=candidate:1 1 udp 2130706431 203.0.113.7 40000 typ host" in out
    # The NAT maps IPv4: the IPv6 host candidate stays (its port on 203.0.113.7 is no socket
    # of this session's), never one more IPv4 candidate on the public address.
    assert v6 in out and "203.0.113.7 40002" not in out
    assert "198.51.100.9 40000 typ srflx" in out and "c=IN IP4 203.0.113.7" in out


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_dead_stun_and_turn_do_not_hold_the_answer(make_client) -> None:
    dead = "127.0.0.1:9"  # discard port: nothing answers
    client = await make_client(
        server_stun_urls=(f"stun:{dead}",), turn_urls=(f"turn:{dead}",), turn_secret="s"
    )
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await asyncio.sleep(0.3)
    baseline = open_fds()
    rtc = RtcClient(client, call["callID"])
    rtc.pc.addTrack(rtc.track)
    await rtc.pc.setLocalDescription(await rtc.pc.createOffer())
    # The answer does not wait out aioice's 5 s for the unreachable TURN server (bounded
    # below that; how fast it answers is the bench's to measure).
    resp = await asyncio.wait_for(
        client.post(
            "/call/webrtc/offer",
            json={"callID": call["callID"], "type": "offer", "sdp": rtc.pc.localDescription.sdp},
        ),
        4.0,
    )
    answer = await resp.json()
    assert resp.status == 200, answer
    assert "typ host" in answer["sdp"]
    await rtc.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    await asyncio.wait_for(rtc.connected.wait(), 10)
    await client.post("/call/webrtc/close", json={"callID": call["callID"]})
    await rtc.close()
    await asyncio.sleep(0.5)
    assert abs(open_fds() - baseline) <= 2, (baseline, open_fds())


@needs_coturn
async def test_relay_only_call_through_real_coturn(make_client, tmp_path) -> None:
    coturn = Coturn("north-secret", tmp_path)
    await coturn.start()
    try:
        client = await make_client(
            turn_urls=(coturn.url,), turn_secret="north-secret", ice_policy="relay"
        )
        config = await (await client.get("/call/webrtc/config")).json()
        assert config["iceTransportPolicy"] == "relay"
        turn = config["iceServers"][-1]
        call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
        rtc = RtcClient(
            client,
            call["callID"],
            freq=440.0,
            configuration=RTCConfiguration(
                iceServers=[
                    RTCIceServer(
                        urls=turn["urls"][0],
                        username=turn["username"],
                        credential=turn["credential"],
                    )
                ],
                iceTransportPolicy=RTCIceTransportPolicy(config["iceTransportPolicy"]),
            ),
        )
        answer = await rtc.offer()
        offered = rtc.pc.localDescription.sdp
        kinds = {
            line.split(" typ ")[1].split()[0]
            for line in offered.splitlines()
            if line.startswith("a=candidate:")
        }
        assert kinds == {"relay"}, offered  # the client offers relay candidates only
        assert "typ relay" in answer["sdp"]  # the bridge gathered through coturn too
        await asyncio.wait_for(rtc.connected.wait(), 10)
        await wait_state(client, call["callID"], "active")
        await rtc.recorder.tone_arrives(440)
        t0 = time.monotonic()
        await asyncio.sleep(1.0)
        heard = rtc.recorder.since(t0)
        assert dominant_frequency(heard, rtc.recorder.rate) == pytest.approx(440, abs=5)
        ice = rtc.pc.getTransceivers()[0].receiver.transport.transport  # RTCIceTransport
        selected = ice._connection._nominated.get(1)
        assert selected is not None and selected.local_candidate.type == "relay"
        await client.post("/call/hangup", json={"callID": call["callID"]})
        await rtc.close()
    finally:
        await coturn.stop()


@needs_coturn
async def test_coturn_refuses_expired_credentials(tmp_path) -> None:
    from aioice import turn as aioice_turn
    from aioice.stun import TransactionFailed

    coturn = Coturn("north-secret", tmp_path)
    await coturn.start()
    try:
        fresh = rest_credential("north-secret", "alice", int(time.time()) + 60)
        transport, _ = await aioice_turn.create_turn_endpoint(
            asyncio.DatagramProtocol, ("127.0.0.1", coturn.port), *fresh
        )
        transport.close()
        expired = rest_credential("north-secret", "alice", int(time.time()) - 60)
        with pytest.raises(TransactionFailed) as info:
            await aioice_turn.create_turn_endpoint(
                asyncio.DatagramProtocol, ("127.0.0.1", coturn.port), *expired
            )
        assert info.value.response.attributes["ERROR-CODE"][0] == 401
    finally:
        await coturn.stop()
