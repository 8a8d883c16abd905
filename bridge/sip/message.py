"""SIP messages (RFC 3261 §7): parse and serialise, with hard size limits.

Narrow on purpose: the methods and headers Meta's SIP interface uses (INVITE, ACK, BYE,
CANCEL, OPTIONS, NOTIFY; Via, From, To, Call-ID, CSeq, Contact, Route, Record-Route,
Max-Forwards, Content-Type/Length, the digest headers and Meta's ``x-wa-meta-*``). A message
is a start line, a list of ``(name, value)`` header fields in their order (compact forms
expanded, §7.3.3; folded lines joined, §7.3.1) and a body. Anything that does not fit the
grammar or the limits raises :class:`SipParseError`, whose text goes into a ``400``'s reason.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

MAX_HEAD = 16 * 1024
"""Largest start line + header section (Meta's INVITEs are ~2 KiB)."""
MAX_BODY = 16 * 1024
"""Largest body (an SDP offer with every candidate is ~1.5 KiB)."""
MAX_HEADERS = 80
"""Most header fields in one message."""
MAX_LINE = 4096
"""Longest header line after unfolding."""

COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "f": "From",
    "t": "To",
    "v": "Via",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "e": "Content-Encoding",
    "o": "Event",
    "r": "Refer-To",
    "u": "Allow-Events",
}
"""Compact header forms (RFC 3261 §7.3.3, RFC 3265, RFC 3515)."""

_CANONICAL = {
    n.lower(): n
    for n in (
        "Via From To Call-ID CSeq Contact Route Record-Route Max-Forwards Content-Type "
        "Content-Length Allow Supported Require Unsupported Proxy-Authenticate "
        "Proxy-Authorization WWW-Authenticate Authorization User-Agent Server Accept Warning "
        "Reason Retry-After Subject Event Refer-To Allow-Events Content-Encoding Expires"
    ).split()
}

TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_REQUEST_LINE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+) (\S+) SIP/2\.0$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6][0-9]{2}) ([^\r\n]*)$")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]+")
"""ASCII digits (§25.1 DIGIT): ``str.isdigit`` also takes ``²``, which ``int`` refuses."""


class SipParseError(ValueError):
    """The bytes are not a SIP message we take (the text says why, for a ``400``)."""


class MessageTooLarge(SipParseError):
    """Over :data:`MAX_HEAD` or :data:`MAX_BODY`: ``513`` where it can be answered (§21.5.11)."""


def canonical(name: str) -> str:
    """A header name as we write it: compact forms expanded, known names in their case."""
    low = name.lower()
    low = COMPACT.get(low, low).lower()
    return _CANONICAL.get(low, name)


def split_list(value: str) -> list[str]:
    """A comma-separated header value split outside quotes and ``<…>`` (§7.3.1)."""
    out: list[str] = []
    depth, quoted, escaped, start = 0, False, False, 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            out.append(value[start:i].strip())
            start = i + 1
    out.append(value[start:].strip())
    return [v for v in out if v]


@dataclass
class Message(ABC):
    """A SIP request or response (see the module docstring)."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    # -- headers
    def get(self, name: str, default: str = "") -> str:
        """The first value of header ``name`` (any case, compact form too)."""
        want = canonical(name).lower()
        for n, v in self.headers:
            if n.lower() == want:
                return v
        return default

    def all(self, name: str) -> list[str]:
        """Every field of header ``name``, in order."""
        want = canonical(name).lower()
        return [v for n, v in self.headers if n.lower() == want]

    def values(self, name: str) -> list[str]:
        """Every value of a list header (fields split at commas), in order."""
        return [v for field_ in self.all(name) for v in split_list(field_)]

    def set(self, name: str, value: str) -> None:
        """Replace every field of ``name`` with one (appended if there was none)."""
        name = canonical(name)
        check_value(value)
        want = name.lower()
        out, done = [], False
        for n, v in self.headers:
            if n.lower() == want:
                if not done:
                    out.append((name, value))
                    done = True
            else:
                out.append((n, v))
        if not done:
            out.append((name, value))
        self.headers = out

    def add(self, name: str, value: str) -> None:
        check_value(value)
        self.headers.append((canonical(name), value))

    def remove(self, name: str) -> None:
        want = canonical(name).lower()
        self.headers = [(n, v) for n, v in self.headers if n.lower() != want]

    @property
    def call_id(self) -> str:
        return self.get("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        """CSeq's number and method (§20.16); :class:`SipParseError` when malformed."""
        return parse_cseq(self.get("CSeq"))

    # -- serialising
    @abstractmethod
    def start_line(self) -> str:
        """The request or status line (§7.1, §7.2)."""

    def to_bytes(self) -> bytes:
        """The message on the wire, Content-Length set from the body (§20.14)."""
        lines = [self.start_line()]
        lines += [f"{n}: {v}" for n, v in self.headers if n.lower() != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass
class Request(Message):
    method: str = ""
    uri: str = ""

    def start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"


@dataclass
class Response(Message):
    status: int = 0
    reason: str = ""

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"


def check_value(value: str) -> None:
    """A header value we write must not smuggle a line break (header injection)."""
    if _CTL.search(value):
        raise ValueError(f"control character in header value {value[:40]!r}")


def parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2 or not _DIGITS.fullmatch(parts[0]) or len(parts[0]) > 10:
        raise SipParseError("bad CSeq")
    number = int(parts[0])
    if number >= 2**31 or not TOKEN.match(parts[1]):
        raise SipParseError("bad CSeq")
    return number, parts[1].upper()


def parse_head(head: bytes) -> Request | Response:
    """The start line and headers (everything before the blank line), checked."""
    if len(head) > MAX_HEAD:
        raise MessageTooLarge("message too large")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("not UTF-8") from None
    lines = text.split("\r\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise SipParseError("empty message")
    start, rest = lines[0], lines[1:]
    msg: Request | Response
    if m := _REQUEST_LINE.match(start):
        msg = Request(method=m.group(1).upper(), uri=m.group(2))
        if not re.match(r"^(sips?|tel):[^\s<>\"]{1,1024}$", msg.uri, re.I):
            raise SipParseError("bad Request-URI")
    elif m := _STATUS_LINE.match(start):
        msg = Response(status=int(m.group(1)), reason=m.group(2))
    else:
        raise SipParseError("bad start line")
    fields: list[list[str]] = []
    for line in rest:
        if line[:1] in (" ", "\t"):  # a folded continuation (§7.3.1)
            if not fields:
                raise SipParseError("continuation before any header")
            fields[-1][1] += " " + line.strip()
        else:
            name, sep, value = line.partition(":")
            name = name.strip()
            if not sep or not TOKEN.match(name):
                raise SipParseError("bad header line")
            fields.append([name, value.strip()])
        if len(fields[-1][1]) > MAX_LINE:
            raise SipParseError("header line too long")
        if len(fields) > MAX_HEADERS:
            raise SipParseError("too many headers")
    for name, value in fields:
        if _CTL.search(value):
            raise SipParseError("control character in a header")
        msg.headers.append((canonical(name), value))
    return msg


def content_length(msg: Message) -> int:
    """The Content-Length a stream message must carry (§18.3; §20.14)."""
    raw = msg.get("Content-Length")
    if not raw:
        raise SipParseError("no Content-Length")
    if not _DIGITS.fullmatch(raw) or len(raw) > 9:
        raise SipParseError("bad Content-Length")
    length = int(raw)
    if length > MAX_BODY:
        raise MessageTooLarge("body too large")
    return length


def frame_length(head: bytes) -> int | None:
    """Where a stream message whose head did not parse ends (§18.3): its Content-Length, read
    leniently, when its start line is SIP's and one Content-Length field holds digits;
    ``None`` when that cannot be known (the stream's framing is lost with it)."""
    lines = head.decode("utf-8", "replace").split("\r\n")
    if not (_REQUEST_LINE.match(lines[0]) or _STATUS_LINE.match(lines[0])):
        return None
    found = [
        value.strip()
        for name, sep, value in (line.partition(":") for line in lines[1:] if line[:1] > " ")
        if sep and name.strip().lower() in ("content-length", "l")
    ]
    if len(found) != 1 or not _DIGITS.fullmatch(found[0]) or len(found[0]) > 9:
        return None
    return int(found[0])


def starts_a_request(head: bytes) -> bool:
    """Whether ``head`` (a message that did not parse) begins with a request line (§7.1)."""
    line = head.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    return bool(_REQUEST_LINE.match(line))


def check_request(msg: Request) -> None:
    """The mandatory request headers (§8.1.1) and a CSeq that names the method (§8.2)."""
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not msg.get(name):
            raise SipParseError(f"missing {name}")
    if not msg.values("Via"):  # ``Via: ,`` has a field but no value
        raise SipParseError("missing Via")
    _, method = msg.cseq
    if method != msg.method:
        raise SipParseError("CSeq method does not match")


def parse(data: bytes) -> Request | Response:
    """A whole message from one buffer (tests, fuzzing): head, blank line, body."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipParseError("no blank line after the headers")
    msg = parse_head(head)
    length = content_length(msg) if msg.get("Content-Length") else len(body)
    if length > MAX_BODY:  # a datagram without Content-Length: its body is the rest (§18.3)
        raise MessageTooLarge("body too large")
    if len(body) < length:
        raise SipParseError("body shorter than Content-Length")
    msg.body = body[:length]
    if isinstance(msg, Request):
        check_request(msg)
    return msg
