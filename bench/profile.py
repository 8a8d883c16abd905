"""Summarise a py-spy raw profile of the bridge (``bench/run.py --profile``) per stage.

Each sample is one stack (root first, ``;``-separated, count at the end). A sample goes to
the first stage whose pattern matches, scanning the stack from the innermost frame out, so
a resampler called from the decoder counts as resampling and the decoder's own lines as
decoding. Idle samples (the loop waiting in epoll) are left out. With ``--cpu-per-call`` (the
bench's ``cpu%/call`` of the same run) each share is also given as microseconds of CPU per
call per 20 ms (one frame each way), which is what a per-packet budget is made of.

    python -m bench.profile /tmp/prof/bridge-N30-p1.txt --cpu-per-call 2.1
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

IDLE = ("epoll_wait", "EpollSelector.select", "select_epoll_poll", "uv__io_poll")
UVLOOP_C = "run_app (aiohttp/web.py"
"""Under uvloop the loop itself is C: a sample whose innermost Python frame is aiohttp's
``run_app`` is uvloop waiting in epoll or doing its own C work (socket reads and writes, timer
and ready-queue dispatch), which py-spy without ``--native`` cannot tell apart; it is counted
on its own line and left out of the shares."""

STAGES: list[tuple[str, tuple[str, ...]]] = [
    # Native frames first (only in --profile-native runs), then the Python frames that call them.
    ("SRTP (libsrtp via pylibsrtp)", ("pylibsrtp", "srtp_", "aes_icm", "hmac")),
    (
        "Opus encode (downlink)",
        (
            "opus_encode",
            "OpusEncoder.encode (bridge",
            "OpusEncoder._encode (bridge",  # the libopus call itself
            "OpusBusTrack.packets",
        ),
    ),
    ("Opus decode (uplink)", ("opus_decode", "OpusDecoder.decode", "Receiver.pop")),
    ("call set-up and teardown", ("bridge/rtc/release.py", "setRemoteDescription", "aiohttp/web")),
    ("resample 48→16 kHz + reframe", ("swr_", "Resampler.", "Reframer", "resample")),
    ("in-band DTMF detector (downlink tap)", ("DtmfToneDetector", "InbandDtmf")),
    ("RTP header extensions", ("header_extensions", "HeaderExtensionsMap")),
    ("RTCP", ("rtcp", "Rtcp", "RTCP")),
    ("RTP packet parse/serialise", ("RtpPacket.", "rtp.py")),
    (
        "UDP send (asyncio transport + aioice)",
        ("sendto", "Connection.send", "send_data", "__sendto"),
    ),
    (
        "UDP receive (asyncio transport + aioice + guard)",
        ("_read_ready", "recvfrom", "datagram_received", "Connection.recv"),
    ),
    ("bridge RTP send (rtc/rtpsend.py: packetise, counters)", ("rtc/rtpsend.py",)),
    (
        "bridge RTP session (rtc/dtls_srtp.py, rtp_session.py, rtcp.py: demux, RTCP, counters)",
        ("rtc/dtls_srtp.py", "rtc/rtp_session.py", "rtc/rtcp.py", "audio/reception.py"),
    ),
    (
        "aiortc RTP send (sender loop, timestamps)",
        # Never the bridge's own now (its legs send through rtc/rtpsend.py): a bench peer's.
        ("RTCRtpSender", "_send_rtp", "convert_timebase", "aiortc/clock.py", "aiortc/codecs/opus"),
    ),
    (
        "aiortc RTP receive (DTLS demux, receiver)",
        ("RTCRtpReceiver", "RTCDtlsTransport", "robust_recv_next"),
    ),
    ("media clock (pacing)", ("WorkerClock", "WorkerPacer")),
    (
        "bus, pump, sim engine, jitter buffers",
        ("bridge/media/", "bridge/engines/", "bridge/calls/", "jitter", "bridge/rtc/"),
    ),
    ("numpy / PyAV glue", ("numpy", "/av/", "av.")),
    ("HTTP, metrics, logging", ("aiohttp", "prometheus", "logging")),
    ("event loop (ready queue, timers, tasks)", ("asyncio/", "uvloop", "Handle._run")),
]


def stage_of(frames: list[str]) -> str:
    if frames and any(p in frames[-1] for p in IDLE):
        return "idle"
    if frames and frames[-1].startswith(UVLOOP_C):
        return "uvloop"
    for frame in reversed(frames):
        for name, patterns in STAGES:
            if any(p in frame for p in patterns):
                return name
    return "other"


def summarise(path: Path) -> tuple[Counter[str], int]:
    stages: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        stages[stage_of(stack.split(";"))] += int(count)
    stages.pop("idle", None)
    uvloop = stages.pop("uvloop", 0)
    return stages, sum(stages.values()), uvloop


SEND_LOOPS = ("RTCRtpSender._run_rtp", "LeanSender._tick")
"""aiortc's sender loop and the bridge's clocked sender (rtc/rtpsend.py) that replaces it."""
TRACK_RECV = ("AiortcTrack.recv", "OpusBusTrack.packets")


def send_path(path: Path) -> tuple[Counter[str], int]:
    """The RTP send path alone, whichever loop runs it: samples inside a sender loop but not
    inside its track's ``recv`` or ``packets`` (the encoder, the pacing clock), split into the
    loop's own Python (packetise, header extensions, clock reads, counters), SRTP and the UDP send.
    The stage table above cannot tell send from receive for its RTP, clock and header
    extension rows (aiortc's receiver reads the clock and parses extensions per packet too).
    Returns the split and the busy samples of the whole profile."""
    parts: Counter[str] = Counter()
    busy = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        if stage_of(frames) in ("idle", "uvloop"):
            continue
        busy += int(count)
        start = next((i for i, f in enumerate(frames) if f.startswith(SEND_LOOPS)), None)
        if start is None:
            continue
        inner = frames[start + 1 :]
        if any(f.startswith(TRACK_RECV) for f in inner):
            continue
        if any("pylibsrtp" in f for f in inner):
            parts["SRTP protect"] += int(count)
        elif any(p in f for f in inner for p in ("sendto", "send_data", "Connection.send")):
            parts["UDP send (aioice, asyncio)"] += int(count)
        else:
            parts["sender loop (packetise, headers, clock, counters)"] += int(count)
    return parts, busy


def render(stages: Counter[str], total: int, cpu_per_call: float | None, uvloop: int = 0) -> str:
    head = "| stage | share of busy samples |" + (
        " µs per call per 20 ms |" if cpu_per_call else ""
    )
    lines = [head, "|---|---:|" + ("---:|" if cpu_per_call else "")]
    for name, count in stages.most_common():
        share = count / total
        row = f"| {name} | {100 * share:.1f} % |"
        if cpu_per_call:
            # cpu%/call of a core is cpu_per_call/100 s per s: per 20 ms, ×20 000 µs.
            row += f" {share * cpu_per_call / 100 * 20_000:.0f} |"
        lines.append(row)
    lines.append(f"| (attributed samples) | {total} |" + (" |" if cpu_per_call else ""))
    if uvloop:
        lines.append(f"| (inside uvloop's C loop, idle or not: left out) | {uvloop} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path, help="py-spy raw output (bench/run.py --profile)")
    parser.add_argument("--cpu-per-call", type=float, help="the run's cpu%%/call")
    parser.add_argument("--top", type=int, default=0, help="also list the N hottest leaf frames")
    parser.add_argument(
        "--send-path", action="store_true", help="also split the RTP send path (send_path())"
    )
    args = parser.parse_args()
    stages, total, uvloop = summarise(args.profile)
    print(render(stages, total, args.cpu_per_call, uvloop))
    if args.send_path:
        parts, busy = send_path(args.profile)
        print(
            "\n| RTP send path | share of busy samples |"
            + (" µs per call per 20 ms |" if args.cpu_per_call else "")
        )
        print("|---|---:|" + ("---:|" if args.cpu_per_call else ""))
        for name, count in [*parts.most_common(), ("(all of it)", sum(parts.values()))]:
            row = f"| {name} | {100 * count / busy:.1f} % |"
            if args.cpu_per_call:
                row += f" {count / busy * args.cpu_per_call / 100 * 20_000:.0f} |"
            print(row)
    if args.top:
        leaves: Counter[str] = Counter()
        for line in args.profile.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            if stack and stage_of(frames) not in ("idle", "uvloop"):
                leaves[frames[-1]] += int(count)
        print()
        for frame, count in leaves.most_common(args.top):
            print(f"{100 * count / total:5.1f} %  {frame}")


if __name__ == "__main__":
    main()
