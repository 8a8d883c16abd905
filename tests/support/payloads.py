"""Opus payloads as they cross the wire, to prove forwarding bit-exact.

* :class:`SrtpTap`: the SRTP datagrams of an SDES leg's UDP socket, both ways, taken at the
  socket (the bytes the kernel hands over and takes) and decrypted by the test's own libsrtp
  sessions with the keys both SDPs announce (``a=crypto``, RFC 4568): what the far end
  really sent, and what it really got, whatever the bridge does in between.
* :class:`RtcPayloads`: an aiortc peer's Opus payloads, sent (plaintext before SRTP) and
  received (after SRTP), keyed by RTP sequence number.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pylibsrtp

from .udp_relay import is_rtp


def sdes_key(sdp: str) -> bytes:
    """The master key || salt of an SDP's first ``a=crypto`` line."""
    m = re.search(r"a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:([A-Za-z0-9+/=]+)", sdp)
    assert m, "no AES_CM_128_HMAC_SHA1_80 a=crypto in the SDP"
    return base64.b64decode(m.group(1))


def _session(key: bytes) -> pylibsrtp.Session:
    return pylibsrtp.Session(
        pylibsrtp.Policy(
            key=key,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
    )


def _payload(plain: bytes) -> tuple[int, int, bytes]:
    """(payload type, sequence number, payload) of a plaintext RTP packet."""
    cc = plain[0] & 0x0F
    start = 12 + 4 * cc
    if plain[0] & 0x10:  # a header extension (RFC 3550 §5.3.1)
        start += 4 + 4 * int.from_bytes(plain[start + 2 : start + 4], "big")
    end = len(plain) - (plain[-1] if plain[0] & 0x20 else 0)
    return plain[1] & 0x7F, int.from_bytes(plain[2:4], "big"), plain[start:end]


class SrtpTap:
    """Both ways of one ``bridge.rtc.srtpudp.RtpSocket`` (module docstring): ``came`` is
    what the far end sent us, ``went`` what we sent it, each ``seq → Opus payload``."""

    def __init__(self, sock: Any, far_key: bytes, our_key: bytes, opus_pt: int = 111) -> None:
        self.came: dict[int, bytes] = {}
        self.went: dict[int, bytes] = {}
        self.opus_pt = opus_pt
        rx, tx = _session(far_key), _session(our_key)
        transport = sock.transport
        sendto = transport.sendto

        def tap_out(data: bytes, addr: Any = None) -> None:
            self._keep(tx, data, self.went)
            sendto(data, addr)

        transport.sendto = tap_out
        # A polled socket (``rtc/udp_poll.py``) hands each datagram, with its arrival, to the
        # handler it was opened with, bound then: the tap goes in front of that one; the
        # loop's transport calls ``datagram_received``.
        timed = getattr(transport, "_timed", None)
        if timed is not None:

            def tap_timed(data: bytes, addr: Any, at: float) -> None:
                self._keep(rx, data, self.came)
                timed(data, addr, at)

            transport._timed = tap_timed
        else:
            received = sock.datagram_received

            def tap_in(data: bytes, addr: Any) -> None:
                self._keep(rx, data, self.came)
                received(data, addr)

            sock.datagram_received = tap_in

    def _keep(self, session: pylibsrtp.Session, data: bytes, into: dict[int, bytes]) -> None:
        if not is_rtp(data):
            return
        try:
            pt, seq, payload = _payload(session.unprotect(data))
        except pylibsrtp.Error:
            return
        if pt == self.opus_pt:
            into[seq] = payload


class RtcPayloads:
    """An aiortc peer connection's Opus payloads both ways, once it has its transceiver."""

    def __init__(self, pc: Any) -> None:
        self.sent: dict[int, bytes] = {}
        self.received: dict[int, bytes] = {}
        transceiver = pc.getTransceivers()[0]
        dtls, receiver = transceiver.sender.transport, transceiver.receiver
        send_rtp, handle = dtls._send_rtp, receiver._handle_rtp_packet

        async def keep_sent(data: bytes) -> None:
            if is_rtp(data):
                _, seq, payload = _payload(data)
                self.sent[seq] = payload
            await send_rtp(data)

        async def keep_received(packet: Any, arrival_time_ms: int) -> None:
            if packet.payload:
                self.received[packet.sequence_number] = packet.payload
            await handle(packet, arrival_time_ms=arrival_time_ms)

        dtls._send_rtp = keep_sent
        receiver._handle_rtp_packet = keep_received


def forwarded_runs(source: dict[int, bytes], sink: dict[int, bytes]) -> tuple[list[int], int, int]:
    """How ``source``'s packets (in the order sent) reached ``sink`` byte for byte: the length
    of each run at one constant sequence-number offset, in order, how many after the first
    forwarded one are not in ``sink`` at all, and how many came before it (sent while the
    bridge still encoded: the pass-through begins a few packets in, more on a loaded host).
    A forwarder maps numbers and never reorders or rewrites; it starts a new run, mapped on
    from where its own stream is, after it went back to encoding meanwhile
    (``rtc/passthrough.py``: a source quiet for 250 ms, a starved host). A run that maps
    backwards (a number the far end got already) is a defect: :class:`AssertionError`."""
    where: dict[bytes, list[int]] = {}
    for seq, payload in sink.items():
        where.setdefault(payload, []).append(seq)
    runs: list[int] = []
    missing = 0
    offset: int | None = None
    last_out: int | None = None
    leading = 0
    for seq, payload in source.items():
        found = where.get(payload)
        if not found:
            if last_out is None:
                leading += 1
            else:
                missing += 1
            continue
        same = [o for o in found if offset is not None and (o - seq) & 0xFFFF == offset]
        if same:
            out = same[0]
        else:  # a new run: the copy that comes next after the last one forwarded
            ahead = [o for o in found if last_out is None or (o - last_out) & 0xFFFF < 0x8000]
            out = min(
                ahead or found, key=lambda o: 0 if last_out is None else (o - last_out) & 0xFFFF
            )
        if same:  # the run goes on (an offset exists once a run does)
            runs[-1] += 1
        else:
            assert last_out is None or 0 < (out - last_out) & 0xFFFF < 0x8000, (
                f"a new run maps packet {seq} back to {out}, at or before {last_out}"
            )
            offset = (out - seq) & 0xFFFF
            runs.append(1)
        last_out = out
    return runs, missing, leading
