"""``rtc/rtcp_schedule.py``: RFC 3550 §6.2/§6.3.1 report intervals, deterministic with an
injected random and clock, and the reports riding the worker clock's one timer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from bridge.media.clock import Tick, WorkerClock
from bridge.rtc.rtcp_schedule import (
    AVP_MIN_INTERVAL,
    AVPF_MIN_INTERVAL,
    LOWER_LAYERS,
    RtcpInterval,
    RtcpSchedule,
)
from tests.support.waits import until


def fixed(*values: float) -> Callable[[], float]:
    it = iter(values)
    return lambda: next(it)


def test_the_first_report_comes_after_half_the_minimum_then_the_minimum_randomised() -> None:
    interval = RtcpInterval(AVP_MIN_INTERVAL, random=fixed(0.0, 0.999999, 0.5, 0.0))
    assert interval.next() == pytest.approx(1.25)  # 2.5 s × 0.5
    assert interval.next() == pytest.approx(7.5, rel=1e-5)  # 5 s × 1.5
    assert interval.next() == pytest.approx(5.0)  # 5 s × 1.0
    assert interval.next() == pytest.approx(2.5)  # 5 s × 0.5


def test_an_avpf_leg_reports_every_second_on_average() -> None:
    interval = RtcpInterval(AVPF_MIN_INTERVAL, random=fixed(0.5, 0.5, 0.0, 0.999999))
    assert [round(interval.next(), 4) for _ in range(4)] == [0.5, 1.0, 0.5, 1.5]


def test_a_narrow_session_is_held_to_five_percent_of_its_bandwidth() -> None:
    """The bandwidth term wins where the session is narrow: two members × the average size
    over 5 % of it (RFC 3550 §6.3.1), and the average follows the packets by 1/16."""
    interval = RtcpInterval(1.0, session_bps=8000, random=fixed(0.5, 0.5))
    # 2 × 100 octets / (0.05 × 8000 / 8 = 50 octets/s) = 4 s
    assert interval.deterministic() == pytest.approx(4.0)
    for _ in range(200):
        interval.count(200 - LOWER_LAYERS)  # every packet 200 octets on the wire
    assert interval.avg_rtcp_size == pytest.approx(200.0, abs=0.01)
    assert interval.next() == pytest.approx(8.0, rel=1e-3)


def test_a_wide_session_keeps_the_minimum() -> None:
    interval = RtcpInterval(AVP_MIN_INTERVAL, random=fixed(0.5, 0.5))
    interval.next()
    assert interval.deterministic() == AVP_MIN_INTERVAL  # 2 × 100 / 625 = 0.32 s < 5 s


class ManualTimers:
    """The worker clock's ``call_at``, fired by hand: each report's time is known exactly."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Tick]] = []
        self.cancelled = 0

    def call_at(self, when: float, callback: Tick) -> Callable[[], None]:
        entry = (when, callback)
        self.pending.append(entry)

        def cancel() -> None:
            if entry in self.pending:
                self.pending.remove(entry)
                self.cancelled += 1

        return cancel

    def fire(self) -> float:
        (when, callback) = self.pending.pop(0)
        callback(when)
        return when


def test_reports_go_at_the_computed_times_and_stop() -> None:
    sizes: list[int] = []

    def send() -> int:
        sizes.append(80)
        return 80

    timers = ManualTimers()
    randoms = fixed(0.0, 0.5, 0.999999, 0.25)
    schedule = RtcpSchedule(
        send, RtcpInterval(5.0, random=randoms), timers=timers, monotonic=lambda: 100.0
    )
    schedule.start()
    schedule.start()  # idempotent: one report pending
    assert len(timers.pending) == 1
    times = [timers.fire() for _ in range(3)]
    assert times == pytest.approx([101.25, 106.25, 113.75], rel=1e-6)
    assert sizes == [80, 80, 80] and schedule.sent == 3
    assert 100 < schedule.interval.avg_rtcp_size < 108  # moving towards 80 + 28 octets
    schedule.stop()
    schedule.stop()
    assert timers.pending == [] and timers.cancelled == 1


def test_a_wire_that_is_gone_ends_the_reports() -> None:
    def send() -> int:
        raise ConnectionError("not connected")

    timers = ManualTimers()
    schedule = RtcpSchedule(send, RtcpInterval(1.0), timers=timers)
    schedule.start()
    timers.fire()
    assert timers.pending == [] and not schedule.started and schedule.sent == 0


async def test_reports_ride_the_worker_clock_which_sleeps_between_them() -> None:
    """On the real clock: each report at the first tick at or after its time, and the clock
    wakes for nothing else (a leg with nothing else on the clock costs one wake-up a report).
    Asserted on wake-ups and lower bounds, not on tick numbers: a loaded host (other tests
    beside this one) delays a wake-up by ticks, and the report after it is due from then."""
    clock = WorkerClock()
    ticks_seen: list[int] = []
    at: list[float] = []
    fired = 0
    fire = clock._fire

    def counted_fire() -> None:
        nonlocal fired
        fired += 1
        fire()

    clock._fire = counted_fire  # type: ignore[method-assign]

    def send() -> int:
        ticks_seen.append(clock.n)
        at.append(time.monotonic())
        return 60

    schedule = RtcpSchedule(
        send, RtcpInterval(0.2, session_bps=10_000_000, random=lambda: 0.5), timers=clock
    )
    started = time.monotonic()
    schedule.start()
    await until(lambda: len(at) >= 3, 5.0, "three reports")
    schedule.stop()
    assert fired == 3, (fired, ticks_seen)  # one wake-up a report, no tick in between
    # 0.1 s, then 0.2 s each: the 20 ms grid's ticks 5, 15, 25 on an idle host; never sooner.
    gaps = [b - a for a, b in zip([0, *ticks_seen], ticks_seen, strict=False)]
    assert gaps[0] >= 5 and all(g >= 10 for g in gaps[1:]), ticks_seen
    assert at[0] - started >= 0.1 - 0.005
    # Due on the grid (each report 0.2 s after the tick its predecessor was due on), never
    # before: a late tick does not move the ones after it.
    assert all(t - started >= 0.1 + 0.2 * i - 0.005 for i, t in enumerate(at)), at
    await asyncio.sleep(0)
    assert not clock.running  # nothing pending: the clock is off


async def test_a_registered_tick_wakes_a_clock_asleep_to_a_report() -> None:
    """A leg that starts sending while the clock sleeps to a report gets its ticks at once."""
    clock = WorkerClock()
    reports: list[float] = []
    cancel = clock.call_at(time.monotonic() + 10.0, reports.append)
    assert clock._handle is not None and not clock.running  # asleep to the report's tick
    ticks: list[float] = []
    stop = clock.register(ticks.append)
    await until(lambda: len(ticks) >= 3, 1.0, "ticks while a report is 10 s away")
    stop()
    cancel()
    assert reports == []


def test_a_parked_pace_reports_on_whole_seconds_and_a_call_brings_the_next_forward() -> None:
    """A parked leg (``rtc/connected.py``): RFC 3550's 5 s minimum, its report times rounded
    up to the keepalive pulse's seconds; lent to a call, back to 1 s, the pending report
    brought forward to within 1.5 s of now."""
    now = [100.3]
    timers = ManualTimers()
    schedule = RtcpSchedule(
        lambda: 80,
        RtcpInterval(AVPF_MIN_INTERVAL, random=fixed(0.5, 0.5, 0.5)),
        timers=timers,
        monotonic=lambda: now[0],
    )
    schedule.pace(AVP_MIN_INTERVAL, 1.0)  # parked before the wire starts
    schedule.start()
    assert timers.pending[0][0] == 103.0  # 100.3 + 2.5 s (the first: half), up to 103
    at = timers.fire()
    assert schedule.sent == 1
    assert timers.pending[0][0] == 108.0  # 103 + 5 s
    now[0] = at + 0.5
    schedule.pace(AVPF_MIN_INTERVAL)  # lent to a call
    assert timers.cancelled == 1 and len(timers.pending) == 1
    assert timers.pending[0][0] == pytest.approx(104.5)  # 103.5 + 1 s × 1.0
    schedule.pace(AVPF_MIN_INTERVAL)  # already at that pace: nothing moves
    assert timers.cancelled == 1
