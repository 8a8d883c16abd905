"""How the bridge sounds on seeded networks: speech (espeak-ng) through a real bridge process
and real aiortc peers, scored with PESQ-WB next to an ideal receiver fed the same packets
(bench/quality_paths.py, the quality bench's own harness)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.speech import missing_tools, speech

from ..support.loops import LoopLag
from ..support.requires import require

require(
    not missing_tools(),
    "the quality bench's tools",
    "; ".join(missing_tools()) or "-",
)


@pytest.fixture(scope="module")
def speech_8s() -> Any:
    return speech(8.0)


@pytest.mark.serial  # PESQ and delay: the CPU to itself
@pytest.mark.timeout(180)
async def test_the_bridge_hears_as_well_as_an_ideal_receiver_under_loss_and_jitter(
    speech_8s: Any,
) -> None:
    from bench.quality_paths import run_paths

    profiles = ["loss10", "jitter+loss3"]
    out = await run_paths(speech_8s, profiles, seed=7, echo=False)
    for i, name in enumerate(profiles):
        up = out[name]["uplink"]
        # The bridge's receiver uses every packet the ideal one does: reordered ones, FEC, PLC.
        # A call's score moves with when its packets arrived, which the ideal receiver
        # ignores: the receiver's delay adapts to the arrivals, stretching the speech at other
        # places run to run (on this 2-core host −0.1 now and then, once −0.5 in ~30 runs), and
        # a stall of this process's sender is jitter the profile never had (331 ms once: 1.89
        # against 3.61). So a miss is called again, the same seeded packets on a new call, up
        # to twice: a receiver that hears worse than the ideal misses on every call. The
        # profile's call with a browser offering RED sent them up again already: its uplink
        # is the first of those calls.
        attempts = [up]
        takes = [out[name]["uplink_red"]] if "uplink_red" in out[name] else []
        while up["bridge"] < up["ideal"] - 0.2 and len(attempts) < 3:
            if takes:
                up = takes.pop()
            else:
                again = await run_paths(speech_8s, [name], seed=7 + i, echo=False, red=False)
                up = again[name]["uplink"]
            attempts.append(up)
        assert up["bridge"] >= up["ideal"] - 0.2, (name, attempts)
        # ... and that is worth hearing: FEC beats concealment alone.
        assert up["ideal"] > up["ideal_plc_only"] + 0.2, (name, up)
        receiver = out[name]["receiver"]
        assert receiver["fecPacketsReceived"] > 0 and receiver["packetsLost"] > 0
    assert out["jitter+loss3"]["receiver"]["packetsReordered"] > 20
    # The browser's link loses 10 % from 2 s on, after clean reports: the bridge's in-band FEC
    # follows its first lossy report, and the browser rebuilds lost frames from it.
    down = out["loss10"]["downlink"]
    assert down["protection"]["expectedLoss"] >= 10 and down["packets_lost"] > 20, down
    # (not all: losses before that report, in a row, or in silence, which has no LBRR)
    assert down["fec_frames"] > 0.25 * down["packets_lost"], down
    assert down["bridge"] > down["ideal_plc_only"] + 0.5, down
    # A browser that offers RED gets the previous frames again instead: whole copies.
    red = out["loss10"]["downlink_red"]
    assert red["protection"]["redDepth"] > 0 and red["protection"]["expectedLoss"] == 0, red
    assert red["red_copies_used"] > 0.6 * red["packets_lost"], red
    assert red["red_copies_differing"] == 0  # each copy is the very payload sent before
    assert red["bridge"] > red["ideal_plc_only"] + 0.5, red
    # One bridge encode towards the browser (40 kbit/s, complexity 5): near the source.
    assert out["jitter+loss3"]["downlink"]["bridge"] > 2.8


@pytest.mark.serial  # PESQ and delay: the CPU to itself
@pytest.mark.timeout(120)
async def test_the_echo_round_trip_through_two_bridge_hops_stays_clear(speech_8s: Any) -> None:
    from bench.quality_paths import run_paths

    # Two real bridge hops in this process and a real peer: 3.6 on a quiet machine. Other
    # work on the machine starved a hop's receiver now and then (3.0-3.1 seen beside other
    # suites), hence the serial mark (module): one run decides. A stall of this process past
    # a frame makes a packet late at a hop, concealed once (3.15 in one quiet CI run, every
    # packet received): the floor then allows that one concealment, no more.
    async with LoopLag() as lag:
        out = await run_paths(speech_8s, [], echo=True)
    floor = 3.0 if lag.past_a_frame else 3.2
    assert out["echo"]["round_trip"]["bridge"] >= floor, (out["echo"], lag.worst, lag.stalled)


@pytest.mark.timeout(60)
async def test_receiver_figures_reach_the_stats_the_metrics_and_a_quality_event(
    make_client: Any,
) -> None:
    """A browser on a network that loses a quarter of its packets: the call's stats show the
    receiver's work in W3C names, Prometheus its audio by kind, and the MOS estimate (which
    counts what had to be concealed) leaves the 'good' band with a ``call.quality`` event.
    (Not serial: its figures are the seeded loss's, far from any bar a loaded host moves.)"""
    import asyncio

    import aiohttp

    from bench.quality_paths import Browser, Profile, Wire, restrict_to_loopback
    from bridge.api.keys import MANAGER

    from ..support.calls import wait_state

    client = await make_client(stats_interval=0.5, metrics_token="")
    restrict_to_loopback()
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    lossy = Profile("loss25", loss=0.25)
    browser = Browser(speech(6.0), Wire(lossy, 5), Wire(Profile("clean"), 6))
    base = str(client.make_url("")).rstrip("/")
    async with client.app[MANAGER].events.subscribe() as sub:
        async with aiohttp.ClientSession() as http:
            await browser.connect(http, base, call["callID"])
        browser.source.start()
        quality = None
        while quality is None:
            event = await sub.get(20)  # TimeoutError: no call.quality event
            if event is not None and event.type == "call.quality":
                quality = event
    await asyncio.sleep(1.5)  # more audio; the receiver's counters reach the bus twice a second
    stats = await (await client.get(f"/call/{call['callID']}/stats")).json()
    metrics = await (await client.get("/metrics")).text()
    await browser.close()
    assert quality.data["leg"] == "browser" and quality.data["band"] != "good"
    assert quality.data["concealedFraction"] > 0.02
    receiver = stats["webrtc"]["receiver"]
    assert receiver["packetsLost"] > 5 and receiver["fecPacketsReceived"] > 2
    assert receiver["concealedSamples"] > 0
    assert receiver["jitterBufferEmittedCount"] > 8_000  # over half a second played

    def sample(kind: str) -> float:
        line = next(
            ln
            for ln in metrics.splitlines()
            if ln.startswith("bridge_receiver_audio_seconds_total{")
            and 'leg="browser"' in ln
            and f'kind="{kind}"' in ln
        )
        return float(line.rsplit(" ", 1)[1])

    assert sample("fec") > 0.01 and sample("concealed") > 0.005 and sample("decoded") > 0.5
    assert 'bridge_receiver_delay_seconds_bucket{le="0.005",leg="browser"}' in metrics
