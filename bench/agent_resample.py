"""PESQ-WB of speech through the agents' resampling pair: the caller's 16 kHz audio up to an
OpenAI Realtime model at 24 kHz, and a 24 kHz model voice back down to the bus's 16 kHz —
the same :class:`bridge.audio.Resampler` (libswresample, through PyAV) the agent uses, fed
20 ms frames as the agent feeds it.

    .venv/bin/python -m bench.agent_resample [--seconds 16]

Speech is espeak-ng's Harvard sentences (bench/speech.py), scored with ITU-T P.862.2
(the ``pesq`` package) after alignment (bench/scoring.py).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.scoring import pesq_wb
from bench.speech import frames, speech
from bridge.audio import Resampler


def round_trip(pcm16: np.ndarray) -> np.ndarray:
    """``pcm16`` (16 kHz) → 24 kHz → 16 kHz, frame by frame, as an agent does it."""
    up, down = Resampler(24_000), Resampler(16_000)
    wide = [up.resample_array(f, 16_000) for f in frames(pcm16)]
    back = [down.resample_array(w, 24_000) for w in wide if w.size]
    return np.concatenate(back)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=16.0)
    args = parser.parse_args()
    ref = speech(args.seconds)
    t0 = time.perf_counter()
    out = round_trip(ref)
    cpu = time.perf_counter() - t0
    print(f"speech {ref.size / 16_000:.1f} s: PESQ-WB 16→24→16 kHz = {pesq_wb(ref, out):.2f}")
    print(f"resampling CPU: {cpu / (ref.size / 16_000) * 1000:.2f} ms per second of audio")
    print(f"ideal (the reference against itself): {pesq_wb(ref, ref):.2f}")


if __name__ == "__main__":
    main()
