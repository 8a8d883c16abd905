"""Speech activity: what the VAD costs per 20 ms frame and how well it finds speech.

    .venv/bin/python -m bench.vad [--json bench/results/vad.json]

* cost: µs per bus frame of :class:`bridge.attachments.speech.SpeechDetector` (WebRTC VAD
  gate, then Silero) on speech, music and silence, and of each stage alone;
* onsets: sentences spoken by espeak-ng with 1.5 s pauses: how many starts land within
  500 ms of a sentence's first sound (found, with the delay) and how many come from nowhere;
* false starts on 60 s of music-like synthetic signal (five different pieces, each at eight
  alignments to the detector's windows) and 20 s of white noise, where WebRTC VAD alone is
  also counted (it calls music speech).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from bridge.attachments.speech import SileroModel, SpeechDetector
from bridge.audio import FRAME_SAMPLES, Resampler

LATE_FRAMES = 25
"""A start up to 500 ms after a sentence's first sound counts as finding it."""
OFFSETS = range(0, 512, 64)
"""Sample offsets the music is tried at (the detector scores 512-sample windows)."""
SENTENCES = [
    "Good morning, thank you for calling.",
    "I would like to change the address on my account.",
    "Yes, it is the one on the main street.",
    "Can you send me a confirmation by message?",
    "My order number is four five seven two.",
    "I will wait for your answer, thanks.",
    "Sorry, could you repeat that please?",
    "The delivery was late again this week.",
    "Please cancel the second item.",
    "That is all, have a nice day.",
]


def espeak(text: str, tmp: Path, name: str, voice: str) -> np.ndarray:
    wav = tmp / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(wav), text], check=True)
    resampler = Resampler(16_000)
    with av.open(str(wav)) as container:
        return np.concatenate([resampler.resample(f) for f in container.decode(audio=0)])


def frames_of(pcm: np.ndarray) -> np.ndarray:
    return pcm[: pcm.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)


def starts(pcm: np.ndarray) -> list[int]:
    detector = SpeechDetector()
    return [i for i, f in enumerate(frames_of(pcm)) if detector.feed(f) is True]


def onsets(tmp: Path) -> dict[str, object]:
    gap = np.zeros(int(16_000 * 1.5), dtype=np.int16)
    parts, truth, pos = [], [], 0
    for i, text in enumerate(SENTENCES):
        for voice in ("en", "en-us"):
            speech = espeak(text, tmp, f"{voice}{i}", voice)
            first = int(np.argmax(np.abs(speech) > 300))  # the first sound
            parts += [gap, speech]
            truth.append((pos + gap.size + first) // FRAME_SAMPLES)
            pos += gap.size + speech.size
    found = starts(np.concatenate([*parts, gap]))
    near = LATE_FRAMES
    delays = [
        min(s - t for s in found if 0 <= s - t <= near)
        for t in truth
        if any(0 <= s - t <= near for s in found)
    ]
    return {
        "sentences": len(truth),
        "found": len(delays),
        "found_pct": round(100 * len(delays) / len(truth), 1),
        "false_starts": sum(not any(0 <= s - t <= near for t in truth) for s in found),
        "onset_delay_ms_p50": 20 * float(np.median(delays)),
        "onset_delay_ms_max": 20 * max(delays),
    }


def cost(pcm: np.ndarray) -> dict[str, float]:
    import webrtcvad

    frames = frames_of(pcm)
    detector = SpeechDetector()
    t0 = time.perf_counter()
    for f in frames:
        detector.feed(f)
    both = (time.perf_counter() - t0) / len(frames)
    gate = webrtcvad.Vad(3)
    t0 = time.perf_counter()
    for f in frames:
        gate.is_speech(f.tobytes(), 16_000)
    webrtc = (time.perf_counter() - t0) / len(frames)
    model, state = SileroModel.shared(), np.zeros((2, 1, 128), dtype=np.float32)
    windows = pcm[: pcm.size // 512 * 512].reshape(-1, 512).astype(np.float32) / 32768
    t0 = time.perf_counter()
    for w in windows:
        _, state = model.score(np.concatenate([np.zeros(64, np.float32), w]), state)
    silero = (time.perf_counter() - t0) / len(windows) * FRAME_SAMPLES / 512
    return {
        "detector_us": round(both * 1e6, 1),
        "webrtc_vad_us": round(webrtc * 1e6, 1),
        "silero_us": round(silero * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("bench.vad needs espeak-ng (Debian: apt-get install espeak-ng)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import webrtcvad

    from tests.support.dtmf_signals import music

    rng = np.random.default_rng(3)
    white = (rng.standard_normal(16_000 * 20) * 3000).astype(np.int16)
    with tempfile.TemporaryDirectory() as tmp:
        speech = np.concatenate(
            [espeak(t, Path(tmp), f"c{i}", "en") for i, t in enumerate(SENTENCES)]
        )
        result: dict[str, object] = {"onsets": onsets(Path(tmp))}
    pieces = [music(60, seed=s) for s in range(1, 6)]
    gate = webrtcvad.Vad(3)
    # Each piece at 8 alignments to the 32 ms windows: a false start can hide in one.
    shifts = [np.concatenate([np.zeros(off, np.int16), p]) for p in pieces for off in OFFSETS]
    result["music_60s"] = {
        "pieces": len(pieces),
        "alignments": len(OFFSETS),
        "false_starts": sum(len(starts(p)) for p in shifts),
        "webrtc_vad_alone_speech_frames_pct": [
            round(
                100 * float(np.mean([gate.is_speech(f.tobytes(), 16_000) for f in frames_of(p)])), 1
            )
            for p in pieces
        ],
    }
    result["white_noise_20s_false_starts"] = len(starts(white))
    result["cost_per_20ms_frame"] = {
        "speech": cost(speech),
        "music": cost(pieces[0]),
        "silence": cost(np.zeros(16_000 * 10, dtype=np.int16)),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
