"""The one seam between the bridge and aiortc's and aioice's internals.

The bridge replaces parts of aiortc's media path (``rtc/rtpsend.py``, ``rtc/rtprecv.py``,
``rtc/uplink.py``), hardens its transports (``rtc/guard.py``, ``rtc/dtls.py``) and pins aioice's
sockets to a port range (``rtc/ice.py``), touching attributes neither library documents. They
are all named here, and only here, so an aiortc upgrade is a change to this file (and the pin):

* :data:`REQUIRED`: every private function or attribute the bridge reads, writes or wraps, as
  the aiortc/aioice function whose code must still name it (an instance attribute exists only
  once ``__init__`` has run). :func:`verify` checks them all at import: a release that renames
  one fails at start with :class:`SeamError`, naming what is gone and :data:`SUPPORTED`.
* :data:`ORIGINAL` (the libraries' own functions, for the wrappers) and :func:`patches` (every
  process-wide patch, one table, applied by :func:`install`); then the per-object takeovers and
  the accessors.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import aioice
import aioice.ice
import aioice.turn
import aiortc
from aioice import stun
from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceTransport, RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcdtlstransport import RtpRouter, State
from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap, RtcpRrPacket

# Taken from aiortc's and aioice's submodules by other modules (only through this one).
__all__ = ["HeaderExtensions", "HeaderExtensionsMap", "RtcpRrPacket", "State", "stun"]

SUPPORTED = {"aiortc": ">=1.16,<1.17", "aioice": ">=0.10"}
"""The versions this seam was written against (``pyproject.toml`` pins the same)."""

_R, _S, _D = "_RTCRtpReceiver__", "_RTCRtpSender__", "_RTCDtlsTransport__"  # name mangling

SENDER_FIELDS: tuple[str, ...] = ("rtp_started", "rtp_exited", "ntp_timestamp", "rtp_timestamp")
SENDER_FIELDS += ("octet_count", "packet_count", "mid", "rtp_header_extensions_map", "track")
"""``RTCRtpSender`` private attributes the lean sender reads or writes (name-mangled)."""
RECEIVER_TABLES = ("codecs", "remote_streams", "active_ssrc")
"""``RTCRtpReceiver`` private dicts the lean receive path reads and fills (name-mangled)."""
DTLS_SEND = ("_state", "_tx_srtp", "transport", _D + "tx_bytes", _D + "tx_packets")
DTLS_RECEIVE = ("_rx_srtp", "_rtp_router", _D + "rx_bytes", "transport")
_RX = (_D + "rx_bytes", _D + "rx_packets")
_TABLES = tuple(_R + name for name in RECEIVER_TABLES)


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
    (RTCDtlsTransport, "_do_handshake", ("_ssl",)),
    (RTCDtlsTransport, "_validate_peer_identity", ()),
    (RTCDtlsTransport, "_setup_srtp", ()),
    (RTCDtlsTransport, "_set_state", ()),
    (aioice.ice.Connection, "connect", ()),
    (RTCIceTransport, "__init__", ("_connection", "_send")),
    # rtc/guard.py: the UDP filter
    (aioice.ice.StunProtocol, "datagram_received", ()),
    (aioice.turn.TurnClientMixin, "datagram_received", ()),
    (aioice.ice.Connection, "__init__", ("_check_list", "_nominated")),
    # rtc/ice.py: host addresses, gathering timeout, pinned ports
    (aioice.ice, "get_host_addresses", ()),
    (aioice.ice.Connection, "get_component_candidates", ("asyncio", "get_running_loop")),
    (aioice.turn, "create_turn_endpoint", ("asyncio", "get_running_loop")),
    (aioice.ice, "asyncio", ()),
    (aioice.turn, "asyncio", ()),
    # rtc/rtprecv.py: the lean receive path
    (aioice.ice.Connection, "data_received", ("_queue", "put_nowait")),
    (RTCDtlsTransport, "_recv_next", ("_rx_srtp", "unprotect", "_handle_rtp_data", *_RX)),
    (RTCDtlsTransport, "_handle_rtp_data", ("_rtp_router", "route_rtp")),
    (RtpRouter, "route_rtp", ("ssrc_table", "payload_type_table")),
    (RTCRtpReceiver, "_handle_rtp_packet", ("_enabled", "_data", *_TABLES)),
    (
        RTCRtpReceiver,
        "_run_rtcp",
        (_TABLES[1], "fraction_lost", "packets_lost", "max_seq", "jitter"),
    ),
    (RTCRtpReceiver, "receive", ("_register_rtp_receiver",)),
    # rtc/uplink.py: the jitter buffer and decoder queue, the receiver reports
    (RTCRtpReceiver, "__init__", (_R + "jitter_buffer", _R + "decoder_queue")),
    (RTCRtpReceiver, "_send_rtcp", ()),
    # rtc/rtpsend.py: the lean sender, its datagrams straight to the nominated pair's socket
    (aioice.ice.StunProtocol, "send_data", ("transport", "sendto")),
    (RTCRtpSender, "send", ("_run_rtp",)),
    (RTCRtpSender, "_run_rtp", ()),
    (RTCRtpSender, "_run_rtcp", tuple(_S + n for n in SENDER_FIELDS[2:6])),
    (RTCRtpSender, "__init__", ("_ssrc", *(_S + n for n in SENDER_FIELDS if n != "track"))),
    (RTCRtpSender, "stop", (_S + "rtp_started", _S + "rtp_exited")),
    (RTCRtpSender, "_handle_rtcp_packet", ("reports",)),
    (RTCDtlsTransport, "_send_rtp", ("_tx_srtp", "protect", "_send", "_state")),
    (RTCDtlsTransport, "__init__", ("_state", "_tx_srtp", *DTLS_SEND[3:], *DTLS_RECEIVE[:3])),
    (State, "CONNECTED", ()),
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
    do_handshake=RTCDtlsTransport._do_handshake,
    validate_peer_identity=RTCDtlsTransport._validate_peer_identity,
    setup_srtp=RTCDtlsTransport._setup_srtp,
    set_state=RTCDtlsTransport._set_state,
    recv_next=RTCDtlsTransport._recv_next,
    connect=aioice.ice.Connection.connect,
    stun_datagram_received=aioice.ice.StunProtocol.datagram_received,
    turn_datagram_received=aioice.turn.TurnClientMixin.datagram_received,
    get_host_addresses=aioice.ice.get_host_addresses,
    get_component_candidates=aioice.ice.Connection.get_component_candidates,
    run_rtp=RTCRtpSender._run_rtp,
)
"""aiortc's and aioice's own functions, as imported (before any patch)."""


def patches() -> tuple[tuple[Any, str, Any], ...]:
    """Every process-wide patch of the bridge, ``(owner, name, replacement)``: DTLS ciphers and
    failure reasons (``rtc/dtls.py``), the UDP guard (``rtc/guard.py``), the gathering timeout
    and the pinned-port loop (``rtc/ice.py``)."""
    from . import dtls, guard, ice  # the wrappers; they import this module for ORIGINAL

    return (
        (RTCCertificate, "_create_ssl_context", dtls.create_ssl_context),
        (RTCDtlsTransport, "_do_handshake", dtls.do_handshake),
        (RTCDtlsTransport, "_validate_peer_identity", dtls.validate_peer_identity),
        (RTCDtlsTransport, "_setup_srtp", dtls.setup_srtp),
        (RTCDtlsTransport, "_set_state", dtls.set_state),
        (aioice.ice.Connection, "connect", dtls.connect),
        (aioice.ice.StunProtocol, "datagram_received", guard.guarded_datagram_received),
        (aioice.turn.TurnClientMixin, "datagram_received", guard.guarded_turn_datagram_received),
        (RTCDtlsTransport, "_recv_next", guard.robust_recv_next),
        (aioice.ice.Connection, "get_component_candidates", ice.get_component_candidates),
        (aioice.ice, "asyncio", ice.ASYNCIO_FOR_AIOICE),
        (aioice.turn, "asyncio", ice.ASYNCIO_FOR_AIOICE),
    )


def install() -> None:  # idempotent
    for owner, name, replacement in patches():
        setattr(owner, name, replacement)


def set_host_addresses(fn: Callable[[bool, bool], list[str]] | None) -> None:
    """What ``aioice.ice.get_host_addresses`` returns (``None``: aioice's own)."""
    aioice.ice.get_host_addresses = fn or ORIGINAL.get_host_addresses  # type: ignore[assignment]


# -- ICE (aioice's Connection behind aiortc's RTCIceTransport)


def ice_connection(transport: RTCIceTransport) -> aioice.ice.Connection | None:
    """The aioice connection of an ICE transport."""
    connection = getattr(transport, "_connection", None)
    return connection if isinstance(connection, aioice.ice.Connection) else None


def check_list(connection: Any) -> list[Any]:
    """The connection's candidate pairs (RFC 8445 §6.1.2)."""
    return connection._check_list


def nominated(connection: Any) -> dict[int, Any]:
    """The nominated pair of each component."""
    return connection._nominated


def take_datagrams(connection: Any, callback: Callable[[bytes, int], None]) -> Any:
    """Route the connection's non-STUN datagrams to ``callback`` (this connection alone);
    returns aioice's own ``data_received``, or ``None`` if something has taken them already."""
    if "data_received" in vars(connection):
        return None
    original = connection.data_received
    connection.data_received = callback
    return original


def give_back_datagrams(connection: Any) -> None:
    """Undo :func:`take_datagrams`."""
    vars(connection).pop("data_received", None)


# -- DTLS and SRTP (aiortc's RTCDtlsTransport)


def _require(obj: Any, names: tuple[str, ...], owner: str) -> None:
    for name in names:
        if not hasattr(obj, name):
            raise _fail(f"{owner} has no {name.rpartition('__')[2] or name}")


def require_dtls(dtls: Any, *, send: bool) -> None:
    """Fail clearly if this DTLS transport lacks what the lean sender (``send``) or the lean
    receive path uses."""
    _require(dtls, DTLS_SEND if send else DTLS_RECEIVE, "RTCDtlsTransport")


def swap_ssl(dtls: Any, ssl: Any) -> Any:
    """Put ``ssl`` as the transport's ``SSL.Connection``; returns the one it had."""
    old, dtls._ssl = dtls._ssl, ssl
    return old


def connected(dtls: Any) -> bool:
    return dtls._state == State.CONNECTED


def tx_srtp(dtls: Any) -> Any:
    """The outbound SRTP session (``None`` before DTLS has set up its keys)."""
    return dtls._tx_srtp


def rx_srtp(dtls: Any) -> Any:
    """The inbound SRTP session (``None`` before DTLS has set up its keys)."""
    return dtls._rx_srtp


def rtp_router(dtls: Any) -> Any:
    return dtls._rtp_router


def nominated_pairs(dtls: Any) -> dict[int, Any]:
    """The nominated pair of each component of the ICE connection under DTLS."""
    return dtls.transport._connection._nominated


def count_sent(dtls: Any, nbytes: int) -> None:
    """One datagram sent, in the transport's counters (``getStats``' transport entry)."""
    dtls._RTCDtlsTransport__tx_bytes += nbytes
    dtls._RTCDtlsTransport__tx_packets += 1


def count_received(dtls: Any, nbytes: int) -> None:
    dtls._RTCDtlsTransport__rx_bytes += nbytes
    dtls._RTCDtlsTransport__rx_packets += 1


def rtp_data_handler(dtls: Any) -> Callable[..., Awaitable[None]]:
    """This transport's RTP routing step (``_handle_rtp_data(data, arrival_time_ms)``)."""
    return dtls._handle_rtp_data


def set_rtp_data_handler(dtls: Any, handler: Callable[..., Awaitable[None]]) -> None:
    """Route this transport's RTP through ``handler`` (which calls the previous one)."""
    dtls._handle_rtp_data = handler


# -- the receiver (aiortc's RTCRtpReceiver)


def receiver_tables(receiver: Any) -> tuple[dict[int, Any], dict[int, Any], dict[int, Any]]:
    """The receiver's codecs, RTCP statistics per SSRC and active-SSRC table."""
    tables = [getattr(receiver, _R + name, None) for name in RECEIVER_TABLES]
    for name, table in zip(RECEIVER_TABLES, tables, strict=True):
        if not isinstance(table, dict):
            raise _fail(f"RTCRtpReceiver has no {name}")
    return tables[0], tables[1], tables[2]  # type: ignore[return-value]


def receiver_enabled(receiver: Any) -> bool:
    return receiver._enabled


def rtp_payload(packet: Any) -> bytes:
    """A packet's depayloaded data, as aiortc hands it to its jitter buffer."""
    return packet._data


def take_jitter_buffer(receiver: Any, buffer: Any, decoder_queue: Any) -> None:
    """Put ``buffer`` where the receiver's jitter buffer was and ``decoder_queue`` where its
    decoder queue was (before the receiver starts)."""
    jitter, decoder = (getattr(receiver, _R + n, None) for n in ("jitter_buffer", "decoder_queue"))
    if not isinstance(jitter, JitterBuffer) or not isinstance(decoder, queue.Queue):
        raise _fail("RTCRtpReceiver's jitter buffer or decoder queue changed")
    setattr(receiver, _R + "jitter_buffer", buffer)
    setattr(receiver, _R + "decoder_queue", decoder_queue)


def wrap_send_rtcp(receiver: Any, wrap: Callable[[Any], Any]) -> None:
    """Put ``wrap(original)`` in front of this receiver's RTCP sending (``_send_rtcp``)."""
    send = getattr(receiver, "_send_rtcp", None)
    if send is None or not asyncio.iscoroutinefunction(send):
        raise _fail("RTCRtpReceiver has no _send_rtcp coroutine")
    receiver._send_rtcp = wrap(send)


# -- the sender (aiortc's RTCRtpSender)


def require_sender(sender: Any) -> int:
    """Fail clearly if this sender lacks what the lean sender uses; its SSRC."""
    _require(sender, ("_ssrc", *(_S + n for n in SENDER_FIELDS)), "RTCRtpSender")
    return sender._ssrc


def take_rtp_loop(sender: Any, run: Callable[[Any], Any]) -> None:
    """Run ``run(codec)`` as this sender's RTP task in place of aiortc's ``_run_rtp``."""
    sender._run_rtp = run


def watch_reports(sender: Any, on_block: Callable[[Any], None]) -> None:
    """Each RTCP report block (SR/RR) the sender gets goes to ``on_block``, then to aiortc."""
    handle = sender._handle_rtcp_packet

    async def handle_rtcp_packet(packet: Any) -> None:
        for block in getattr(packet, "reports", ()):
            on_block(block)
        await handle(packet)

    sender._handle_rtcp_packet = handle_rtcp_packet


def sender_events(sender: Any) -> tuple[asyncio.Event, asyncio.Event]:
    """The sender's ``rtp_started`` and ``rtp_exited`` events (``stop`` waits on both)."""
    return getattr(sender, _S + "rtp_started"), getattr(sender, _S + "rtp_exited")


def sender_header(sender: Any) -> tuple[Any, str | None]:
    """The sender's header extensions map and its ``mid``."""
    return getattr(sender, _S + "rtp_header_extensions_map"), getattr(sender, _S + "mid")


def report_sent(sender: Any, packets: int, octets: int, ntp: int | None, rtp: int | None) -> None:
    """What aiortc's ``_run_rtcp`` writes its sender reports from: packet and octet counts,
    and (``ntp``/``rtp`` not ``None``) the time pair of the newest audio packet."""
    sender._RTCRtpSender__packet_count = packets
    sender._RTCRtpSender__octet_count = octets
    if ntp is not None:
        sender._RTCRtpSender__ntp_timestamp = ntp
        sender._RTCRtpSender__rtp_timestamp = rtp
