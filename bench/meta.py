"""Meta's part for ``bench.run``'s ``cloudapi`` target: the Graph calls endpoint, the signed
webhooks, and one real WebRTC peer per call (the WhatsApp user's side) that echoes.

It is the stand-in of ``tests/fakes/cloudapi.py`` made cheap enough to run beside the load
generator: the SDP rewriting (sha-256 fingerprint only, ``a=ice-lite``, ``telephone-event`` on
126) and Meta's error envelope come from the fake; the media side is the load generator's
(``bench.loadgen``): its receive path only records RTP arrivals (no decoding), and its track
sends back the Opus payloads it received (a packet echo, no encoding), falling back to the
pre-encoded tone while nothing has arrived.

Per outbound call (the bench places them with ``POST /call/make``): ``connect`` (offer) →
answer it, return the ``wacid`` → a moment later one signed webhook with three changes:
``RINGING``, the ``connect`` event carrying the answer, ``ACCEPTED``. ``terminate`` or
``reject`` closes the peer. ``GET /bench/stats?t0=&t1=`` reports what the WhatsApp side heard
in a window (``time.monotonic()``, the load generator's clock); ``GET /healthz`` is 200.

Calls the other way (``bench.trunk``'s G.711 points): ``POST /bench/user_calls`` with
``{"calls": N, "codec": "PCMU"}`` has N WhatsApp users call the business, each peer's offer
written by the fake's ``meta_offer`` as Meta writes it for a number with
``audio.additional_codecs`` (Opus, then that G.711 on its static payload type); one signed
``connect`` webhook each. The bridge's ``pre_accept``/``accept`` carry its answer. Until
anything arrives, a peer answered in G.711 plays a 440 Hz tone coded in it (160-byte
payloads), then echoes what it hears as on Opus.

**The network between the WhatsApp user and the bridge** is clean unless asked
(``--jitter-ms``, ``--loss``, ``--drift-ppm``, ``--seed``; :class:`Network`): each peer's
packets then leave on a clock ``drift_ppm`` off the bridge's, each held up to ``jitter_ms``
past its time (in order), and ``loss`` of them never sent (RTP only, after aiortc numbered
them: a gap in the sequence, as a loss on the way is), seeded per call. ``bench.trunk``'s G.711
points ask for a real path's (issue 60: a peer as unkind as Meta's media servers across the
internet, not a loopback echo that flatters the receive path).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bench.loadgen import (
    ARRIVALS,
    ECHOES,
    PacketTrack,
    count_only,
    encode_tone,
    on_time_share,
)
from bridge.audio.g711 import alaw_encode, ulaw_encode
from bridge.engines.cloudapi import SIGNATURE_HEADER, sign
from bridge.rtc import restrict_host_addresses
from tests.fakes.cloudapi import (
    ACTION_PARAMS,
    _session_refusal,
    meta_answer,
    meta_error,
    meta_offer,
)
from tests.fakes.cloudapi_users import contact


@dataclass(frozen=True)
class Network:
    """What the path from each WhatsApp user's peer does to its packets (module docstring)."""

    jitter_ms: float = 0.0
    loss: float = 0.0
    drift_ppm: float = 0.0
    seed: int = 1

    def track(self, packets: list[bytes | None], echo: deque[bytes], n: int) -> PacketTrack:
        """The ``n``-th peer's track: its own clock and jitter, seeded."""
        return PacketTrack(
            packets,
            echo,
            period=0.02 * (1 + self.drift_ppm / 1e6),
            jitter=self.jitter_ms / 1000,
            rng=random.Random(f"{self.seed}:jitter:{n}"),
        )

    def lose(self, pc: RTCPeerConnection, n: int) -> None:
        """Drop ``loss`` of the ``n``-th peer's RTP packets as they leave (RTCP goes through:
        its second byte is 192-223, RFC 5761 §4)."""
        if not self.loss:
            return
        transport = pc.getTransceivers()[0].sender.transport
        send, rng, loss = transport._send_rtp, random.Random(f"{self.seed}:loss:{n}"), self.loss

        async def send_rtp(data: bytes) -> None:
            if len(data) > 1 and not 192 <= data[1] <= 223 and rng.random() < loss:
                return
            await send(data)

        transport._send_rtp = send_rtp


ECHO_DEPTH = 6
"""Received payloads waiting to be sent back (120 ms); the oldest go first."""
ENDED_KEPT = 1000
"""Ended calls kept for ``/bench/stats`` (their arrivals)."""


G711_ENCODE = {"PCMU": ulaw_encode, "PCMA": alaw_encode}


def g711_tone(codec: str) -> list[bytes | None]:
    """One second of 440 Hz in ``codec`` (``PCMU``/``PCMA``): 50 payloads of 160 bytes."""
    t = np.arange(8000) / 8000
    pcm = (0.5 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    coded = G711_ENCODE[codec](pcm)
    return [coded[i : i + 160] for i in range(0, len(coded), 160)]


@dataclass
class EchoCall:
    wacid: str
    to: str
    opaque: str
    pc: RTCPeerConnection
    receiver_id: int = 0
    answer: str = ""
    created: float = field(default_factory=time.monotonic)
    ended: float | None = None
    connected: bool = False


class Meta:
    def __init__(
        self,
        bridge: str,
        token: str,
        pnid: str,
        secret: str,
        delay: float,
        network: Network | None = None,
    ) -> None:
        self.network = network or Network()
        self._peers = 0
        self.bridge = bridge.rstrip("/")
        self.token = token
        self.pnid = pnid
        self.secret = secret
        self.delay = delay
        self.packets = encode_tone()
        self.calls: dict[str, EchoCall] = {}
        self.ended: deque[EchoCall] = deque(maxlen=ENDED_KEPT)
        self.tasks: set[asyncio.Task[None]] = set()
        self.refused = 0
        self.webhooks_failed = 0
        self.http: aiohttp.ClientSession | None = None

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- Graph
    async def calls_endpoint(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return meta_error(401, 190, "Invalid OAuth access token")
        if request.match_info["pnid"] != self.pnid:
            return meta_error(400, 100, "Unsupported post request. Object does not exist")
        body = await request.json()
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return meta_error(400, 100, "(#100) The parameter messaging_product is required.")
        session = body.get("session")
        if isinstance(session, dict):  # the fake's check: sha-256 fingerprints only
            refusal = _session_refusal(str(session.get("sdp", "")), "DTLS")
            if refusal is not None:
                self.refused += 1
                return refusal
        action = body.get("action")
        if action not in ACTION_PARAMS:  # Meta's call actions: any other is its 100
            return meta_error(400, 100, f"(#100) Invalid action {action!r}")
        if action == "connect":
            return await self.connect(body)
        call = self.calls.get(str(body.get("call_id")))
        if call is None:
            return meta_error(400, 138001, "(#138001) Call not found or already ended")
        if action in ("pre_accept", "accept") and isinstance(session, dict):
            if not call.answer:  # a user's call: the bridge's answer (accept repeats it)
                call.answer = str(session.get("sdp", ""))
                await call.pc.setRemoteDescription(
                    RTCSessionDescription(sdp=call.answer, type="answer")
                )
        elif action in ("terminate", "reject"):
            self.calls.pop(call.wacid, None)
            self.spawn(self.end(call))
        return web.json_response({"success": True})

    async def connect(self, body: dict[str, Any]) -> web.Response:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        wacid = "wacid.BENCH" + "".join(random.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=20))
        call = EchoCall(wacid, str(body.get("to")), str(body.get("biz_opaque_callback_data")), pc)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                call.connected = True

        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=body["session"]["sdp"], type="offer")
        )
        transceiver = pc.getTransceivers()[0]
        call.receiver_id = id(transceiver.receiver)
        echo: deque[bytes] = deque(maxlen=ECHO_DEPTH)
        ECHOES[call.receiver_id] = echo
        self._peers += 1
        transceiver.sender.replaceTrack(self.network.track(self.packets, echo, self._peers))
        self.network.lose(pc, self._peers)
        transceiver.direction = "sendrecv"
        await pc.setLocalDescription(await pc.createAnswer())
        call.answer = meta_answer(pc.localDescription.sdp)
        self.calls[wacid] = call
        self.spawn(self.answered(call))
        return web.json_response({"messaging_product": "whatsapp", "calls": [{"id": wacid}]})

    async def user_calls(self, request: web.Request) -> web.Response:
        """``{"calls": N, "codec": "PCMU"}``: N users call the business, Meta offering
        ``codec`` beside Opus (``audio.additional_codecs``); their ``wacid``s."""
        body = await request.json()
        codec = str(body.get("codec", ""))
        extra = (codec,) if codec in G711_ENCODE else ()
        wacids = []
        for i in range(int(body.get("calls", 1))):
            wacids.append(await self.user_call(f"5521{i:09d}", extra))
        return web.json_response({"wacids": wacids})

    async def user_call(self, user: str, extra: tuple[str, ...]) -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        wacid = "wacid.BENCH" + "".join(random.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=20))
        call = EchoCall(wacid, user, "", pc)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                call.connected = True

        transceiver = pc.addTransceiver("audio", direction="sendrecv")
        call.receiver_id = id(transceiver.receiver)
        echo: deque[bytes] = deque(maxlen=ECHO_DEPTH)
        ECHOES[call.receiver_id] = echo
        packets = g711_tone(extra[0]) if extra else self.packets
        self._peers += 1
        transceiver.sender.replaceTrack(self.network.track(packets, echo, self._peers))
        self.network.lose(pc, self._peers)
        await pc.setLocalDescription(await pc.createOffer())
        ice = transceiver.sender.transport.transport
        ice._connection.ice_controlling = False  # Meta is ICE-lite: never controlling
        ice._role_set = True
        offer = meta_offer(pc.localDescription.sdp, extra)
        self.calls[wacid] = call
        event = {
            "contacts": [contact(user)],
            "calls": [
                {
                    "id": wacid,
                    "from": user,
                    "to": "15550009999",
                    "event": "connect",
                    "timestamp": str(int(time.time())),
                    "direction": "USER_INITIATED",
                    "session": {"sdp_type": "offer", "sdp": offer},
                }
            ],
        }
        await self.webhook(self.envelope(event))
        return wacid

    async def end(self, call: EchoCall) -> None:
        call.ended = time.monotonic()
        ECHOES.pop(call.receiver_id, None)
        if len(self.ended) == self.ended.maxlen:  # forgotten: its arrivals go too
            ARRIVALS.pop(self.ended[0].receiver_id, None)
        self.ended.append(call)
        await call.pc.close()

    # -- webhooks
    def envelope(self, *values: dict[str, Any]) -> bytes:
        changes = [
            {
                "field": "calls",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {
                        "display_phone_number": "15550009999",
                        "phone_number_id": self.pnid,
                    },
                    **value,
                },
            }
            for value in values
        ]
        body = {
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": changes}],
        }
        return json.dumps(body).encode()

    def status(self, call: EchoCall, status: str) -> dict[str, Any]:
        item = {
            "id": call.wacid,
            "timestamp": str(int(time.time())),
            "type": "call",
            "status": status,
            "recipient_id": call.to,
            "biz_opaque_callback_data": call.opaque,
        }
        return {"statuses": [item]}

    async def answered(self, call: EchoCall) -> None:
        """RINGING, Meta's answer and ACCEPTED, in one signed body (after ``delay``)."""
        await asyncio.sleep(self.delay)
        answer = {
            "calls": [
                {
                    "id": call.wacid,
                    "from": "15550009999",  # the business called: it is ``from``, the user ``to``
                    "to": call.to,
                    "event": "connect",
                    "direction": "BUSINESS_INITIATED",
                    "timestamp": str(int(time.time())),
                    "session": {"sdp_type": "answer", "sdp": call.answer},
                    "biz_opaque_callback_data": call.opaque,
                }
            ]
        }
        raw = self.envelope(self.status(call, "RINGING"), answer, self.status(call, "ACCEPTED"))
        await self.webhook(raw)

    async def webhook(self, raw: bytes) -> None:
        """One signed webhook body to the bridge (a failure counted, not raised)."""
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret, raw)}
        assert self.http is not None
        try:
            async with self.http.post(
                self.bridge + "/engine/webhook", data=raw, headers=headers
            ) as r:
                if r.status != 200:
                    self.webhooks_failed += 1
        except aiohttp.ClientError:
            self.webhooks_failed += 1

    # -- what the WhatsApp side heard
    async def stats(self, request: web.Request) -> web.Response:
        t0, t1 = float(request.query["t0"]), float(request.query["t1"])
        calls = [
            c
            for c in [*self.calls.values(), *self.ended]
            if c.created < t0 and (c.ended is None or c.ended > t1)
        ]
        shares = [on_time_share(ARRIVALS.get(c.receiver_id, []), t0, t1) for c in calls]
        on_time = sum(a for a, _ in shares)
        expected = sum(b for _, b in shares)
        n = max(1, len(calls))
        return web.json_response(
            {
                "calls": len(calls),
                "connected": sum(1 for c in calls if c.connected),
                "uplink_on_time": on_time / expected if expected else 0.0,
                "uplink_heard_per_call": on_time / n,
                "refused": self.refused,
                "webhooks_failed": self.webhooks_failed,
            }
        )

    async def number_endpoint(self, request: web.Request) -> web.Response:
        """``GET /{PHONE_NUMBER_ID}``: the number's node, what the bridge's number health check
        reads with its token (without it every bench run's bridge said at WARNING that Meta
        refused its number, 404)."""
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return meta_error(401, 190, "Invalid OAuth access token")
        if request.match_info["pnid"] != self.pnid:
            return meta_error(400, 100, "Unsupported get request. Object does not exist")
        return web.json_response({"id": self.pnid})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def on_startup(self, app: web.Application) -> None:
        self.http = aiohttp.ClientSession()

    async def on_shutdown(self, app: web.Application) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for call in list(self.calls.values()):
            await call.pc.close()
        if self.http is not None:
            await self.http.close()


def add_graph_routes(app: web.Application, meta: Meta) -> None:
    """The Graph API routes of Meta's the bridge calls: its call actions and the number's node
    (the number health check's read)."""
    app.router.add_post("/v23.0/{pnid}/calls", meta.calls_endpoint)
    app.router.add_get("/v23.0/{pnid}", meta.number_endpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bridge", required=True, help="the bridge's base URL (webhooks)")
    parser.add_argument("--token", required=True)
    parser.add_argument("--phone-number-id", required=True)
    parser.add_argument("--app-secret", required=True)
    parser.add_argument("--answer-delay", type=float, default=0.05)
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="each packet held 0..J ms")
    parser.add_argument("--loss", type=float, default=0.0, help="share of RTP packets lost")
    parser.add_argument("--drift-ppm", type=float, default=0.0, help="the peers' clock, off ours")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    count_only()
    restrict_host_addresses(["127.0.0.1"])
    network = Network(args.jitter_ms, args.loss, args.drift_ppm, args.seed)
    meta = Meta(
        args.bridge, args.token, args.phone_number_id, args.app_secret, args.answer_delay, network
    )
    app = web.Application()
    add_graph_routes(app, meta)
    app.router.add_get("/bench/stats", meta.stats)
    app.router.add_post("/bench/user_calls", meta.user_calls)
    app.router.add_get("/healthz", meta.healthz)
    app.on_startup.append(meta.on_startup)
    app.on_shutdown.append(meta.on_shutdown)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
