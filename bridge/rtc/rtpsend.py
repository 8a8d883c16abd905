"""The bridge's own RTP send path for audio: packetise → SRTP protect → send.

aiortc's ``RTCRtpSender`` does this per 20 ms packet, in Python: its ``_run_rtp`` loop awaits
the track, hands the packet to its encoder's ``pack`` (a time-base conversion), builds an
``RtpPacket``, reads the wall clock through ``datetime`` twice (abs-send-time, which audio never
negotiates, and the sender report's NTP time), sets the header extensions and serialises them
through ``HeaderExtensionsMap``, keeps the packet object in a NACK history (aiortc offers no
NACK for audio), sets the marker bit on every packet, then awaits ``_send_rtp`` (SRTP, ICE).
The bridge's audio senders (:class:`~bridge.rtc.tracks.OpusBusTrack`) already hold the finished
Opus payload and its RTP time, so :class:`LeanSender` replaces that loop for them and keeps
aiortc for ICE, DTLS, the session and RTCP:

* :class:`RtpStream` is one SSRC's packetiser and the one owner of its sequence numbers: the
  bridge's encoded packets, packets forwarded from another leg (``rtc/passthrough.py``, which
  keep the source's gaps) and RFC 4733 events (``rtc/rfc4733.py``) all take their numbers
  here. It builds the 12-byte header with ``struct`` and appends the header extension block,
  built once at start (the ``mid`` aiortc would send: constant for the stream). The marker bit
  follows RFC 3551 §4.1 / RFC 7587 §4.1: set on the first packet of the stream and on the first
  packet of a talkspurt (RTP time moved on by more than a frame with no sequence gap: the
  sender sent nothing meanwhile), clear otherwise; events set it themselves (RFC 4733 §2.5.1).
* :class:`LeanSender` runs the loop in place of aiortc's ``_run_rtp`` (an instance attribute,
  so only that sender is affected): ``track.recv()`` → :meth:`RtpStream.packetise` →
  ``RTCDtlsTransport._tx_srtp.protect`` → the ICE transport's ``_send``. After each packet it
  writes the counters aiortc's own ``_run_rtcp`` builds its sender reports from (packet and
  octet counts, and the NTP/RTP time pair of the latest audio packet: RFC 3550 §6.4.1), so the
  reports, ``getStats`` and the round-trip time stay aiortc's and stay right. Events count as
  packets and octets but never move the time pair: their RTP time is the event's start.
  It also hands each receiver report block about its stream to ``on_report`` as the report
  arrives (before aiortc's own handling), so the encoder's protection follows the far end's
  loss at once rather than at the next statistics sample (``rtc/protection.py``).

Everything of aiortc's used here is reached through ``rtc/aiortc_seam.py``, which checks it at
import (and again per sender), so an aiortc release that renames it fails loudly instead of
sending nothing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
import time
from collections.abc import Callable
from typing import Any

from aiortc import MediaStreamError, RTCRtpSender

from . import aiortc_seam as seam

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")
_NTP_EPOCH = 2_208_988_800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""
OPUS_FRAME_TICKS = 960
"""20 ms on Opus' 48 kHz RTP clock (RFC 7587 §4.1)."""

SENDER_FIELDS = seam.SENDER_FIELDS


def random_sequence_number() -> int:
    """A random first sequence number in the lower half (as aiortc and libwebrtc: SRTP's
    rollover counter is then never guessed wrong at the start)."""
    return secrets.randbelow(0x8000)


def ntp_time(unix: float) -> int:
    """A Unix time as a 64-bit NTP timestamp (RFC 3550 §4)."""
    return int((unix + _NTP_EPOCH) * 4294967296.0)


def header_extension(extensions_map: seam.HeaderExtensionsMap, mid: str | None) -> bytes:
    """The header extension block aiortc writes on audio (the ``mid``, when negotiated):
    profile, length and elements, ready to follow the fixed header; ``b""`` when none."""
    values = seam.HeaderExtensions()
    values.mid = mid
    profile, value = extensions_map.set(values)
    if not value:
        return b""
    return struct.pack("!HH", profile, len(value) >> 2) + value


class RtpStream:
    """One SSRC's RTP packets: numbers, RTP time, marker and counts (module docstring).

    RTP times given to it are the sender's own (from 0); the stream adds a random origin
    (RFC 3550 §5.1). Sequence numbers are the stream's unless a packet brings its own (a
    forwarded one, mapped onto this stream: see ``rtc/passthrough.py``).
    """

    def __init__(
        self,
        ssrc: int,
        payload_type: int = 111,
        *,
        frame_ticks: int = OPUS_FRAME_TICKS,
        first_seq: int | None = None,
        origin: int | None = None,
    ) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.frame_ticks = frame_ticks
        self.next_seq = random_sequence_number() if first_seq is None else first_seq
        self.numbered = 0
        """Packets this stream gave a number itself (encoded audio, RFC 4733 events)."""
        """The number the next packet gets (unless it brings its own)."""
        self.origin = secrets.randbits(32) if origin is None else origin
        self.extension = b""
        """The header extension block (see :func:`header_extension`), set at start."""
        self.packets = 0
        self.octets = 0
        """Payload octets sent (RFC 3550 §6.4.1: no headers, no padding)."""
        self.audio_packets = 0
        self.last_pts: int | None = None
        """The sender's RTP time of the latest (newest) audio packet."""
        self.markers = 0

    def packetise(
        self,
        payload: bytes,
        pts: int,
        seq: int | None = None,
        *,
        marker: bool | None = None,
        payload_type: int | None = None,
        audio_type: int | None = None,
    ) -> bytes:
        """One RTP packet (plaintext). ``marker=None`` (audio): the stream decides (first
        packet, or first of a talkspurt); an event gives its own and ``payload_type``. Audio
        goes out as the stream's payload type, or ``audio_type`` (RED around it)."""
        if seq is None:
            seq = self.next_seq
            self.numbered += 1
        if payload_type is None:  # audio
            last = self.last_pts
            step = 0 if last is None else (pts - last) & 0xFFFFFFFF
            if marker is None:  # the first packet, or the first after a pause in sending
                marker = last is None or (
                    seq == self.next_seq and self.frame_ticks < step < 0x80000000
                )
            if step < 0x80000000:  # not an older, reordered packet
                self.last_pts = pts & 0xFFFFFFFF
            self.audio_packets += 1
            payload_type = self.payload_type if audio_type is None else audio_type
        if marker:
            self.markers += 1
        # Later packets continue after the highest number sent (a reordered packet, forwarded
        # with a lower number, does not move the count back).
        if (seq - self.next_seq) & 0x8000 == 0:
            self.next_seq = (seq + 1) & 0xFFFF
        self.packets += 1
        self.octets += len(payload)
        ext = self.extension
        header = _HEADER.pack(
            0x90 if ext else 0x80,
            (0x80 if marker else 0) | payload_type,
            seq & 0xFFFF,
            (pts + self.origin) & 0xFFFFFFFF,
            self.ssrc,
        )
        return header + ext + payload

    def timestamp(self, pts: int) -> int:
        """The on-the-wire RTP timestamp of the sender's RTP time ``pts``."""
        return (pts + self.origin) & 0xFFFFFFFF


class LeanSender:
    """Sends an audio ``RTCRtpSender``'s track through an :class:`RtpStream` in place of
    aiortc's ``_run_rtp`` (module docstring). Install before the connection starts the sender
    (i.e. before negotiation completes); the track's ``recv()`` must return pre-encoded
    packets with ``data`` (Opus), ``pts`` (48 kHz RTP time from 0) and ``seq`` (``None``, or
    the stream sequence number a forwarded packet was mapped to)."""

    def __init__(self, sender: RTCRtpSender) -> None:
        ssrc = seam.require_sender(sender)
        self.sender: Any = sender
        self.stream = RtpStream(ssrc)
        self.dtls: Any = None
        self._send: Any = None
        self.running = False
        seam.take_rtp_loop(sender, self._run)
        self.on_report: Callable[[float], None] | None = None
        """Called with the loss fraction of each receiver report block about this stream."""

        def on_block(block: Any) -> None:
            if self.on_report is not None and block.ssrc == ssrc:
                self.on_report(block.fraction_lost / 256)  # 8-bit fixed point

        seam.watch_reports(sender, on_block)

    async def _run(self, codec: Any) -> None:
        """aiortc's ``RTCRtpSender.send`` starts this as the sender's RTP task."""
        sender = self.sender
        if codec.mimeType.lower() != "audio/opus":
            log.error("lean RTP sender: negotiated %s, not Opus; aiortc sends", codec.mimeType)
            await seam.ORIGINAL.run_rtp(sender, codec)
            return
        # aiortc's stop() waits for both events: set them whatever happens below.
        started, exited = seam.sender_events(sender)
        started.set()
        track = None
        try:
            self.stream.payload_type = codec.payloadType
            self.stream.extension = header_extension(*seam.sender_header(sender))
            dtls = sender.transport
            seam.require_dtls(dtls, send=True)
            self.dtls = dtls
            self._send = datagram_sender(dtls)
            self.running = True
            while True:
                track = sender.track
                if track is None:
                    await asyncio.sleep(0.02)
                    continue
                self.send_encoded(await track.recv())
        except (asyncio.CancelledError, ConnectionError, MediaStreamError):
            pass
        except Exception:  # loudly, but aiortc's stop() must still find rtp_exited set
            log.exception("lean RTP sender failed")
        finally:
            self.running = False
            if track is not None:
                track.stop()
            exited.set()

    def send_encoded(self, packet: Any) -> None:
        """One packet of the track (``rtc/tracks.py``'s ``EncodedPacket``: encoded here, or
        forwarded from another leg's receive callback), sent now."""
        self.send_now(
            packet.data,
            packet.pts,
            packet.seq,
            marker=packet.marker,
            audio_type=packet.payload_type,
        )

    async def send(self, *args: Any, **kwargs: Any) -> None:
        """:meth:`send_now` for the sender's own task and the RFC 4733 sender, which await
        their sends (the SDES leg's sender is a coroutine)."""
        self.send_now(*args, **kwargs)

    def send_now(
        self,
        payload: bytes,
        pts: int,
        seq: int | None = None,
        *,
        marker: bool | None = None,
        payload_type: int | None = None,
        audio_type: int | None = None,
    ) -> None:
        """Packetise, protect and send one packet of this stream (see
        :meth:`RtpStream.packetise`), from the sender's task or a plain callback (a parked
        leg's keepalive: no task to wake); ``ConnectionError`` when DTLS is not (or no
        longer) connected."""
        dtls = self.dtls
        if dtls is None or not seam.connected(dtls):
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        stream = self.stream
        data = seam.tx_srtp(dtls).protect(
            stream.packetise(
                payload, pts, seq, marker=marker, payload_type=payload_type, audio_type=audio_type
            )
        )
        self._send(data)
        seam.count_sent(dtls, len(data))
        # What aiortc's _run_rtcp writes its sender reports from (and getStats reads).
        if payload_type is None and stream.last_pts == pts & 0xFFFFFFFF:  # the newest audio
            ntp, rtp = ntp_time(time.time()), (stream.last_pts + stream.origin) & 0xFFFFFFFF
            seam.report_sent(self.sender, stream.packets, stream.octets, ntp, rtp)
        else:
            seam.report_sent(self.sender, stream.packets, stream.octets, None, None)


def datagram_sender(dtls: Any) -> Callable[[bytes], None]:
    """Sends a datagram on the nominated pair of the ICE connection under ``dtls``: what
    aioice's ``Connection.sendto`` does through three coroutines a packet, to
    ``StunProtocol.send_data`` (every aioice pair's protocol; a TURN pair's transport queues
    the relayed send itself), as one call. ``ConnectionError`` with no pair, as aioice's."""
    pairs = seam.nominated_pairs(dtls)

    def send(data: bytes) -> None:
        pair = pairs.get(1)
        if pair is None:
            raise ConnectionError("Cannot send data, not connected")
        pair.protocol.transport.sendto(data, pair.remote_addr)

    return send


def install(sender: RTCRtpSender) -> LeanSender:
    """Give an audio sender whose track sends pre-encoded Opus the lean path; the one hook
    each WebRTC leg calls (``rtc/session.py``, ``engines/cloudapi/peer.py``)."""
    return LeanSender(sender)
