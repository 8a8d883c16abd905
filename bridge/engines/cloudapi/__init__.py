"""Meta's WhatsApp Business Cloud API Calling as an engine (``BRIDGE_ENGINE=cloudapi``):
the Graph client (``graph``), signed webhooks (``webhook``), the WhatsApp-side WebRTC peer
(``peer``, built from ``bridge.rtc`` pieces), SDP as Meta takes it (``sdp``), RFC 4733 DTMF
(``dtmf``) and the engine (``engine``)."""

from .engine import CloudApiEngine
from .webhook import SIGNATURE_HEADER, sign

__all__ = ["SIGNATURE_HEADER", "CloudApiEngine", "sign"]
