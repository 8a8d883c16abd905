"""The SIP listener (port 5061 by default; a trunk's plain TCP port): accepts connections,
TLS-handshakes them with :class:`~.transport.CertFiles`, and reads every connection it serves
(inbound, and the outbound ones it is given) with its own task, handing each message on.

TLS sockets are accepted by :meth:`Listener._accept_loop` and given to their handshake before
anything reads them: see :meth:`Listener._handshake` for why.

Each accepted connection takes a place (``places.py``) before its handshake: at most
``MAX_CONNECTIONS`` in all, a small share for sources outside the trusted networks
(``BRIDGE_SIP_TRUSTED_NETWORKS``, answered ``403`` per request by ``trust.py``) and a cap per
source (``BRIDGE_SIP_MAX_CONNECTIONS_PER_SOURCE``); past a bound it is closed as it arrives.
Before, anyone who could reach the port held a place for 900 s with each connection, and 512
of them kept Meta's own out. A connection then has ``BRIDGE_SIP_FIRST_MESSAGE_TIMEOUT`` to send
its first whole SIP message, and its share's idle timeout between messages.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

from ..tasks import TaskSet
from .message import MAX_HEAD, SipParseError
from .places import Place, Places
from .transport import (
    HANDSHAKE_TIMEOUT,
    MAX_CONNECTIONS,
    RELOAD_EVERY,
    BadHandler,
    BadMessage,
    CertFiles,
    Connection,
    Handler,
    connect,
)
from .trust import PeerPolicy

log = logging.getLogger(__name__)


def listening_socket(host: str, port: int) -> socket.socket:
    """A non-blocking TCP listening socket on ``host:port`` (``""``: every address, IPv6 and
    IPv4 where the system allows both on one socket)."""
    if not host:
        dual = socket.has_dualstack_ipv6()
        sock = socket.create_server(
            ("", port),
            family=socket.AF_INET6 if dual else socket.AF_INET,
            dualstack_ipv6=dual,
            backlog=MAX_CONNECTIONS,
        )
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=MAX_CONNECTIONS)
    sock.setblocking(False)
    return sock


class Listener:
    """The TLS listener (plain TCP without ``certs``: a trunk's) and every connection it
    serves (inbound, and the outbound ones :meth:`dial` makes), each read by its own task
    and handed to ``handler``."""

    def __init__(
        self,
        certs: CertFiles | None,
        handler: Handler,
        on_bad: BadHandler,
        policy: PeerPolicy | None = None,
    ) -> None:
        self.certs = certs
        self.handler = handler
        self.on_bad = on_bad
        """Called with a message that does not parse (``400``) or is too large (``513``): the
        user agent counts it and says it (``malformed.py``)."""
        self.places = Places(policy or PeerPolicy())
        """Who may hold how many connections, and their timers (``places.py``)."""
        self.connections: set[Connection] = set()
        self.handshaking = 0
        """TLS handshakes under way: they count against ``MAX_CONNECTIONS`` with the
        connections served, so clients that open sockets and never finish (or never start)
        their handshake cannot hold more than the bound, each for ``HANDSHAKE_TIMEOUT``."""
        self._server: asyncio.Server | None = None
        """A trunk's plain TCP server."""
        self._socket: socket.socket | None = None
        """The TLS listener's socket (accepted by :meth:`_accept_loop`)."""
        self._tasks = TaskSet("sip-transport")
        self.port = 0
        self._outbound: dict[tuple[str, int], Connection] = {}
        self._dialing: dict[tuple[str, int], tuple[asyncio.Lock, int]] = {}
        """A lock per destination being dialled, and how many dials wait on it: one dial a
        destination at a time, and one that cannot be reached (its handshake timeout) keeps
        no other destination waiting."""

    async def dial(self, dest: tuple[str, int], ctx: ssl.SSLContext | None) -> Connection:
        """An open connection to ``dest`` (reused, else made and served): TLS with ``ctx``,
        plain TCP without."""
        lock, users = self._dialing.get(dest, (asyncio.Lock(), 0))
        self._dialing[dest] = (lock, users + 1)
        try:
            async with lock:
                conn = self._outbound.get(dest)
                if conn is not None and conn.open:
                    return conn
                conn = self._outbound[dest] = await connect(dest[0], dest[1], ctx)
                self._tasks.spawn(self._run_outbound(dest, conn), f"conn:{dest[0]}:{dest[1]}")
                return conn
        finally:
            lock, users = self._dialing[dest]
            if users > 1:
                self._dialing[dest] = (lock, users - 1)
            else:
                del self._dialing[dest]

    async def start(self, host: str, port: int) -> None:
        if self.certs is None:
            self._server = await asyncio.start_server(
                self._accept_tcp, host or None, port, limit=MAX_HEAD + 8
            )
            self.port = self._server.sockets[0].getsockname()[1]
            return
        # TLS: connections are accepted here and each handed to its handshake before anything
        # reads from it (see _handshake); a failed handshake is then ours to log.
        self._socket = listening_socket(host, port)
        self.port = self._socket.getsockname()[1]
        self._tasks.spawn(self._accept_loop(self._socket), "tls-accept")
        self._tasks.spawn(self._watch_certs(self.certs), "cert-reload")

    async def _watch_certs(self, certs: CertFiles) -> None:
        while True:
            await asyncio.sleep(RELOAD_EVERY)
            certs.check()

    def _place(self, host: str) -> Place | None:
        """A place for a new connection from ``host`` (``None``: close it as it arrives)."""
        busy = len(self.connections) + self.handshaking
        return self.places.take(host, busy, closing=self._tasks.closed)

    async def _accept_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        place = self._place(str(peer[0]))
        if place is None:
            writer.close()
            return
        try:
            await self._run(Connection(reader, writer, inbound=True, tls=False), place)
        finally:
            self.places.leave(place)

    async def _accept_loop(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        failing = False
        while True:
            try:
                sock, peer = await loop.sock_accept(listening)
            except OSError as exc:  # out of descriptors, say: the next accept may work
                if not failing:  # said once while it lasts, not ten times a second
                    log.warning("SIP TLS: accept failed: %s (retrying every 0.1 s)", exc)
                failing = True
                await asyncio.sleep(0.1)
                continue
            if failing:
                failing = False
                log.warning("SIP TLS: accepting again")
            # (The peer as accept gave it: asking the socket again fails once the client has
            # reset it, as a scanner does, and that once ended this loop.)
            place = self._place(str(peer[0]))
            if place is None:
                sock.close()
                continue
            self.handshaking += 1
            self._tasks.spawn(self._handshake(sock, peer, place), f"tls:{peer[0]}:{peer[1]}")

    async def _handshake(self, sock: socket.socket, peer: tuple[Any, ...], place: Place) -> None:
        try:
            await self._tls(sock, peer, place)
        finally:
            self.places.leave(place)

    async def _tls(self, sock: socket.socket, peer: tuple[Any, ...], place: Place) -> None:
        """TLS on a socket nothing has read from yet. Accepting plain TCP with a stream and
        starting TLS on it afterwards (``StreamWriter.start_tls``) loses a client hello that
        arrives in between, in a buffer the TLS layer never reads: the handshake then waits out
        its timeout (under uvloop, most connections from another process)."""
        assert self.certs is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_HEAD + 8)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            # (Ours, not the protocol it returns: uvloop returns its TLS protocol there.)
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                sock,
                ssl=self.certs.context,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        except ssl.SSLCertVerificationError as exc:
            log.warning("SIP TLS from %s:%s: client certificate refused: %s", *peer[:2], exc)
            sock.close()
            return
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as exc:
            log.info("SIP TLS from %s:%s: handshake failed: %s", *peer[:2], exc)
            sock.close()
            return
        finally:
            self.handshaking -= 1
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        await self._run(Connection(reader, writer, inbound=True), place)

    async def _run_outbound(self, dest: tuple[str, int], conn: Connection) -> None:
        """Read an outbound connection's messages too (Meta's answers and requests); once it
        closed, it is forgotten (a route set's next hops are the peers' to name: kept, closed
        ones would pile up one a destination for the life of the process)."""
        try:
            await self._run(conn)
        finally:
            if self._outbound.get(dest) is conn:
                del self._outbound[dest]

    async def _run(self, conn: Connection, place: Place | None = None) -> None:
        """Read ``conn``'s messages until it ends. An accepted one (its ``place``) has the
        place's first-message timeout for its first whole message (an absolute bound: CRLF
        pings do not extend it), then the place's idle timeout between messages."""
        self.connections.add(conn)
        loop = asyncio.get_running_loop()
        first = loop.time() + place.first_message if place is not None else None
        if place is not None:
            conn.idle_timeout = place.idle
        try:
            while conn.open:
                try:
                    async with asyncio.timeout_at(first):
                        msg = await conn.read()
                except BadMessage as bad:
                    await self.on_bad(bad, conn)
                    if bad.framed:
                        continue  # its end was known: the calls on this connection go on
                    break  # the framing is lost: one connection's cost
                if msg is None:
                    break
                if first is not None and place is not None:
                    first = None
                    self.places.spoke(place)
                await self.handler(msg, conn)
        except TimeoutError:
            if first is not None and place is not None:
                self.places.silent(place, conn.peer)
            else:
                log.info("SIP connection %s:%d ends: silent %g s", *conn.peer, conn.idle_timeout)
        except (SipParseError, ConnectionError, ssl.SSLError, OSError) as exc:
            log.info("SIP connection %s:%d ends: %s", *conn.peer, exc or type(exc).__name__)
        except asyncio.IncompleteReadError:
            pass
        except Exception:  # a bug must cost this connection only, never the listener
            log.exception("SIP connection %s:%d: unexpected error", *conn.peer)
        finally:
            self.connections.discard(conn)
            await conn.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._tasks.close(timeout=2.0)
        if self._socket is not None:
            self._socket.close()
        for conn in [*self.connections, *self._outbound.values()]:
            await conn.close()
        self._outbound.clear()
        if self._server is not None:
            try:
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
            except TimeoutError:
                pass
