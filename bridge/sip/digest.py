"""HTTP Digest for SIP (RFC 3261 §22 as RFC 8760 updates it; RFC 7616, RFC 2617 §3.2): SHA-256,
SHA-512-256 and MD5 with ``qop=auth``, both ways.

* :func:`choose` reads every ``Proxy-Authenticate`` of a ``407`` (Meta's carries two:
  ``algorithm=SHA-256`` first, ``MD5`` second, each with its own nonce and opaque) and takes
  the one we answer: the strongest we support (:data:`PREFERENCE`), as RFC 8760 §2.4 lets a
  UAC pick among a server's challenges. When none fits, :class:`DigestError` says, challenge
  by challenge, why. :meth:`Challenge.answer` (and :func:`authorize`, both in one) makes the
  ``Proxy-Authorization``.
* :class:`DigestServer` challenges a request (``407``, one ``Proxy-Authenticate`` per algorithm
  it offers, most preferred first, RFC 8760 §2.4) and checks the ``Proxy-Authorization`` that
  comes back. Its nonces carry their own issue time and an HMAC (so a forged or foreign nonce
  is refused without a table); each nonce is good for :data:`NONCE_LIFETIME` seconds and each
  of its ``nc`` counts once (RFC 7616 §3.4.5: a repeated ``nc`` is a replay). A stale or
  replayed nonce with the right password gets a fresh challenge with ``stale=true``
  (§3.3); a wrong password is :attr:`Verdict.WRONG`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..logs import Repeats

NONCE_LIFETIME = 30.0
"""Seconds a nonce we issue is accepted (a challenge is answered within a round trip)."""
SEEN_NONCES = 4096
"""Nonces whose used ``nc`` values are remembered (the oldest are forgotten first, and a
forgotten one is stale anyway after :data:`NONCE_LIFETIME`)."""
WRONG_SOURCES = 1024
"""Sources a server remembers answering wrong (a guesser said once, not once a guess)."""

HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "SHA-512-256": lambda data: hashlib.new("sha512_256", data).hexdigest(),
}
"""The digest algorithms we know (RFC 7616 §3.2; RFC 8760 §2.2 for SIP), each with its
``-sess`` variant (§3.4.2)."""
CHALLENGES = {
    401: ("WWW-Authenticate", "Authorization"),
    407: ("Proxy-Authenticate", "Proxy-Authorization"),
}
"""A challenge's header and the header answering it (RFC 3261 §22.2, §22.3)."""
PREFERENCE = ("SHA-256", "SHA-512-256", "MD5")
"""Which of several challenges we answer: SHA-256 first (what Meta's edge accepts, and the
one strong algorithm every RFC 8760 server has), MD5 last."""

_PARAM = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')


class Verdict(enum.Enum):
    OK = "ok"
    MISSING = "missing"  # no credentials for our realm: challenge
    STALE = "stale"  # expired or replayed nonce, right password: challenge, stale=true
    WRONG = "wrong"  # wrong user or password (or a nonce we never issued): refuse


class DigestError(ValueError):
    """No challenge we can answer; the text says which challenge failed and why."""


def md5(text: str) -> str:
    return HASHES["MD5"](text.encode("utf-8"))


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


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def response_for(
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    algorithm: str = "MD5",
    qop: str = "auth",
) -> str:
    """RFC 7616 §3.4.1 (RFC 2617 §3.2.2.1): KD(H(A1), nonce:nc:cnonce:qop:H(A2)); without a
    ``qop``, RFC 2069's KD(H(A1), nonce:H(A2)). ``algorithm`` is one of :data:`HASHES`,
    optionally ``-sess`` (H(A1) then also binds nonce and cnonce, §3.4.2)."""
    base, sess = _algorithm(algorithm)
    h = HASHES[base]

    def hash_(text: str) -> str:
        return h(text.encode("utf-8"))

    ha1 = hash_(f"{username}:{realm}:{password}")
    if sess:
        ha1 = hash_(f"{ha1}:{nonce}:{cnonce}")
    ha2 = hash_(f"{method}:{uri}")
    if not qop:
        return hash_(f"{ha1}:{nonce}:{ha2}")
    return hash_(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _algorithm(name: str) -> tuple[str, bool]:
    """``"sha-256-sess"`` → ``("SHA-256", True)``; ``KeyError`` when we do not know it."""
    upper = name.upper()
    base = upper.removesuffix("-SESS")
    if base not in HASHES:
        raise KeyError(name)
    return base, base != upper


@dataclass(frozen=True)
class Challenge:
    """One ``Proxy-Authenticate``/``WWW-Authenticate`` digest challenge we can answer."""

    realm: str
    nonce: str
    algorithm: str
    """As the server wrote it (``SHA-256``, ``MD5``, ``MD5-sess`` …; ``MD5`` when absent)."""
    qop: str
    """``auth``, or ``""`` for an RFC 2069 challenge without qop."""
    opaque: str | None = None
    stale: bool = False

    @classmethod
    def parse(cls, value: str) -> Challenge:
        """:class:`DigestError` saying why when we cannot answer ``value``."""
        params = parse_params(value)
        if not params:
            scheme = value.strip().partition(" ")[0][:20] or "(empty)"
            raise DigestError(f"scheme {scheme!r} is not Digest or its parameters do not parse")
        algorithm = params.get("algorithm", "MD5")
        try:
            _algorithm(algorithm)
        except KeyError:
            raise DigestError(f"algorithm={algorithm[:30]} is not one we support") from None
        if "nonce" not in params or "realm" not in params:
            raise DigestError(f"algorithm={algorithm}: no realm or nonce")
        qops = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
        if qops and "auth" not in qops:
            raise DigestError(f"algorithm={algorithm}: qop={','.join(qops)[:30]} (we do auth)")
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=algorithm,
            qop="auth" if qops else "",
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
        )

    def answer(self, method: str, uri: str, username: str, password: str, nc: int = 1) -> str:
        """The ``Proxy-Authorization`` value (RFC 7616 §3.4; ``uri`` is the Request-URI,
        RFC 3261 §22.4)."""
        cnonce = secrets.token_hex(16)
        count = f"{nc:08x}"
        resp = response_for(
            username,
            self.realm,
            password,
            method,
            uri,
            self.nonce,
            count,
            cnonce,
            self.algorithm,
            self.qop,
        )
        out = (
            f"Digest username={_quote(username)}, realm={_quote(self.realm)}, "
            f"nonce={_quote(self.nonce)}, uri={_quote(uri)}, response={_quote(resp)}, "
            f"algorithm={self.algorithm}"
        )
        if self.qop:
            out += f", qop={self.qop}, nc={count}, cnonce={_quote(cnonce)}"
        if self.opaque is not None:
            out += f", opaque={_quote(self.opaque)}"
        return out


def choose(challenges: Sequence[str]) -> Challenge:
    """The challenge we answer among a response's (see the module docstring); the first of
    the most preferred algorithm when several are offered."""
    usable: list[Challenge] = []
    refused: list[str] = []
    for i, value in enumerate(challenges, 1):
        try:
            usable.append(Challenge.parse(value))
        except DigestError as exc:
            refused.append(f"challenge {i} of {len(challenges)}: {exc}")
    if not usable:
        why = "; ".join(refused) or "the response carries no challenge"
        raise DigestError(f"no challenge we can answer ({why})")

    def rank(ch: Challenge) -> int:
        return PREFERENCE.index(_algorithm(ch.algorithm)[0])

    return min(usable, key=rank)  # min keeps the first of equal rank


def authorize(
    challenges: str | Sequence[str],
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
) -> str:
    """The ``Proxy-Authorization`` answering the best of ``challenges`` (one value or all of a
    response's); :class:`DigestError` when none can be answered."""
    values = [challenges] if isinstance(challenges, str) else list(challenges)
    return choose(values).answer(method, uri, username, password, nc)


class DigestServer:
    """Challenges and checks one user's credentials (see the module docstring).
    ``algorithms``: what the ``407`` offers, one challenge each, in this order."""

    def __init__(
        self,
        realm: str,
        username: str,
        password: str,
        *,
        algorithms: Sequence[str] = ("MD5",),
        lifetime: float = NONCE_LIFETIME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        known = [_algorithm(a) for a in algorithms]  # KeyError on an unknown one
        if not known or any(sess for _, sess in known):
            raise ValueError(f"DigestServer offers plain algorithms of {list(HASHES)}")
        self.realm = realm
        self.username = username
        self.password = password
        self.algorithms = tuple(base for base, _ in known)
        self.lifetime = lifetime
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._used: OrderedDict[str, set[str]] = OrderedDict()
        self.wrong = Repeats(WRONG_SOURCES)
        """Wrong answers in a row, by source (someone guessing: said once, and its end)."""

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def new_nonce(self) -> str:
        stamp = f"{int(self._clock() * 1000):x}.{secrets.token_hex(4)}"
        return f"{stamp}.{self._sign(stamp)}"

    def challenge(self, stale: bool = False, algorithm: str = "") -> str:
        """One ``Proxy-Authenticate`` value with a fresh nonce and opaque (the first of our
        algorithms unless ``algorithm`` names another)."""
        value = (
            f'Digest realm="{self.realm}", nonce="{self.new_nonce()}", '
            f'opaque="{secrets.token_hex(8)}", algorithm={algorithm or self.algorithms[0]}, '
            'qop="auth"'
        )
        return value + (", stale=true" if stale else "")

    def challenges(self, stale: bool = False) -> list[str]:
        """Every ``Proxy-Authenticate`` of our ``407``, most preferred first."""
        return [self.challenge(stale, algorithm) for algorithm in self.algorithms]

    def _nonce_age(self, nonce: str) -> float | None:
        """Seconds since we issued ``nonce``; ``None`` when we never did."""
        stamp, _, mac = nonce.rpartition(".")
        # (As bytes: compare_digest raises TypeError on a str that is not ASCII, and a nonce
        # is the peer's to write.)
        if not stamp or not hmac.compare_digest(mac.encode(), self._sign(stamp).encode()):
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
        algorithm = params.get("algorithm", "MD5").upper()
        if (
            params.get("qop", "").lower() != "auth"
            or algorithm not in self.algorithms
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
            algorithm,
        )
        user_ok = hmac.compare_digest(params.get("username", "").encode(), self.username.encode())
        given = params.get("response", "").lower().encode()
        if not user_ok or not hmac.compare_digest(given, expected.encode()):
            return Verdict.WRONG
        if not 0 <= age <= self.lifetime:
            return Verdict.STALE
        used = self._used.setdefault(nonce, set())
        self._used.move_to_end(nonce)
        while len(self._used) > SEEN_NONCES:
            self._used.popitem(last=False)
        if nc.lower() in used:
            return Verdict.STALE  # a replay (RFC 7616 §3.4.5: each nc once)
        used.add(nc.lower())
        return Verdict.OK
