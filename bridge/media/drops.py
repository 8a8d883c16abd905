"""``Drops``: the frames one call's bus and its mixer drop past a bound, said once a call.

Each route on the worker clock keeps a few frames for its reader and drops the oldest past
that (the bounds are in the architecture's route table); every drop is counted in the call's
:class:`~bridge.media.stats.BusStats` and ``bridge_bus_frames_dropped_total{reason}`` by the
route, and each reason is said here at WARNING, with what it means for the audio, at the
call's first such drop (:class:`~bridge.logs.Repeats`: a reader that stays behind drops a
frame every tick, never a line each). How many in all: the call's report (``bus``) and the
metric.
"""

from __future__ import annotations

import logging

from ..logs import Repeats

log = logging.getLogger(__name__)

OVERFLOW = "overflow"
MICROPHONE_OVERFLOW = "microphone_overflow"
WHATSAPP_OVERFLOW = "whatsapp_overflow"
LISTENER_BEHIND = "listener_behind"

WHY = {
    OVERFLOW: "the WhatsApp side's sender fell behind the call's uplink: its oldest frames "
    "are dropped, audio the WhatsApp user does not hear",
    MICROPHONE_OVERFLOW: "a microphone's frames came faster than the call's mixer took them "
    "(its leg's clock runs fast, or the mixer missed ticks: a busy worker): the oldest are "
    "dropped, audio the others do not hear",
    WHATSAPP_OVERFLOW: "the WhatsApp side's frames came faster than the call's mixer took them "
    "(the mixer missed ticks: a busy worker): the oldest are dropped, audio the participants "
    "do not hear",
    LISTENER_BEHIND: "a listener's sender fell behind the worker clock (its task missed ticks: "
    "a busy worker): its oldest frames are dropped, audio it does not hear",
}
"""What each reason (the metric's ``reason`` label) means, as it is said."""


class Drops:
    """One call's frames dropped past a bound: each reason said once (module docstring)."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self._said = Repeats(size=len(WHY))  # one key a reason: none forgotten, none said twice

    def dropped(self, reason: str, who: str = "") -> None:
        """A frame dropped for ``reason`` (the route counted it); ``who``: the participant
        whose frame it was, for the line."""
        if self._said.seen(reason) == 1:
            log.warning(
                "call %s: %s%s (bridge_bus_frames_dropped_total reason %s; said once a call)",
                self.call_id,
                WHY[reason],
                f" ({who})" if who else "",
                reason,
                extra={"call_id": self.call_id},
            )
