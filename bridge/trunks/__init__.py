"""SIP trunks in calls: the business's PBX or contact centre on the bridge's calls.

The trunk user agent (``service``: UDP and TCP on ``BRIDGE_SIP_TRUNK_LISTEN``), a SIP
participant of a WhatsApp call (``participant``), a phone taking one over (``replacing``,
RFC 3891), its RTP media (``media``: G.711 or Opus joined to the call's conference like a
browser) and its SDP (``sdp``). The SIP wire itself is
``bridge/sip``; the trunks' records are ``bridge/numbers/trunks.py``."""

from .service import TrunkService

__all__ = ["TrunkService"]
