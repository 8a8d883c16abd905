"""The bridge's own RTCP, both ways, per report: CPU µs, warm and cold, by stage.

``--calls`` forwarded G.711 calls, each two legs as issue 60's G.711 point has them (the
WhatsApp leg's SRTCP, the phone's plain RTCP; ``--srtp-both``: both legs SRTCP, as a Cloud API
call's two DTLS legs), each leg an ``RtpSession`` with its ``RtcpSchedule`` behind a real
``RtpSocket`` (real libsrtp sessions; its transport's ``sendto`` a stand-in that keeps the
datagrams: no system call). Every leg has received a second of audio and sent one, so its
reports carry a report block and a sender's info. Per leg and second, as with aiortc's peers:

* **in**: two compound packets from the far end, SR + SDES (its sender's) and RR + SDES (its
  receiver's), each with a block about our SSRC; one in four also carries what a browser adds
  (RTPFB generic NACK, PSFB PLI and REMB), skipped by the parser; the leg's last one a BYE.
  Through ``RtpSocket.datagram_arrived`` into what ``RtpLeg.receive_rtcp`` does.
* **out**: one report, as the schedule fires it (``RtcpSchedule._due`` → the leg's report →
  ``RtpSession.report`` → ``RtpSocket.send_rtcp``: protect, ``sendto``).

Stages (a second pass over fresh packets, a CPU clock read between stages; the reads' own cost
is in them): in: ``unprotect`` (SRTCP), ``parse`` (``rtcp.parse_rtcp``), ``account`` (the
rest of the report's handling); out: ``compound`` (``RtpSession.report``), ``protect``,
``sendto``, ``schedule`` (the next report's time).

* ``warm``: the events back to back;
* ``cold``: one event a 20 ms tick (``asyncio.sleep``), the legs in turn: each leg's three
  reports a second come ~1.2 s apart at ten calls, as in a call.

::

    .venv/bin/python -m bench.rtcp_cost [--calls 10] [--rounds 10] [--repeat 3] [--json F]

A benchmark, not a test: nothing asserts on speed. At the end every leg's figures (its reports'
counts, the far end's loss and RTT, our last report's bytes but its times) are printed as a
digest, which must not move with the code.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pylibsrtp import Policy, Session

from bench.forward_cold import Sent
from bench.send_path import machine
from bridge.loop import install_event_loop
from bridge.rtc import rtcp as rtcp_module
from bridge.rtc.packets import (
    SDES_CNAME,
    Bye,
    Sdes,
    receiver_report,
    report_block,
    sender_report,
)
from bridge.rtc.rtcp_schedule import AVPF_MIN_INTERVAL, RtcpInterval, RtcpSchedule
from bridge.rtc.rtp_session import RtpSession
from bridge.rtc.rtpsend import ntp_time
from bridge.rtc.srtpudp import RtpSocket

OURS = bytes(range(30))
THEIRS = bytes(range(30, 60))
FAR = ("127.0.0.1", 40000)
PROFILE = Policy.SRTP_PROFILE_AES128_CM_SHA1_80
clock_ns = time.thread_time_ns


class Timers:
    """The worker clock's ``call_at`` for the schedule: keeps the one pending report."""

    def __init__(self) -> None:
        self.due: Callable[[float], None] | None = None

    def call_at(self, when: float, callback: Callable[[float], None]) -> Callable[[], None]:
        self.due = callback
        return self.cancel

    def cancel(self) -> None:
        self.due = None


def _feedback(sender: int, media: int) -> bytes:
    """What a browser adds to an audio compound now and then: a generic NACK (RTPFB, FMT 1),
    a PLI (PSFB, FMT 1) and a REMB (PSFB, FMT 15)."""
    nack = struct.pack("!BBHIIHH", 0x81, 205, 3, sender, media, 1234, 0)
    pli = struct.pack("!BBHII", 0x81, 206, 2, sender, media)
    remb = struct.pack("!BBHII4sBBHI", 0x8F, 206, 5, sender, 0, b"REMB", 1, 0x12, 0x3456, media)
    return nack + pli + remb


class Leg:
    """One leg: its session, schedule and socket, and the far end that reports to it."""

    def __init__(self, i: int, srtp: bool) -> None:
        self.srtp = srtp
        self.session = RtpSession(0x2000 + i, f"bench-{i}")
        self.session.use_codec("PCMU", 0)
        self.timers = Timers()
        self.schedule = RtcpSchedule(
            self.report, RtcpInterval(AVPF_MIN_INTERVAL), timers=self.timers
        )
        self.socket = RtpSocket(f"bench leg {i}", self.rtp, self.receive_rtcp, srtp=srtp)
        self.sent = Sent()
        self.socket.transport = self.sent  # type: ignore[assignment]
        self.socket.set_remote(FAR, FAR)
        self.far_ssrc = 0x9000 + i
        self.far: Session | None = None
        if srtp:
            self.socket.set_keys(OURS, THEIRS, PROFILE)
            self.far = Session(
                Policy(key=THEIRS, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE)
            )
        # A second of audio each way: the far end's counted in, ours sent.
        stream = self.session.stream
        reports = self.session.reports
        now = time.monotonic()
        for n in range(50):
            if n != 17:  # one lost
                reports.received(self.far_ssrc, 1000 + n, 160 * n, now - 1 + n * 0.02)
            stream.packetise(bytes(160), 160 * n)
        self.schedule.start()
        self.n = 0

    def rtp(self, plain: bytes, at: float) -> None:
        raise AssertionError("no RTP in this bench")

    def report(self) -> int:  # RtpLeg.report
        report = self.session.report()
        self.socket.send_rtcp(report)
        return len(report)

    def receive_rtcp(self, plain: bytes, at: float) -> None:  # RtpLeg.receive_rtcp
        self.schedule.received(len(plain))
        self.session.receive_rtcp(plain, at)

    def compound(self, kind: int, *, bye: bool = False) -> bytes:
        """The far end's next compound (``kind`` 0: its sender's SR, 1: its receiver's RR)."""
        self.n += 1
        now = time.time()
        block = report_block(
            self.session.ssrc,
            self.n % 7,
            self.n // 3,
            5000 + 50 * self.n,
            40 + self.n % 11,
            (ntp_time(now - 0.5) >> 16) & 0xFFFFFFFF,
            int(0.45 * 65536),
        )
        if kind == 0:
            first = sender_report(
                self.far_ssrc, ntp_time(now), 160 * self.n, 50 * self.n, 8000 * self.n, block, 1
            )
        else:
            first = receiver_report(self.far_ssrc, block, 1)
        out = first + bytes(Sdes([(self.far_ssrc, [(SDES_CNAME, b"far-end-cname")])]))
        if self.n % 4 == 0:
            out += _feedback(self.far_ssrc, self.session.ssrc)
        if bye:
            out += bytes(Bye([self.far_ssrc]))
        return out if self.far is None else self.far.protect_rtcp(out)

    def digest(self) -> tuple[Any, ...]:
        r = self.session.reports
        last = self.sent.datagrams[-1] if self.sent.datagrams else b""
        return (
            r.far_reports,
            r.malformed,
            r.far.fraction_lost,
            r.far.packets_lost,
            r.far.highest_sequence,
            r.far.jitter_s,
            r.far.rtt_s is not None,
            self.socket.rtcp_received,
            self.socket.rtcp_sent,
            len(last),
            round(self.schedule.interval.avg_rtcp_size, 6),
        )


class Parse:
    """``rtcp.parse_rtcp`` timed where the reports call it."""

    def __init__(self, parse: Callable[[bytes], Any]) -> None:
        self.parse = parse
        self.ns = 0

    def __call__(self, data: bytes) -> Any:
        t0 = clock_ns()
        try:
            return self.parse(data)
        finally:
            self.ns += clock_ns() - t0


def receive_whole(leg: Leg, data: bytes, now: float) -> dict[str, int]:
    t0 = clock_ns()
    leg.socket.datagram_arrived(data, FAR, now)
    return {"whole": clock_ns() - t0}


def receive_stages(leg: Leg, data: bytes, now: float, parse: Parse) -> dict[str, int]:
    sock = leg.socket
    t0 = clock_ns()
    rx = sock._rx
    plain = rx.unprotect_rtcp(data) if rx is not None else data
    t1 = clock_ns()
    parse.ns = 0
    leg.receive_rtcp(plain, now)
    t2 = clock_ns()
    return {"unprotect": t1 - t0, "parse": parse.ns, "account": t2 - t1 - parse.ns}


def send_whole(leg: Leg, now: float) -> dict[str, int]:
    due = leg.timers.due
    assert due is not None
    t0 = clock_ns()
    due(now)
    return {"whole": clock_ns() - t0}


def send_stages(leg: Leg, now: float) -> dict[str, int]:
    sock, schedule = leg.socket, leg.schedule
    t0 = clock_ns()
    plain = leg.session.report()
    t1 = clock_ns()
    tx = sock._tx
    data = tx.protect_rtcp(plain) if tx is not None else plain
    t2 = clock_ns()
    sock.transport.sendto(data, sock.rtcp_to)  # type: ignore[union-attr]
    sock.rtcp_sent += 1
    t3 = clock_ns()
    schedule.sent += 1
    schedule.interval.count(len(plain))
    schedule._schedule(now)
    t4 = clock_ns()
    return {"compound": t1 - t0, "protect": t2 - t1, "sendto": t3 - t2, "schedule": t4 - t3}


async def one_run(calls: int, rounds: int, cold: bool, srtp_both: bool) -> dict[str, Any]:
    legs = [Leg(2 * c + k, srtp=srtp_both or k == 0) for c in range(calls) for k in (0, 1)]
    parse = Parse(rtcp_module.parse_rtcp)
    rtcp_module.parse_rtcp = parse  # type: ignore[assignment]
    times: dict[str, dict[str, list[int]]] = {}
    try:
        for staged in (False, True):
            for r in range(rounds):
                for kind in (0, 1, 2):
                    for leg in legs:
                        bye = staged and r == rounds - 1 and kind == 1
                        srtp = "srtcp" if leg.srtp else "plain"
                        if kind < 2:
                            data = leg.compound(kind, bye=bye)
                            now = time.monotonic()
                            if staged:
                                got = receive_stages(leg, data, now, parse)
                            else:
                                got = receive_whole(leg, data, now)
                            way = f"in {srtp}"
                        else:
                            now = time.monotonic()
                            got = send_stages(leg, now) if staged else send_whole(leg, now)
                            way = f"out {srtp}"
                        for stage, ns in got.items():
                            times.setdefault(way, {}).setdefault(stage, []).append(ns)
                        if cold:
                            await asyncio.sleep(0.02)
    finally:
        rtcp_module.parse_rtcp = parse.parse  # type: ignore[assignment]
    out: dict[str, Any] = {
        way: {stage: statistics.median(ns) / 1000 for stage, ns in stages.items()}
        for way, stages in times.items()
    }
    digest = hashlib.sha256(repr([leg.digest() for leg in legs]).encode()).hexdigest()[:16]
    out["digest"] = digest
    return out


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for way in runs[0]:
        if way == "digest":
            continue
        merged[way] = {
            stage: round(statistics.median(run[way][stage] for run in runs), 2)
            for stage in runs[0][way]
        }
    return merged


async def main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": machine(calls=args.calls, rounds=args.rounds)}
    for mode in ("warm", "cold"):
        runs = [
            await one_run(args.calls, args.rounds, mode == "cold", args.srtp_both)
            for _ in range(args.repeat)
        ]
        result[mode] = _median(runs)
        result[mode]["digests"] = sorted({run["digest"] for run in runs})
    result["load_1m_end"] = machine()["load_1m"]
    return result


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10, help="seconds of reports a leg")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--srtp-both", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    install_event_loop(True)
    result = asyncio.run(main(args))
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    cli()
