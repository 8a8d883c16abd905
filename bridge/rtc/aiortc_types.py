"""The public classes of aiortc's submodules that the bridge uses and aiortc's top level does
not export: RTP/RTCP packets (RFC 3550), RTP header extensions (RFC 8285), the receiver's
statistics, the DTLS transport's state and the jitter buffer's frame.

Named here once, beside ``rtc/aiortc_seam.py`` (which names the private ones): no other module
imports an aiortc or aioice submodule (``tests/unit/test_layout.py``), so an aiortc upgrade that
moves one of these is a change to this file.
"""

from __future__ import annotations

from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    HeaderExtensions,
    HeaderExtensionsMap,
    RtcpByePacket,
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
)

__all__ = [
    "HeaderExtensions",
    "HeaderExtensionsMap",
    "JitterFrame",
    "RtcpByePacket",
    "RtcpPacket",
    "RtcpReceiverInfo",
    "RtcpRrPacket",
    "RtcpSdesPacket",
    "RtcpSenderInfo",
    "RtcpSourceInfo",
    "RtcpSrPacket",
    "RtpPacket",
    "State",
    "StreamStatistics",
]
