"""A WebSocket server's side done by hand, for fakes that must misbehave where a real server
library would not let them (never read again, never answer the close, answer late)."""

from __future__ import annotations

import base64
import hashlib

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455 §1.3: what the client's key is hashed with for the accept."""


def switching_protocols(head: bytes) -> bytes:
    """The ``101 Switching Protocols`` answering a client's handshake ``head`` (its request
    line and headers, up to the blank line)."""
    key = next(
        ln.split(b":", 1)[1].strip()
        for ln in head.split(b"\r\n")
        if ln.lower().startswith(b"sec-websocket-key")
    )
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
