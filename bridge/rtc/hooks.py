"""The process-wide hooks every leg relies on: the bridge's functions in place of aiortc's and
aioice's own — DTLS ciphers and failure reasons (``dtls.py``), the UDP guard (``guard.py``), the
gathering timeout and the loop and sleeps aioice sees (``ice.py``).

Where each goes inside the libraries is the seam's to know (``aiortc_seam.py``
:func:`~.aiortc_seam.patches`); this module hands it the replacements, so the seam, which
the wrappers import for the libraries' own functions, imports none of them."""

from __future__ import annotations

from . import aiortc_seam as seam
from . import dtls, guard, ice

HOOKS = seam.Hooks(
    create_ssl_context=dtls.create_ssl_context,
    set_state=dtls.set_state,
    stun_datagram_received=guard.guarded_datagram_received,
    turn_datagram_received=guard.guarded_turn_datagram_received,
    get_component_candidates=ice.get_component_candidates,
    asyncio=ice.ASYNCIO_FOR_AIOICE,
)


def install() -> None:
    """Put every hook in place (idempotent): done by each leg before its peer connection."""
    seam.install(HOOKS)
