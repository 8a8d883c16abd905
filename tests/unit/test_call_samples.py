"""A leg's row in the call timeline (``bridge/calls/samples.py``): its rates over the span since
the previous read, not over a nominal second."""

from __future__ import annotations

from bridge.calls.samples import LegCounters, LegSources
from bridge.calls.timeline import COLUMNS

KBPS_SENT = COLUMNS.index("kbpsSent")


def test_a_late_read_reports_the_rate_over_its_span_not_a_second() -> None:
    """72 kbit/s sent throughout, read at 1 s, then 2.46 s (the sampler held up by a stall of
    the process), then 3.46 s: every row says 72. Before, the late row said the 1.46 s of
    octets were one second's: 105 kbit/s."""
    counters = LegCounters()
    sent = 0
    kbps = []
    last = 0.0
    for now in (1.0, 2.46, 3.46):
        sent += round(72_000 / 8 * (now - last))  # octets sent since the previous read
        last = now
        src = LegSources(None, None, frames=int(now * 50), octets_sent=sent)
        seconds = counters.span(now, 1.0)
        values, received, _ = counters.row(src, seconds)
        kbps.append(round(values[KBPS_SENT], 1))
    assert kbps == [72.0, 72.0, 72.0]
    assert received == 50  # the last second's frames, a count, not a rate


def test_the_first_read_and_a_leg_with_new_counters_span_the_nominal_second_and_since() -> None:
    counters = LegCounters()
    assert counters.span(5.0, 1.0) == 1.0  # the first: nothing read before
    assert counters.span(6.5, 1.0) == 1.5
    counters.row(LegSources(None, None, frames=10), 1.5)  # new counters (a leg joined again)
    assert counters.span(7.5, 1.0) == 1.0  # since the read before, kept across the reset
    assert counters.span(7.52, 1.0) == 0.1  # never a span too short to mean a rate
