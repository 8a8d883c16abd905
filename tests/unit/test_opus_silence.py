"""Learned silence (bridge/audio/opus_silence.py). The downlink encoder's ``SilenceCycle``: a
run of digital silence costs no encode and sends exactly the packets libopus would, and the
sound around it decodes the same. The decoder's ``DecodedSilence``: a run of silent packets
costs no decode, and every sample played, during the run and after it, is the one a decoder
fed every packet plays."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.audio import FRAME_SAMPLES, tone
from bridge.audio.opus import OpusDecoder, OpusEncoder
from bridge.audio.opus_silence import SILENCE_CHECK_EVERY

from ..support.spectrum import dominant_frequency

N = FRAME_SAMPLES
DOWNLINK = {"bitrate": 40_000, "complexity": 5, "fec": True, "expected_loss": 0, "dtx": False}


def frames(pcm: np.ndarray) -> list[np.ndarray]:
    return [pcm[i : i + N] for i in range(0, pcm.size, N)]


def rms_db(pcm: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) / 32768))


def test_a_run_of_silence_is_sent_from_the_cycle_byte_for_byte() -> None:
    rng = np.random.default_rng(1)
    dither = rng.integers(-2, 3, 16_000 * 3).astype(np.int16)  # ±2: digital silence
    speech = [tone(440, 16_000, amplitude=0.3), tone(300, 16_000, amplitude=0.3)]
    signal = frames(np.concatenate([speech[0], dither, speech[1]]))
    as_zeros = [f if np.abs(f).max() > 2 else np.zeros(N, np.int16) for f in signal]
    reference = OpusEncoder(16_000, **DOWNLINK)
    reference.silence = None  # codes every frame
    learned = OpusEncoder(16_000, **DOWNLINK)
    ref = [reference.encode(f) for f in as_zeros]
    out = [learned.encode(f) for f in signal]
    silent = range(50, 200)
    assert [out[i] for i in silent] == [ref[i] for i in silent]  # what the far end receives
    assert learned.silence is not None
    checks = len(silent) // SILENCE_CHECK_EVERY + 1
    assert learned.silence.skipped >= len(silent) - 16 - checks  # learnt, then skipped
    # The sound after the run decodes to the same tone at the same level.
    dec_ref, dec_out = OpusDecoder(16_000), OpusDecoder(16_000)
    a = np.concatenate([dec_ref.decode(p) for p in ref])[210 * N :]
    b = np.concatenate([dec_out.decode(p) for p in out])[210 * N :]
    assert dominant_frequency(b, 16_000) == pytest.approx(300, abs=2)
    assert rms_db(b) == pytest.approx(rms_db(a), abs=0.1)
    diff = a.astype(np.float64) - b
    assert 10 * np.log10(np.sum(a.astype(np.float64) ** 2) / np.sum(diff**2)) > 20


def test_sound_or_a_new_setting_forgets_the_cycle_and_dtx_never_learns_one() -> None:
    enc = OpusEncoder(16_000, **DOWNLINK)
    assert enc.silence is not None
    zero = np.zeros(N, np.int16)
    for _ in range(10):
        enc.encode(zero)
    assert enc.silence.cycle is not None
    enc.encode(tone(440, N, amplitude=0.01))  # -40 dBFS: sound
    assert enc.silence.cycle is None
    for _ in range(10):
        enc.encode(zero)
    enc.set_expected_loss(10)  # FEC for the next frames: silence may code differently
    assert enc.silence.cycle is None
    dtx = OpusEncoder(16_000, **{**DOWNLINK, "dtx": True})
    assert dtx.silence is None
    assert all(len(dtx.encode(zero)) for _ in range(30))


CELT = {"bitrate": 72_000, "complexity": 2, "fec": False, "expected_loss": 0, "dtx": False}
SILK_FEC = {**DOWNLINK, "expected_loss": 10}


def speech_silence_speech(settings: dict[str, object], *, celt: bool) -> list[bytes]:
    """Two seconds of noisy tone, three of digital silence, two more: the sender's packets."""
    rng = np.random.default_rng(3)
    speech = tone(440, 16_000 * 2, amplitude=0.3) + rng.normal(0, 800, 16_000 * 2)
    pcm = np.concatenate([speech, np.zeros(16_000 * 3), speech[::-1]]).astype(np.int16)
    encoder = OpusEncoder(16_000, **settings)  # type: ignore[arg-type]
    encoder.silence = None  # the sender codes every frame, as a browser does
    encoder.set_celt_only(celt)
    return [encoder.encode(f) for f in frames(pcm)]


@pytest.mark.parametrize(("settings", "celt"), [(CELT, True), (SILK_FEC, False)])
@pytest.mark.parametrize("lost", [None, 150, 247, 248])
def test_a_silent_run_decodes_from_the_cycle_sample_for_sample(
    settings: dict[str, object], celt: bool, lost: int | None
) -> None:
    """Silent frames 100-249; ``lost``: a packet lost inside the run (concealed), at its last
    frame, or the first frame of speech after it (rebuilt from the next packet's FEC)."""
    packets = speech_silence_speech(settings, celt=celt)
    reference, learned = OpusDecoder(16_000), OpusDecoder(16_000)
    reference.silence = None  # decodes every packet

    def play(decoder: OpusDecoder) -> list[np.ndarray]:
        out = []
        for i, packet in enumerate(packets):
            if i == lost:
                out.append(decoder.decode_fec(packets[i + 1], N))
            else:
                out.append(decoder.decode(packet))
        return out

    expected, played = play(reference), play(learned)
    assert learned.silence is not None
    assert learned.silence.skipped > 100  # most of the run cost no decode
    mismatched = [
        i for i, (a, b) in enumerate(zip(expected, played, strict=True)) if not np.array_equal(a, b)
    ]
    assert mismatched == []
    after = np.concatenate(played[260:])  # the speech after the run: the tone, at its level
    assert dominant_frequency(after, 16_000) == pytest.approx(440, abs=3)
    assert rms_db(after) == pytest.approx(rms_db(np.concatenate(expected[260:])), abs=0.01)


def test_a_concealment_inside_a_silent_run_catches_the_decoder_up_first() -> None:
    packets = speech_silence_speech(CELT, celt=True)
    reference, learned = OpusDecoder(16_000), OpusDecoder(16_000)
    reference.silence = None
    for decoder in (reference, learned):
        for packet in packets[:163]:  # 63 frames into the run: a phase other than 0
            decoder.decode(packet)
    assert learned.silence is not None and learned.silence.cycle is not None
    assert np.array_equal(reference.conceal(N), learned.conceal(N))  # nothing arrived
    assert learned.silence.cycle is None  # a gap ends the run: learnt again
    rest = [(reference.decode(p), learned.decode(p)) for p in packets[164:]]
    assert all(np.array_equal(a, b) for a, b in rest)


def test_sound_never_plays_from_the_cycle() -> None:
    """A sender whose packets repeat while it sends sound (a looped tone) is decoded."""
    packets = speech_silence_speech(CELT, celt=True)[:4] * 40  # 80 ms of tone, looped
    decoder = OpusDecoder(16_000)
    for packet in packets:
        decoder.decode(packet)
    assert decoder.silence is not None
    assert decoder.silence.cycle is None and decoder.silence.skipped == 0


def test_a_full_scale_negative_sample_is_never_silence() -> None:
    """``np.abs`` wraps int16's −32768 onto itself: a frame holding one such sample counted
    as quiet (``audio/pcm.py`` ``peak``), and a run of repeats decoding to it was learned as
    a silent cycle. Neither is silence."""
    from bridge.audio.opus_silence import SILENCE_PERIOD, DecodedSilence
    from bridge.audio.pcm import peak, quiet

    click = np.zeros(N, np.int16)
    click[100] = -32768
    assert peak(click) == 32768 and not quiet(click)
    assert quiet(np.full(N, -200, np.int16)) and not quiet(np.full(N, 201, np.int16))
    learnt = DecodedSilence()
    packets = [bytes([i]) for i in range(SILENCE_PERIOD)]
    for n in range(4 * SILENCE_PERIOD):  # every packet repeats a period on, with its output
        learnt.decoded(packets[n % SILENCE_PERIOD], click)
    assert learnt.cycle is None and learnt.lookup(packets[0]) is None
