"""pipecat integration for the WhatsApp call bridge (the ``pipecat`` extra of its package).

:class:`WhatsAppBridgeFrameSerializer` speaks the bridge's own per-call PCM WebSocket
(``GET /call/{callID}/stream``: 16 kHz s16le, the quality the call's bus has, no µ-law);
:class:`WhatsAppBridgeTransport` dials that socket for one call (pipecat's WebSocket client
transport, plus ``clear`` on interruption and hang-up at the end). An agent written for
Twilio needs none of this: point a ``"format": "twilio"`` media fork at it and its
``TwilioFrameSerializer`` works unchanged.
"""

from .serializer import WhatsAppBridgeFrameSerializer
from .transport import WhatsAppBridgeTransport

__all__ = ["WhatsAppBridgeFrameSerializer", "WhatsAppBridgeTransport"]
