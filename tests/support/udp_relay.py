"""A UDP relay on loopback that drops a known share of RTP packets, to make loss happen."""

from __future__ import annotations

import asyncio
import re


def is_rtp(data: bytes) -> bool:
    """RTP (not RTCP, STUN or DTLS): version 2 and a payload type outside RTCP's 192-223."""
    return len(data) >= 12 and data[0] >> 6 == 2 and not 192 <= data[1] <= 223


class LossyRelay:
    """Sits between a client and the bridge's candidate; drops every ``drop_every``-th RTP
    packet going ``to_bridge`` (uplink loss) and/or ``to_client`` (downlink loss)."""

    def __init__(
        self,
        target: tuple[str, int],
        drop_every: int = 5,
        *,
        to_bridge: bool = True,
        to_client: bool = False,
    ) -> None:
        self.target = target
        self.drop_every = drop_every
        self.to_bridge = to_bridge
        self.to_client = to_client
        self.client: tuple[str, int] | None = None
        self.rtp_seen = {"to_bridge": 0, "to_client": 0}
        self.dropped = {"to_bridge": 0, "to_client": 0}
        self._front: asyncio.DatagramTransport | None = None
        self._back: asyncio.DatagramTransport | None = None
        self.port = 0

    def _drop(self, way: str, data: bytes) -> bool:
        if not is_rtp(data):
            return False
        self.rtp_seen[way] += 1
        if getattr(self, way) and self.rtp_seen[way] % self.drop_every == 0:
            self.dropped[way] += 1
            return True
        return False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        relay = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                relay.client = addr
                if not relay._drop("to_bridge", data) and relay._back is not None:
                    relay._back.sendto(data)

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if relay.client and not relay._drop("to_client", data) and relay._front:
                    relay._front.sendto(data, relay.client)

        self._front, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        self._back, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.target)
        self.port = self._front.get_extra_info("sockname")[1]

    def close(self) -> None:
        for t in (self._front, self._back):
            if t is not None:
                t.close()


def bridge_candidate(sdp: str) -> tuple[str, int]:
    m = re.search(r"a=candidate:\S+ 1 udp \d+ (127\.0\.0\.1) (\d+) typ host", sdp)
    assert m, "no loopback host candidate in the answer"
    return m.group(1), int(m.group(2))


def point_at(sdp: str, port: int) -> str:
    """Rewrite the answer's loopback candidate(s) to the relay's port."""
    return re.sub(
        r"(a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 )\d+( typ host)", rf"\g<1>{port}\g<2>", sdp
    )
