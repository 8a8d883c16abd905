"""The receiver's delay steps (docs/quality.md, *The receiver's delay steps*): when a frame of
delay is added or shed, and how much of a pause a removal leaves."""

from __future__ import annotations

import numpy as np

from bridge.audio.delay import DelayDecision
from bridge.audio.stretch import BLOCK, KEEP_PAUSE, PlayoutFifo


def decision(slacks: list[float]) -> DelayDecision:
    d = DelayDecision(
        min_delay=0.0, max_delay=0.2, margin=0.004, window=100, quantile=0.02, loss_memory=10
    )
    for s in slacks:
        d.observe(s)
    return d


def steady(low: float, spread: float = 0.002) -> list[float]:
    """100 slacks whose low quantile (the third lowest) is ``low``."""
    return [low] * 3 + list(np.linspace(low, low + spread, 97))


def test_a_frame_is_added_once_the_low_quantile_is_under_half_the_margin() -> None:
    assert decision(steady(0.0039)).direction(0.0, sender_fec=False) == 0  # on time: no grow
    assert decision(steady(0.0025)).direction(0.0, sender_fec=False) == 0
    grow = decision(steady(0.0019))
    assert grow.direction(0.0, sender_fec=False) == 1
    assert not grow.urgent and not grow.step


def test_after_a_loss_with_fec_the_frame_for_fec_is_added_at_its_floor() -> None:
    d = decision(steady(0.0235))  # under the FEC floor (margin + a frame), over its half-margin
    d.last_loss = 0.0
    assert d.direction(1.0, sender_fec=True) == 1
    assert decision(steady(0.0235)).direction(1.0, sender_fec=True) == 0  # no loss: enough


def test_a_frame_is_shed_over_a_tenth_of_the_spread_of_the_slacks() -> None:
    # A steady line: a frame and 2 ms over the margin sheds.
    assert decision(steady(0.0265)).direction(0.0, sender_fec=False) == -1
    # Wide jitter (40 ms from the low quantile to the median): a frame and 4 ms over.
    wide = [0.0265] * 3 + list(np.linspace(0.0265, 0.1065, 97))
    assert decision(wide).direction(0.0, sender_fec=False) == 0
    wider = [0.0285] * 3 + list(np.linspace(0.0285, 0.1085, 97))
    assert decision(wider).direction(0.0, sender_fec=False) == -1


def test_a_removal_in_a_pause_leaves_some_of_the_pause() -> None:
    fifo = PlayoutFifo()
    t = np.arange(1600) / 16_000
    voice = (8000 * np.sin(2 * np.pi * 150 * t)).astype(np.int16)
    gap = 400  # 25 ms of silence between two words
    fifo.feed(np.concatenate((np.zeros(gap, dtype=np.int16), voice)))
    keep = KEEP_PAUSE * 16
    assert fifo.sheddable(10_000, anywhere=False) == gap - BLOCK - keep
    assert fifo.sheddable(300, anywhere=True) == 300
    fifo.clear()
    fifo.feed(np.concatenate((np.zeros(240, dtype=np.int16), voice)))  # 15 ms: none of it
    assert fifo.sheddable(10_000, anywhere=False) <= 0
    assert fifo.accelerate(max(0, fifo.sheddable(240, anywhere=False)), voiced=False) == 0
