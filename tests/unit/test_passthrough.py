"""The pass-through's predicate (bridge/rtc/passthrough.py): asked per packet by the source and
the target's sender, a yes is kept for one 20 ms tick, a no is asked again every time; each
packet goes to the target at once, or the target hears it was refused."""

from __future__ import annotations

from bridge.rtc.passthrough import YES_FOR, PassThrough


def test_a_yes_is_kept_for_one_tick_and_a_no_is_asked_again() -> None:
    now = 100.0  # the packets' arrival times (time.monotonic() base), the time it is asked
    asked: list[bool] = []
    answer = [False]

    def allowed() -> bool:
        asked.append(answer[0])
        return answer[0]

    pt = PassThrough(allowed)
    target = Target()
    pt.offer(1, 960, b"a", now)  # no target yet: nothing asked, nothing sent
    assert not asked
    pt.target = target
    pt.offer(1, 960, b"a", now)
    pt.offer(2, 1920, b"b", now)
    assert len(asked) == 2 and not target.sent  # every no is asked again: nothing sent
    assert target.refused == 2
    answer[0] = True
    pt.offer(3, 2880, b"c", now)  # forwarding starts at the first packet it may, sent at once
    assert target.sent == [(3, 2880, b"c")]
    for seq in range(4, 10):  # the source's packets and the sender, within one tick
        pt.offer(seq, seq * 960, b"x", now)
        assert pt.permitted(now)
    assert len(asked) == 3
    answer[0] = False  # mixing starts: heard at the next tick at the latest
    now += YES_FOR / 2
    assert pt.permitted(now) and len(asked) == 3
    now += YES_FOR / 2
    pt.offer(10, 9600, b"y", now)
    assert len(asked) == 4 and target.refused == 3
    assert [seq for seq, _, _ in target.sent] == list(range(3, 10))
    pt.offer(11, 10560, b"", now)  # an empty payload is no packet
    assert len(asked) == 4 and target.refused == 3


def test_a_no_ends_the_kept_yes_for_a_tick_timed_before_it() -> None:
    """The target's tick asks again after a refusal, at the tick's scheduled time: one that
    falls before the refused packet's arrival, within the yes kept from the packet before,
    hears the no (the yes is older news), not the kept yes."""
    answer = [True]
    pt = PassThrough(lambda: answer[0])
    target = Target()
    pt.target = target
    now = 100.0
    pt.offer(1, 960, b"a", now)  # a yes, kept until now + YES_FOR
    answer[0] = False  # mixing starts
    pt.offer(2, 1920, b"b", now + YES_FOR)  # refused
    assert target.refused == 1
    assert not pt.permitted(now + YES_FOR / 2)  # the tick timed between the two packets


class Target:
    """A ``ForwardTarget`` that records what it was handed."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int, bytes]] = []
        self.refused = 0

    def forward(
        self, source: PassThrough, seq: int, timestamp: int, payload: bytes, at: float
    ) -> bool:
        self.sent.append((seq, timestamp, payload))
        return True

    def forward_refused(self, source: PassThrough) -> None:
        self.refused += 1
