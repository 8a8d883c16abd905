"""``ReorderBuffer``: the receiver's packets in, held in RTP order until their frames are played.

The receiver (:class:`~bridge.audio.receiver.Receiver`) does two jobs at two paces: packets in,
whenever the network delivers them (here), and frames out, one every 20 ms tick
(``receiver.py``: decode, FEC, concealment, stretching). The buffer takes every packet as it
arrives with its sequence number and timestamp extended past their wraps by the stream's one
count of its packets (:class:`~bridge.audio.reception.RtpReception`: received, lost, jitter;
counted there by the leg's RTP session, or here for a receiver nobody counts for), adds what
only the receiver knows (octets, reordering, discards) and holds the ones still to be played by
extended RTP timestamp, so that packets that arrive out of order are played in order and a
duplicate is dropped; a redundant copy of a frame (RFC 2198 RED) takes a place no packet took.
Whether a packet came too late for its frame is for the frames-out side to say: only it knows
what was played.

Pure and synchronous: whether a payload carries FEC is asked of the receiver's decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .receiver_stats import ReceiverStats
from .reception import RtpReception

__all__ = ["ReorderBuffer"]


class _Packet:
    __slots__ = ("arrival", "payload", "seq")

    def __init__(self, payload: bytes, arrival: float, seq: int | None) -> None:
        self.payload = payload
        self.arrival = arrival
        self.seq = seq
        """Extended RTP sequence number (``None``: a redundant copy, RED, has none)."""


class ReorderBuffer:
    """One RTP stream's packets, taken as they arrive and held by extended RTP timestamp until
    the receiver takes them to play (see the module docstring); at most ``capacity``: the
    receiver clears a full buffer (:meth:`clear`) before it holds another. ``counts``:
    whether the buffer counts each packet into ``reception`` (a receiver of its own) or its
    owner already has (a leg's RTP session). ``has_fec``: whether a payload carries in-band FEC
    (the decoder's own test)."""

    def __init__(
        self,
        stats: ReceiverStats,
        reception: RtpReception,
        capacity: int,
        has_fec: Callable[[bytes], bool],
        *,
        counts: bool,
    ) -> None:
        self.stats = stats
        self.reception = reception
        """The stream's count of its packets, which extends their numbers and timestamps."""
        self.counts = counts
        self.capacity = capacity
        self._has_fec = has_fec
        self._packets: dict[int, _Packet] = {}
        self.held: Mapping[int, _Packet] = self._packets
        """The packets held, by extended RTP timestamp (read only: :meth:`take` takes one)."""
        self.started = False
        """A first packet has arrived here."""
        self.last_arrival = 0.0
        """When the latest packet arrived (the receiver's clock)."""
        self.sender_fec = False
        """The sender puts FEC data in its packets (worth waiting a frame for after a loss)."""
        self._latest = b""
        """The latest packet's payload, looked at for FEC only when a frame is missing."""

    def arrive(self, seq: int, timestamp: int, payload: bytes, arrival: float) -> tuple[int, int]:
        """A packet arrived (to be played, or only counted): its extended sequence number and
        timestamp; its octets, and whether it came after a later one, into ``stats``."""
        reception = self.reception
        if self.counts:
            ext_seq, ts = reception.received(seq, timestamp, arrival)
        else:
            ext_seq, ts = reception.extended(seq, timestamp)
        stats = self.stats
        stats.bytes_received += len(payload)
        if ext_seq < reception.highest:
            stats.packets_reordered += 1  # undone by discard() if it turns out unusable
        self.started, self.last_arrival = True, arrival
        return ext_seq, ts

    def discard(self, ext_seq: int) -> None:
        """The packet arrived but is not played (late, a duplicate, empty)."""
        self.stats.packets_discarded += 1
        if ext_seq < self.reception.highest:
            self.stats.packets_reordered -= 1

    def hold(self, ext_seq: int, ts: int, payload: bytes, arrival: float) -> None:
        """An arrived packet whose frame is still to be played: held until it is, unless it is
        a duplicate, empty, or older than the newest packet of a full buffer (discarded: a
        reordered packet of a backlog; a newer one flushes it first, :meth:`overflowed_by`)."""
        self._latest = payload
        if not self.sender_fec and (self.stats.packets_received <= 50 or not ext_seq & 7):
            # Every packet of the first second, then every 8th: a sender that sends FEC puts
            # some in most packets, and one that never does costs no libopus call per packet.
            self.sender_fec = self._has_fec(payload)
        if ts in self._packets or not payload or len(self._packets) >= self.capacity:
            self.discard(ext_seq)
            return
        self._packets[ts] = _Packet(payload, arrival, ext_seq)

    def hold_redundant(self, ts: int, payload: bytes, arrival: float) -> None:
        """A redundant copy (extended timestamp ``ts``) of a frame still to be played: held
        only if its own packet is not, and while the buffer has room (a copy is never worth a
        packet's place: the copies a RED sender puts beside each packet, or a peer's at any
        timestamp, would otherwise hold without bound); never counted as a packet."""
        if not payload or ts in self._packets or len(self._packets) >= self.capacity:
            return
        self._packets[ts] = _Packet(payload, arrival, None)
        self.stats.red_recovered_packets += 1

    def take(self, ts: int) -> _Packet | None:
        """The packet held at ``ts``, out of the buffer to be played (``None``: none is)."""
        return self._packets.pop(ts, None)

    def clear(self, *, discarded: bool = False) -> None:
        """The stream starts again: nothing held will be played (``discarded``: each counted
        as a packet discarded).

        A full buffer is cleared so before it holds a packet newer than all it holds
        (``Receiver.push``), as NetEq flushes a full packet buffer, and the stream starts again
        from that packet: a
        backlog longer than the buffer (a peer's first seconds sent at once once DTLS is up,
        stalls piled up). Dropping only the oldest packet to make room dropped the frame due
        next: the receiver concealed it while the next arrival dropped the next one due, and so
        on for as long as packets came (a GStreamer peer's 2 s start burst: the stream concealed
        to its end, 217 of 286 packets discarded)."""
        if discarded:
            self.stats.packets_discarded += len(self._packets)
        self._packets.clear()

    def overflowed_by(self, ts: int) -> bool:
        """Whether a packet at ``ts`` finds the buffer full and is newer than every packet it
        holds: a backlog longer than the buffer (:meth:`clear`). An older one (reordered, or
        late) must not flush the packets due next: :meth:`hold` discards it."""
        return len(self._packets) >= self.capacity and ts > max(self._packets)

    def sends_fec(self) -> bool:
        """Whether the sender puts FEC data in its packets: as seen on arrival, else as the
        latest packet and those held show (a libopus call each: ask only for a missing frame)."""
        if not self.sender_fec:
            held = [p.payload for p in self._packets.values()]
            self.sender_fec = any(self._has_fec(p) for p in (self._latest, *held) if p)
        return self.sender_fec
