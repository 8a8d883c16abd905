"""SIP over TLS, as narrow as Meta's WhatsApp Business Calling SIP interface needs (RFC 3261):
messages (``message``, ``headers``), digest authentication with SHA-256 and MD5 (``digest``),
TLS transport (``transport``), dialogs (``dialog``), transactions (``transaction``), the user
agent core (``ua``), who may send us SIP (``trust``) and how many connections each source may
hold on the listener (``places``), a request answered once when challenged
(``challenged``), an INVITE we send (``outbound_invite``, the trunks' too) and our INVITE to
Meta (``uac``).
The Cloud API engine's SIP signalling (``engines/cloudapi/sip_engine.py``) drives it."""

from .dialog import Dialog, reply
from .digest import (
    Challenge,
    DigestError,
    DigestServer,
    Verdict,
    authorize,
    choose,
    parse_params,
)
from .front import Doors, FrontDoor, Line
from .headers import Address, Uri, Via
from .message import Message, Request, Response, SipParseError, parse
from .transaction import CallHandler, InviteServer
from .transport import CertFiles, Connection, KeyLocked, client_context, load_pair
from .trust import PeerPolicy
from .ua import UserAgent
from .uac import InviteClient

__all__ = [
    "Address",
    "CallHandler",
    "CertFiles",
    "Challenge",
    "Connection",
    "Dialog",
    "DigestError",
    "DigestServer",
    "Doors",
    "FrontDoor",
    "InviteClient",
    "InviteServer",
    "KeyLocked",
    "Line",
    "Message",
    "PeerPolicy",
    "Request",
    "Response",
    "SipParseError",
    "Uri",
    "UserAgent",
    "Verdict",
    "Via",
    "authorize",
    "choose",
    "client_context",
    "load_pair",
    "parse",
    "parse_params",
    "reply",
]
