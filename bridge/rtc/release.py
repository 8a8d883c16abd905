"""Break a closed peer connection's reference cycles, so it is freed at once (no gc).

aiortc's objects point at each other (the peer connection, its transceivers, the DTLS and ICE
transports and their listeners, aioice's connection...), so a closed one is a large cycle only
the cyclic collector frees — while it owns native threads: every PyAV ``AudioResampler`` runs
an FFmpeg filter graph with its own thread pool. With the collector running rarely, threads
piled up call after call (82 left after 20 calls were hung up).

:func:`release_peer_connection` runs once ``RTCPeerConnection.close()`` has completed: it
empties the ``__dict__`` of the per-connection aiortc/aioice objects reachable from it
(:data:`PER_CONNECTION`: never the codec tables aiortc shares between connections), and
reference counting frees them, their resamplers and so their threads.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from OpenSSL import SSL

log = logging.getLogger(__name__)

_OWNED = ("aiortc.", "aioice.")

PER_CONNECTION = frozenset(
    {
        "RTCRtpTransceiver",
        "RTCRtpSender",
        "RTCRtpReceiver",
        "RemoteStreamTrack",
        "RTCDtlsTransport",
        "RtpRouter",
        "RTCIceTransport",
        "RTCIceGatherer",
        "RTCSctpTransport",
        "RTCDataChannel",
        "Connection",
        "StunProtocol",
        "CandidatePair",
        "TurnTransport",
        "TurnClientUdpProtocol",
        "TurnClientTcpProtocol",
        "Transaction",
    }
)
"""Classes whose instances belong to one connection (their state is safe to drop). The
``RTCPeerConnection`` itself keeps its state (its closed state stays readable): once the
objects below are emptied nothing points back at it, so it is no longer in a cycle."""


def _owned(obj: Any) -> bool:
    return type(obj).__module__.startswith(_OWNED) and hasattr(obj, "__dict__")


def _release_ssl(conn: SSL.Connection) -> None:
    """pyOpenSSL's context and its verify helper point at each other (a cycle per DTLS
    transport); the helper is only needed during a handshake."""
    ctx = conn.get_context()
    helper = getattr(ctx, "_verify_helper", None)
    if helper is not None and hasattr(helper, "__dict__"):
        # The helper and its cffi callback refer to each other. The connection is closed
        # and its context never verifies again: drop both (the C side goes with the
        # context, freed by reference counting right after).
        ctx._verify_helper = None
        helper.__dict__.clear()


def _reachable(pc: Any) -> dict[int, Any]:
    seen: dict[int, Any] = {}
    stack = [pc]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen[id(obj)] = obj
        for ref in gc.get_referents(obj):
            if id(ref) in seen or isinstance(ref, type):
                continue
            if isinstance(ref, SSL.Connection):
                seen[id(ref)] = ref
            elif _owned(ref):
                stack.append(ref)
            elif isinstance(ref, dict | list | tuple | set | frozenset):
                stack.append(ref)  # containers inside aiortc objects (listeners, lists)
            elif hasattr(ref, "__self__") and _owned(getattr(ref, "__self__", None)):
                stack.append(ref.__self__)  # bound methods (event listeners)
    return seen


def _holds(coro: Any, seen: dict[int, Any]) -> bool:
    """Whether a frame of ``coro``'s await chain holds one of these objects in a local: a
    method of one (``self``), or a plain function given one (aioice's candidate helpers take
    the protocol, say), however deep it awaits."""
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None and any(id(v) in seen for v in frame.f_locals.values()):
            return True
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return False


def _pending_tasks(seen: dict[int, Any]) -> list[asyncio.Task[Any]]:
    """Tasks still running on one of these objects (aiortc does not await its ``__connect``
    task at close, for one; a leg closed before its ICE started leaves it to start DTLS on a
    closed connection)."""
    current = asyncio.current_task()
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and task is not current and _holds(task.get_coro(), seen)
    ]


def _checks_consent_after_close(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` is aioice's consent checks (RFC 7675) on a connection already closed.

    ``Connection.connect()`` starts them once its checks complete, and a ``close()`` that came
    while it waited for that (a call hung up as its ICE completed) cancels only a consent task
    that already exists: the one started after it loops every ~5 s for ever on a connection
    with no pair, holding the whole peer connection (and its codec threads) alive. Cancelled
    here, as ``close()`` cancels one started before it."""
    coro = task.get_coro()
    if getattr(coro, "__qualname__", "") != "Connection.query_consent":
        return False
    frame = getattr(coro, "cr_frame", None)
    connection = frame.f_locals.get("self") if frame is not None else None
    return bool(getattr(connection, "_closing", False))


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A leftover task of the closed connection ended: its exception (aiortc's own, on a
    connection being torn down) is logged at debug, not as "never retrieved"."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("a closed peer connection's task ended: %r", task.exception())


async def release_peer_connection(pc: Any, timeout: float = 5.0) -> int:
    """Empty the state of the per-connection aiortc/aioice objects of a closed ``pc``.

    Waits (up to ``timeout``) for tasks still running on those objects first; if they do not
    finish, releases nothing (the cyclic collector will, later) rather than pull state from
    under them.
    """
    for waits in range(4):  # what the waited ones start meanwhile, twice over at most
        seen = _reachable(pc)
        pending = _pending_tasks(seen)
        if not pending:
            break
        if waits == 3:
            log.debug("not releasing %r: its tasks keep starting tasks", pc)
            return 0
        for task in pending:
            task.add_done_callback(_retrieve)
            if _checks_consent_after_close(task):
                task.cancel()
        _, still = await asyncio.wait(pending, timeout=timeout)
        if still:
            log.debug("not releasing %r: %d tasks still running", pc, len(still))
            return 0
    for obj in seen.values():
        if isinstance(obj, SSL.Connection):
            _release_ssl(obj)
    released = 0
    for obj in seen.values():
        if _owned(obj) and type(obj).__name__ in PER_CONNECTION:
            obj.__dict__.clear()
            released += 1
    return released
