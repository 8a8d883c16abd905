"""The one seam between the bridge and aiortc's and aioice's internals.

aiortc and aioice give the bridge ICE, DTLS and the SRTP keys, nothing else: every leg's RTP
and RTCP is its own (``rtc/rtp_session.py`` on ``rtc/dtls_srtp.py``). What the bridge still
touches beyond their public API is named here, and only here, so an aiortc upgrade is a change
to this file (and the pin):

* :data:`REQUIRED`: every private function or attribute the bridge reads, writes or wraps, with
  what each is for; :func:`verify` checks them all at import, so a release that renames one
  fails at start with :class:`SeamError`, naming what is gone and :data:`SUPPORTED`.
* :data:`ORIGINAL` (the libraries' own functions, for the wrappers) and :func:`patches` (where
  every process-wide patch goes, applied by :func:`install`); then the accessors. The wrappers
  (``dtls.py``, ``guard.py``, ``ice.py``) import this module: it never imports them, but is
  handed them as :class:`Hooks` (``rtc/hooks.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any

import aioice
import aioice.ice
import aioice.turn
import aiortc
from aioice import stun
from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceTransport
from aiortc.rtcdtlstransport import State

# Taken from aiortc's and aioice's submodules by other modules (only through this one).
__all__ = ["State", "stun"]

SUPPORTED = {"aiortc": ">=1.16,<1.17", "aioice": ">=0.10"}
"""The versions this seam was written against (``pyproject.toml`` pins the same)."""


class SeamError(RuntimeError):
    """aiortc or aioice no longer has what the bridge relies on."""


def _fail(what: str) -> SeamError:
    found = f"aiortc {aiortc.__version__}, aioice {getattr(aioice, '__version__', '?')}"
    supported = ", ".join(f"{name}{spec}" for name, spec in SUPPORTED.items())
    return SeamError(f"{found} changed: {what}; bridge/rtc/aiortc_seam.py supports {supported}")


def _unwrapped(fn: Any) -> Any:  # as the library wrote it: wrappers keep it in __wrapped__
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return fn


# What each private name is needed for is said where it is used; here, where it must be.
REQUIRED: tuple[tuple[Any, str, tuple[str, ...]], ...] = (
    # rtc/dtls.py: the cipher list and the failure reasons
    (RTCCertificate, "_create_ssl_context", ()),
    (RTCDtlsTransport, "_set_state", ()),
    # rtc/guard.py: the UDP filter
    (aioice.ice.StunProtocol, "datagram_received", ()),
    (aioice.turn.TurnClientMixin, "datagram_received", ()),
    (aioice.ice.Connection, "__init__", ("_nominated", "_protocols")),  # and dtls_srtp.py's
    # rtc/ice.py: host addresses, gathering timeout, pinned ports (the two functions that bind
    # sockets take their loop from their module's global ``asyncio``: the name the seam
    # replaces in aioice.ice and aioice.turn, checked here as theirs)
    (aioice.ice, "get_host_addresses", ()),
    (aioice.ice.Connection, "get_component_candidates", ("asyncio", "get_running_loop")),
    (aioice.turn, "create_turn_endpoint", ("asyncio", "get_running_loop")),
    # rtc/ice.py: the consent checks' sleep on the worker clock (the same global ``asyncio``)
    (aioice.ice.Connection, "query_consent", ("asyncio", "sleep")),
    # rtc/dtls_srtp.py: the ICE transport's connection, its datagrams and nominated pair,
    # DTLS's SRTP keys
    (RTCIceTransport, "__init__", ("_connection",)),
    (aioice.ice.Connection, "data_received", ("_queue", "put_nowait")),
    (aioice.ice.StunProtocol, "send_data", ("transport", "sendto")),
    (RTCDtlsTransport, "__init__", ("_tx_srtp", "_rx_srtp")),
)
"""``(owner, attribute, names its code must use)``: every private part the bridge touches."""


def missing(required: tuple[tuple[Any, str, tuple[str, ...]], ...] = REQUIRED) -> list[str]:
    """What of ``required`` is gone (``Owner.attribute`` or ``Owner.function: name``)."""
    gone = []
    for owner, attribute, names in required:
        label = f"{getattr(owner, '__qualname__', getattr(owner, '__name__', owner))}.{attribute}"
        fn = _unwrapped(getattr(owner, attribute, None))
        if fn is None:
            gone.append(label)
            continue
        used = getattr(getattr(fn, "__code__", None), "co_names", ())
        gone.extend(f"{label}: {name}" for name in names if name not in used)
    return gone


def verify() -> None:
    """Raise :class:`SeamError` naming everything of :data:`REQUIRED` that is gone."""
    gone = missing()
    if gone:
        raise _fail(", ".join(gone) + (" is gone" if len(gone) == 1 else " are gone"))


verify()

ORIGINAL = SimpleNamespace(
    create_ssl_context=RTCCertificate._create_ssl_context,
    set_state=RTCDtlsTransport._set_state,
    stun_datagram_received=aioice.ice.StunProtocol.datagram_received,
    turn_datagram_received=aioice.turn.TurnClientMixin.datagram_received,
    get_host_addresses=aioice.ice.get_host_addresses,
    get_component_candidates=aioice.ice.Connection.get_component_candidates,
)
"""aiortc's and aioice's own functions, as imported (before any patch)."""


@dataclass(frozen=True)
class Hooks:
    """The bridge's replacements for the libraries' own (``rtc/hooks.py`` makes them)."""

    create_ssl_context: Callable[..., Any]
    """DTLS ciphers (``rtc/dtls.py``)."""
    set_state: Callable[..., Any]
    """DTLS failure reasons (``rtc/dtls.py``)."""
    stun_datagram_received: Callable[..., Any]
    """The UDP guard (``rtc/guard.py``)."""
    turn_datagram_received: Callable[..., Any]
    """The UDP guard on a TURN client's datagrams (``rtc/guard.py``)."""
    get_component_candidates: Callable[..., Any]
    """The gathering timeout (``rtc/ice.py``)."""
    asyncio: ModuleType
    """``asyncio`` as aioice sees it: the pinned-port loop, sleeps on the clock (``rtc/ice.py``)."""


def patches(hooks: Hooks) -> tuple[tuple[Any, str, Any], ...]:
    """Every process-wide patch of the bridge, ``(owner, name, replacement)``, the replacement
    taken from ``hooks``."""
    return (
        (RTCCertificate, "_create_ssl_context", hooks.create_ssl_context),
        (RTCDtlsTransport, "_set_state", hooks.set_state),
        (aioice.ice.StunProtocol, "datagram_received", hooks.stun_datagram_received),
        (aioice.turn.TurnClientMixin, "datagram_received", hooks.turn_datagram_received),
        (aioice.ice.Connection, "get_component_candidates", hooks.get_component_candidates),
        (aioice.ice, "asyncio", hooks.asyncio),
        (aioice.turn, "asyncio", hooks.asyncio),
    )


def install(hooks: Hooks) -> None:  # idempotent
    for owner, name, replacement in patches(hooks):
        setattr(owner, name, replacement)


def set_host_addresses(fn: Callable[[bool, bool], list[str]] | None) -> None:
    """What ``aioice.ice.get_host_addresses`` returns (``None``: aioice's own)."""
    aioice.ice.get_host_addresses = fn or ORIGINAL.get_host_addresses  # type: ignore[assignment]


# -- ICE (aioice's Connection behind aiortc's RTCIceTransport)


def ice_connection(transport: RTCIceTransport) -> aioice.ice.Connection | None:
    """The aioice connection of an ICE transport."""
    connection = getattr(transport, "_connection", None)
    return connection if isinstance(connection, aioice.ice.Connection) else None


def nominated(connection: Any) -> dict[int, Any]:
    """The nominated pair of each component."""
    return connection._nominated


def transports(connection: Any) -> list[Any]:
    """The datagram transports of the connection's sockets (its candidates')."""
    return [p.transport for p in connection._protocols if p.transport is not None]


def take_datagrams(connection: Any, callback: Callable[[bytes, int, float], None]) -> Any:
    """Route the connection's non-STUN datagrams to ``callback`` (this connection alone), each
    with its arrival (``time.monotonic()`` base: the socket's stamp where the guard has it,
    :func:`taken_datagrams`, else now); returns aioice's own ``data_received``, or ``None`` if
    something has taken them already."""
    if "data_received" in vars(connection):
        return None
    original = connection.data_received

    def untimed(data: bytes, component: int) -> None:  # a path with no stamp (TURN's)
        callback(data, component, time.monotonic())

    connection.data_received = untimed
    connection._bridge_datagrams = callback
    return original


def taken_datagrams(connection: Any) -> Callable[[bytes, int, float], None] | None:
    """The callback :func:`take_datagrams` installed on ``connection``, if any."""
    return vars(connection).get("_bridge_datagrams")


def give_back_datagrams(connection: Any) -> None:
    """Undo :func:`take_datagrams`."""
    vars(connection).pop("data_received", None)
    vars(connection).pop("_bridge_datagrams", None)


# -- DTLS and SRTP (aiortc's RTCDtlsTransport)


def tx_srtp(dtls: Any) -> Any:
    """The outbound SRTP session (``None`` before DTLS has set up its keys)."""
    return dtls._tx_srtp


def rx_srtp(dtls: Any) -> Any:
    """The inbound SRTP session (``None`` before DTLS has set up its keys)."""
    return dtls._rx_srtp
