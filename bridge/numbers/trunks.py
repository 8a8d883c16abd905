"""SIP trunks: the business's own SIP side (a PBX, a contact centre's SBC), as the API and the
store see them (``POST /trunks``).

A trunk names where its calls go (``uri``: ``sip:host:port;transport=udp|tcp|tls``), the
credentials we answer its challenges with (``username``/``password``, digest MD5 or SHA-256),
the codecs it is offered, whether its media is SDES-SRTP, and who may call in through it
(``inbound``: source networks and/or digest credentials it must present). Passwords are
write-only: kept in :attr:`Trunk.secrets`, sealed at rest by the store like a number's.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequest
from .model import new_id, text_field

CODECS = ("opus", "G722", "PCMU", "PCMA")
"""What a trunk may be offered, in the order of our preference by default."""
DEFAULT_CODECS = ("PCMU", "PCMA")
_URI = re.compile(
    r"^sips?:(?:(?P<user>[A-Za-z0-9+._~!$&'()*,;=%-]{1,64})@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]{1,253})(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<params>(?:;[A-Za-z0-9_.=-]{1,64}){0,8})$"
)
TRANSPORTS = ("udp", "tcp", "tls")
FIELDS = {
    "name",
    "uri",
    "username",
    "password",
    "register",
    "codecs",
    "srtp",
    "inbound",
    "answer",
    "keepalive",
    "holdMusic",
}
INBOUND_FIELDS = {"allowFrom", "username", "password", "digest"}
DIGESTS = ("SHA-256", "MD5")
"""The digest algorithms a trunk's INVITE is challenged with, preferred first (RFC 8760)."""


@dataclass
class Trunk:
    """One SIP trunk (see the module docstring)."""

    trunk_id: str
    name: str
    uri: str
    tenant_id: str = ""
    username: str = ""
    register: bool = False
    keepalive: int = 30
    """Seconds between OPTIONS keep-alives (0: none)."""
    codecs: tuple[str, ...] = DEFAULT_CODECS
    srtp: str = "off"
    allow_from: tuple[str, ...] = ()
    inbound_username: str = ""
    inbound_digest: tuple[str, ...] = DIGESTS
    """Challenges offered to the trunk (a PBX that reads only the first header and knows
    only MD5 — SIPp, older PBXes — is given ``["MD5"]``)."""
    answer_numbers: tuple[str, ...] = ()
    """Numbers (phone or numberID) whose inbound WhatsApp calls the bridge answers and
    bridges to :attr:`answer_uri` through this trunk, with no app code."""
    answer_uri: str = ""
    hold_music: str = ""
    """An audio asset WhatsApp hears looped while a phone of this trunk, the call's agent,
    holds the call by re-INVITE (``trunks/reinvite.py``); none: silence."""
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    """``password`` (ours toward the trunk) and ``inboundPassword`` (the trunk's toward us)."""
    created_at: float = field(default_factory=time.time)

    @property
    def password(self) -> str:
        return self.secrets.get("password", "")

    @property
    def credentials(self) -> tuple[str, str]:
        """Our username and password toward the trunk: what answers the PBX's challenge to a
        request we send in a leg's dialog (a BYE, a NOTIFY; RFC 3261 §22.2)."""
        return self.username, self.password

    @property
    def inbound_password(self) -> str:
        return self.secrets.get("inboundPassword", "")

    @property
    def transport(self) -> str:
        """``udp``, ``tcp`` or ``tls`` (``sips:`` is TLS; UDP when the URI says nothing)."""
        return uri_transport(self.uri)

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.allow_from)

    def admits(self, source: str) -> bool:
        """Whether a request from ``source`` may use the trunk's inbound side (by network
        only; digest, when the trunk asks for it, is checked on the request)."""
        if not self.allow_from:
            return bool(self.inbound_password)  # a trunk with no rule takes nothing in
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False
        return any(address in net for net in self.networks)

    def answers(self, names: set[str], tenant_id: str) -> bool:
        """Whether the trunk takes the inbound calls of a number known by ``names`` (its id,
        its phone) for ``tenant_id`` (``answer.numbers``, to ``answer.uri``)."""
        return (
            bool(self.answer_uri)
            and self.tenant_id == tenant_id
            and bool(names & set(self.answer_numbers))
        )

    def public(self) -> dict[str, Any]:
        return {
            "trunkID": self.trunk_id,
            "name": self.name,
            "uri": self.uri,
            "transport": self.transport,
            "tenantID": self.tenant_id or None,
            "username": self.username or None,
            "passwordSet": bool(self.password),
            "register": self.register,
            "keepalive": self.keepalive,
            "codecs": list(self.codecs),
            "srtp": self.srtp,
            "inbound": {
                "allowFrom": list(self.allow_from),
                "username": self.inbound_username or None,
                "passwordSet": bool(self.inbound_password),
                "digest": list(self.inbound_digest),
            },
            "answer": {"numbers": list(self.answer_numbers), "uri": self.answer_uri}
            if self.answer_uri
            else None,
            "holdMusic": self.hold_music or None,
            "createdAt": self.created_at,
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "trunkID": self.trunk_id,
            "name": self.name,
            "uri": self.uri,
            "tenantID": self.tenant_id,
            "username": self.username,
            "register": self.register,
            "keepalive": self.keepalive,
            "codecs": list(self.codecs),
            "srtp": self.srtp,
            "allowFrom": list(self.allow_from),
            "inboundUsername": self.inbound_username,
            "inboundDigest": list(self.inbound_digest),
            "answerNumbers": list(self.answer_numbers),
            "answerURI": self.answer_uri,
            "holdMusic": self.hold_music,
            "secrets": self.secrets,
            "createdAt": self.created_at,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Trunk:
        return cls(
            trunk_id=str(record["trunkID"]),
            name=str(record.get("name") or ""),
            uri=str(record["uri"]),
            tenant_id=str(record.get("tenantID") or ""),
            username=str(record.get("username") or ""),
            register=bool(record.get("register")),
            keepalive=int(record.get("keepalive", 30)),
            codecs=tuple(record.get("codecs") or DEFAULT_CODECS),
            srtp=str(record.get("srtp") or "off"),
            allow_from=tuple(record.get("allowFrom") or ()),
            inbound_username=str(record.get("inboundUsername") or ""),
            inbound_digest=tuple(record.get("inboundDigest") or DIGESTS),
            answer_numbers=tuple(record.get("answerNumbers") or ()),
            answer_uri=str(record.get("answerURI") or ""),
            hold_music=str(record.get("holdMusic") or ""),
            secrets=dict(record.get("secrets") or {}),
            created_at=float(record.get("createdAt") or time.time()),
        )


def uri_transport(uri: str) -> str:
    match = re.search(r";transport=([A-Za-z]+)", uri)
    if match:
        return match.group(1).lower()
    return "tls" if uri.startswith("sips:") else "udp"


def parse_uri(value: object, name: str = "uri") -> str:
    """A trunk's or a target's SIP URI, or 400 naming the field."""
    if not isinstance(value, str) or not _URI.match(value):
        raise BadRequest(
            f"field {name!r} must be a SIP URI such as sip:pbx.example.com:5060;transport=udp",
            code="invalid_uri",
        )
    match = _URI.match(value)
    assert match is not None
    if match.group("port") and not 0 < int(match.group("port")) <= 65535:
        raise BadRequest(f"field {name!r}: the port must be 1-65535", code="invalid_uri")
    if uri_transport(value) not in TRANSPORTS:
        raise BadRequest(f"field {name!r}: transport must be udp, tcp or tls", code="invalid_uri")
    return value


HEADER_NAME = re.compile(r"^X-[A-Za-z0-9-]{1,62}$")
HEADER_VALUE = re.compile(r"^[\x20-\x7e]{0,256}$")


def parse_headers(value: object, name: str = "sip.headers") -> list[tuple[str, str]]:
    """A SIP target's own ``headers`` (up to 16 ``X-`` headers with printable values), or 400
    naming the field: ``POST /call/participants {"sip"}`` and a route's ``sip`` step alike."""
    if value is None:
        return []
    if not isinstance(value, dict) or len(value) > 16:
        raise BadRequest(f"field {name!r} must map up to 16 X- headers to values")
    for header, text in value.items():
        if (
            not HEADER_NAME.match(str(header))
            or not isinstance(text, str)
            or not HEADER_VALUE.match(text)
        ):
            raise BadRequest(
                f"field {name!r}: {str(header)[:40]!r} must be an X- header with a printable value"
            )
    return list(value.items())


def _secret(body: Mapping[str, Any], name: str, where: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 128):
        raise BadRequest(f"field {where!r} must be a string of 1 to 128 characters")
    return value


def _apply_inbound(trunk: Trunk, inbound: object) -> None:
    if inbound is None:
        trunk.allow_from, trunk.inbound_username = (), ""
        trunk.secrets.pop("inboundPassword", None)
        return
    if not isinstance(inbound, dict):
        raise BadRequest("field 'inbound' must be an object")
    for name in inbound:
        if name not in INBOUND_FIELDS:
            raise BadRequest(
                f"field 'inbound.{str(name)[:40]}' is not known "
                "(allowFrom, username, password, digest)"
            )
    nets = inbound.get("allowFrom", [])
    if not isinstance(nets, list) or len(nets) > 64:
        raise BadRequest("field 'inbound.allowFrom' must be a list of at most 64 CIDRs")
    for net in nets:
        try:
            ipaddress.ip_network(net, strict=False)
        except (ValueError, TypeError):
            raise BadRequest(
                f"field 'inbound.allowFrom': {str(net)[:60]!r} is not a network (CIDR)"
            ) from None
    trunk.allow_from = tuple(nets)
    digest = inbound.get("digest", list(DIGESTS))
    if not isinstance(digest, list) or not digest or any(d not in DIGESTS for d in digest):
        raise BadRequest("field 'inbound.digest' must list SHA-256 and/or MD5")
    trunk.inbound_digest = tuple(dict.fromkeys(digest))
    trunk.inbound_username = text_field(inbound, "username", limit=64)
    password = _secret(inbound, "password", "inbound.password")
    if password:
        trunk.secrets["inboundPassword"] = password
    if bool(trunk.inbound_username) != bool(trunk.inbound_password):
        raise BadRequest(
            "fields 'inbound.username' and 'inbound.password' go together", code="missing_field"
        )


def _apply_answer(trunk: Trunk, answer: object) -> None:
    if answer is None:
        trunk.answer_numbers, trunk.answer_uri = (), ""
        return
    if not isinstance(answer, dict) or set(answer) - {"numbers", "uri"}:
        raise BadRequest("field 'answer' must be an object with 'numbers' and 'uri'")
    numbers = answer.get("numbers")
    if (
        not isinstance(numbers, list)
        or not 0 < len(numbers) <= 64
        or not all(
            isinstance(n, str) and re.fullmatch(r"\+?[A-Za-z0-9_-]{1,64}", n) for n in numbers
        )
    ):
        raise BadRequest(
            "field 'answer.numbers' must list 1 to 64 numbers (phone or numberID)",
            code="missing_field",
        )
    trunk.answer_numbers = tuple(numbers)
    trunk.answer_uri = parse_uri(answer.get("uri"), "answer.uri")


def apply_trunk_fields(trunk: Trunk, body: Mapping[str, Any]) -> None:
    """The fields of a ``POST``/``PATCH /trunks`` body, each refusal naming its field."""
    for name in body:
        if name not in FIELDS:
            raise BadRequest(f"field {name!r} is not a trunk field (known: {sorted(FIELDS)})")
    if "name" in body:
        trunk.name = text_field(body, "name", limit=100, required=True)
        if not trunk.name.strip():
            raise BadRequest("field 'name' must not be empty", code="missing_field")
    if "uri" in body:
        trunk.uri = parse_uri(body["uri"])
    if "username" in body:
        trunk.username = text_field(body, "username", limit=64)
    if "password" in body:
        password = _secret(body, "password", "password")
        if password:
            trunk.secrets["password"] = password
        else:
            trunk.secrets.pop("password", None)
    if "register" in body:
        if not isinstance(body["register"], bool):
            raise BadRequest("field 'register' must be true or false")
        trunk.register = body["register"]
    if "keepalive" in body:
        value = body["keepalive"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not (value == 0 or 5 <= value <= 3600)
        ):
            raise BadRequest("field 'keepalive' must be 0 (off) or 5 to 3600 seconds")
        trunk.keepalive = value
    if "codecs" in body:
        codecs = body["codecs"]
        if (
            not isinstance(codecs, list)
            or not codecs
            or any(c not in CODECS for c in codecs)
            or len(set(codecs)) != len(codecs)
        ):
            raise BadRequest(f"field 'codecs' must be a list of distinct codecs of {list(CODECS)}")
        trunk.codecs = tuple(codecs)
    if "srtp" in body:
        if body["srtp"] not in ("sdes", "off"):
            raise BadRequest("field 'srtp' must be sdes or off")
        trunk.srtp = body["srtp"]
    if "inbound" in body:
        _apply_inbound(trunk, body["inbound"])
    if "answer" in body:
        _apply_answer(trunk, body["answer"])
    if "holdMusic" in body:
        music = body["holdMusic"]
        if music is not None and (not isinstance(music, str) or not 0 < len(music) <= 128):
            raise BadRequest("field 'holdMusic' must be an audio asset id (or null for silence)")
        trunk.hold_music = music or ""
    if trunk.register and not (trunk.username and trunk.password):
        raise BadRequest(
            "fields 'username' and 'password' are required with 'register'", code="missing_field"
        )


def parse_trunk(body: Mapping[str, Any], tenant_id: str = "") -> Trunk:
    """A new trunk from a ``POST /trunks`` body."""
    for name in ("name", "uri"):
        if name not in body:
            raise BadRequest(f"field {name!r} is required", code="missing_field")
    trunk = Trunk(trunk_id=new_id("trk"), name="", uri="", tenant_id=tenant_id)
    apply_trunk_fields(trunk, body)
    return trunk
