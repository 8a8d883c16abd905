"""The SIP listener's places: how many of its connections each source may hold at once, and
how long a connection may be silent. One judgement a connection, at accept, from the source
address as accept gave it (never from what the peer says later):

* everyone: at most :data:`MAX_CONNECTIONS` connections and handshakes at once;
* a source outside ``BRIDGE_SIP_TRUSTED_NETWORKS`` (when set): at most :data:`MAX_UNTRUSTED`
  of those at once, each closed after :data:`UNTRUSTED_IDLE_TIMEOUT` of silence;
* one source (an address; an IPv6 one by its /64): at most ``PeerPolicy.per_source``
  (``BRIDGE_SIP_MAX_CONNECTIONS_PER_SOURCE``), unless it is in the trusted networks (Meta's:
  the operator vouched for them). Without trusted networks, every source is capped: one host
  could otherwise fill every place and hold each for the idle timeout, and keep Meta out.

A connection over a bound is closed as it arrives, counted in :attr:`Places.refused` by
reason, and said once at WARNING while it lasts (per source for the per-source cap), with
:class:`~bridge.logs.Repeats`. Every accepted connection also has
``PeerPolicy.first_message_timeout`` from its handshake to its first whole SIP message
(``listener.py``): Meta opens a connection to send a request, so only a client that holds a
place and says nothing meets it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..logs import Repeats
from .transport import IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_UNTRUSTED, UNTRUSTED_IDLE_TIMEOUT
from .trust import PeerPolicy, Share, source_key

log = logging.getLogger(__name__)

REASONS = ("closing", "full", "untrusted", "per_source")
"""Why a connection was refused a place (the keys of :attr:`Places.refused`)."""


@dataclass(frozen=True)
class Place:
    """One accepted connection's place: whose it is, its share and its timers."""

    source: str
    """:func:`~.trust.source_key` of its peer."""
    share: Share
    first_message: float
    """Seconds from its handshake to its first whole SIP message."""

    @property
    def idle(self) -> float:
        """Seconds it may stay silent between messages."""
        return UNTRUSTED_IDLE_TIMEOUT if self.share is Share.UNTRUSTED else IDLE_TIMEOUT


class Places:
    """The listener's places (module docstring): :meth:`take` at accept, :meth:`leave` when
    the connection (or its handshake) ends."""

    def __init__(self, policy: PeerPolicy) -> None:
        self.policy = policy
        self.untrusted = 0
        """Places held by untrusted sources: at most ``MAX_UNTRUSTED``."""
        self.by_source: dict[str, int] = {}
        """Places held by each capped source (a key only while it holds one: bounded by
        ``MAX_CONNECTIONS``)."""
        self.refused = dict.fromkeys(REASONS, 0)
        """Connections closed as they arrived, by reason."""
        self._said = Repeats()
        """What is full (everyone's places, the untrusted share, a source's): said once
        while it lasts."""

    def take(self, host: str, busy: int, *, closing: bool = False) -> Place | None:
        """A place for a new connection from ``host`` while ``busy`` connections and
        handshakes are held; ``None`` (counted, said once while it lasts) when there is none."""
        if closing:
            self.refused["closing"] += 1
            return None
        share = self.policy.share(host)
        source = source_key(host)
        capped = share is not Share.TRUSTED
        per_source = self.policy.per_source
        if busy >= MAX_CONNECTIONS:
            why, key = "full", "*"
            said = f"{MAX_CONNECTIONS} connections and handshakes at once"
        elif share is Share.UNTRUSTED and self.untrusted >= MAX_UNTRUSTED:
            why, key = "untrusted", "untrusted"
            said = f"{MAX_UNTRUSTED} connections from untrusted sources at once"
        elif capped and self.by_source.get(source, 0) >= per_source:
            why, key = "per_source", f"source {source}"
            said = (
                f"{per_source} connections from {source} at once "
                "(BRIDGE_SIP_MAX_CONNECTIONS_PER_SOURCE)"
            )
        else:  # a place: what was full for it is no longer
            self._said.ended("*")
            if share is Share.UNTRUSTED:
                self._said.ended("untrusted")
                self.untrusted += 1
            if capped:
                self.by_source[source] = self.by_source.get(source, 0) + 1
                before = self._said.ended(f"source {source}")
                if before:
                    log.info("SIP: %s has a place again (%d refused before)", source, before)
            return Place(source, share, self.policy.first_message_timeout)
        self.refused[why] += 1
        if self._said.seen(key) == 1:
            log.warning("SIP: %s: more are closed as they arrive (the latest from %s)", said, host)
        return None

    def leave(self, place: Place) -> None:
        """``place``'s connection ended: its place is free."""
        if place.share is Share.UNTRUSTED:
            self.untrusted -= 1
        if place.share is not Share.TRUSTED:
            left = self.by_source.get(place.source, 0) - 1
            if left > 0:
                self.by_source[place.source] = left
            else:
                self.by_source.pop(place.source, None)

    def silent(self, place: Place, peer: tuple[str, int]) -> None:
        """``place``'s connection sent no whole SIP message within its first-message timeout
        and is closed: said once per source while it lasts."""
        if self._said.seen(f"silent {place.source}") == 1:
            log.warning(
                "SIP from %s:%d: closed: no SIP message within %g s of its handshake "
                "(BRIDGE_SIP_FIRST_MESSAGE_TIMEOUT); later ones from %s are not said",
                *peer,
                min(place.first_message, place.idle),
                place.source,
            )

    def spoke(self, place: Place) -> None:
        """``place``'s connection sent its first whole SIP message."""
        self._said.ended(f"silent {place.source}")
