"""What the Cloud API engine keeps per call (:class:`CloudCall`, by Meta's ``wacid``) and the
bounded memory of ended calls that makes a redelivered webhook change nothing."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from .peer import WhatsAppPeer

REMEMBERED = 4096
"""Ended calls and handled events remembered, so a redelivered webhook changes nothing."""


@dataclass
class CloudCall:
    """The engine's view of one call (keyed by Meta's ``wacid``)."""

    wacid: str
    peer_wa: str
    direction: str  # "inbound" or "outbound"
    peer: WhatsAppPeer
    """Used for signalling (SDP, media seen); closed by the call's runtime once handed over."""
    state: str = "connecting"  # connecting, ringing, accepted, ended
    answer_sdp: str = ""  # inbound: what pre_accept and accept send
    call_id: str = ""  # outbound: our call id (biz_opaque_callback_data)
    seen: set[str] = field(default_factory=set)
    handed_over: bool = False
    """The call's runtime owns the peer (``take_leg``): it closes it, not the engine."""

    @property
    def jid(self) -> str:
        return f"{self.peer_wa}@s.whatsapp.net"


class Remembered:
    """A bounded set (oldest forgotten first)."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self._items: OrderedDict[str, None] = OrderedDict()
        self.size = size

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def add(self, key: str) -> None:
        self._items[key] = None
        while len(self._items) > self.size:
            self._items.popitem(last=False)
