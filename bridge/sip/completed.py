"""Completed server transactions (RFC 3261 §17.2.1, §17.2.2; RFC 6026 §8.7): our final
responses, kept for 64·T1 so that a retransmission of a request is answered with them again
and never handled twice (``transaction.answered_again``)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from .headers import Via
from .message import Response, SipParseError

COMPLETED = 2048
"""Final responses kept at once (about 64 a second for 64·T1), the oldest forgotten first."""


class Completed:
    """Our final responses by (Call-ID, branch, CSeq), each kept for 64·T1 to answer a
    retransmission of its request again (§17.2.1 Timer H, §17.2.2 Timer J; an INVITE's 2xx,
    RFC 6026 §8.7 Accepted): over UDP any request, over TLS an INVITE (Meta may resend it on
    a new connection), which must never become a second call."""

    def __init__(self, keep: float, clock: Callable[[], float] = time.monotonic) -> None:
        """``keep``: seconds each is kept (64·T1); ``clock``: what tells the time."""
        self.keep = keep
        self._responses: OrderedDict[tuple[str, str, int, str], tuple[float, Response]] = (
            OrderedDict()
        )
        self._clock = clock

    def remember(self, resp: Response) -> None:
        try:
            key = (resp.call_id, Via.parse(resp.values("Via")[0]).branch, *resp.cseq)
        except (SipParseError, IndexError):
            return
        now = self._clock()
        self._responses.pop(key, None)  # kept from now, the newest
        self._responses[key] = (now + self.keep, resp)
        self._forget(now)

    def get(self, call_id: str, branch: str, cseq: tuple[int, str]) -> Response | None:
        self._forget(self._clock())
        kept = self._responses.get((call_id, branch, *cseq))
        return kept[1] if kept is not None else None

    def __len__(self) -> int:
        return len(self._responses)

    def _forget(self, now: float) -> None:
        """The oldest out while past their time or past :data:`COMPLETED`."""
        while self._responses:
            until, _ = next(iter(self._responses.values()))
            if until > now and len(self._responses) <= COMPLETED:
                return
            self._responses.popitem(last=False)
