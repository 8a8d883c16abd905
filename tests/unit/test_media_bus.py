"""The call bus on its own: taps, sources and the mix (no sockets)."""

from __future__ import annotations

import numpy as np

from bridge.attachments.queued_source import QueuedSource
from bridge.audio import FRAME_SAMPLES
from bridge.media import CallBus


async def test_a_failing_tap_is_removed_and_audio_goes_on() -> None:
    bus = CallBus("t")
    seen = []

    def broken(frame) -> None:
        raise OSError("disk full")

    bus.add_uplink_tap(broken)
    bus.add_uplink_tap(lambda f: seen.append(f))
    bus.open_uplink()
    for _ in range(3):
        bus.push_uplink(np.ones(FRAME_SAMPLES, dtype=np.int16))
    assert len(seen) == 3 and bus.stats.uplink_frames == 3
    assert broken not in bus._uplink_taps
    await bus.aclose()


async def test_sources_wait_for_the_leg() -> None:
    bus = CallBus("t")
    src = QueuedSource()
    src.push(np.ones(FRAME_SAMPLES * 3, dtype=np.int16))
    bus.add_source(src)
    bus.push_uplink(np.zeros(FRAME_SAMPLES, dtype=np.int16))  # no leg yet: nothing consumed
    assert src.buffered_ms == 60
    bus.open_uplink()
    bus.push_uplink(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    assert src.buffered_ms == 40
    await bus.aclose()


async def test_mixing_clips_at_full_scale_never_wraps() -> None:
    bus = CallBus("t")
    src = QueuedSource()
    src.push(np.full(FRAME_SAMPLES, 30_000, dtype=np.int16))
    bus.add_source(src)
    bus.open_uplink()
    out = []
    bus.add_uplink_tap(lambda f: out.append(f.pcm))
    bus.push_uplink(np.full(FRAME_SAMPLES, 30_000, dtype=np.int16))
    assert out[0].dtype == np.int16 and (out[0] == 32767).all()  # 60 000 clipped, not wrapped
    src.push(np.full(FRAME_SAMPLES, -30_000, dtype=np.int16))
    bus.push_uplink(np.full(FRAME_SAMPLES, -30_000, dtype=np.int16))
    assert (out[1] == -32768).all()
    await bus.aclose()
