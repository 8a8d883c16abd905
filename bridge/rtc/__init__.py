"""WebRTC per call: the peer-connection leg every WebRTC side of a call is (``PeerLeg``), the
browser's session on it, bus-backed tracks, ICE configuration."""

from .connected import ConnectedLeg
from .factory import SessionFactory
from .ice import (
    advertise_public_ip,
    restrict_host_addresses,
    server_rtc_configuration,
    set_gather_timeout,
)
from .leg import PeerLeg
from .quality import Quality
from .session import WebRTCSession
from .turn import TurnGrant, TurnProvider, create_turn_provider, rest_credential

__all__ = [
    "ConnectedLeg",
    "PeerLeg",
    "Quality",
    "SessionFactory",
    "TurnGrant",
    "TurnProvider",
    "WebRTCSession",
    "advertise_public_ip",
    "create_turn_provider",
    "rest_credential",
    "restrict_host_addresses",
    "server_rtc_configuration",
    "set_gather_timeout",
]
