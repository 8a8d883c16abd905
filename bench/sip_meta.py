"""Meta on the SIP + SDES road for ``bench.run``'s ``cloudapi-sip-sdes`` target: a SIP-over-TLS
server that answers the bridge's INVITEs (business-initiated calls, placed by the load
generator's ``POST /call/make``) with an SDES answer, and one UDP socket per call that echoes
the bridge's RTP back — unprotected with the bridge's key (its offer's ``a=crypto``),
protected again with ours — so the bridge has the WhatsApp side's Opus to forward to the
browser, as ``bench/meta.py``'s packet echo gives it on the Graph + DTLS road. As there, the
echo is paced: what arrives waits in a short queue (:data:`ECHO_DEPTH`, the oldest dropped)
and one packet per call leaves every 20 ms on the stand-in's own clock, as a real sender's
would (an echo sent the moment it arrives would hand the bridge its own scheduling jitter).

It is a bench stand-in, not a test fake: no ``407`` round (the bridge runs without
``BRIDGE_SIP_PASSWORD``), no Record-Route, RTCP dropped. SIP framing and message building reuse
``bridge.sip``'s (``Connection.read``, ``reply``); the SRTP is libsrtp's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import secrets
import ssl
import time
from collections import deque
from typing import Any

import pylibsrtp

from bridge.sip.dialog import reply
from bridge.sip.message import Request
from bridge.sip.transport import Connection

PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
ECHO_DEPTH = 6
"""Packets waiting to be echoed (120 ms), as ``bench/meta.py``'s."""


class Echo(asyncio.DatagramProtocol):
    """One call's media: the bridge's SRTP back to where it came from, re-keyed."""

    def __init__(self, bridge_key: bytes) -> None:
        self.key = secrets.token_bytes(30)
        self._rx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=bridge_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=PROFILE
            )
        )
        self._tx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=self.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE
            )
        )
        self.transport: asyncio.DatagramTransport | None = None
        self.queue: deque[bytes] = deque(maxlen=ECHO_DEPTH)
        self.to: Any = None
        self.echoed = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 12 or 192 <= data[1] <= 223 or self.transport is None:
            return  # RTCP (or junk): not echoed
        try:
            self.queue.append(self._rx.unprotect(data))
        except pylibsrtp.Error:
            return
        self.to = addr

    def tick(self) -> None:
        """One packet back, if one waits."""
        if self.queue and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(self._tx.protect(self.queue.popleft()), self.to)
            self.echoed += 1


def answer_sdp(offer: str, port: int, key: bytes) -> str:
    pt = re.search(r"a=rtpmap:(\d+) opus/48000", offer)
    opus = pt.group(1) if pt else "111"
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP {opus} 126\r\n"
        f"a=rtpmap:{opus} opus/48000/2\r\na=fmtp:{opus} useinbandfec=1\r\n"
        "a=rtpmap:126 telephone-event/8000\r\na=rtcp-mux\r\na=sendrecv\r\n"
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
        f"{base64.b64encode(key).decode()}\r\n"
    )


class SipMeta:
    def __init__(self) -> None:
        self.calls: dict[str, Echo] = {}

    async def pace(self) -> None:
        """Every call's echo, one packet each 20 ms on one clock."""
        start, n = time.monotonic(), 0
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))
            for echo in list(self.calls.values()):
                echo.tick()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, inbound=True)
        try:
            while True:
                msg = await conn.read()
                if msg is None:
                    break
                if isinstance(msg, Request):
                    await self.request(msg, conn)
        except (ConnectionError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            await conn.close()

    async def request(self, req: Request, conn: Connection) -> None:
        tag = secrets.token_hex(4)
        if req.method == "INVITE":
            m = re.search(r"inline:([A-Za-z0-9+/=]+)", req.body.decode())
            if not m:
                await conn.send(reply(req, 488, "Not Acceptable Here", to_tag=tag))
                return
            loop = asyncio.get_running_loop()
            echo = Echo(base64.b64decode(m.group(1)))
            transport, _ = await loop.create_datagram_endpoint(
                lambda: echo, local_addr=("127.0.0.1", 0)
            )
            self.calls[req.call_id] = echo
            port = transport.get_extra_info("sockname")[1]
            ok = reply(req, 200, "OK", to_tag=tag, extra=[("Contact", "<sip:meta@127.0.0.1>")])
            ok.add("Content-Type", "application/sdp")
            ok.body = answer_sdp(req.body.decode(), port, echo.key).encode()
            await conn.send(ok)
        elif req.method in ("BYE", "CANCEL"):
            echo = self.calls.pop(req.call_id, None)
            if echo is not None and echo.transport is not None:
                echo.transport.close()
            await conn.send(reply(req, 200, "OK", to_tag=tag))
        elif req.method != "ACK":
            await conn.send(reply(req, 200, "OK", to_tag=tag))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    meta = SipMeta()
    server = await asyncio.start_server(meta.serve, "127.0.0.1", args.port, ssl=ctx)
    pacer = asyncio.create_task(meta.pace())
    print("READY", flush=True)
    try:
        async with server:
            await server.serve_forever()
    finally:
        pacer.cancel()


if __name__ == "__main__":
    asyncio.run(main())
