"""The bridge's track read by aiortc's own sender (``bench/aiortc_track.py``: the quality
bench's far-end peers): paced one tick a packet by a ``WorkerPacer``, each packet what aiortc's
Opus encoder packs (``bytes()``, ``pts`` on ``time_base``)."""

from __future__ import annotations

import asyncio

import numpy as np
from aiortc.codecs.opus import OpusEncoder as AiortcOpusEncoder

from bench.aiortc_track import AiortcTrack, WorkerPacer
from bridge.audio import FRAME_SAMPLES
from bridge.audio.opus import OpusDecoder
from bridge.media.clock import worker_clock
from tests.support.spectrum import dominant_frequency
from tests.support.waits import until

from .test_rtpsend import Tone


async def test_a_track_takes_one_frame_per_tick_and_catches_up_what_it_missed() -> None:
    """``WorkerPacer``: a track that was held up past some ticks takes them at once (no frame
    lost to the far end's clock), but not beyond ``resync``: then it rejoins the clock."""
    clock = worker_clock()
    pacer = WorkerPacer(resync=3)
    await pacer.tick()
    first = clock.n
    await pacer.tick()
    assert clock.n == first + 1  # one tick per frame
    stop = clock.register(lambda now: None)  # keeps the clock running while the track stalls
    await until(lambda: clock.n >= first + 3)
    n = clock.n
    await pacer.tick()  # missed ticks: no wait
    assert clock.n == n and pacer.ticks == 2  # the third frame: index 2
    await until(lambda: clock.n >= n + 5)  # more than resync behind
    late = clock.n
    await pacer.tick()
    assert clock.n > late  # waited for the next tick
    stop()
    await asyncio.sleep(0)


async def test_recv_gives_one_packet_a_tick_as_aiortcs_opus_encoder_packs_it() -> None:
    """The first packet at once, then one a tick of the worker clock; aiortc's Opus encoder
    packs each as it is (its payload, its RTP time 960 on per packet), and it decodes to the
    tone."""
    clock = worker_clock()
    track = AiortcTrack(Tone())
    packets = [await track.recv()]
    first = clock.n
    packets += [await asyncio.wait_for(track.recv(), 1.0) for _ in range(24)]
    assert clock.n - first == 24  # 25 packets: the first tick's and 24 more
    aiortc = AiortcOpusEncoder()
    packed = [aiortc.pack(p) for p in packets]  # type: ignore[arg-type]
    assert [ts for _, ts in packed] == [i * 960 for i in range(25)]
    assert [payloads for payloads, _ in packed] == [[p.data] for p in packets]
    decoder = OpusDecoder(16_000)
    pcm = np.concatenate([decoder.decode(p.data) for p in packets])
    assert pcm.size == 25 * FRAME_SAMPLES
    assert abs(dominant_frequency(pcm[FRAME_SAMPLES:], 16_000) - 440) < 5
    track.stop()
    await asyncio.sleep(0)
