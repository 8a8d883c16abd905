"""A phone on a trunk has the receiver every RTP leg has (``rtc/uplink.py`` ``Playout``,
``audio/receiver.py``): its G.711 or G.722 packets, through a seeded network of jitter and
loss, come out one frame a tick, in order, concealed where lost — not decoded as they arrive
(a reordered packet played out of place, a lost one a hole)."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from bridge.audio.analysis import rms_dbfs, tone
from bridge.audio.g711 import alaw_encode, ulaw_encode
from bridge.audio.g722 import G722Encoder
from bridge.audio.pcm import FRAME_SAMPLES
from bridge.audio.resample import Resampler
from bridge.trunks.media import TrunkMedia

from ..support.spectrum import dominant_frequency

SECONDS = 4
TONE_HZ = 440.0
PT = {"PCMU": 0, "PCMA": 8, "G722": 9}


def source() -> np.ndarray:
    return (tone(TONE_HZ, SECONDS * 16_000) * 0.25).astype(np.int16)


def phone_payloads(codec: str) -> list[bytes]:
    """The phone's 20 ms payloads of a 440 Hz tone, a quarter of full scale."""
    pcm = source()
    if codec == "G722":
        enc = G722Encoder()
        return [enc.encode(pcm[i : i + FRAME_SAMPLES]) for i in range(0, pcm.size, FRAME_SAMPLES)]
    narrow = Resampler(8000).resample_array(pcm, 16_000)
    law = ulaw_encode if codec == "PCMU" else alaw_encode
    return [law(narrow[i : i + 160]) for i in range(0, narrow.size - 159, 160)]


def run(codec: str, jitter: float, loss: float, seed: int) -> tuple[list[np.ndarray], int]:
    """Packets sent every 20 ms, each delayed by up to ``jitter`` s and lost with ``loss``
    (seeded), delivered in arrival order; the media clock ticks every 20 ms meanwhile. What
    was heard, and the samples concealed while the phone sent (not the end's fade)."""
    rng = random.Random(seed)
    heard: list[np.ndarray] = []
    media = TrunkMedia(
        "t", codec, PT[codec], 101, heard.append, lambda now: None, lambda d, ms: None
    )
    arrivals = []
    for i, payload in enumerate(phone_payloads(codec)):
        if rng.random() < loss:
            continue
        header = struct.pack("!BBHII", 0x80, PT[codec], (1000 + i) & 0xFFFF, 160 * i, 7)
        arrivals.append((0.02 * i + rng.uniform(0.0, jitter), header + payload))
    arrivals.sort()
    t0, tick = 1000.0, 0.005
    for at, datagram in arrivals:
        while tick <= at:
            media.leg.playout._tick(t0 + tick)
            tick += 0.02
        media.leg.receive_rtp(datagram, t0 + at)
    concealed = media.leg.playout.stats.concealed_samples
    for _ in range(20):
        media.leg.playout._tick(t0 + tick)
        tick += 0.02
    return heard, concealed


def residual_db(frame: np.ndarray) -> float:
    """What of ``frame`` is not one steady 440 Hz sine (least squares), relative to it: a
    frame that holds a packet played out of place, or a seam, is far from one."""
    t = np.arange(frame.size) / 16_000
    basis = np.stack([np.sin(2 * np.pi * TONE_HZ * t), np.cos(2 * np.pi * TONE_HZ * t)], 1)
    x = frame.astype(np.float64)
    fit, *_ = np.linalg.lstsq(basis, x, rcond=None)
    rest = x - basis @ fit
    return float(10 * np.log10((rest @ rest + 1e-9) / (x @ x + 1e-9)))


@pytest.mark.parametrize("codec", ["PCMU", "PCMA", "G722"])
async def test_a_jittery_phone_plays_in_order_without_a_hole(codec: str) -> None:
    heard, concealed = run(codec, jitter=0.04, loss=0.0, seed=7)
    pcm = np.concatenate(heard[15:-25])  # past the start, before the end's fade
    frames = pcm.reshape(-1, FRAME_SAMPLES)
    silent = [i for i, f in enumerate(frames) if rms_dbfs(f) < -30]
    assert silent == [], silent
    # Every frame one clean sine (G.711's own noise is -38 dB): no packet out of place, no
    # seam where the delay grew (seeded: 25 packets overtook another).
    worst = max(residual_db(f) for f in frames)
    assert worst < -30, worst
    assert abs(dominant_frequency(pcm.astype(np.float64), 16_000) - TONE_HZ) < 3
    assert rms_dbfs(pcm) == pytest.approx(rms_dbfs(source()), abs=1.0)  # its level kept
    # Nothing was lost: what little was concealed is the delay growing to the jitter.
    assert concealed <= 6 * FRAME_SAMPLES, concealed


@pytest.mark.parametrize("codec", ["PCMU", "G722"])
async def test_a_lossy_phone_is_concealed_not_cut(codec: str) -> None:
    heard, concealed = run(codec, jitter=0.02, loss=0.05, seed=11)
    pcm = np.concatenate(heard[15:-25])
    frames = pcm.reshape(-1, FRAME_SAMPLES)
    assert concealed >= 5 * FRAME_SAMPLES  # the losses were concealed…
    silent = [i for i, f in enumerate(frames) if rms_dbfs(f) < -30]
    assert silent == [], silent  # …by the tone's own pitch, never a hole
    assert abs(dominant_frequency(pcm.astype(np.float64), 16_000) - TONE_HZ) < 3


@pytest.mark.parametrize(("codec", "hz"), [("PCMU", 150.0), ("PCMU", 1000.0), ("G722", 440.0)])
async def test_a_lost_packet_is_concealed_without_a_click(codec: str, hz: float) -> None:
    """A packet lost in a steady tone: the concealment (``audio/plc.py``, the last pitch
    period repeated) continues the tone with no step larger than the tone's own, into it and
    at every repeat of the period. Before, the repeated period began a quarter period early
    (its overlap-add ramped in from the samples before it), so every repeat clicked at the
    pitch rate: steps 2.5-19 times the tone's, 20 ms a buzz (PESQ-WB of the phone bench's
    speech, PCMU: 2.31 at 3 % loss and 1.58 at 10 %, now 2.49 and 1.90)."""
    from bridge.audio.phone_codecs import PhoneEncoder, phone_decoder

    encoder, decoder = PhoneEncoder(codec), phone_decoder(codec)
    heard = []
    for i in range(30):
        payload = encoder.encode(tone(hz, FRAME_SAMPLES, amplitude=0.3, start=i * FRAME_SAMPLES))
        heard.append(decoder.conceal(FRAME_SAMPLES) if i == 20 else decoder.decode(payload))
    pcm = np.concatenate(heard).astype(np.float64)
    steps = np.abs(np.diff(pcm))
    lost = 20 * FRAME_SAMPLES
    tone_step = steps[lost - 1000 : lost - 10].max()  # the decoded tone's own largest step
    assert steps[lost - 10 : lost + FRAME_SAMPLES + 10].max() <= 1.2 * tone_step
    # Its first 10 ms (before the fade) keep the tone's level.
    concealed = pcm[lost : lost + FRAME_SAMPLES // 2]
    assert rms_dbfs(concealed) == pytest.approx(rms_dbfs(pcm[lost - 320 : lost]), abs=1.0)
