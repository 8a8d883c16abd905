"""What the downlink encoder's learned silence (``bridge/audio/opus.py`` ``SilenceCycle``) does
to the sound and to the work: speech with its pauses (and with the pauses stretched to 3 s, a
call where people mostly listen) coded by libopus on every frame and by the bridge's encoder,
at the downlink's plain and protected settings, under seeded loss decoded with in-band FEC and
concealment; PESQ-WB (ITU-T P.862.2) of each, and the share of frames sent with no encode.

    python -m bench.silence_cycle

A benchmark, not a test: nothing here asserts. Needs espeak-ng and sox (``bench/speech.py``).
"""

from __future__ import annotations

import numpy as np

from bench.scoring import pesq_wb
from bench.speech import speech
from bridge.audio import FRAME_SAMPLES as N
from bridge.audio.opus import OpusDecoder, OpusEncoder

SETTINGS = {
    "plain (40 kbit/s, complexity 5)": {"bitrate": 40_000, "complexity": 5, "expected_loss": 0},
    "protected (48 kbit/s, complexity 8, FEC for 10 %)": {
        "bitrate": 48_000,
        "complexity": 8,
        "expected_loss": 10,
    },
}


def long_pauses(pcm: np.ndarray, seconds: float = 3.0) -> np.ndarray:
    """``pcm`` with every pause of digital silence (>= 0.3 s) made ``seconds`` long."""
    zero = np.concatenate(([False], pcm == 0, [False]))
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    parts, at = [], 0
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if end - start >= 4_800:
            parts += [pcm[at:start], np.zeros(int(16_000 * seconds), np.int16)]
            at = end
    return np.concatenate([*parts, pcm[at:]])


def code(
    frames: list[np.ndarray], settings: dict[str, int], learned: bool
) -> tuple[list[bytes], int]:
    enc = OpusEncoder(16_000, fec=True, dtx=False, **settings)
    if not learned:
        enc.silence = None  # libopus on every frame
    packets = [enc.encode(f) for f in frames]
    return packets, enc.silence.skipped if enc.silence is not None else 0


def play(packets: list[bytes], loss: float, seed: int) -> np.ndarray:
    lost = np.random.default_rng(seed).random(len(packets)) < loss
    dec, out = OpusDecoder(16_000), []
    for i, packet in enumerate(packets):
        if not lost[i]:
            out.append(dec.decode(packet))
        elif i + 1 < len(packets) and not lost[i + 1]:
            out.append(dec.decode_fec(packets[i + 1], N))  # RFC 6716 §2.1.7
        else:
            out.append(dec.conceal(N))
    return np.concatenate(out)


def main() -> None:
    talk = speech(16.0)
    print(
        "| speech | encoder settings | loss | every frame | learned silence | difference "
        "| sent with no encode |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    diffs = []
    for name, pcm in (("pauses 0.35 s", talk), ("pauses 3 s", long_pauses(talk))):
        frames = [pcm[i : i + N] for i in range(0, pcm.size - N + 1, N)]
        ref = pcm[: len(frames) * N]
        for label, settings in SETTINGS.items():
            every, _ = code(frames, settings, learned=False)
            ours, skipped = code(frames, settings, learned=True)
            for loss, seed in ((0.0, 1), (0.03, 1), (0.03, 2), (0.10, 1)):
                a = pesq_wb(ref, play(every, loss, seed))
                b = pesq_wb(ref, play(ours, loss, seed))
                diffs.append(b - a)
                print(
                    f"| {name} | {label} | {loss:.0%} (seed {seed}) | {a:.3f} | {b:.3f} | "
                    f"{b - a:+.3f} | {skipped / len(frames):.0%} |",
                    flush=True,
                )
    d = np.array(diffs)
    print(f"\nmean difference {d.mean():+.3f}, smallest {d.min():+.3f}, largest {d.max():+.3f}")


if __name__ == "__main__":
    main()
