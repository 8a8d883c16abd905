"""A bare aiortc echo server, for comparison: decode, re-encode, nothing else.

It speaks the two routes the load generator uses (``/call/make``, ``/call/webrtc/offer``).
"""

from __future__ import annotations

import argparse
import uuid

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from bridge.rtc import restrict_host_addresses

PCS = web.AppKey("pcs", set)


async def make(request: web.Request) -> web.Response:
    return web.json_response({"callID": uuid.uuid4().hex, "state": "active"}, status=201)


async def offer(request: web.Request) -> web.Response:
    body = await request.json()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    request.app[PCS].add(pc)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        pc.addTrack(track)  # aiortc decodes what arrives and re-encodes it on the way back

    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response(
        {"callID": body["callID"], "type": "answer", "sdp": pc.localDescription.sdp}
    )


async def close_all(app: web.Application) -> None:
    for pc in list(app[PCS]):
        await pc.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    restrict_host_addresses(["127.0.0.1"])
    app = web.Application()
    app[PCS] = set()
    app.router.add_post("/call/make", make)
    app.router.add_post("/call/webrtc/offer", offer)
    app.on_shutdown.append(close_all)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
