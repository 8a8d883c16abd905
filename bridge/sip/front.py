"""``FrontDoor``: one SIP-over-TLS listener for every business number on Meta's SIP road.

A worker has one door per listen address (its switchboard's :class:`Doors`, no global); each
number on Meta's SIP road joins it with a :class:`Line` (its number, host name, password,
certificate and calls). The door's user agent is shared: a new INVITE's Request-URI user (the
number in E.164 digits, with or without ``+``) picks the line (RFC 3261 §8.2.2.1: ``404`` for a
number we do not serve, before any digest work); that line's password challenges Meta and
checks its answer (``407``, §22.3) and its host name is the Contact. CANCEL, ACK and BYE reach
the line whose calls own the dialog; a retired line (its number's engine rebuilt or deleted)
keeps its dialogs but takes no new INVITE. A line's host name with its own certificate is served by
name (SNI, RFC 6066 §3); any other client hello gets the first line's certificate (the
deployment's, ``BRIDGE_SIP_CERT``).

The door closes its listener when its last line leaves.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .dialog import Dialog
from .digest import DigestServer
from .message import Request
from .transaction import CallHandler, InviteServer
from .transport import CertFiles
from .trust import PeerPolicy
from .ua import UserAgent

log = logging.getLogger(__name__)

_USER = re.compile(r"^sips?:([^@\s]+)@", re.I)


class LineCalls(CallHandler, Protocol):
    """A number's calls: the door asks which dialogs are theirs."""

    def owns(self, dialog_key: tuple[str, str]) -> bool: ...


@dataclass(eq=False)
class Line:
    """One business number at the door (compared by identity: a rebuilt number's new line
    is another line)."""

    number: str
    """E.164 digits, no ``+``: the Request-URI user that picks it, our From user."""
    hostname: str
    calls: LineCalls
    digest: DigestServer | None = None
    cert: str = ""
    key: str = ""
    """PEM files of ``hostname``'s certificate and key (the first line's are the door's
    default; another pair is served by name)."""
    on_count: Callable[[str], None] | None = field(default=None, repr=False)
    locked: bool = False
    """No password yet on a number that must have one (made at run time, before
    ``/sip/enable`` read Meta's): its INVITEs get ``403``, never go unchallenged."""
    key_password: str = field(default="", repr=False)
    """The passphrase of ``key`` when it is encrypted (``BRIDGE_SIP_KEY_PASSWORD``)."""
    retired: bool = False
    """Its engine takes no new calls (:meth:`FrontDoor.retire`): only its dialogs reach it."""


def number_of(uri: str) -> str:
    """A Request-URI's user as E.164 digits (``""`` when it is not a number). User
    parameters (``;tgrp=…;trunk-context=…``, Meta's ``request_uri_user_params``) are not part
    of the number."""
    m = _USER.match(uri.strip())
    digits = m.group(1).split(";")[0].removeprefix("+") if m else ""
    return digits if digits.isdigit() else ""


UNKNOWN_LOGGED = 100
"""Numbers nobody serves whose first INVITE is logged (the rest are only counted)."""


class Doors:
    """A worker's doors by listen address: its switchboard's, shared by its numbers' engines
    (an engine alone has its own)."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, int], FrontDoor] = {}

    async def join(
        self,
        host: str,
        port: int,
        line: Line,
        *,
        client_ca: str | None,
        client_ctx: ssl.SSLContext | None,
        policy: PeerPolicy,
    ) -> FrontDoor:
        """The door at ``host:port`` with ``line`` in it: opened when it is the first (its
        certificate the door's default; ``client_ca`` as :class:`CertFiles` takes it). A
        number that joins again (its engine rebuilt) takes the new calls; its older line
        keeps its dialogs until it leaves."""
        door = self.open.get((host, port))
        if door is None:
            door = self.open[(host, port)] = FrontDoor(self, (host, port))
            await door._open(host, port, line, client_ca, client_ctx, policy)
            return door
        await door._ready.wait()
        if door._failed is not None:
            raise door._failed
        door.add(line)
        return door

    def _gone(self, door: FrontDoor) -> None:
        if self.open.get(door.key) is door:
            del self.open[door.key]


class FrontDoor:
    """The shared user agent and its lines (module docstring); the UA's ``CallHandler``."""

    def __init__(self, doors: Doors, key: tuple[str, int]) -> None:
        self.doors = doors
        self.key = key
        self.lines: dict[str, Line] = {}
        """The line each number's new calls go to (its newest)."""
        self.members: list[Line] = []
        """Every line, a number's older one too while its engine finishes its calls."""
        self.ua: UserAgent | None = None
        self._ready = asyncio.Event()
        self._failed: BaseException | None = None
        self._client_ca: str | None = None
        self._unknown: set[str] = set()
        self._locked_logged: set[str] = set()

    async def _open(
        self,
        host: str,
        port: int,
        line: Line,
        client_ca: str | None,
        client_ctx: ssl.SSLContext | None,
        policy: PeerPolicy,
    ) -> None:
        try:
            certs = CertFiles(line.cert, line.key, password=line.key_password, client_ca=client_ca)
        except BaseException as exc:
            self._fail(exc)
            raise
        self._client_ca = client_ca
        ua = UserAgent(
            hostname=line.hostname,
            number=line.number,
            certs=certs,
            client_ctx=client_ctx,
            digest=None,
            handler=self,
            policy=policy,
        )
        ua.lookup = self.lookup
        ua.on_count = self._count
        self.ua = ua
        self.add(line)
        try:
            await ua.start(host, port)
        except BaseException as exc:
            self._fail(exc)
            raise
        self._ready.set()

    def _fail(self, exc: BaseException) -> None:
        self._failed = exc
        self.doors._gone(self)
        self._ready.set()

    def add(self, line: Line) -> None:
        """``line`` in; its own certificate loaded (``OSError``/``SSLError`` when it does
        not load: the line stays out)."""
        default = self.ua.transport.certs if self.ua is not None else None
        name = line.hostname.lower()
        if default is not None and (line.cert, line.key) != (default.cert, default.key):
            named = default.names.get(name)
            if named is None or (named.cert, named.key) != (line.cert, line.key):
                default.names[name] = CertFiles(
                    line.cert, line.key, password=line.key_password, client_ca=self._client_ca
                )
        self.members.append(line)
        self.lines[line.number] = line

    def retire(self, line: Line) -> None:
        """``line`` takes no new INVITE (its number's engine retired): one for its number is
        another line's, or ``404``; its dialogs stay its own until it leaves."""
        line.retired = True
        if self.lines.get(line.number) is line:
            del self.lines[line.number]

    async def leave(self, line: Line) -> None:
        """``line`` gone; the listener closes with the last line."""
        if line not in self.members:
            return
        self.members.remove(line)
        if self.lines.get(line.number) is line:
            del self.lines[line.number]
            for other in self.members:
                if other.number == line.number and not other.retired:
                    self.lines[other.number] = other
        certs = self.ua.transport.certs if self.ua is not None else None
        named = {other.hostname.lower() for other in self.members}
        if certs is not None and line.hostname.lower() not in named:
            certs.names.pop(line.hostname.lower(), None)
        if not self.members:
            self.doors._gone(self)
            if self.ua is not None:
                await self.ua.close()

    def _count(self, what: str) -> None:
        for line in list(self.members):
            if line.on_count is not None:
                line.on_count(what)

    def _line(self, uri: str) -> Line | None:
        """The Request-URI's number's line (a line without a number takes any)."""
        return self.lines.get(number_of(uri)) or self.lines.get("")

    def lookup(self, req: Request) -> tuple[DigestServer | None, str] | None:
        line = self._line(req.uri)
        if line is None or self.ua is None:
            number = number_of(req.uri) or req.uri[:64]
            if number not in self._unknown and len(self._unknown) < UNKNOWN_LOGGED:
                self._unknown.add(number)  # once a number, a bounded few
                log.warning("SIP INVITE for %s: no such number on this listener (404)", number)
            return None
        return line.digest, self.ua.contact_for(line.number, line.hostname)

    def _owner(self, key: tuple[str, str]) -> LineCalls | None:
        for line in list(self.members):
            if line.calls.owns(key):
                return line.calls
        return None

    # -- the UA's CallHandler: each to its line
    async def invite(self, tx: InviteServer) -> None:
        line = self._line(tx.req.uri)
        if line is None:  # left while the INVITE was being read
            await tx.respond(404, "Not Found (no such number here)")
            return
        if line.locked:
            if line.number not in self._locked_logged and len(self._locked_logged) < 100:
                self._locked_logged.add(line.number)
                log.warning(
                    "SIP INVITE for %s refused (403): the number has no SIP password yet "
                    "(POST /numbers/{numberID}/sip/enable reads Meta's)",
                    line.number,
                )
            await tx.respond(403, "Forbidden (no SIP password for this number yet)")
            return
        await line.calls.invite(tx)

    async def cancelled(self, tx: InviteServer) -> None:
        calls = self._owner(tx.dialog.key)
        if calls is not None:
            await calls.cancelled(tx)

    async def acked(self, dialog: Dialog) -> None:
        calls = self._owner(dialog.key)
        if calls is not None:
            await calls.acked(dialog)

    async def ack_timeout(self, dialog: Dialog) -> None:
        calls = self._owner(dialog.key)
        if calls is not None:
            await calls.ack_timeout(dialog)

    async def bye(self, dialog: Dialog, req: Request) -> None:
        calls = self._owner(dialog.key)
        if calls is not None:
            await calls.bye(dialog, req)


__all__ = ["Doors", "FrontDoor", "Line", "LineCalls", "number_of"]
