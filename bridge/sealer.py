"""``Sealer``: short secrets sealed with AES-256-GCM (NIST SP 800-38D) under a key derived by
HKDF-SHA256 (RFC 5869) from a deployment secret, each bound to a context (associated data) so a
sealed value cannot be moved to another record or field. The call directory seals what a call's
record carries (``cluster/sealing.py``); the numbers store seals numbers' and tenants'
credentials (``numbers/store.py``)."""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "v1."
"""Marks the format, so a later one can be told apart."""
NONCE = 12
"""Bytes of random nonce per sealing (GCM's recommended 96 bits)."""


class SealBroken(ValueError):
    """The sealed text was not sealed with this secret for this context (or was altered)."""


class Sealer:
    """Seals and opens short secrets with a key derived from the cluster's shared secret."""

    def __init__(self, secret: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"bridge sealed agent key v1"
        ).derive(secret.encode())
        self._aead = AESGCM(key)

    def seal(self, text: str, context: str) -> str:
        """``text`` sealed for ``context`` (e.g. ``call id/agent id``)."""
        nonce = os.urandom(NONCE)
        sealed = self._aead.encrypt(nonce, text.encode(), context.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, token: str, context: str) -> str:
        """The text :meth:`seal` sealed for ``context``; :class:`SealBroken` otherwise."""
        if not isinstance(token, str) or not token.startswith(PREFIX):
            raise SealBroken("not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(token[len(PREFIX) :])
            return self._aead.decrypt(raw[:NONCE], raw[NONCE:], context.encode()).decode()
        except (InvalidTag, ValueError) as exc:
            raise SealBroken("sealed under another secret, or altered") from exc
