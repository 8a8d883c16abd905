"""The receive side of a forwarded G.711 call, per packet: both legs' real receive paths, in one
process, no network, nothing sent.

Issue 60's G.711 point (``bench/trunk.py --engine cloudapi --codecs PCMU``): a WhatsApp leg on
PCMU (DTLS-SRTP) and a phone on a plain-RTP PCMU trunk, each forwarding its packets to the
other, neither decoding. Here each leg's packets go through the bridge's own objects from the
datagram on: for WhatsApp, the UDP guard's callback (a real aioice ``StunProtocol`` and
``Connection``), ``DtlsSrtp.datagram`` with a real libsrtp session, the leg's ``RtpSession``
and its ``Playout``; for the phone, ``RtpSocket.datagram_arrived`` and ``RtpLeg.receive_rtp`` and
its ``Playout``. The two are wired by the call's own ``Forwarding`` (a real ``CallBus``), so
the idle legs' bookkeeping, level meters and the per-packet decisions are the call's. Only the
far ends' senders are stand-ins that count what they are handed (the send side has its own
bench, ``bench/send_path.py``). The payloads are speech-like µ-law, and each leg's packets
cross a real path (:func:`network`, seeded): 0-20 ms of jitter, 1 % lost, 1 % swapped with the
next one, so the receive side counts losses, reordering and jitter as it does in a call.

It reports process CPU time per packet (``time.process_time``) of each leg, best of
``--repeat`` runs of ``--packets`` each::

    .venv/bin/python -m bench.g711_forward [--profile]

``--profile`` prints cProfile's top functions of one run instead. This is a benchmark, not a
test: nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import struct
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
from pylibsrtp import Policy, Session

from bench.recv_path import ADDR, KEY, keyed_dtls
from bench.send_path import machine
from bridge.audio.g711 import ulaw_encode
from bridge.calls.forwarding import Forwarding
from bridge.loop import install_event_loop
from bridge.media import BusStats, CallBus
from bridge.rtc import guard
from bridge.rtc.dtls_srtp import DtlsSrtp
from bridge.rtc.passthrough import PassThrough
from bridge.rtc.rtp_leg import RtpLeg
from bridge.rtc.rtp_session import RtpSession
from bridge.rtc.uplink import Playout
from bridge.tasks import TaskSet
from bridge.trunks.media import TrunkMedia

PCMU = 0


def speech(n: int) -> list[bytes]:
    """``n`` 20 ms µ-law payloads of a voice-like signal (a varying tone, noise)."""
    rng = np.random.default_rng(1)
    t = np.arange(160 * n) / 8000
    pcm = 6000 * np.sin(2 * np.pi * (180 + 40 * np.sin(t)) * t) + rng.normal(0, 300, t.size)
    raw = ulaw_encode(pcm.astype(np.int16))
    return [raw[160 * i : 160 * (i + 1)] for i in range(n)]


def network(packets: list[bytes], start: float, seed: int) -> list[tuple[bytes, float]]:
    """``packets`` sent every 20 ms from ``start`` as a real path delivers them: each arrives
    0-20 ms late, 1 % never do, 1 % come after the next one (seeded)."""
    rng = random.Random(seed)
    out = [(p, start + i * 0.02 + rng.uniform(0.0, 0.02)) for i, p in enumerate(packets)]
    out = [a for a in out if rng.random() >= 0.01]
    for i in range(len(out) - 1):
        if rng.random() < 0.01:  # reordered: the later packet first, each at the other's time
            (p, t), (q, u) = out[i], out[i + 1]
            out[i], out[i + 1] = (q, t), (p, u)
    return out


def rtp(payloads: list[bytes], ssrc: int) -> list[bytes]:
    return [
        struct.pack("!BBHII", 0x80, PCMU, i & 0xFFFF, i * 160, ssrc) + p
        for i, p in enumerate(payloads)
    ]


class Target:
    """The far end's sender (a ``ForwardTarget``): counts what it is handed."""

    def __init__(self) -> None:
        self.sent = self.refused = 0

    def forward(self, source: PassThrough, seq: int, ts: int, payload: bytes, at: float) -> bool:
        self.sent += 1
        return True  # carried: sent as it is

    def forward_refused(self, source: PassThrough) -> None:
        self.refused += 1


class WhatsAppLeg:
    """What ``Forwarding`` needs of the WhatsApp leg (``rtc/leg.py``'s): its playout, and a
    pass-through to a counting sender."""

    codec = "PCMU"

    def __init__(self, playout: Playout) -> None:
        self.playout = playout
        self.target = Target()

    def forward_to(self, offer: Any, needs_pcm: Any = None, meters: Any = ()) -> None:
        self.playout.forward_to(offer, needs_pcm, meters)

    def forward_from(self, allowed: Any) -> PassThrough:
        pass_through = PassThrough(allowed)
        pass_through.target = self.target
        return pass_through


def whatsapp_wire(tasks: TaskSet) -> tuple[Any, Any, RtpSession]:
    """The WhatsApp leg's wire as the guard hands it datagrams: ``(feed, protocol, session)``."""
    dtls, protocol = keyed_dtls()
    session = RtpSession(1, "bench")
    session.use_codec("PCMU", PCMU)
    transceiver = SimpleNamespace(
        receiver=SimpleNamespace(receive=None), sender=SimpleNamespace(send=None)
    )
    leg = RtpLeg(session, codec="PCMU", on_frame=lambda pcm: None, stats=BusStats(), tasks=tasks)
    wire = DtlsSrtp(leg, transceiver, tasks, "bench leg")
    assert wire._attach(dtls)
    return guard.guarded_datagram_arrived, protocol, session


async def run_once(n: int, profile: cProfile.Profile | None = None) -> dict[str, float]:
    tasks = TaskSet("bench-g711")
    feed, protocol, session = whatsapp_wire(tasks)
    bus = CallBus("bench")
    playout = Playout(lambda pcm: None, bus.stats, tasks, _g711, session.reports.reception)
    session.playout = playout
    leg = WhatsAppLeg(playout)
    phone = TrunkMedia("bench", "PCMU", PCMU, None, lambda pcm: None, lambda: None, _no_key)
    phone_sender = Target()  # the phone's sender, in a forwarding run: it counts

    def phone_forward_from(allowed: Any) -> PassThrough:
        pass_through = PassThrough(allowed)
        pass_through.target = phone_sender
        return pass_through

    phone.forward_from = phone_forward_from  # type: ignore[method-assign]
    phone.track = SimpleNamespace(forwarding=True)  # type: ignore[assignment]
    Forwarding(bus, {}).update(leg, None, phone)  # type: ignore[arg-type]
    socket = phone.socket

    tx = Session(
        Policy(
            key=KEY,
            ssrc_type=Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
    )
    payloads = speech(n)
    from_whatsapp = [tx.protect(p) for p in rtp(payloads, 0x1111)]
    from_phone = rtp(payloads, 0x2222)
    at0 = time.monotonic()
    whatsapp_path, phone_path = network(from_whatsapp, at0, 1), network(from_phone, at0, 2)
    out: dict[str, float] = {}
    if profile is not None:
        profile.enable()
    t0 = time.process_time()
    for data, at in whatsapp_path:
        feed(protocol, data, ADDR, at)
    out["whatsapp"] = time.process_time() - t0
    t0 = time.process_time()
    arrived = socket.datagram_arrived
    for data, at in phone_path:
        arrived(data, ADDR, at)
    out["phone"] = time.process_time() - t0
    if profile is not None:
        profile.disable()
    w, p = len(whatsapp_path), len(phone_path)
    assert phone_sender.sent == w and leg.target.sent == p, (phone_sender.sent, leg.target.sent)
    assert playout.not_decoded == w and phone.leg.playout.not_decoded == p
    received = session.reports.reception, phone.leg.reports.reception
    assert received[0].packets_received == w and received[1].packets_received == p
    phone.leg.playout.stop()
    playout.stop()
    await tasks.close()
    return {"whatsapp": out["whatsapp"] / w * 1e6, "phone": out["phone"] / p * 1e6}


def _g711() -> Any:
    from bridge.audio.phone_codecs import phone_decoder

    return phone_decoder("PCMU")


def _no_key(digit: str, ms: int) -> None:
    pass


async def run(n: int, repeat: int, profile: bool) -> None:
    if profile:
        prof = cProfile.Profile()
        await run_once(n, prof)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    best: dict[str, float] = {}
    for _ in range(repeat):
        for k, v in (await run_once(n)).items():
            best[k] = min(best.get(k, v), v)
    for k, v in best.items():
        print(f"{k:10s} {v:6.2f} µs of CPU per packet received")
    print(f"both       {sum(best.values()):6.2f} µs   machine {machine()}")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    install_event_loop(True)
    asyncio.run(run(args.packets, args.repeat, args.profile))


if __name__ == "__main__":
    main()
