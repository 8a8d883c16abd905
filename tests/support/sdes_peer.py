"""A second SDES-SRTP endpoint for tests and benches, written here from the RFCs (RFC 3550,
3711, 4568, 4733, 7587) with libsrtp (``pylibsrtp``) and libopus, on a loopback UDP socket: it
plays Meta's side of an SDES call (its SDP as Meta's SIP documentation shows it), and, like
Meta, sends no RTP before the business's first packet has arrived (``fakes.common.BusinessFirst``,
the gate the Graph road's fake peer sends through too)."""

from __future__ import annotations

import asyncio
import base64
import secrets
import struct
import time
from typing import Any

import numpy as np
import pylibsrtp
from aiortc.rtp import RtcpPacket, RtcpReceiverInfo, RtcpRrPacket, RtcpSrPacket

from bridge.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from bridge.audio.opus import OpusDecoder, OpusEncoder

from ..fakes.common import BusinessFirst

SUITE = "AES_CM_128_HMAC_SHA1_80"
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
_HEADER = struct.Struct("!BBHII")
G711_PT = {"PCMU": 0, "PCMA": 8}
"""G.711's static payload types (RFC 3551 §6), as Meta offers and answers them."""
_G711_DECODE = {0: ulaw_decode, 8: alaw_decode}


def tone(freq: float, amplitude: float, start: int, samples: int, rate: int = 16_000) -> np.ndarray:
    t = (np.arange(samples) + start) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype(np.int16)


class SdesEndpoint(asyncio.DatagramProtocol):
    """Meta's side: offers (or answers) RTP/SAVP with its own key, sends a tone or events,
    and keeps what arrives (decoded Opus, RFC 4733 events, RTCP)."""

    def __init__(self, key: bytes | None = None, suite: str = SUITE) -> None:
        self.key = key or secrets.token_bytes(30)
        self.suite = suite
        self.ssrc = secrets.randbits(32)
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.tx: pylibsrtp.Session | None = None
        self.rx: pylibsrtp.Session | None = None
        self.to: tuple[str, int] | None = None
        self.decoder = OpusDecoder(16_000)
        self.packets: list[tuple[float, int, int, int, bytes]] = []
        """(arrival, payload type, seq, timestamp, payload) of each RTP packet received."""
        self.marked: set[int] = set()
        """Sequence numbers of the packets received with the marker bit."""
        self.pcm: list[np.ndarray] = []
        """Decoded Opus received (16 kHz)."""
        self.g711: list[np.ndarray] = []
        """Decoded G.711 received (8 kHz), either law by its payload type."""
        self.rtcp: list[Any] = []
        self.auth_failed = 0
        self.gate = BusinessFirst()
        """Meta sends nothing before the business's first RTP packet (as on Graph calls).
        A source that is not Meta waiting for the bridge (a forger) opens it itself."""
        self.seq = secrets.randbelow(0x8000)
        self.ts = secrets.randbits(32)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        self.port = self.transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def sdp(
        self,
        crypto: str | None = None,
        proto: str = "RTP/SAVP",
        codecs: tuple[str, ...] = ("opus",),
    ) -> str:
        """Meta's SDP naming ``codecs`` in that order (``opus`` on 111; ``PCMA``/``PCMU`` on
        their static payload types, as a number opted in to G.711 offers or answers them),
        with the lines Meta's SDES SDP carries beside them: the BUNDLE group and ``mid``, an
        ``msid``, and ``a=rtcp:9 IN IP4 0.0.0.0`` with ``a=rtcp-mux`` (RTCP on the RTP port:
        the ``a=rtcp`` line names no address to send to)."""
        inline = base64.b64encode(self.key).decode()
        crypto = crypto if crypto is not None else f"a=crypto:1 {self.suite} inline:{inline}"
        pts = [str(G711_PT.get(c, 111)) for c in codecs]
        maps: list[str] = []
        for c in codecs:
            if c == "opus":
                maps += [
                    "a=rtpmap:111 opus/48000/2",
                    "a=fmtp:111 maxaveragebitrate=20000;maxplaybackrate=16000;"
                    "sprop-maxcapturerate=16000;useinbandfec=1",
                ]
            else:
                maps.append(f"a=rtpmap:{G711_PT[c]} {c}/8000")
        lines = [
            "v=0",
            "o=- 1 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "a=group:BUNDLE audio",
            f"m=audio {self.port} {proto} {' '.join(pts)} 126",
            *maps,
            "a=rtpmap:126 telephone-event/8000",
            "a=ptime:20",
            "a=mid:audio",
            "a=msid:WhatsAppStream1 WhatsAppTrack1",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=rtcp-mux",
            crypto,
            f"a=ssrc:{self.ssrc} cname:WhatsAppAudioStream1",
        ]
        return "\r\n".join(lines) + "\r\n"

    def take(self, sdp: str) -> None:
        """The bridge's SDP: its key, address and port."""
        crypto = next(ln for ln in sdp.splitlines() if ln.startswith("a=crypto:"))
        theirs = base64.b64decode(crypto.split("inline:")[1].split("|")[0].strip())
        m = next(ln for ln in sdp.splitlines() if ln.startswith("m=audio"))
        c = [ln for ln in sdp.splitlines() if ln.startswith("c=")][-1]
        self.to = (c.split()[-1].strip(), int(m.split()[1]))
        policy = pylibsrtp.Policy
        self.tx = pylibsrtp.Session(
            policy(key=self.key, ssrc_type=policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE)
        )
        self.rx = pylibsrtp.Session(
            policy(key=theirs, ssrc_type=policy.SSRC_ANY_INBOUND, srtp_profile=PROFILE)
        )

    # -- receiving
    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.rx is None:
            return
        try:
            if 192 <= data[1] <= 223:
                self.rtcp.extend(RtcpPacket.parse(self.rx.unprotect_rtcp(data)))
                return
            plain = self.rx.unprotect(data)
        except pylibsrtp.Error:
            self.auth_failed += 1
            return
        now = time.monotonic()
        self.gate.heard()
        _, second, seq, ts, _ = _HEADER.unpack_from(plain)
        pt = second & 0x7F
        if second & 0x80:
            self.marked.add(seq)
        payload = plain[12 + 4 * (plain[0] & 0x0F) :]
        self.packets.append((now, pt, seq, ts, payload))
        if pt == 111:
            self.pcm.append(self.decoder.decode(payload))
        elif pt in _G711_DECODE:
            self.g711.append(_G711_DECODE[pt](payload))

    def heard(self) -> np.ndarray:
        return np.concatenate(self.pcm) if self.pcm else np.zeros(0, np.int16)

    def events(self) -> list[tuple[int, int, bool, int]]:
        """(timestamp, event, end, duration) of each telephone-event packet received."""
        return [
            (ts, p[0], bool(p[1] & 0x80), int.from_bytes(p[2:4], "big"))
            for _, pt, _, ts, p in self.packets
            if pt == 126
        ]

    # -- sending
    def send_rtp(
        self, payload: bytes, pt: int = 111, marker: bool = False, ts: int | None = None
    ) -> None:
        assert self.tx is not None and self.transport is not None and self.to is not None
        if not self.gate.may_send():  # Meta waits for the business's first packet
            return
        header = _HEADER.pack(
            0x80, (0x80 if marker else 0) | pt, self.seq, self.ts if ts is None else ts, self.ssrc
        )
        self.seq = (self.seq + 1) & 0xFFFF
        self.transport.sendto(self.tx.protect(header + payload), self.to)

    async def play_tone(self, freq: float, amplitude: float, seconds: float) -> None:
        """Opus frames of a tone, one every 20 ms."""
        enc = OpusEncoder(
            16_000, bitrate=20_000, complexity=6, fec=True, expected_loss=0, dtx=False
        )
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(int(seconds * 50)):
            self.send_rtp(enc.encode(tone(freq, amplitude, i * 320, 320)))
            self.ts = (self.ts + 960) & 0xFFFFFFFF
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))

    async def play_g711(self, codec: str, freq: float, amplitude: float, seconds: float) -> None:
        """G.711 frames of an 8 kHz tone (160 bytes, 20 ms each), one every 20 ms."""
        law = alaw_encode if codec == "PCMA" else ulaw_encode
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(int(seconds * 50)):
            self.send_rtp(law(tone(freq, amplitude, i * 160, 160, 8000)), pt=G711_PT[codec])
            self.ts = (self.ts + 160) & 0xFFFFFFFF
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))

    async def press(self, event: int, ms: int = 100) -> None:
        """One RFC 4733 key press (packets every 20 ms, three end packets)."""
        ts = self.ts
        n = ms // 20
        for i in range(n + 2):
            end = i >= n - 1
            duration = 8 * ms if end else (i + 1) * 160
            payload = bytes([event, (0x80 if end else 0) | 10]) + duration.to_bytes(2, "big")
            self.send_rtp(payload, pt=126, marker=i == 0, ts=ts)
            await asyncio.sleep(0.02)

    def send_rr(self, about: int, lsr: int = 0) -> None:
        assert self.tx is not None and self.transport is not None and self.to is not None
        block = RtcpReceiverInfo(
            ssrc=about,
            fraction_lost=64,
            packets_lost=3,
            highest_sequence=1000,
            jitter=480,
            lsr=lsr,
            dlsr=0,
        )
        self.transport.sendto(
            self.tx.protect_rtcp(bytes(RtcpRrPacket(self.ssrc, [block]))), self.to
        )

    def sender_reports(self) -> list[RtcpSrPacket]:
        return [p for p in self.rtcp if isinstance(p, RtcpSrPacket)]
