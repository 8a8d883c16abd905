"""The pass-through's predicate (bridge/rtc/passthrough.py): asked per packet by the source and
the target's sender, a yes is kept for one 20 ms tick, a no is asked again every time."""

from __future__ import annotations

import pytest

from bridge.rtc import passthrough
from bridge.rtc.passthrough import YES_FOR, PassThrough


def test_a_yes_is_kept_for_one_tick_and_a_no_is_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(passthrough.time, "monotonic", lambda: now[0])
    asked: list[bool] = []
    answer = [False]

    def allowed() -> bool:
        asked.append(answer[0])
        return answer[0]

    pt = PassThrough(allowed)
    pt.offer(1, 960, b"a")
    pt.offer(2, 1920, b"b")
    assert len(asked) == 2 and not pt._queue  # every no is asked again: nothing queued
    answer[0] = True
    pt.offer(3, 2880, b"c")  # forwarding starts at the first packet it may
    assert list(pt._queue) == [(3, 2880, b"c")]
    for seq in range(4, 10):  # the source's packets and the sender, within one tick
        pt.offer(seq, seq * 960, b"x")
        assert pt.permitted()
    assert len(asked) == 3
    answer[0] = False  # mixing starts: heard at the next tick at the latest
    now[0] += YES_FOR / 2
    assert pt.permitted() and len(asked) == 3
    now[0] += YES_FOR / 2
    pt.offer(10, 9600, b"y")
    assert len(asked) == 4 and not pt._queue
