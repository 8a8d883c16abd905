"""Malformed SIP by source, over any transport: a message that does not parse (``400``, or
dropped: a response, an ACK), one over the size limits (``513``), or one whose headers the user
agent routes on (Via, From, To, CSeq) do not parse. The user agent counts each ``bad``; this
says it at WARNING once while its source sends no well-formed message, and the end at INFO
(:class:`~bridge.logs.Repeats`): a TCP connection outlives a malformed message whose end is
known and a UDP peer needs none, so one peer may send thousands, and over UDP they were not
said at all."""

from __future__ import annotations

import logging

from ..logs import Repeats

log = logging.getLogger(__name__)


class Malformed:
    """Sources of malformed messages, each said once while it lasts (see the module
    docstring)."""

    def __init__(self) -> None:
        self.sources = Repeats()

    def seen(self, peer: tuple[str, int], what: str, why: str) -> None:
        """One more ``what`` (``malformed``, ``too large``) from ``peer``, for ``why``."""
        if self.sources.seen(peer[0]) == 1:
            log.warning(
                "SIP from %s:%d: %s (%s; said once until this source sends a good message)",
                *peer,
                what,
                why,
            )

    def well_formed(self, host: str) -> None:
        """``host`` sent a message the user agent could route: its run of bad ones ends."""
        if said := self.sources.ended(host):
            log.info("SIP from %s: well-formed again after %d bad", host, said)
