"""RFC 4733 ``telephone-event`` on the WhatsApp leg: the detector and sender live in
:mod:`bridge.rtc.rfc4733` (the browser leg uses them too)."""

from ...rtc.rfc4733 import EVENTS, DtmfDetector, EventSender

__all__ = ["EVENTS", "DtmfDetector", "EventSender"]
