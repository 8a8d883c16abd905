"""The media leg of a Cloud API call, chosen by ``BRIDGE_CLOUDAPI_MEDIA`` in one place:
``dtls``, :class:`~.peer.WhatsAppPeer` (ICE + DTLS-SRTP), or ``sdes``, :class:`~.sdes.SdesPeer`
(plain UDP SRTP with ``a=crypto`` keys). Both have the same surface and send their first packet
as soon as they can (Meta waits for it). Both signalling modes make their legs through
:func:`new_leg` only.
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
    leg = {CloudMedia.DTLS: WhatsAppPeer, CloudMedia.SDES: SdesPeer}.get(kind)
    if leg is None:
        raise ConfigError(f"BRIDGE_CLOUDAPI_MEDIA={kind}: no such media leg (dtls or sdes)")
    return leg(name, ice, stats, on_dtmf=on_dtmf, on_media=on_media, on_closed=on_closed)
