"""RFC 4733 ``telephone-event`` on the WhatsApp leg: the detector and the key presses' sender
live in :mod:`bridge.rtc.rfc4733` (every leg uses them); a leg's presses wait in one bounded
:class:`~bridge.rtc.rfc4733.KeyPresses` and go out on its track's clock, in place of audio
(``rtc/tracks.py`` ``OpusBusTrack``)."""

from __future__ import annotations

from ...rtc.rfc4733 import EVENTS, DtmfDetector, KeyPresses

__all__ = ["DTMF_QUEUE", "EVENTS", "DtmfDetector", "KeyPresses"]

DTMF_QUEUE = 64
"""Key presses waiting to be sent as RFC 4733 events; more are refused (409)."""
