"""SIP over TLS (RFC 3261 §18, §26.2; RFC 5246/8446 via Python's ``ssl``) on asyncio streams.

* :class:`CertFiles`: the listener's (``listener.py``) certificate and key. It asks for no
  client certificate (Meta's guidance) unless ``BRIDGE_SIP_VERIFY_CLIENT`` names one to
  check. The files are checked every :data:`RELOAD_EVERY` seconds and loaded into the live
  ``SSLContext`` when they change: new handshakes use the new pair, live connections and
  calls are untouched.
* :func:`connect`: an outbound TLS connection (to Meta's SIP host), the server's certificate
  verified against the system's CAs and ``BRIDGE_SIP_CA``.
* :class:`Connection`: one TLS stream carrying SIP messages both ways. Framing is by
  Content-Length (§18.3); every read is bounded in size and time, so a client that stalls or
  sends garbage costs its own connection and nothing else. A malformed message whose end is
  known costs its own ``400`` only (the connection carries other calls). CRLF keep-alives
  (RFC 5626 §4.4.1: a double CRLF ping is answered with one CRLF) are taken between messages.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import ConfigError
from .message import (
    MAX_BODY,
    MAX_HEAD,
    Message,
    MessageTooLarge,
    Request,
    Response,
    SipParseError,
    check_request,
    check_value,
    content_length,
    frame_length,
    parse_head,
    starts_a_request,
)

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a new connection has to finish its TLS handshake."""
MESSAGE_TIMEOUT = 10.0
"""Seconds a message has to arrive whole once its first byte has."""
IDLE_TIMEOUT = 900.0
"""Seconds a connection may stay silent (Meta keeps its connections up with CRLF pings)."""
MAX_CONNECTIONS = 512
"""Connections served at once; more are closed as they arrive."""
MAX_UNTRUSTED = 32
"""Of those, connections from sources outside ``BRIDGE_SIP_TRUSTED_NETWORKS`` at once: they
are answered 403 and can never take the places of the trusted (Meta's)."""
UNTRUSTED_IDLE_TIMEOUT = 10.0
"""Seconds such a connection may stay silent (a trusted one: ``IDLE_TIMEOUT``)."""
MAX_PER_SOURCE = 32
"""Connections one source may hold at once (``BRIDGE_SIP_MAX_CONNECTIONS_PER_SOURCE``'s
default; a source in the trusted networks is not counted)."""
FIRST_MESSAGE_TIMEOUT = 30.0
"""Seconds an accepted connection has, from the end of its handshake, to send its first whole
SIP message (``BRIDGE_SIP_FIRST_MESSAGE_TIMEOUT``'s default): CRLF pings do not count."""
RELOAD_EVERY = 1.0
"""Seconds between looks at the certificate and key files."""

Handler = Callable[[Message, "Connection"], Awaitable[None]]
"""Takes one parsed message and the connection it came on."""
BadHandler = Callable[["BadMessage", "Connection"], Awaitable[None]]
"""Takes a framed but malformed message (to answer ``400``) and its connection."""


class BadMessage(Exception):
    """A message that does not parse: answer ``400``, or ``513`` (``status``) when it is over
    the size limits (``head`` is what we read of it)."""

    def __init__(self, why: str, head: bytes, *, status: int = 400, framed: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.head = head
        self.status = status
        self.framed = framed
        """The stream read past it whole: the next message can be read (else it is closed)."""


class Connection:
    """One SIP-over-TLS stream (see the module docstring), or plain TCP for a trunk."""

    reliable = True
    """A stream: nothing is retransmitted hop by hop (§17.1.1.2)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        inbound: bool,
        tls: bool = True,
    ) -> None:
        self.via_transport = "TLS" if tls else "TCP"
        """What our Via says of this hop (§18.1.1, §20.42)."""
        self.reader = reader
        self.writer = writer
        self.inbound = inbound
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer: tuple[str, int] = (str(peer[0]), int(peer[1]))
        self.closed = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self.peercert: dict[str, Any] | None = writer.get_extra_info("peercert") or None
        """The peer's certificate as the handshake verified it (``None`` without one)."""
        self.refusal: str | None = None
        """Why the peer may not send us requests (``""``: it may; ``None``: not judged yet)."""
        self.idle_timeout = IDLE_TIMEOUT
        """Seconds it may stay silent between messages (an accepted one's: its place's,
        shorter from an untrusted source, ``places.py``)."""

    def __repr__(self) -> str:
        return f"<Connection {'from' if self.inbound else 'to'} {self.peer[0]}:{self.peer[1]}>"

    @property
    def open(self) -> bool:
        return not self.closed.is_set() and not self.writer.is_closing()

    async def read(self) -> Message | None:
        """The next message; ``None`` at the end of the stream (or a keep-alive-only gap
        that ended). :class:`BadMessage` for a message that does not parse or is too large
        (its ``framed``: whether the stream can go on); ``TimeoutError`` when it cannot."""
        gap = b""
        while True:
            async with asyncio.timeout(self.idle_timeout):
                first = await self.reader.read(1)
            if not first:
                return None
            if first not in (b"\r", b"\n"):
                break
            gap = (gap + first)[-4:]
            if gap == b"\r\n\r\n":  # a CRLF ping (RFC 5626 §4.4.1) gets a CRLF pong
                await self.send_raw(b"\r\n")
                gap = b""
        try:
            async with asyncio.timeout(MESSAGE_TIMEOUT):
                head = first + await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            # What came of the head (left in the buffer), to its last whole line: its Via,
            # From, To, Call-ID and CSeq, if they came before the limit, are the 513's.
            part = first + await self.reader.read(MAX_HEAD)
            lines = part[: max(part.rfind(b"\r\n"), 0)]
            raise BadMessage("message too large", lines, status=513) from None
        except asyncio.IncompleteReadError:
            return None
        if len(head) > MAX_HEAD:
            raise BadMessage("message too large", head, status=513)
        try:
            msg = parse_head(head[:-4])
            length = content_length(msg)
        except MessageTooLarge as exc:  # a body over the limit is not read, nor skipped
            raise BadMessage(str(exc), head, status=513) from None
        except SipParseError as exc:
            # Meta carries many calls on one connection: while we know where the message
            # ends, it costs its own 400 only. Without that (no Content-Length we can read,
            # a start line that is not SIP's) the next message cannot be found: 400, closed.
            skip = frame_length(head)
            if skip is None or skip > MAX_BODY:
                raise BadMessage(str(exc), head) from None
            async with asyncio.timeout(MESSAGE_TIMEOUT):
                await self.reader.readexactly(skip)
            raise BadMessage(str(exc), head, framed=True) from None
        async with asyncio.timeout(MESSAGE_TIMEOUT):
            body = await self.reader.readexactly(length)
        msg.body = body
        if isinstance(msg, Request):
            try:
                check_request(msg)
            except SipParseError as exc:
                raise BadMessage(str(exc), head, framed=True) from None
        return msg

    async def send(self, msg: Message) -> None:
        await self.send_raw(msg.to_bytes())

    async def send_raw(self, data: bytes) -> None:
        if not self.open:
            raise ConnectionResetError(f"{self!r} is closed")
        async with self._write_lock:
            self.writer.write(data)
            async with asyncio.timeout(MESSAGE_TIMEOUT):
                await self.writer.drain()

    async def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self.writer.close()
        try:
            async with asyncio.timeout(2.0):
                await self.writer.wait_closed()
        except (OSError, TimeoutError, ssl.SSLError):
            pass


class KeyLocked(ssl.SSLError):
    """A private key file that is encrypted, with no passphrase given (``given`` false) or
    one that does not open it."""

    def __init__(self, key: str, *, given: bool) -> None:
        said = "a passphrase that does not open it" if given else "no passphrase to open it"
        super().__init__(f"{key} is an encrypted private key, and {said}")
        self.filename = key
        self.given = given


def load_pair(ctx: ssl.SSLContext, cert: str, key: str, password: str = "") -> None:
    """The one loader of a certificate and its private key into ``ctx``: an encrypted key is
    opened with ``password``, never with OpenSSL's own prompt on the terminal (a start that
    waits for a typist, a hang under a supervisor; a reload that blocks the event loop).
    :class:`KeyLocked` when it has no passphrase, or not its own; ``ssl.SSLError`` and
    ``OSError`` for files that do not load."""
    asked = False

    def passphrase() -> str:
        nonlocal asked
        asked = True
        if not password:
            raise KeyLocked(key, given=False)
        return password

    try:
        ctx.load_cert_chain(cert, key, password=passphrase)
    except KeyLocked:
        raise
    except ssl.SSLError as exc:
        # A key it opened that is not the certificate's is a mismatch, not a wrong passphrase.
        if asked and exc.reason != "KEY_VALUES_MISMATCH":
            raise KeyLocked(key, given=True) from None
        raise


class CertFiles:
    """A server ``SSLContext`` whose certificate and key are reloaded when their files change
    (a renewed certificate takes effect for new connections, without a restart)."""

    def __init__(
        self, cert: str, key: str, *, password: str = "", client_ca: str | None = None
    ) -> None:
        """``password``: the key's passphrase when it is encrypted (:func:`load_pair`).
        ``client_ca``: ask for a client certificate and verify one that comes against the
        system's CAs and this file (``""``: the system's only); ``None``: ask for none."""
        self.cert, self.key, self.password = cert, key, password
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.verify_mode = ssl.CERT_NONE  # no client certificate (Meta's guidance)
        if client_ca is not None:
            # Optional at the TLS layer: a peer without one still gets a SIP answer (403,
            # from the PeerPolicy), not a bare handshake alert.
            self.context.verify_mode = ssl.CERT_OPTIONAL
            self.context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
            if client_ca:
                self.context.load_verify_locations(client_ca)
        self._stamp = self._mtimes()
        load_pair(self.context, cert, key, password)
        self.reloads = 0
        self.names: dict[str, CertFiles] = {}
        """Certificates by host name: a client hello naming one gets it (SNI, RFC 6066 §3);
        any other name, or none, gets this pair."""
        self.context.sni_callback = self._by_name

    def _by_name(self, conn: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        named = self.names.get((name or "").lower())
        if named is not None:
            conn.context = named.context

    def _mtimes(self) -> tuple[float, float]:
        return os.stat(self.cert).st_mtime_ns, os.stat(self.key).st_mtime_ns

    def check(self) -> bool:
        """Load the pair again if either file changed; whether it did. A pair that does not
        load (half written, key and certificate apart) keeps the old one, logged. The named
        pairs are checked too."""
        for named in list(self.names.values()):
            if named is not self:
                named.check()
        try:
            stamp = self._mtimes()
        except OSError as exc:
            log.warning("SIP TLS: cannot read the certificate files: %s", exc)
            return False
        if stamp == self._stamp:
            return False
        try:
            # Try the pair on a scratch context first: a failed load must not leave the
            # live one half changed.
            load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), self.cert, self.key, self.password)
            load_pair(self.context, self.cert, self.key, self.password)
        except (OSError, ssl.SSLError) as exc:
            log.warning(
                "SIP TLS: the new certificate or key does not load, keeping the old: %s", exc
            )
            return False
        self._stamp = stamp
        self.reloads += 1
        log.info("SIP TLS: certificate reloaded from %s", self.cert)
        return True


def client_context(ca_file: str = "", setting: str = "BRIDGE_SIP_CA") -> ssl.SSLContext:
    """Outbound TLS: the peer's certificate and name verified (system CAs + ``ca_file``).
    No ALPN is offered (nothing calls ``set_alpn_protocols``): Meta's edge answers an ALPN
    ``sip`` offer with alert 120 ``no_application_protocol`` (Meta Cloud API Calling SIP
    docs), and SIP over TLS defines no ALPN identifier.

    One context per CA file, as the file is on disk, for the whole process: reading the
    system's CA store is ~50 ms of CPU, which every app paid as it started (its trunk user
    agent takes a context whether a TLS trunk exists or not), most of an in-process app's
    start. Nothing changes a context once made, so user agents share it; a CA file written
    since is read again (an engine rebuilt after a rotation verifies with the new one).

    A file that is missing or holds no certificate is a :class:`ConfigError` naming
    ``setting`` (the start stops with one line, not a traceback)."""
    if not ca_file:
        return _client_context("", None)
    try:
        st = os.stat(ca_file)
        return _client_context(ca_file, (st.st_ino, st.st_size, st.st_mtime_ns))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{setting}={ca_file!r}: no CA certificates load ({exc})") from None


@functools.lru_cache(maxsize=16)
def _client_context(ca_file: str, stamp: tuple[int, int, int] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        ctx.load_verify_locations(ca_file)
    return ctx


async def connect(host: str, port: int, ctx: ssl.SSLContext | None) -> Connection:
    """A TLS connection to ``host:port`` (plain TCP when ``ctx`` is ``None``: a trunk's
    ``transport=tcp``); ``OSError``/``ssl.SSLError`` when it fails."""
    async with asyncio.timeout(HANDSHAKE_TIMEOUT):
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ctx, server_hostname=host if ctx else None, limit=MAX_HEAD + 8
        )
    return Connection(reader, writer, inbound=False, tls=ctx is not None)


def bad_request(bad: BadMessage) -> Response | None:
    """The ``400`` to a malformed request (§8.2, §21.4.1), with what of its Via, From, To,
    Call-ID and CSeq could be read; the ``513`` to one over the size limits (§21.5.11,
    §18.1.1) when it is a request whose Via and CSeq could be read (``None``: nothing can be
    answered)."""
    found = salvage(bad.head)
    if bad.status == 513:
        if not (starts_a_request(bad.head) and found.get("via") and found.get("cseq")):
            return None
        resp = Response(status=513, reason="Message Too Large")
    else:
        resp = Response(status=400, reason=f"Bad Request ({bad.why})")
    for key, name in (("via", "Via"), ("from", "From"), ("to", "To"), ("call-id", "Call-ID")):
        for value in found.get(key, []):
            resp.add(name, value)
    if found.get("cseq"):
        resp.add("CSeq", found["cseq"][0])
    return resp


def salvage(raw: bytes) -> dict[str, list[str]]:
    """The headers a ``400`` or a ``513`` copies (Via, From, To, Call-ID, CSeq), read
    leniently from a message that did not parse."""
    out: dict[str, list[str]] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        key = {"v": "via", "f": "from", "t": "to", "i": "call-id"}.get(
            name.strip().lower(), name.strip().lower()
        )
        if sep and key in ("via", "from", "to", "call-id", "cseq") and len(value) < 1024:
            try:
                check_value(value)
            except ValueError:
                continue
            out.setdefault(key, []).append(value.strip())
    return out
