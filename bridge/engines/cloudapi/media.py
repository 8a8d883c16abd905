"""The media leg of a Cloud API call, chosen by ``BRIDGE_CLOUDAPI_MEDIA`` in one place.

* ``dtls``: :class:`~.peer.WhatsAppPeer`, the WebRTC leg (ICE + DTLS-SRTP). Meta is ICE-lite;
  the bridge is the full, controlling agent and the DTLS client (``a=setup:active``). Its
  sender starts on the worker's 20 ms clock as soon as DTLS is up (silence until the agent
  speaks): the first SRTP packet Meta waits for leaves at once, on SIP and Graph calls alike.
* ``sdes``: :class:`~.sdes.SdesPeer`, a plain UDP SRTP leg with keys from ``a=crypto``
  (RFC 4568), no ICE, no DTLS — the same shape (``answer(offer)``, ``offer()``,
  ``apply_answer(sdp)``, ``open_channel()`` for the pump, DTMF, pass-through, ``leg_json()``,
  ``close()``). Its first packet leaves as soon as the far end's SDP is known.

Both signalling modes (Graph and SIP) make their legs through :func:`new_leg` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...config import CloudMedia, ConfigError, IceSettings
from ..base import EngineStats
from .peer import WhatsAppPeer
from .sdes import SdesPeer

MediaLeg = WhatsAppPeer | SdesPeer
"""What :func:`new_leg` returns (both have the same surface)."""


def new_leg(
    kind: CloudMedia,
    name: str,
    ice: IceSettings | None,
    stats: EngineStats,
    *,
    on_dtmf: Callable[[Any, str, int], None],
    on_media: Callable[[Any], None],
    on_closed: Callable[[Any], None] | None = None,
) -> MediaLeg:
    """A new media leg of ``kind`` for one call (see the module docstring)."""
    if kind is CloudMedia.DTLS:
        return WhatsAppPeer(
            name, ice, stats, on_dtmf=on_dtmf, on_media=on_media, on_closed=on_closed
        )
    if kind is CloudMedia.SDES:
        return SdesPeer(name, ice, stats, on_dtmf=on_dtmf, on_media=on_media, on_closed=on_closed)
    raise ConfigError(f"BRIDGE_CLOUDAPI_MEDIA={kind}: no such media leg (dtls or sdes)")
