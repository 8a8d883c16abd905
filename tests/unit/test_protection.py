"""The downlink's protection policy (rtc/protection.py): from receiver reports to FEC and RED."""

from __future__ import annotations

from bridge.rtc.protection import HOLD, MAX_PLANNED, MIN_PLANNED, UNKNOWN_LOSS, LossProtection


def test_unknown_link_gets_the_floor_and_a_clean_report_turns_it_off() -> None:
    p = LossProtection()
    assert (p.now.expected_loss, p.now.red_depth) == (UNKNOWN_LOSS, 0)
    assert p.report(0.0, 1.0).expected_loss == 0
    assert LossProtection(fec=False).now.expected_loss == 0
    assert LossProtection(unknown=0).now.expected_loss == 0  # the WhatsApp leg: no floor


def test_loss_is_followed_at_once_and_forgotten_after_the_hold() -> None:
    p = LossProtection()
    p.report(0.0, 0.0)
    assert p.report(0.03, 1.0).expected_loss == MIN_PLANNED  # one report suffices
    assert p.report(0.10, 2.0).expected_loss == 15
    assert p.report(0.50, 3.0).expected_loss == MAX_PLANNED
    # Clean reports: the estimate decays, protection stays while loss is recent.
    t = 3.0
    planned = []
    while t < 3.0 + HOLD - 1:
        t += 1.0
        planned.append(p.report(0.0, t).expected_loss)
    assert planned == sorted(planned, reverse=True) and planned[-1] == MIN_PLANNED
    assert p.report(0.0, 3.0 + HOLD).expected_loss == 0
    assert p.estimate == 0.0


def test_red_replaces_fec_while_loss_is_seen_two_frames_under_heavy_loss() -> None:
    p = LossProtection(red=True)
    assert (p.now.expected_loss, p.now.red_depth) == (UNKNOWN_LOSS, 0)  # no RED on a guess
    assert p.report(0.0, 0.0).red_depth == 0  # a clean link pays nothing
    # The odd lost packet: FEC at the floor, a third of what a copy of every frame costs.
    assert (p.report(0.01, 0.5).red_depth, p.now.expected_loss) == (0, MIN_PLANNED)
    assert (p.report(0.03, 1.0).red_depth, p.now.expected_loss) == (1, 0)
    assert p.report(0.12, 2.0).red_depth == 2
    assert p.report(0.0, 2.0 + HOLD).red_depth == 0
    # With FEC switched off by its setting, RED covers low loss too.
    q = LossProtection(fec=False, red=True)
    assert q.report(0.01, 0.0).red_depth == 1
