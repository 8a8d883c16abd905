"""SIP over UDP (RFC 3261 §18.1.1, §18.2.1): one socket, one message a datagram.

* :class:`DatagramEndpoint`: the socket (``BRIDGE_SIP_TRUNK_LISTEN``'s port). Each datagram is
  parsed whole (:func:`~.message.parse`; at most :data:`MAX_DATAGRAM` bytes, the rest
  dropped) and handed to the user agent with the :class:`DatagramFlow` of its source address;
  a datagram that does not parse goes to ``on_bad`` (a request gets its ``400``, a response
  is dropped, §18.1.2), one over the size limits too (a request whose Via and CSeq can be
  read gets ``513``, §18.1.1; anything else is dropped). Work in hand is bounded
  (:data:`MAX_INFLIGHT` messages at once: more are dropped, the sender's retransmission
  brings them again), so a flood costs datagrams, never memory. Each drop is counted in
  :attr:`DatagramEndpoint.dropped` by reason (:data:`DROPS`) and said once at WARNING while
  it lasts (a source's datagrams too large, per source), its end at INFO (a datagram taken
  in hand again; one from that source).
* :class:`DatagramFlow`: the :class:`~.transport.Connection` face of one peer address, so
  dialogs and transactions treat UDP as they treat a stream; it is not reliable, so the user
  agent retransmits (Timer A/E at the client, its responses again on a retransmitted request
  at the server, §17). Flows are kept for the last :data:`MAX_FLOWS` peers.
* CRLF keep-alives (RFC 5626 §4.4.1: a lone CRLF or a double CRLF datagram) are ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from ..logs import Repeats
from ..tasks import TaskSet
from .message import Message, MessageTooLarge, SipParseError, parse
from .transport import BadHandler, BadMessage, Connection, Handler

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65_507
"""The largest UDP payload (IPv4); a SIP message is far smaller (§18.1.1 suggests 1300)."""
MAX_INFLIGHT = 256
"""Messages being handled at once; more are dropped (the sender retransmits)."""
MAX_FLOWS = 4096
"""Peer addresses whose flow is kept (least recently heard forgotten first)."""
DROPS = ("too_large", "in_hand", "closing")
"""Why a datagram was dropped (the keys of :attr:`DatagramEndpoint.dropped`): over
:data:`MAX_DATAGRAM`, :data:`MAX_INFLIGHT` in hand already, the socket closing."""


class DatagramFlow(Connection):
    """One peer address on the endpoint's socket, seen as a connection (module docstring)."""

    reliable = False

    def __init__(self, endpoint: DatagramEndpoint, peer: tuple[str, int], *, inbound: bool):
        # Not a stream: none of the reader/writer state of a Connection applies.
        self.endpoint = endpoint
        self.peer = peer
        self.inbound = inbound
        self.via_transport = "UDP"
        self.closed = asyncio.Event()
        self.peercert = None
        self.refusal = None

    def __repr__(self) -> str:
        return f"<DatagramFlow {self.peer[0]}:{self.peer[1]}>"

    @property
    def open(self) -> bool:
        return self.endpoint.open

    async def read(self) -> Message | None:
        """A flow has no stream of its own: its datagrams reach the handler through the
        endpoint (:class:`DatagramEndpoint`), so a reader loop given a flow ends at once."""
        return None

    async def send_raw(self, data: bytes) -> None:
        self.endpoint.send_to(data, self.peer)

    async def close(self) -> None:
        """A flow has nothing of its own to close (the endpoint owns the socket)."""


class DatagramEndpoint(asyncio.DatagramProtocol):
    """The UDP socket and the flows of its peers (see the module docstring)."""

    def __init__(self, handler: Handler, on_bad: BadHandler) -> None:
        self.handler = handler
        self.on_bad = on_bad
        self.flows: OrderedDict[tuple[str, int], DatagramFlow] = OrderedDict()
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks = TaskSet("sip-udp")
        self.dropped = dict.fromkeys(DROPS, 0)
        """Datagrams dropped, by reason (:data:`DROPS`)."""
        self._said = Repeats()
        """What drops datagrams (too many in hand; a source's too large): said once while
        it lasts."""
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(host or "0.0.0.0", port)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    @property
    def in_hand(self) -> int:
        """Messages being handled now (at most :data:`MAX_INFLIGHT`)."""
        return len(self._tasks)

    def flow(self, peer: tuple[str, int], *, inbound: bool = False) -> DatagramFlow:
        """The flow of ``peer`` (made on first use; the most recently heard kept)."""
        flow = self.flows.get(peer)
        if flow is None:
            flow = self.flows[peer] = DatagramFlow(self, peer, inbound=inbound)
            while len(self.flows) > MAX_FLOWS:
                self.flows.popitem(last=False)
        else:
            self.flows.move_to_end(peer)
        return flow

    def send_to(self, data: bytes, peer: tuple[str, int]) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("the SIP UDP socket is closed")
        self._transport.sendto(data, peer)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not data.strip(b"\r\n"):
            return  # a CRLF keep-alive (RFC 5626 §4.4.1)
        peer = (str(addr[0]), int(addr[1]))
        if self._tasks.closed:
            self.dropped["closing"] += 1
            return
        if len(data) > MAX_DATAGRAM:
            self._drop("too_large", f"too large {peer[0]}", peer)
            return
        if self.in_hand >= MAX_INFLIGHT:
            self._drop("in_hand", "in hand", peer)
            return
        if dropped := self._said.ended("in hand"):
            log.info("SIP UDP: datagrams are taken in hand again (%d dropped before)", dropped)
        if dropped := self._said.ended(f"too large {peer[0]}"):
            log.info(
                "SIP UDP from %s: datagrams taken again (%d too large before)", peer[0], dropped
            )
        flow = self.flow(peer, inbound=True)
        self._tasks.spawn(self._handle(data, flow), f"udp:{peer[0]}:{peer[1]}")

    def _drop(self, why: str, key: str, peer: tuple[str, int]) -> None:
        """A datagram from ``peer`` dropped for ``why``: counted, said once while ``key``
        lasts."""
        self.dropped[why] += 1
        if self._said.seen(key) != 1:
            return
        if why == "too_large":
            log.warning(
                "SIP UDP from %s:%d: a datagram over %d bytes dropped; later ones from %s "
                "are not said",
                *peer,
                MAX_DATAGRAM,
                peer[0],
            )
        else:
            log.warning(
                "SIP UDP: %d messages in hand already: more datagrams are dropped while it "
                "lasts (the first from %s:%d; the senders' retransmissions bring them again)",
                MAX_INFLIGHT,
                *peer,
            )

    async def _handle(self, data: bytes, flow: DatagramFlow) -> None:
        try:
            try:
                msg = parse(data)
            except (SipParseError, ValueError, UnicodeDecodeError) as exc:
                head = data.partition(b"\r\n\r\n")[0]
                status = 513 if isinstance(exc, MessageTooLarge) else 400
                await self.on_bad(BadMessage(str(exc) or "malformed", head, status=status), flow)
                return
            await self.handler(msg, flow)
        except (ConnectionError, OSError, TimeoutError) as exc:
            log.info("SIP UDP from %s:%d: %s", *flow.peer, exc)
        except Exception:  # a bug costs this datagram only, never the socket
            log.exception("SIP UDP from %s:%d: unexpected error", *flow.peer)

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP UDP socket: %s", exc)  # an ICMP unreachable for a datagram we sent

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        await self._tasks.close(timeout=2.0)
