"""A forwarded G.711 call's whole per-datagram path, both ways, warm and cold: CPU µs a datagram.

Issue 60's G.711 point (``bench/trunk.py --engine cloudapi --codecs PCMU``), ``--calls`` of
them in one process, each two legs wired by the call's own ``Forwarding`` on a real
``CallBus`` and ``Conference``:

* **WhatsApp's leg**: its datagrams go in at the UDP guard's callback (a real aioice
  ``StunProtocol`` and ``Connection`` with a nominated pair, a real aiortc DTLS transport with
  real libsrtp sessions both ways), through ``DtlsSrtp``, the leg's ``RtpSession`` and its
  ``Playout``; the phone's packets go out through its ``LeanSender``, SRTP protect and the
  pair's ``sendto``.
* **The phone's leg**: a plain-RTP ``TrunkMedia`` on its clear ``RtpSocket``; WhatsApp's
  packets go out through its sender and its socket's ``sendto``.

Both legs' senders play their real tracks (``OpusBusTrack``, its sink the call's conference
port) on the worker clock, which runs as in the bridge; the sockets' ``sendto`` are stand-ins
that keep what they are handed (no system call: the kernel's share is not here). At the end
every forwarded payload is checked, bit for bit, against what went in (WhatsApp's way after
unprotecting it with the far end's key).

Each tick every call gets one datagram each way, and the CPU of that burst (the main thread's,
``time.thread_time``) is summed:

* ``warm``: the bursts back to back, as the micro-benches run;
* ``cold``: the bursts 20 ms apart (``asyncio.sleep``), as the bridge is fed: its media sockets
  read once a tick (``rtc/udp_poll.py``), then the process sleeps until the next.

``--floor`` feeds the same datagrams the same way through only what no forwarding path can
skip (SRTP both ways, the header rewritten, ``sendto``): what the path's own work adds to it.

::

    .venv/bin/python -m bench.forward_cold [--calls 10] [--repeat 5] [--floor] [--json F]

This is a benchmark, not a test: nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pylibsrtp import Policy, Session

from bench.g711_forward import speech
from bench.recv_path import ADDR, KEY, keyed_dtls
from bench.send_path import machine
from bridge.calls.forwarding import Forwarding
from bridge.loop import install_event_loop
from bridge.media import CallBus
from bridge.media.conference import Role
from bridge.media.ports import Plug
from bridge.rtc import guard
from bridge.rtc.dtls_srtp import DtlsSrtp
from bridge.rtc.passthrough import PassThrough
from bridge.rtc.rfc4733 import KeyPresses
from bridge.rtc.rtp_leg import RtpLeg
from bridge.rtc.rtp_session import RtpSession
from bridge.rtc.tracks import OpusBusTrack
from bridge.tasks import TaskSet
from bridge.trunks.media import TrunkMedia

PCMU = 0
OUT_KEY = bytes(range(30, 60))
"""SRTP's send key of the WhatsApp leg (what Meta would unprotect with)."""


def _policy(key: bytes, inbound: bool) -> Policy:
    return Policy(
        key=key,
        ssrc_type=Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )


class Sent:
    """A socket's ``sendto`` (and what ``RtpSocket`` asks of its transport): keeps what it
    is handed."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.datagrams.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


class WhatsAppLeg:
    """What ``Forwarding`` asks of the WhatsApp leg (``rtc/leg.py``'s, a G.711 answer)."""

    codec = "PCMU"

    def __init__(self, leg: RtpLeg) -> None:
        self.leg = leg

    def forward_to(self, offer: Any, needs_pcm: Any = None, meters: Any = ()) -> None:
        self.leg.forward_to(offer, needs_pcm, meters)

    def forward_from(self, allowed: Any) -> PassThrough | None:
        return self.leg.forward_from(allowed)


class Call:
    """One forwarded call: WhatsApp's leg and the phone's, wired by ``Forwarding``."""

    def __init__(self, i: int, tasks: TaskSet) -> None:
        self.bus = bus = CallBus(f"bench-{i}")
        bus.open_uplink(clocked=True)  # as the Cloud API engine's clocked leg opens it
        conference = bus.conference
        dtls, self.protocol = keyed_dtls()
        dtls._tx_srtp = Session(_policy(OUT_KEY, False))
        self.to_meta = Sent()
        self.protocol.transport = self.to_meta
        session = RtpSession(0x1000 + i, "bench")
        session.use_codec("PCMU", PCMU)
        plug = Plug()
        whatsapp = conference.join("whatsapp", Role.WHATSAPP)
        plug.port = whatsapp
        self.whatsapp = leg = RtpLeg(
            session, codec="PCMU", on_frame=whatsapp.accept, stats=bus.stats, tasks=tasks
        )
        transceiver = SimpleNamespace(
            receiver=SimpleNamespace(receive=None), sender=SimpleNamespace(send=None)
        )
        self.wire = DtlsSrtp(leg, transceiver, tasks, f"bench leg {i}")
        assert self.wire._attach(dtls)
        leg.play(OpusBusTrack(plug, codec="PCMU", keys=KeyPresses(32, lambda: 101)))

        agent = conference.join("phone", Role.AGENT)
        self.phone = TrunkMedia(f"bench-{i}", "PCMU", PCMU, 101, agent.accept, agent.take, _no_key)
        self.to_phone = Sent()
        socket = self.phone.socket
        socket.transport = self.to_phone  # type: ignore[assignment]
        socket.set_remote(ADDR, ADDR)
        self.phone_socket = socket
        self.phone.start(bus.stats)
        Forwarding(bus, {}).update(WhatsAppLeg(leg), None, self.phone)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.phone.stop()
        self.whatsapp.stop(bye=False)
        self.wire.close()


def _no_key(digit: str, ms: int) -> None:
    pass


def datagrams(payloads: list[bytes], ssrc: int, tx: Session | None) -> list[bytes]:
    out = []
    for i, p in enumerate(payloads):
        plain = struct.pack("!BBHII", 0x80, PCMU, (1000 + i) & 0xFFFF, i * 160, ssrc) + p
        out.append(tx.protect(plain) if tx is not None else plain)
    return out


async def run_once(calls: int, ticks: int, cold: bool) -> float:
    """µs of the main thread's CPU a datagram received (its forwarded send included)."""
    tasks = TaskSet("bench-forward-cold")
    legs = [Call(i, tasks) for i in range(calls)]
    payloads = speech(ticks)
    tx = Session(_policy(KEY, False))
    from_meta = [datagrams(payloads, 0x5000 + i, tx) for i in range(calls)]
    from_phone = [datagrams(payloads, 0x6000 + i, None) for i in range(calls)]
    feeds = [
        (guard.guarded_datagram_arrived, c.protocol, c.phone_socket.datagram_arrived) for c in legs
    ]
    await asyncio.sleep(0.02)  # the senders' first ticks (encoded: nothing forwarded yet)
    sent_before = [(len(c.to_phone.datagrams), len(c.to_meta.datagrams)) for c in legs]
    spent = 0.0
    thread_time, monotonic = time.thread_time, time.monotonic
    for t in range(ticks):
        at = monotonic()
        t0 = thread_time()
        for i, (feed, protocol, arrived) in enumerate(feeds):
            feed(protocol, from_meta[i][t], ADDR, at)
            arrived(from_phone[i][t], ADDR, at)
        spent += thread_time() - t0
        if cold:
            await asyncio.sleep(0.02)
    for c, (to_phone, to_meta) in zip(legs, sent_before, strict=True):
        check(c, payloads, to_phone, to_meta)
        c.stop()
    await tasks.close()
    return spent / (2 * calls * ticks) * 1e6


async def floor_once(calls: int, ticks: int, cold: bool) -> float:
    """The same datagrams fed the same way through only what no forwarding path can skip:
    SRTP (unprotect WhatsApp's, protect the phone's), the RTP header rewritten, ``sendto``.
    A floor, not a path: no guard, counting, run, level or checks."""
    header = struct.Struct("!BBHII")
    payloads = speech(ticks)
    tx = Session(_policy(KEY, False))
    from_meta = [datagrams(payloads, 0x5000 + i, tx) for i in range(calls)]
    from_phone = [datagrams(payloads, 0x6000 + i, None) for i in range(calls)]
    routes = []
    for _ in range(calls):
        rx, out, to_phone, to_meta = (
            Session(_policy(KEY, True)),
            Session(_policy(OUT_KEY, False)),
            Sent(),
            Sent(),
        )

        def down(data: bytes, rx: Session = rx, sent: Sent = to_phone) -> None:
            plain = rx.unprotect(data)
            _, pt, seq, ts, _ = header.unpack_from(plain)
            head = header.pack(0x80, pt, (seq + 7) & 0xFFFF, (ts + 99) & 0xFFFFFFFF, 1)
            sent.sendto(head + plain[12:], ADDR)

        def up(data: bytes, out: Session = out, sent: Sent = to_meta) -> None:
            _, pt, seq, ts, _ = header.unpack_from(data)
            head = header.pack(0x80, pt, (seq + 7) & 0xFFFF, (ts + 99) & 0xFFFFFFFF, 2)
            sent.sendto(out.protect(head + data[12:]), ADDR)

        routes.append((down, up))
    await asyncio.sleep(0.02)
    spent = 0.0
    for t in range(ticks):
        t0 = time.thread_time()
        for i, (down, up) in enumerate(routes):
            down(from_meta[i][t])
            up(from_phone[i][t])
        spent += time.thread_time() - t0
        if cold:
            await asyncio.sleep(0.02)
    return spent / (2 * calls * ticks) * 1e6


def check(call: Call, payloads: list[bytes], to_phone: int, to_meta: int) -> None:
    """Every packet forwarded each way, its payload bit-exact (the ones sent after the
    wiring's own: a sender's first tick encodes)."""
    phone = call.to_phone.datagrams[to_phone:]
    assert [d[12:] for d in phone] == payloads, "the phone got other payloads"
    rx = Session(_policy(OUT_KEY, True))
    meta = [rx.unprotect(d)[12:] for d in call.to_meta.datagrams[to_meta:]]
    assert meta == payloads, "WhatsApp got other payloads"


async def run(
    calls: int,
    ticks: int,
    repeat: int,
    warm_ticks: int,
    modes: tuple[str, ...] = ("warm", "cold"),
    floor: bool = False,
) -> dict[str, Any]:
    runs: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(repeat):
        for mode in modes:
            cold = mode == "cold"
            n = ticks if cold else warm_ticks
            once = floor_once if floor else run_once
            runs[mode].append(await once(calls, n, cold))
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "calls": calls,
        "floor": floor,
        "ticks": {"warm": warm_ticks, "cold": ticks},
        "us_per_datagram": {k: [round(v, 2) for v in vs] for k, vs in runs.items()},
        "median": {k: round(statistics.median(vs), 2) for k, vs in runs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--ticks", type=int, default=500, help="a cold run's (10 s)")
    parser.add_argument("--warm-ticks", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--modes", default="warm,cold", help="warm, cold or both")
    parser.add_argument("--floor", action="store_true", help="only SRTP, header and sendto")
    parser.add_argument("--json", type=Path, help="also append the result here (JSON lines)")
    args = parser.parse_args()
    install_event_loop(True)
    result = asyncio.run(
        run(
            args.calls,
            args.ticks,
            args.repeat,
            args.warm_ticks,
            tuple(args.modes.split(",")),
            args.floor,
        )
    )
    for mode, us in result["us_per_datagram"].items():
        print(f"{mode:5s} {result['median'][mode]:6.2f} µs a datagram (runs {us})")
    print(f"load average (1 min): {os.getloadavg()[0]:.2f}")
    if args.json:
        with args.json.open("a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
