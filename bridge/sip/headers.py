"""The structured SIP header values the bridge reads and writes: SIP URIs (RFC 3261 §19.1),
name-addr / addr-spec with parameters (§20.10, §25.1: From, To, Contact, Route,
Record-Route) and Via (§20.42). Parsing is strict where we route on the value and
:class:`~.message.SipParseError` otherwise."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from .message import SipParseError

BRANCH_MAGIC = "z9hG4bK"
"""RFC 3261 §8.1.1.7: every branch we make starts with it."""

_URI = re.compile(
    r"^(?P<scheme>sips?):(?:(?P<user>[^@;?\s]+)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+)(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<params>(?:;[^;?\s]*)*)(?P<headers>\?\S*)?$",
    re.I,
)
_VIA = re.compile(
    r"^SIP\s*/\s*2\.0\s*/\s*(?P<transport>[A-Za-z]+)\s+"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+)(?:\s*:\s*(?P<port>[0-9]{1,5}))?"
    r"(?P<params>(?:\s*;[^;]*)*)$",
    re.I,
)


def new_branch() -> str:
    return BRANCH_MAGIC + secrets.token_hex(10)


def new_tag() -> str:
    return secrets.token_hex(8)


def _params(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(";"):
        part = part.strip()
        if part:
            key, _, value = part.partition("=")
            out[key.strip().lower()] = value.strip()
    return out


def _join_params(params: dict[str, str]) -> str:
    return "".join(f";{k}={v}" if v else f";{k}" for k, v in params.items())


@dataclass
class Uri:
    """A ``sip:``/``sips:`` URI (§19.1.1)."""

    scheme: str = "sip"
    user: str = ""
    host: str = ""
    port: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    headers: str = ""

    @classmethod
    def parse(cls, text: str) -> Uri:
        m = _URI.match(text.strip())
        if not m:
            raise SipParseError("bad SIP URI")
        port = int(m.group("port")) if m.group("port") else None
        if port is not None and not 0 < port < 65536:
            raise SipParseError("bad port in SIP URI")
        return cls(
            m.group("scheme").lower(),
            m.group("user") or "",
            m.group("host"),
            port,
            _params(m.group("params") or ""),
            m.group("headers") or "",
        )

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}:{user}{self.host}{port}{_join_params(self.params)}{self.headers}"

    @property
    def loose(self) -> bool:
        """A loose router (``;lr``, §16.12.1.1)."""
        return "lr" in self.params

    def destination(self, default_port: int = 5061) -> tuple[str, int]:
        """Where a request to this URI goes: its host and port (5061 over TLS by default,
        5060 over UDP and TCP, §19.1.2). No NAPTR/SRV look-up (RFC 3263): Meta's hosts and
        the trunks are configured by name."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return host, self.port or default_port


def _unquoted_angle(text: str) -> int:
    """Where the ``<`` of a name-addr is: the first outside the display name's quoted string
    (§25.1: it may hold ``<``, ``>``, ``;`` and escaped quotes); -1 when there is none."""
    quoted = escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "<" and not quoted:
            return i
    return -1


@dataclass
class Address:
    """A name-addr or addr-spec with header parameters (From, To, Contact, (Record-)Route)."""

    uri: Uri
    display: str = ""
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Address:
        text = text.strip()
        display = ""
        opening = _unquoted_angle(text)
        if opening >= 0:
            before, rest = text[:opening], text[opening + 1 :]
            uri_text, sep, after = rest.partition(">")
            if not sep:
                raise SipParseError("unclosed <")
            display = before.strip()
            params = _params(after)
        else:
            # addr-spec: the parameters after the URI are the header's (§20.10)
            uri_text, _, after = text.partition(";")
            params = _params(after)
        return cls(Uri.parse(uri_text), display, params)

    @property
    def tag(self) -> str:
        return self.params.get("tag", "")

    def __str__(self) -> str:
        name = f"{self.display} " if self.display else ""
        return f"{name}<{self.uri}>{_join_params(self.params)}"


@dataclass
class Via:
    """One Via value (§20.42)."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Via:
        m = _VIA.match(text.strip())
        if not m:
            raise SipParseError("bad Via")
        port = int(m.group("port")) if m.group("port") else None
        return cls(m.group("transport").upper(), m.group("host"), port, _params(m.group("params")))

    @property
    def branch(self) -> str:
        return self.params.get("branch", "")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{_join_params(self.params)}"


def warning(why: object) -> tuple[str, str]:
    """A ``Warning`` header (RFC 3261 §20.43: code 399, our host, quoted text) saying ``why``."""
    text = re.sub(r"[\r\n]", " ", str(why)).replace('"', "'").replace("\\", "/")[:200]
    return "Warning", f'399 bridge "{text}"'


def strip_tag(value: str) -> str:
    """A From/To value without its tag (CANCEL's To, §9.1, keeps the INVITE's untagged)."""
    addr = Address.parse(value)
    addr.params.pop("tag", None)
    return str(addr)
