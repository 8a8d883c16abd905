"""A model's voice (``agents/voice.py`` ``AgentVoice``) played from chunks split anywhere: a
provider may cut its int16 stream at an odd byte, and the half sample must wait for the next
chunk, not misalign every sample after it."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest

from bridge.agents.voice import LIMIT_MS, AgentVoice
from bridge.audio import tone
from bridge.media import BusStats

from ..support.spectrum import dominant_frequency


def played(voice: AgentVoice) -> np.ndarray:
    """Every frame queued, as the bus takes them."""
    frames = [voice.source.next_frame() for _ in range(voice.source.buffered_ms // 20)]
    return np.concatenate(frames).astype(np.float64)


def split(data: bytes, seed: int) -> list[bytes]:
    """``data`` in chunks of seeded odd lengths (1 to 999 bytes)."""
    rng, chunks, at = random.Random(seed), [], 0
    while at < len(data):
        n = 2 * rng.randrange(500) + 1
        chunks.append(data[at : at + n])
        at += n
    return chunks


@pytest.mark.parametrize("rate", [24_000, 16_000])
def test_a_stream_split_at_odd_bytes_plays_as_the_whole_one(rate: int) -> None:
    model = tone(440, rate, rate, 0.25).astype("<i2").tobytes()  # 1 s at -12 dBFS
    whole, pieces = AgentVoice(rate, BusStats()), AgentVoice(rate, BusStats())
    whole.push(model, "item1")
    for chunk in split(model, seed=rate):
        pieces.push(chunk, "item1")
    want, got = played(whole), played(pieces)
    assert got.size == want.size
    assert abs(dominant_frequency(got, 16_000) - 440) < 5
    rms_want, rms_got = np.sqrt(np.mean(want**2)), np.sqrt(np.mean(got**2))
    assert abs(20 * np.log10(rms_got / rms_want)) < 0.5, (rms_got, rms_want)
    assert np.abs(got - want).max() < 2  # the same samples


def test_a_half_sample_does_not_outlive_its_item_or_a_cut() -> None:
    voice = AgentVoice(16_000, BusStats())
    voice.push(b"\x01", "item1")  # half a sample, then a new response
    voice.push(tone(440, 16_000, 3200, 0.25).astype("<i2").tobytes(), "item2")
    voice.cut()  # a barge-in: the queue and any half sample go
    voice.push(b"\x02", "item3")
    voice.cut()
    tail = tone(440, 16_000, 3200, 0.25).astype("<i2").tobytes()
    voice.push(tail, "item4")
    got = played(voice)
    assert np.array_equal(got, np.frombuffer(tail, "<i2").astype(np.float64))


def test_a_reply_past_the_queue_bound_is_counted_as_the_models_voice(caplog) -> None:
    """A reply sent more than ``LIMIT_MS`` ahead loses its oldest audio, counted as the
    model's voice (``agentVoiceFramesDropped``) and said once so, not as a socket's or a
    fork's audio (``sourceFramesDropped``, and a WARNING that told a client to pace itself)."""
    caplog.set_level(logging.WARNING)
    stats = BusStats()
    voice = AgentVoice(16_000, stats)
    second = tone(440, 16_000, 16_000, 0.25).astype("<i2").tobytes()
    for _ in range(LIMIT_MS // 1000 + 1):  # a second more than the queue holds
        voice.push(second, "item1")
    counts = stats.as_json()
    assert counts["agentVoiceFramesDropped"] == 50, counts
    assert counts["sourceFramesDropped"] == 0, counts
    assert voice.source.buffered_ms == LIMIT_MS
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "the model sent its voice more than 60 s ahead" in said[0], said
