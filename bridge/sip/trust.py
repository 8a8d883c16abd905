"""Who may send us SIP: the optional source-network allow-list and client-certificate name
(``BRIDGE_SIP_TRUSTED_NETWORKS``, ``BRIDGE_SIP_VERIFY_CLIENT``), and the ``received``/``rport``
a server writes into the top Via of what it receives (RFC 3261 §18.2.1, RFC 3581 §4).

Meta's SIP traffic comes from Meta's address space, and since 2026 Meta may present a TLS
client certificate naming ``client.sip.fbclientcerts.com`` (Meta Cloud API Calling SIP docs).
A :class:`PeerPolicy` judges a connection we accepted once, from what the handshake proved
(the peer's address, the certificate's chain and names), never from headers anyone can
write. Connections we opened are Meta's by its server certificate, and are not judged.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..logs import Repeats
from .headers import Via
from .message import Message, SipParseError, split_list
from .transport import FIRST_MESSAGE_TIMEOUT, MAX_PER_SOURCE

if TYPE_CHECKING:
    from .transport import Connection

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def source_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer's address (an IPv4-mapped IPv6 one as IPv4); ``None`` when not an address."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def source_key(host: str) -> str:
    """Whose connection this is, for the listener's per-source count: the address (an
    IPv4-mapped one as IPv4), an IPv6 address by its /64 (one host is given a whole /64,
    RFC 7421 §1: counted by address, it could take as many places as it has addresses)."""
    addr = source_address(host)
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr) if addr is not None else host


class Share(enum.Enum):
    """Which share of the listener's places a source's connections take (``places.py``)."""

    TRUSTED = "trusted"
    """In ``BRIDGE_SIP_TRUSTED_NETWORKS`` (Meta's ranges): no per-source cap."""
    ANY = "any"
    """No trusted networks are set: every source, each capped at its per-source count."""
    UNTRUSTED = "untrusted"
    """Outside the trusted networks: the untrusted share, capped per source, a short idle."""


def cert_names(peercert: dict[str, Any] | None) -> list[str]:
    """The DNS names of a verified peer certificate (``SSLSocket.getpeercert()``): its
    subjectAltName entries, else its common name (RFC 6125 §6.4.4)."""
    if not peercert:
        return []
    names = [v for k, v in peercert.get("subjectAltName", ()) if k == "DNS"]
    if names:
        return names
    return [v for rdn in peercert.get("subject", ()) for k, v in rdn if k == "commonName"]


def name_matches(pattern: str, name: str) -> bool:
    """``pattern`` (a certificate's name, ``*.`` only as its whole leftmost label) covers
    ``name`` (RFC 6125 §6.4.3)."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


@dataclass(frozen=True)
class PeerPolicy:
    """Which connections we accepted may send requests (see the module docstring), and how
    many of the listener's places each source may hold (``places.py``)."""

    networks: Sequence[Network] = ()
    """Source networks allowed (empty: any)."""
    client_name: str = ""
    """The name a client certificate must carry (empty: none is asked for)."""
    per_source: int = MAX_PER_SOURCE
    """Connections one source (:func:`source_key`) may hold at once, unless trusted."""
    first_message_timeout: float = FIRST_MESSAGE_TIMEOUT
    """Seconds from an accepted connection's handshake to its first whole SIP message."""

    def share(self, host: str) -> Share:
        """The share of the listener's places a connection from ``host`` takes."""
        if not self.networks:
            return Share.ANY
        return Share.TRUSTED if self.trusts_source(host) else Share.UNTRUSTED

    def trusts_source(self, host: str) -> bool:
        """Whether ``host`` is in the trusted networks (any is, without networks)."""
        if not self.networks:
            return True
        addr = source_address(host)
        return addr is not None and any(addr in net for net in self.networks)

    def refusal(self, host: str, peercert: dict[str, Any] | None) -> str:
        """Why a connection from ``host`` with ``peercert`` may not send us requests; ``""``
        when it may."""
        if not self.trusts_source(host):
            return f"source {host} is not in BRIDGE_SIP_TRUSTED_NETWORKS"
        if self.client_name:
            names = cert_names(peercert)
            if not names:
                return (
                    f"no client certificate from {host}, and BRIDGE_SIP_VERIFY_CLIENT asks for "
                    f"one naming {self.client_name}"
                )
            if not any(name_matches(n, self.client_name) for n in names):
                shown = ", ".join(names[:4])
                return (
                    f"the client certificate from {host} names {shown}, not "
                    f"{self.client_name} (BRIDGE_SIP_VERIFY_CLIENT)"
                )
        return ""

    def admits(self, conn: Connection, said: Repeats) -> bool:
        """Whether ``conn``'s peer may send requests: judged once a connection, before any
        digest work; a refusal said at WARNING once per source (:func:`source_key`) while its
        connections are refused (``said``), its end at INFO when one is admitted."""
        if conn.refusal is None:
            conn.refusal = self.refusal(conn.peer[0], conn.peercert)
            source = source_key(conn.peer[0])
            if conn.refusal and said.seen(source) == 1:
                log.warning(
                    "SIP from %s:%d: refused (403): %s (said once per source while it lasts)",
                    *conn.peer,
                    conn.refusal,
                )
            elif not conn.refusal and (refused := said.ended(source)):
                log.info(
                    "SIP from %s: admitted again (%d connections refused before)", source, refused
                )
        return not conn.refusal


def stamp_via(msg: Message, peer: tuple[str, int]) -> None:
    """Write where a request came from into its top Via, so every response carries it:
    ``received`` when the sent-by host is not the source address (RFC 3261 §18.2.1) or the
    client asked with ``rport`` (RFC 3581 §4), and the source port into that ``rport``."""
    first = next((i for i, (n, _) in enumerate(msg.headers) if n.lower() == "via"), None)
    if first is None:
        return
    name, value = msg.headers[first]
    values = split_list(value)
    try:
        via = Via.parse(values[0])
    except (SipParseError, IndexError):
        return
    host, port = peer
    asked = "rport" in via.params
    if asked or source_address(via.host.strip("[]")) != source_address(host):
        via.params["received"] = host
    if asked and not via.params["rport"]:
        via.params["rport"] = str(port)
    values[0] = str(via)
    msg.headers[first] = (name, ", ".join(values))
