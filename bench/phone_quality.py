"""A phone on a SIP trunk, as the bridge hears it: speech encoded as a phone sends it, through
seeded network profiles, into the trunk leg's one receiver, scored with PESQ-WB next to an
ideal receiver fed the very same packets (issue 61).

No processes and no real time, as ``bench/receiver_delay.py``: the phone sends the quality
bench's speech as 20 ms RTP packets, PCMU (resampled to 8 kHz) or Opus (16 kHz, 32 kbit/s,
in-band FEC planned for 5 % loss, as the trunk leg's own encoder and a PBX send it); each
packet arrives at its send time plus 1 ms plus the profile's delay (``bench/quality_paths.py``'s
:class:`~bench.quality_paths.Wire`, seeded), and both the phone's packet clock and ours carry
a millisecond of seeded timer jitter. The datagrams go to the ``TrunkMedia``'s leg
(:meth:`bridge.rtc.rtp_leg.RtpLeg.receive_rtp`) with their arrival times, and the media clock's
receive phase (``Playout._tick``) runs every 20 ms at a seeded phase; what it hands the call
(silence on a tick it hands nothing) is scored.

The *ideal receiver* decodes the packets that got through offline, every one in sequence order
whatever its lateness: a lost G.711 frame concealed by the same pitch repetition
(``audio/plc.py``), a lost Opus frame rebuilt from the next packet's FEC, else libopus'
concealment (:func:`bench.quality_paths.ideal_decode`).

Also reported: the receiver's playout delay (its W3C mean, ``jitterBufferDelay /
jitterBufferEmittedCount``, and the 95th percentile of :attr:`Receiver.delay` over the ticks)
and the CPU time of the receive path (``on_rtp`` and the ticks) per second of call, its
concealment events and the packets it discarded (too late); under stalls (``stall``: 400 ms
every 5 s; ``stalls``: 150–400 ms, the next 1–6 s after, seeded), how long the delay took to
come back within 40 ms of where it settles (``recover_s``, each stall's with 3 s after it,
:func:`~bench.quality_paths.recovery_s`; the ideal receiver holds nothing). Run by
``make quality`` (``--phones`` alone). A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from typing import Any

import numpy as np

from bench.quality_paths import PROFILES, Profile, Wire, ideal_decode, recovery_s
from bench.scoring import pesq_wb
from bridge.audio.g711 import ulaw_encode
from bridge.audio.opus import OpusEncoder
from bridge.audio.phone_codecs import phone_decoder
from bridge.audio.resample import Resampler
from bridge.trunks.media import TrunkMedia

RATE, FRAME = 16_000, 320
FRAME_SECONDS = 0.02
TIMER = 0.001
"""Timer jitter of both clocks (s, |N(0, σ)|), as ``bench/receiver_delay.py``'s."""
CODECS = {"PCMU": (0, 160), "opus": (111, 960)}
"""Payload type and RTP timestamp step a 20 ms packet (RFC 3551; Opus: RFC 7587 §4.1)."""
EVENT_PT = 101

PHONE_PROFILES = {
    "clean": PROFILES["clean"],
    "jitter20": Profile("jitter20", jitter=0.02),
    "jitter": PROFILES["jitter"],
    "jitter80": Profile("jitter80", jitter=0.08),
    "loss3": PROFILES["loss3"],
    "loss10": PROFILES["loss10"],
    "stall": PROFILES["stall"],
    "stalls": PROFILES["stalls"],
}
"""The quality bench's profiles (``jitter`` is 0–40 ms) and two more spreads of jitter."""
LABELS = {
    "clean": "clean",
    "jitter20": "jitter 0–20 ms",
    "jitter": "0–40 ms",
    "jitter80": "0–80 ms",
    "loss3": "3 % loss",
    "loss10": "10 % loss",
    "stall": "400 ms stall / 5 s",
    "stalls": "150–400 ms stalls / 1–6 s",
}


def phone_payloads(codec: str, pcm: np.ndarray) -> list[bytes]:
    """``pcm`` (16 kHz) as the phone's 20 ms payloads: µ-law at 8 kHz, or Opus."""
    if codec == "PCMU":
        narrow = Resampler(8000).resample_array(pcm, RATE)
        return [ulaw_encode(narrow[i : i + 160]) for i in range(0, narrow.size - 159, 160)]
    enc = OpusEncoder(RATE, bitrate=32_000, complexity=5, fec=True, expected_loss=5, dtx=False)
    return [enc.encode(pcm[i : i + FRAME]) for i in range(0, pcm.size - FRAME + 1, FRAME)]


def arrivals(payloads: list[bytes], profile: Profile, seed: int) -> list[tuple[float, int]]:
    """(arrival in seconds, packet index) of each packet that got through, in arrival order."""
    wire, rng = Wire(profile, seed), random.Random(seed)
    out = []
    for i in range(len(payloads)):
        extra = wire.fate()
        if extra is not None:
            out.append((i * FRAME_SECONDS + abs(rng.gauss(0, TIMER)) + 0.001 + extra, i))
    out.sort()
    return out


def ideal_phone_decode(codec: str, packets: dict[int, bytes]) -> np.ndarray:
    """The ideal receiver (module docstring): ``packets`` by index, every one in order."""
    if codec == "opus":
        return ideal_decode(packets)
    if not packets:
        return np.zeros(0, dtype=np.int16)
    dec = phone_decoder(codec)
    out = [
        dec.decode(packets[i]) if i in packets else dec.conceal(FRAME)
        for i in range(min(packets), max(packets) + 1)
    ]
    return np.concatenate(out)


async def bridge_receive(
    codec: str, payloads: list[bytes], got: list[tuple[float, int]], seed: int
) -> dict[str, Any]:
    """The packets ``got`` through :class:`TrunkMedia`'s receiver on a simulated clock: what
    it handed the call, its delay and its CPU time (inside a running loop: the playout
    registers on the worker clock, which never fires here, as nothing awaits)."""
    pt, step = CODECS[codec]
    heard: list[np.ndarray] = []
    media = TrunkMedia("phone", codec, pt, EVENT_PT, heard.append, lambda now: None, _no_key)
    rng = random.Random(seed + 1)
    t0 = 1000.0
    tick = 0.001 + rng.uniform(0.0, FRAME_SECONDS)  # the clock's phase: any
    silence = np.zeros(FRAME, dtype=np.int16)
    out: list[np.ndarray] = []
    delays: list[float] = []
    trace: list[tuple[float, float]] = []
    datagrams = [
        (
            at,
            struct.pack("!BBHII", 0x80, pt, (4000 + i) & 0xFFFF, (7000 + i * step), 42)
            + payloads[i],
        )
        for at, i in got
    ]
    cpu, j = 0.0, 0
    end = (datagrams[-1][0] if datagrams else 0.0) + 1.0
    while j < len(datagrams) or (media.leg.playout.receiver.buffered and tick < end):
        now = tick + abs(rng.gauss(0, TIMER))
        c0 = time.process_time()
        while j < len(datagrams) and datagrams[j][0] <= now:
            at, datagram = datagrams[j]
            media.leg.receive_rtp(datagram, t0 + at)
            j += 1
        media.leg.playout._tick(t0 + now)
        cpu += time.process_time() - c0
        receiver = media.leg.playout.receiver
        if heard:
            out += heard
            heard.clear()
            delays.append(receiver.delay)
            trace.append((tick, receiver.delay))
        elif out:
            out.append(silence)  # nothing handed on: the call hears nothing of the phone
        tick += FRAME_SECONDS
    media.stop()
    s = media.leg.playout.stats
    seconds = len(payloads) * FRAME_SECONDS
    return {
        "heard": np.concatenate(out) if out else np.zeros(0, dtype=np.int16),
        "trace": trace,
        "delay_mean_ms": round(
            1000 * s.jitter_buffer_delay / max(1, s.jitter_buffer_emitted_count), 1
        ),
        "delay_p95_ms": round(1000 * float(np.percentile(delays, 95)), 1) if delays else None,
        "cpu_ms_per_s": round(1000 * cpu / seconds, 3),
        "concealed_ms": round(1000 * s.concealed_samples / RATE),
        "concealment_events": s.concealment_events,
        "discarded": s.packets_discarded,
        "fec_recovered_ms": round(1000 * s.fec_recovered_samples / RATE),
        "stretched_ms": round(
            1000 * (s.inserted_samples_for_deceleration + s.removed_samples_for_acceleration) / RATE
        ),
    }


def _no_key(digit: str, duration_ms: int) -> None:
    pass


def phone_call(
    speech: np.ndarray, codec: str, profile: str, seed: int, payloads: list[bytes] | None = None
) -> dict[str, Any]:
    """One phone's speech under ``profile``: the bridge's and the ideal receiver's PESQ-WB,
    the receiver's delay and its CPU (``payloads``: the phone's, if already encoded)."""
    payloads = phone_payloads(codec, speech) if payloads is None else payloads
    got = arrivals(payloads, PHONE_PROFILES[profile], seed)
    rx = asyncio.run(bridge_receive(codec, payloads, got, seed))
    heard = rx.pop("heard")
    seconds = len(payloads) * FRAME_SECONDS
    releases = [r for _, r in Wire(PHONE_PROFILES[profile], seed, seconds).stalls]
    trace = rx.pop("trace")
    recover = recovery_s(trace, releases) if releases else None
    ideal = ideal_phone_decode(codec, {i: payloads[i] for _, i in got})
    return {
        "bridge": round(pesq_wb(speech, heard), 3),
        "ideal": round(pesq_wb(speech, ideal), 3),
        "packets_lost": len(payloads) - len(got),
        "packets_reordered": _reordered(got),
        **rx,
        **({"recover_s": recover} if recover is not None else {}),
    }


def _reordered(got: list[tuple[float, int]]) -> int:
    """Packets that arrived after one sent later."""
    count, newest = 0, -1
    for _, i in got:
        count += i < newest
        newest = max(newest, i)
    return count


def run_phones(
    speech: np.ndarray, profiles: list[str] | None = None, *, seed: int = 1, log: Any = print
) -> dict[str, dict[str, Any]]:
    """Every codec × profile (``PHONE_PROFILES`` by default): ``{codec: {profile: row}}``."""
    out: dict[str, dict[str, Any]] = {}
    for codec in CODECS:
        payloads = phone_payloads(codec, speech)
        out[codec] = {}
        for k, name in enumerate(profiles or list(PHONE_PROFILES)):
            out[codec][name] = row = phone_call(speech, codec, name, seed + k, payloads)
            log(f"  {codec} {name}: {row}")
    return out


def back_in(value: float | None) -> str:
    """A time back within 40 ms of where the delay settles (``None``: not back)."""
    return "not" if value is None else f"{value:.1f} s"


def phones_table(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown: codec × profile, each cell bridge / ideal PESQ-WB and the receiver's mean /
    95th-percentile delay; the receive path's CPU per call-second at the end of each row."""
    profiles = list(next(iter(rows.values())))
    head = " | ".join(LABELS.get(p, p) for p in profiles)
    out = [
        f"| phone codec | {head} | receive CPU |",
        "|---|" + "---|" * len(profiles) + "---|",
    ]
    for codec, by in rows.items():
        name = "PCMU" if codec == "PCMU" else "Opus"
        score = " | ".join(f"{by[p]['bridge']:.2f} / {by[p]['ideal']:.2f}" for p in profiles)
        delay = " | ".join(
            f"{by[p]['delay_mean_ms']:.0f} / {by[p]['delay_p95_ms'] or 0:.0f} ms"
            + (
                f", back in {' / '.join(back_in(r) for r in by[p]['recover_s'])}"
                if "recover_s" in by[p]
                else ""
            )
            for p in profiles
        )
        cpu = max(r["cpu_ms_per_s"] for r in by.values())
        out.append(f"| {name}: bridge / ideal | {score} | ≤ {cpu:.2f} ms/s |")
        out.append(f"| {name}: delay, mean / p95 | {delay} | |")
    return "\n".join(out)
