"""The wire of a DTLS leg's RTP: aiortc and aioice give ICE, DTLS and the SRTP keys; the
bridge's :class:`~bridge.rtc.rtp_leg.RtpLeg` does the rest.

An ``RTCPeerConnection`` still negotiates, and once DTLS is up starts each transceiver's
sender and receiver through their public ``send(parameters)`` and ``receive(parameters)``.
:class:`DtlsSrtp` takes those two calls on the leg's audio transceiver, so aiortc's sender and
receiver never start (no tasks, jitter buffer, decoder thread or statistics of theirs):

* **in** (:meth:`DtlsSrtp.datagram`, aioice's datagram callback of this connection alone):
  RFC 7983 demultiplexing by the first byte; SRTP and SRTCP unprotected and handed to the leg
  synchronously (RTCP told apart by RFC 5761 §4), everything else (DTLS, or anything before
  the keys) on to aioice's queue as before;
* **out** (:meth:`DtlsSrtp.send_rtp`, :meth:`DtlsSrtp.send_rtcp`): protected and sent straight
  to the nominated pair's socket, one call (aioice's ``sendto`` is three coroutines a packet);
* while the leg is parked (:meth:`DtlsSrtp.batch_reads`), its sockets are read in batches.

aiortc's and aioice's internals are reached through ``rtc/aiortc_seam.py`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pylibsrtp

from ..tasks import TaskSet
from . import aiortc_seam as seam
from .rtp_leg import RtpLeg
from .rtpsend import mid_extension
from .srtpudp import lean_srtp
from .udp_poll import PolledTransport

log = logging.getLogger(__name__)

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
AUDIO_CODECS = {"audio/opus": "opus", "audio/pcmu": "PCMU", "audio/pcma": "PCMA"}
"""What a leg's session receives and sends, by aiortc's MIME type: Opus, or G.711 where the far
end negotiated it (Meta's ``audio.additional_codecs``)."""


class DtlsSrtp:
    """The wire of one DTLS leg's RTP on its ICE connection (module docstring): ``leg``'s
    from now on."""

    def __init__(self, leg: RtpLeg, transceiver: Any, tasks: TaskSet, name: str) -> None:
        self.leg = leg
        leg.wire = self
        self.name = name
        self._tasks = tasks
        self._dtls: Any = None
        self._connection: Any = None
        self._aioice: Callable[[bytes, int], None] | None = None
        self._pairs: dict[int, Any] = {}
        self._pair: Any = None
        self._remote_addr: tuple[Any, ...] = ()
        """The nominated pair last sent on, and its remote address (aioice's ``remote_addr``
        builds a new tuple on every read)."""
        self._dtls_up = False
        """Whether the DTLS transport is connected, kept from its ``statechange`` events (its
        ``state`` formats an enum into a string on every read: once per packet)."""
        self._rx: Any = None
        self._tx: Any = None
        """The transport's SRTP sessions once its keys are set (``tx`` while it is connected),
        kept here: each packet then touches no transport object on its way."""
        self._closed = False
        self._batched = False
        """Whether the connection's sockets are to be read in batches (:meth:`batch_reads`)."""
        self.rtcp_sent = self.rtcp_received = 0
        self.auth_failed = 0
        """SRTP/SRTCP packets that failed authentication or replay protection (dropped)."""
        sender, receiver = transceiver.sender, transceiver.receiver

        async def send(parameters: Any) -> None:  # aiortc's RTCRtpSender.send, on this sender
            if self._closed:
                return  # the leg closed while DTLS came up: nothing starts, aiortc's neither
            self.leg.session.set_identity(parameters.rtcp.ssrc, parameters.rtcp.cname)
            self._start_sending(sender.transport, parameters)

        async def receive(parameters: Any) -> None:  # aiortc's RTCRtpReceiver.receive
            if not self._closed:
                self._start_receiving(receiver.transport, parameters)

        sender.send = send
        receiver.receive = receive

    # -- starting (from aiortc's connect, once DTLS is up)
    def _attach(self, dtls: Any) -> bool:
        if self._dtls is not None:
            return self._dtls is dtls
        if self._closed or self._tasks.closed:
            return False
        connection = seam.ice_connection(dtls.transport)
        if connection is None:
            raise seam.SeamError("aiortc's RTCIceTransport has no aioice connection")
        aioice_path = seam.take_datagrams(connection, self.datagram)
        if aioice_path is None:
            log.warning("%s: the ICE connection's datagrams are taken already", self.name)
            return False
        self._dtls, self._connection, self._aioice = dtls, connection, aioice_path
        self._pairs = seam.nominated(connection)
        self._dtls_up = dtls.state == "connected"
        dtls.on("statechange", self._dtls_state_changed)
        if self._batched:
            self._batch(True)
        return True

    def batch_reads(self, on: bool) -> None:
        """Read the connection's sockets in batches (a parked leg: ``rtc/udp_poll.py``) from
        now on, or once ICE and DTLS are up; ``False``: as they come again."""
        if on != self._batched:
            self._batched = on
            if self._connection is not None:
                self._batch(on)

    def _batch(self, on: bool) -> None:
        for transport in seam.transports(self._connection):
            if isinstance(transport, PolledTransport):
                transport.batch(on)

    def _dtls_state_changed(self) -> None:
        dtls = self._dtls
        self._dtls_up = dtls is not None and dtls.state == "connected"
        if not self._dtls_up:
            self._tx = None

    def _start_receiving(self, dtls: Any, parameters: Any) -> None:
        if not self._attach(dtls):
            return
        ours = self.leg.codec  # the codec the leg was made for (its track's, its receiver's)
        audio = [c for c in parameters.codecs if AUDIO_CODECS.get(c.mimeType.lower()) == ours]
        if audio:
            self.leg.session.use_codec(ours, audio[0].payloadType)
        else:
            self.leg.session.audio_pt = -1  # no payload type matches
            what = "Opus" if ours == "opus" else ours
            log.warning("%s: no %s negotiated; its audio is not received", self.name, what)
        self.leg.rtcp_schedule.start()

    def _start_sending(self, dtls: Any, parameters: Any) -> None:
        track, sender = self.leg.track, self.leg.sender
        if not self._attach(dtls) or track is None or sender.running:
            return
        codec = parameters.codecs[0] if parameters.codecs else None
        ours = str(track.codec)  # what the track encodes (``OpusBusTrack``)
        if codec is None or AUDIO_CODECS.get(codec.mimeType.lower()) != ours:
            what = codec.mimeType if codec is not None else "nothing"
            name = "Opus" if ours == "opus" else ours
            log.warning("%s: negotiated %s, not %s: nothing is sent", self.name, what, name)
            return
        self.leg.session.use_codec(ours, codec.payloadType)
        stream = self.leg.session.stream
        ids = [e.id for e in parameters.headerExtensions if e.uri == MID_URI]
        stream.extension = mid_extension(ids[0], parameters.muxId) if ids else b""
        sender.start(track)
        self.leg.rtcp_schedule.start()

    # -- in
    def datagram(self, data: bytes, component: int, at: float) -> None:
        """aioice's ``Connection.data_received`` for this connection (the UDP guard let it
        through), ``at`` its arrival: SRTP and SRTCP to the session, the rest to aioice's queue
        (aiortc's DTLS)."""
        rx = None
        if len(data) >= 12 and 127 < data[0] < 192:
            rx = self._rx
            if rx is None:
                rx = self._rx = lean_srtp(seam.rx_srtp(self._dtls))
        if rx is None:
            self._aioice(data, component)  # type: ignore[misc]
            return
        if 192 <= data[1] <= 223:  # RFC 5761 §4
            try:
                plain = rx.unprotect_rtcp(data)
            except pylibsrtp.Error:
                self.auth_failed += 1
                return
            self.rtcp_received += 1
            try:
                self.leg.receive_rtcp(plain, at)
            except Exception:  # a report we cannot read must not stop the leg
                log.debug("%s: RTCP handling failed", self.name, exc_info=True)
            return
        try:
            plain = rx.unprotect(data)
        except pylibsrtp.Error as exc:
            self.auth_failed += 1
            log.debug("SRTP unprotect failed: %s", exc)
            return
        self.leg.receive_rtp(plain, at)

    # -- out
    def _protector(self) -> Any:
        tx = self._tx
        if tx is None:
            if not self._dtls_up or self._closed:
                raise ConnectionError("Cannot send encrypted RTP, not connected")
            tx = self._tx = lean_srtp(seam.tx_srtp(self._dtls))
        return tx

    def _send(self, data: bytes) -> None:
        pair = self._pairs.get(1)
        if pair is None or pair.protocol.transport is None:
            raise ConnectionError("Cannot send data, not connected")
        if pair is not self._pair:  # the first send, or ICE nominated another pair
            self._pair, self._remote_addr = pair, pair.remote_addr
        pair.protocol.transport.sendto(data, self._remote_addr)

    def send_rtp(self, plain: bytes) -> None:
        """Protect and send one RTP packet; ``ConnectionError`` when DTLS or ICE is not (or
        no longer) up."""
        self._send((self._tx or self._protector()).protect(plain))

    def send_rtcp(self, plain: bytes) -> None:
        """Protect (SRTCP) and send one compound RTCP packet; ``ConnectionError`` once DTLS or
        ICE is gone (the leg is ending)."""
        self._send(self._protector().protect_rtcp(plain))
        self.rtcp_sent += 1

    def close(self) -> None:
        """Give the connection's datagrams back (idempotent; the leg stopped first: its BYE
        went out). Our ``send``/``receive`` stay on aiortc's sender and receiver, refusing
        from now on, so a connect that finishes while the peer connection closes starts
        nothing; the peer connection's release (``rtc/release.py``) empties both objects
        afterwards."""
        if self._closed:
            return
        self._closed = True
        if self._connection is not None:
            seam.give_back_datagrams(self._connection)
        if self._dtls is not None:
            self._dtls.remove_listener("statechange", self._dtls_state_changed)
        self._connection = self._aioice = None
        self._pairs, self._pair, self._dtls_up = {}, None, False
        self._rx = self._tx = None
