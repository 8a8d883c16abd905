"""One call's audio in this process: the PCM bus, its media clock and its counters."""

from ..audio.pcm import frame_energy
from .bus import BusClosed, CallBus, UplinkSource
from .conference import CallPort, Conference, Role
from .frames import BusFrame, DownlinkSink
from .stats import BusStats, FixedHistogram, LevelMeter, ReceiveStats, level_dbfs

__all__ = [
    "BusClosed",
    "BusFrame",
    "BusStats",
    "CallBus",
    "CallPort",
    "Conference",
    "DownlinkSink",
    "FixedHistogram",
    "LevelMeter",
    "ReceiveStats",
    "Role",
    "UplinkSource",
    "frame_energy",
    "level_dbfs",
]
