"""WebRTC per call: aiortc peer connection lifecycle, bus-backed tracks, ICE configuration."""

from .ice import restrict_host_addresses, server_rtc_configuration
from .session import WebRTCSession
from .tracks import BusAudioTrack

__all__ = ["BusAudioTrack", "WebRTCSession", "restrict_host_addresses", "server_rtc_configuration"]
