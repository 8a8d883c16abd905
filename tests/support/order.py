"""The parallel part's order: its longest tests first, spread over the workers.

pytest-xdist's ``worksteal`` hands each of its N workers one contiguous Nth of the collection,
then an idle worker takes the back half of the longest queue. In collection order the first
Nth held most of the long tests (``tests/deploy`` and the cluster and hand-over files), and
the last long test to start made the part's tail: a 20 s hand-over test begun as the others
ran dry is 20 s of one worker alone. So each worker's share starts with its part of the
longest tests, dealt longest first to the share with the least so far (LPT scheduling); the
rest follow in collection order, and only short tests are left to end the part.

:data:`LONGEST` is read from the ``slowest`` tables each part prints (the Makefile's
``SLOWEST``): a test named there for seconds belongs here. A name no longer collected only
stops moving; every worker computes the same order (xdist compares their collections).
"""

from __future__ import annotations

import pytest

LONGEST: dict[str, dict[str, float]] = {
    "tests/deploy/test_bench_smoke.py": {
        "test_bench_smoke_run": 22,
        "test_bench_smoke_contact_centre_calls": 11,
    },
    "tests/deploy/test_deploy.py": {
        "test_image_serves_the_demo_the_client_and_a_call": 17,
    },
    "tests/integration/test_call_report.py": {
        "test_seeded_loss_and_a_dead_stretch_are_in_the_record_at_their_seconds": 15,
    },
    "tests/integration/test_cluster.py": {
        "test_polled_engine_one_worker_claims_a_new_inbound_call_and_places_it_on_the_emptier": 14,
    },
    "tests/integration/test_cluster_redis_away.py": {
        "test_a_call_placed_as_redis_stops_rings_on_its_finder_and_is_carried_once": 15,
    },
    "tests/integration/test_desk_cluster.py": {
        "test_agents_on_two_workers_one_winner_each_call": 11,
        "test_a_leg_on_worker_a_is_lent_to_a_call_on_worker_b": 11,
    },
    "tests/integration/test_desk_failover.py": {
        "test_the_owner_dies_and_a_call_that_cannot_move_ends_with_a_reason": 29,
        "test_the_owner_dies_and_the_adopter_resumes_the_ring": 18,
        "test_the_rung_agents_worker_dies_and_the_ring_moves_on": 12,
    },
    "tests/integration/test_engine_outage.py": {
        "test_engine_back_after_10_s_call_stays_active_and_audio_resumes": 13,
    },
    "tests/integration/test_handover.py": {
        "test_a_pod_of_two_workers_terminated_moves_every_call_to_the_other_pod": 21,
        "test_a_rolling_restart_of_one_of_two_workers_loses_none_of_its_20_calls": 18,
        "test_every_segment_of_a_recording_adopted_after_a_crash_is_announced_once": 18,
        "test_sigterm_keeps_serving_a_cloud_api_call_until_it_ends_and_takes_no_new_one": 16,
        "test_a_prompt_playing_at_a_move_plays_on_and_other_playbacks_end_said": 14,
        "test_sigterm_hangs_up_a_cloud_api_call_still_live_at_the_drain_timeout": 12,
        "test_sigkill_of_the_owner_the_adopter_resumes_the_agent_forks_and_recording": 11,
        "test_sigterm_hands_a_live_zuckzapgo_call_to_the_other_worker_without_ending_it": 11,
        "test_an_adopted_call_no_browser_comes_back_to_ends_as_worker_lost": 10,
        "test_sigkill_of_the_owner_a_survivor_adopts_the_call_and_the_browser_comes_back": 10,
    },
    "tests/integration/test_hardening.py": {
        "test_no_leaks_after_many_sessions": 16,
    },
    "tests/integration/test_openapi.py": {
        "test_schemathesis_against_a_live_bridge": 50,
    },
    "tests/integration/test_passthrough.py": {
        "test_the_browsers_packets_reach_whatsapp_untouched_and_mute_switches_to_silence": 17,
        "test_mixing_switches_to_encoding_and_back_with_rtp_time_continuous": 11,
    },
    "tests/integration/test_vad.py": {
        "test_events_per_side_in_sse_and_the_snapshot": 22,
    },
    "tests/interop/test_browser.py": {
        "test_chromium_hears_red_from_the_bridge_under_loss": 29,
        "test_chromium_sends_fec_once_the_bridge_reports_loss": 13,
    },
    "tests/interop/test_browser_supervisor.py": {
        "test_supervisor_listens_barges_holds_and_takes_over": 21,
    },
    "tests/interop/test_handover_browser.py": {
        "test_the_bundled_client_follows_its_call_to_the_new_worker_by_itself": 22,
    },
    "tests/sip/test_sipp_hold.py": {
        "test_the_pbx_holds_a_call_it_placed_and_whatsapp_hears_the_music": 12,
        "test_the_phone_holds_and_resumes_by_re_invite_and_whatsapp_hears_the_music[barge]": 10,
        "test_the_phone_holds_and_resumes_by_re_invite_and_whatsapp_hears_the_music[agent]": 10,
    },
    "tests/sip/test_sipp_numbers.py": {
        "test_two_sip_numbers_one_listener_own_passwords_names_and_404": 10,
    },
    "tests/sip/test_tls_handshakes.py": {
        "test_openssl_s_client_in_a_row[uvloop]": 12,
    },
}
"""Seconds each of the parallel part's longest tests took (CI's clean-clone runs, 2026-11-28
and -29, their mean; the bench smoke runs as measured since ``--smoke`` stopped settling), by
file and test name."""


def _seconds(item: pytest.Item) -> float | None:
    file, _, name = item.nodeid.partition("::")
    return LONGEST.get(file, {}).get(name)


def _block(item: pytest.Item) -> str:
    """What moves with ``item``: the tests of its file that share a module-scoped fixture
    move together (apart, each group would build it again: the deploy test's image replay
    is 17 s); any other test moves alone."""
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    if any(d and d[-1].scope == "module" for d in defs):
        return str(item.path)
    return item.nodeid


def longest_first(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """``items`` reordered for ``worksteal`` on ``workers`` workers: each worker's first
    share (``len // (workers - k)`` of the rest, as xdist deals them) opens with the longest
    tests dealt to it, the rest in collection order after them."""
    blocks: dict[str, list[pytest.Item]] = {}
    seconds: dict[str, float] = {}
    for item in items:
        took = _seconds(item)
        if took is not None:
            key = _block(item)
            seconds[key] = seconds.get(key, 0.0) + took
    if not seconds or workers < 2:
        return items
    for item in items:
        key = _block(item)
        if key in seconds:
            blocks.setdefault(key, []).append(item)
    dealt: list[list[pytest.Item]] = [[] for _ in range(workers)]
    load = [0.0] * workers
    for key in sorted(seconds, key=lambda k: -seconds[k]):
        share = min(range(workers), key=lambda w: load[w])
        dealt[share] += blocks[key]
        load[share] += seconds[key]
    moved = {id(item) for block in blocks.values() for item in block}
    rest = [item for item in items if id(item) not in moved]
    out: list[pytest.Item] = []
    for w in range(workers):
        size = (len(items) - len(out)) // (workers - w)
        fill = max(0, size - len(dealt[w]))
        out += dealt[w] + rest[:fill]
        del rest[:fill]
    return out + rest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On ``worksteal`` workers, once the part's tests are chosen (``-m``, ``-k``): the longest
    first, spread (:func:`longest_first`)."""
    worker = getattr(config, "workerinput", None)
    if worker is not None and config.getoption("dist", "no") == "worksteal":
        items[:] = longest_first(items, int(worker["workercount"]))
