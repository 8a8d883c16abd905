"""RTCP packets, sans-IO: bytes in, objects out, and back.

The bridge owns RTCP, both ways, on every leg (``rtc/rtp_session.py``); what it needs of the
wire format is here rather than in aiortc's private ``aiortc.rtp``:

* :class:`SenderReport`, :class:`ReceiverReport` (with their :class:`ReportBlock`),
  :class:`Sdes` and :class:`Bye`, what :func:`parse_rtcp` reads from a compound packet
  (RFC 3550 §6.4.1, §6.4.2, §6.5, §6.6). Other packet types in a compound (RTPFB, PSFB, XR,
  APP) are skipped, not refused.
* the one writer of each: :func:`report_block`, :func:`sender_report` and
  :func:`receiver_report`, a report's bytes from its fields, one ``struct`` pack each, for
  the compound a leg sends every second or so (``rtc/rtcp.py``), with no object between;
  ``bytes()`` of an :class:`Sdes` or a :class:`Bye`.

A malformed packet raises ``ValueError``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

_RTCP = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IIIIII")  # the second word: fraction lost << 24 | cumulative lost
_SR = struct.Struct("!BBHIQIII")  # the header, the sender's SSRC and its sender info
_RR = struct.Struct("!BBHI")  # the header and the receiver's SSRC
_SR_BODY = struct.Struct("!IQIII")

SR, RR, SDES, BYE = 200, 201, 202, 203
_REPORT_TYPES, _OTHER_TYPES = frozenset((SR, RR)), frozenset((SDES, BYE))
SDES_CNAME = 1


def _header(packet_type: int, count: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise ValueError("RTCP packet not a whole number of words")
    return _RTCP.pack(0x80 | count, packet_type, len(body) // 4) + body


def report_block(
    ssrc: int, fraction_lost: int, packets_lost: int, highest: int, jitter: int, lsr: int, dlsr: int
) -> bytes:
    """One reception report block's 24 octets (RFC 3550 §6.4.1; ``packets_lost`` clamped to
    its signed 24-bit field)."""
    if not 0 <= fraction_lost <= 0xFF:
        raise ValueError("RTCP fraction lost is one octet")
    lost = max(-0x800000, min(0x7FFFFF, packets_lost)) & 0xFFFFFF  # 24-bit signed
    return _BLOCK.pack(ssrc, fraction_lost << 24 | lost, highest, jitter, lsr, dlsr)


def sender_report(
    ssrc: int, ntp: int, rtp: int, packets: int, octets: int, blocks: bytes = b"", count: int = 0
) -> bytes:
    """A sender report (RFC 3550 §6.4.1) carrying ``count`` report blocks, ``blocks`` their
    octets (:func:`report_block`); the packet and octet counts wrap at 2^32 as §6.4.1 says."""
    words = 6 + len(blocks) // 4
    packets, octets = packets & 0xFFFFFFFF, octets & 0xFFFFFFFF
    return _SR.pack(0x80 | count, SR, words, ssrc, ntp, rtp, packets, octets) + blocks


def receiver_report(ssrc: int, blocks: bytes = b"", count: int = 0) -> bytes:
    """A receiver report (RFC 3550 §6.4.2) carrying ``count`` report blocks (``blocks``)."""
    return _RR.pack(0x80 | count, RR, 1 + len(blocks) // 4, ssrc) + blocks


@dataclass
class ReportBlock:
    """One reception report block (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int = 0
    packets_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    @classmethod
    def parse(cls, data: bytes, at: int) -> ReportBlock:
        ssrc, word, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, at)
        lost = word & 0xFFFFFF
        if lost & 0x800000:  # 24-bit signed
            lost -= 0x1000000
        return cls(ssrc, word >> 24, lost, highest, jitter, lsr, dlsr)


def _blocks(data: bytes, at: int, stop: int, count: int) -> list[ReportBlock]:
    """``count`` report blocks from ``data[at:]``, which end by ``stop``."""
    if stop < at + count * _BLOCK.size:
        raise ValueError("RTCP report blocks truncated")
    parse = ReportBlock.parse
    return [parse(data, at + i * _BLOCK.size) for i in range(count)]


@dataclass
class SenderReport:
    """RFC 3550 §6.4.1."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass
class ReceiverReport:
    """RFC 3550 §6.4.2."""

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass
class Sdes:
    """RFC 3550 §6.5: one chunk per source, each a list of ``(item type, value)``."""

    chunks: list[tuple[int, list[tuple[int, bytes]]]] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = b""
        for ssrc, items in self.chunks:
            chunk = ssrc.to_bytes(4, "big")
            chunk += b"".join(bytes([kind, len(value)]) + value for kind, value in items)
            chunk += bytes(4 - len(chunk) % 4)  # the null item ending the chunk, then padding
            body += chunk
        return _header(SDES, len(self.chunks), body)


@dataclass
class Bye:
    """RFC 3550 §6.6."""

    sources: list[int] = field(default_factory=list)
    reason: bytes = b""

    def __bytes__(self) -> bytes:
        body = b"".join(s.to_bytes(4, "big") for s in self.sources)
        if self.reason:
            reason = bytes([len(self.reason)]) + self.reason
            body += reason + bytes(-len(reason) % 4)
        return _header(BYE, len(self.sources), body)


Rtcp = SenderReport | ReceiverReport | Sdes | Bye


def _sdes(body: bytes, count: int) -> Sdes:
    chunks, at = [], 0
    for _ in range(count):
        if at + 4 > len(body):
            raise ValueError("RTCP SDES chunk truncated")
        ssrc, at = int.from_bytes(body[at : at + 4], "big"), at + 4
        items = []
        while at < len(body) and body[at]:
            if at + 2 > len(body) or at + 2 + body[at + 1] > len(body):
                raise ValueError("RTCP SDES item truncated")
            items.append((body[at], bytes(body[at + 2 : at + 2 + body[at + 1]])))
            at += 2 + body[at + 1]
        at += 4 - at % 4  # the null item, then padding to the next word
        chunks.append((ssrc, items))
    return Sdes(chunks)


def _report(packet_type: int, count: int, data: bytes, start: int, stop: int) -> Rtcp:
    """An SR or RR whose body is ``data[start:stop]``, read in place."""
    if packet_type == SR:
        if stop - start < 24:
            raise ValueError("RTCP SR truncated")
        ssrc, ntp, rtp, packets, octets = _SR_BODY.unpack_from(data, start)
        return SenderReport(ssrc, ntp, rtp, packets, octets, _blocks(data, start + 24, stop, count))
    if stop - start < 4:
        raise ValueError("RTCP RR truncated")
    ssrc = int.from_bytes(data[start : start + 4], "big")
    return ReceiverReport(ssrc, _blocks(data, start + 4, stop, count))


def _one(packet_type: int, count: int, body: bytes) -> Rtcp:
    """An SDES or BYE packet whose body is ``body``."""
    if packet_type == SDES:
        return _sdes(body, count)
    if len(body) < 4 * count:
        raise ValueError("RTCP BYE truncated")
    sources = [int.from_bytes(body[4 * i : 4 * i + 4], "big") for i in range(count)]
    rest = body[4 * count :]
    return Bye(sources, bytes(rest[1 : 1 + rest[0]]) if rest else b"")


def parse_rtcp(data: bytes) -> list[Rtcp]:
    """The SR, RR, SDES and BYE packets of a compound RTCP packet, in order (the reports read
    in place; the packets it skips are not copied)."""
    packets: list[Rtcp] = []
    at, n = 0, len(data)
    while at < n:
        if at + 4 > n:
            raise ValueError("RTCP header truncated")
        first, packet_type, words = _RTCP.unpack_from(data, at)
        if first >> 6 != 2:
            raise ValueError("RTCP version is not 2")
        start, end = at + 4, at + 4 + 4 * words
        if end > n:
            raise ValueError("RTCP packet truncated")
        stop = end
        if first & 0x20:  # padding (§6.4.1): only the last packet of a compound may have it
            if end == start or data[end - 1] > end - start:
                raise ValueError("RTCP padding longer than the packet")
            stop = end - data[end - 1]
        if packet_type in _REPORT_TYPES:
            packets.append(_report(packet_type, first & 0x1F, data, start, stop))
        elif packet_type in _OTHER_TYPES:
            packets.append(_one(packet_type, first & 0x1F, bytes(data[start:stop])))
        at = end
    return packets
