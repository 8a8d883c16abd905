"""HTTP Digest for SIP (RFC 3261 §22, RFC 2617 §3.2): MD5 with ``qop=auth``, both ways.

* :class:`DigestServer` challenges a request (``407 Proxy-Authenticate``) and checks the
  ``Proxy-Authorization`` that comes back. Its nonces carry their own issue time and an HMAC
  (so a forged or foreign nonce is refused without a table); each nonce is good for
  :data:`NONCE_LIFETIME` seconds and each of its ``nc`` counts once (RFC 2617 §3.2.2: a
  repeated ``nc`` is a replay). A stale or replayed nonce with the right password gets a fresh
  challenge with ``stale=true`` (§3.2.1); a wrong password is :attr:`Verdict.WRONG`.
* :func:`authorize` answers a challenge (Meta's ``407`` to our INVITE).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

NONCE_LIFETIME = 30.0
"""Seconds a nonce we issue is accepted (a challenge is answered within a round trip)."""
SEEN_NONCES = 4096
"""Nonces whose used ``nc`` values are remembered (the oldest are forgotten first, and a
forgotten one is stale anyway after :data:`NONCE_LIFETIME`)."""

_PARAM = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')


class Verdict(enum.Enum):
    OK = "ok"
    MISSING = "missing"  # no credentials for our realm: challenge
    STALE = "stale"  # expired or replayed nonce, right password: challenge, stale=true
    WRONG = "wrong"  # wrong user or password (or a nonce we never issued): refuse


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def parse_params(value: str) -> dict[str, str]:
    """``Digest a="b", c=d`` → ``{"a": "b", "c": "d"}`` (names lower case, quotes removed);
    empty when the scheme is not Digest or the list is malformed."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    out: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m or m.end() == pos:
            return {}
        raw = m.group(2)
        if raw.startswith('"') and (len(raw) < 2 or not raw.endswith('"')):
            return {}
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        out[m.group(1).lower()] = raw
        pos = m.end()
    return out


def response_for(
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
) -> str:
    """RFC 2617 §3.2.2.1 with ``qop=auth``: KD(H(A1), nonce:nc:cnonce:qop:H(A2))."""
    ha1 = md5(f"{username}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    return md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


class DigestServer:
    """Challenges and checks one user's credentials (see the module docstring)."""

    def __init__(
        self,
        realm: str,
        username: str,
        password: str,
        *,
        lifetime: float = NONCE_LIFETIME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.realm = realm
        self.username = username
        self.password = password
        self.lifetime = lifetime
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._used: OrderedDict[str, set[str]] = OrderedDict()

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def new_nonce(self) -> str:
        stamp = f"{int(self._clock() * 1000):x}.{secrets.token_hex(4)}"
        return f"{stamp}.{self._sign(stamp)}"

    def challenge(self, stale: bool = False) -> str:
        """A ``Proxy-Authenticate`` value with a fresh nonce."""
        value = (
            f'Digest realm="{self.realm}", nonce="{self.new_nonce()}", '
            f'opaque="{secrets.token_hex(8)}", algorithm=MD5, qop="auth"'
        )
        return value + (", stale=true" if stale else "")

    def _nonce_age(self, nonce: str) -> float | None:
        """Seconds since we issued ``nonce``; ``None`` when we never did."""
        stamp, _, mac = nonce.rpartition(".")
        if not stamp or not hmac.compare_digest(mac, self._sign(stamp)):
            return None
        try:
            issued = int(stamp.split(".")[0], 16) / 1000
        except ValueError:
            return None
        return self._clock() - issued

    def verify(self, method: str, authorization: list[str]) -> Verdict:
        """Check the request's ``Proxy-Authorization`` values (ours is the one for our
        realm, §22.3)."""
        params: dict[str, str] = {}
        for value in authorization:
            candidate = parse_params(value)
            if candidate.get("realm") == self.realm:
                params = candidate
                break
        if not params:
            return Verdict.MISSING
        nonce, nc, cnonce = params.get("nonce", ""), params.get("nc", ""), params.get("cnonce", "")
        if (
            params.get("qop", "").lower() != "auth"
            or params.get("algorithm", "MD5").upper() != "MD5"
            or not re.fullmatch(r"[0-9a-fA-F]{8}", nc)
            or not cnonce
        ):
            return Verdict.MISSING  # not what we asked for: ask again
        age = self._nonce_age(nonce)
        if age is None:
            return Verdict.MISSING  # a nonce we did not issue (another instance, a restart)
        expected = response_for(
            self.username,
            self.realm,
            self.password,
            method,
            params.get("uri", ""),
            nonce,
            nc,
            cnonce,
        )
        user_ok = hmac.compare_digest(params.get("username", "").encode(), self.username.encode())
        if not user_ok or not hmac.compare_digest(params.get("response", "").lower(), expected):
            return Verdict.WRONG
        if not 0 <= age <= self.lifetime:
            return Verdict.STALE
        used = self._used.setdefault(nonce, set())
        self._used.move_to_end(nonce)
        while len(self._used) > SEEN_NONCES:
            self._used.popitem(last=False)
        if nc.lower() in used:
            return Verdict.STALE  # a replay (RFC 2617 §3.2.2: each nc once)
        used.add(nc.lower())
        return Verdict.OK


def authorize(
    challenge: str, method: str, uri: str, username: str, password: str, nc: int = 1
) -> str:
    """The ``Proxy-Authorization`` answering a ``Proxy-Authenticate`` ``challenge``
    (``ValueError`` when it is not an MD5 digest challenge we can answer)."""
    params = parse_params(challenge)
    if not params or params.get("algorithm", "MD5").upper() != "MD5":
        raise ValueError(f"cannot answer the challenge {challenge[:80]!r}")
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    qops = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
    out = (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        "algorithm=MD5"
    )
    if "auth" in qops:
        cnonce = secrets.token_hex(8)
        count = f"{nc:08x}"
        resp = response_for(username, realm, password, method, uri, nonce, count, cnonce)
        out += f', response="{resp}", qop=auth, nc={count}, cnonce="{cnonce}"'
    elif not qops:  # RFC 2069 compatibility (RFC 2617 §3.2.2.1)
        resp = md5(f"{md5(f'{username}:{realm}:{password}')}:{nonce}:{md5(f'{method}:{uri}')}")
        out += f', response="{resp}"'
    else:
        raise ValueError(f"the challenge offers no qop we take: {qops}")
    if "opaque" in params:
        out += f', opaque="{params["opaque"]}"'
    return out
