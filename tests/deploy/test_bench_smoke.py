"""The benchmark still runs (2 calls, a few seconds, per target: the bridge on its sim engine,
the bridge on the Cloud API engine against the bench's Meta stand-in, the bridge on a remote PCM
engine against the echoing ZuckZapGo, the echo server).
Nothing here asserts on speed."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any


async def run_smoke(tmp_path: Path, *args: str) -> tuple[str, dict[str, Any]]:
    """``python -m bench.run --smoke ARGS``: its output and the JSON result it wrote."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.run",
        "--smoke",
        *args,
        "--out",
        str(tmp_path),
        cwd=Path(__file__).resolve().parents[2],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()[-3000:]
    return out.decode(), json.loads(next(tmp_path.glob("*.json")).read_text())


async def test_bench_smoke_run(tmp_path: Path) -> None:
    out, result = await run_smoke(tmp_path, "--targets", "bridge,cloudapi,zuckzapgo,echo")
    points = {p["target"]: p for p in result["points"]}
    assert set(points) == {"bridge", "cloudapi", "zuckzapgo", "echo"}
    bridge = points["bridge"]
    for target in ("bridge", "cloudapi", "zuckzapgo"):
        p = points[target]
        assert p["calls"] == 2 and p["connected"] == 2, p
        # Audio really flowed during the window (counts, not timings: frames received early or
        # late, since a loaded host makes them late): the browsers got it.
        assert p["downlink_received_per_call"] > 50, p
    # The sim's call goes through the bus both ways.
    assert bridge["bus_uplink_frames_per_call"] > 50 and bridge["bus_downlink_frames_per_call"] > 50
    # Cloud API: both WhatsApp-side peers connected, heard the agent, and Meta refused no SDP.
    cloud = points["cloudapi"]
    assert cloud["whatsapp_connected"] == 2 and cloud["meta_refused"] == 0, cloud
    assert cloud["whatsapp_heard_per_call"] > 50, cloud
    # Heard both ways with no PCM on the bus: forwarded both ways, and with nothing reading
    # the audio, neither leg decoded it (issue 47's idle legs).
    assert cloud["bus_uplink_frames_per_call"] < 5 and cloud["bus_downlink_frames_per_call"] < 5
    # The calls' own counts say so too, read while the calls were still up (--hold).
    assert cloud["forwarded_to_whatsapp"] > 0.9 and cloud["forwarded_to_browser"] > 0.9, cloud
    # A remote PCM engine: the browser's audio crossed the bus to the engine, and the engine's
    # echo came back over the bus to the browser.
    pcm = points["zuckzapgo"]
    assert pcm["bus_uplink_frames_per_call"] > 50 and pcm["bus_downlink_frames_per_call"] > 50
    # The frames could be the engine's silence: a click the browser sent came back through the
    # engine's echo (bridge → engine → bridge).
    assert pcm.get("clicks", 0) >= 1 and pcm["click_rtt_p50_ms"] > 0, pcm
    # The browsers' sinks played the engine's frames (read before the calls were hung up).
    assert pcm["engine_sinks"].get("played", 0) > 50, pcm
    # The ratio is only defined where the echo server kept up (>= 99.5 % on time): on a loaded
    # machine even 2 calls can be too many for it.
    if points["echo"]["downlink_on_time"] >= 0.995:
        assert isinstance(bridge["ratio_vs_echo"], float) and bridge["ratio_vs_echo"] > 0
    else:
        assert "ratio_vs_echo" not in bridge
    # The bus's frame transit exists where frames cross the bus: not on a forwarded call.
    measured = {
        "bridge": ("uplink_latency_p50_ms", "downlink_latency_p99_ms"),
        "cloudapi": (),
    }
    for p in (bridge, cloud):
        for key in ("cpu_pct_per_call", "offer_to_answer_p50_ms", *measured[p["target"]]):
            value = p[key]
            assert isinstance(value, float) and 0 < value < 1e6, (p["target"], key, value)
    assert "largest N" in out


async def test_bench_smoke_contact_centre_calls(tmp_path: Path) -> None:
    """The 3-participant mode runs: every seat of every call connected and received its mix."""
    _out, result = await run_smoke(tmp_path, "--targets", "bridge", "--participants", "1,3")
    points = {p["participants"]: p for p in result["points"]}
    assert set(points) == {1, 3}
    three = points[3]
    assert three["target"] == "bridge" and three["calls"] == 2 and three["connected"] == 2
    # Every participant (agent, whisper, barge) received its own mix during the window (early
    # or late: a loaded host makes frames late, and timing is the bench's to measure), from
    # the window's start (the warm-up counts from every seat's first packet). A frame the
    # bridge never sent is not the window's to count: each tick its media clock passed over
    # in a stall (a starved bridge on a loaded host) is one frame no seat got (once 32 of
    # 100 received at load 8-13, in the 2 s window).
    skipped = three["clock_skipped_ticks"]
    assert three["participant_frames_received"] + skipped > 50, three
    assert three["downlink_received_per_call"] + skipped > 50, three
    assert three["participant_frames"] <= three["participant_frames_received"]
    ratio = three["ratio_vs_1_participant"]
    assert isinstance(ratio, float) and ratio > 0
    assert "ratio_vs_echo" not in three


async def test_send_path_bench_runs_both_loops() -> None:
    """``python -m bench.send_path`` (the RTP send path per packet, aiortc's loop vs the
    bridge's): both loops send every packet, with and without SRTP."""
    from bench.send_path import run

    result = await run(packets=200, repeat=1)
    assert set(result["us_per_packet"]) == {
        "aiortc",
        "lean",
        "aiortc (no SRTP)",
        "lean (no SRTP)",
    }
    assert all(us > 0 for us in result["us_per_packet"].values())


async def test_recv_path_bench_runs_both_paths() -> None:
    """``python -m bench.recv_path`` (the RTP receive path per packet, aiortc's vs the
    bridge's RTP session): both hand every packet to the receiver and count it in their RTCP
    statistics (the bench asserts that itself)."""
    from bench.recv_path import run

    result = await run(200, 1)
    assert set(result["us_per_packet"]) == {"aiortc", "session", "of which SRTP unprotect"}
    assert all(us > 0 for us in result["us_per_packet"].values())


def test_profile_splits_the_send_path(tmp_path: Path) -> None:
    from bench.profile import send_path

    raw = tmp_path / "raw.txt"
    raw.write_text(
        "<module> (bridge/__main__.py:1);LeanSender._tick (bridge/rtc/rtpsend.py:9);"
        "OpusBusTrack.packets (bridge/rtc/tracks.py:1);encode (bridge/audio/opus.py:1) 7\n"
        "<module> (bridge/__main__.py:1);LeanSender._tick (bridge/rtc/rtpsend.py:9);"
        "LeanSender.send_now (bridge/rtc/rtpsend.py:20);protect (pylibsrtp/__init__.py:1) 3\n"
        "<module> (bridge/__main__.py:1);RTCRtpSender._run_rtp (aiortc/rtcrtpsender.py:1);"
        "current_ntp_time (aiortc/clock.py:1) 2\n"
        "<module> (bridge/__main__.py:1);LeanSender._tick (bridge/rtc/rtpsend.py:9);"
        "send_data (aioice/ice.py:1);sendto (asyncio/transports.py:1) 1\n"
        "<module> (bridge/__main__.py:1);Receiver.pop (bridge/audio/receiver.py:1) 4\n"
    )
    parts, busy = send_path(raw)
    assert busy == 17
    assert parts == {
        "SRTP protect": 3,
        "sender loop (packetise, headers, clock, counters)": 2,
        "UDP send (aioice, asyncio)": 1,
    }


def test_profile_counts_the_bridges_encoder_as_opus_encode() -> None:
    """The libopus call of the bridge's own encoder is Opus encoding, not aiortc's sender
    (it was counted there until 2026-11-25, which hid a fifth of a sim call's samples)."""
    from bench.profile import stage_of

    lean = "LeanSender.run (bridge/rtc/rtpsend.py:217)"
    encode = "OpusEncoder._encode (bridge/audio/opus.py:225)"
    assert stage_of([lean, "OpusBusTrack.packets (bridge/rtc/tracks.py:180)", encode]) == (
        "Opus encode (downlink)"
    )
    aiortc = "RTCRtpSender._run_rtp (aiortc/rtcrtpsender.py:1)"
    assert stage_of([aiortc, "OpusEncoder.encode (aiortc/codecs/opus.py:1)"]) == (
        "aiortc RTP send (sender loop, timestamps)"
    )


async def test_sip_setup_bench_measures_both_roads() -> None:
    """``python -m bench.sip_setup`` (a user's call set-up, Graph + DTLS vs SIP + DTLS): one
    call each reaches the browser's ears, and on SIP Meta hears the bridge after the ACK."""
    from bench.sip_setup import run

    result = await run(1, ["dtls"])
    assert set(result) == {"graph+dtls", "sip+dtls"}
    for road in result.values():
        assert 0 < road["first_audio_ms"]["median"] < 5000
    assert 0 < result["sip+dtls"]["first_srtp_after_ack_ms"]["median"] < 5000


def test_rounds_pair_each_ratio_within_its_round_and_report_medians() -> None:
    """``--rounds``: a ratio is taken between the points of one round (measured next to each
    other), never across rounds, and its median over the rounds is reported."""
    from bench.run import medians, summarize

    def point(target: str, audio: str, cpu: float, round_: int) -> dict[str, Any]:
        return {
            "target": target,
            "audio": audio,
            "calls": 10,
            "cpu_pct_per_call": cpu,
            "loop": "uvloop",
            "round": round_,
            "downlink_on_time": 1.0,
            "connected": 10,
        }

    points = [
        point("bridge", "tone", 3.0, 0),
        point("bridge", "silence", 1.5, 0),
        point("echo", "tone", 10.0, 0),
        point("bridge", "tone", 2.0, 1),
        point("bridge", "silence", 1.6, 1),
        point("echo", "tone", 5.0, 1),
        point("bridge", "tone", 4.0, 2),
        point("bridge", "silence", 2.4, 2),
        point("echo", "tone", 20.0, 2),
    ]
    summarize(points, [10], 1.0, 1.0)
    assert [p.get("ratio_vs_tone") for p in points if p["audio"] == "silence"] == [0.5, 0.8, 0.6]
    echo = [
        p.get("ratio_vs_echo") for p in points if p["target"] == "bridge" and p["audio"] == "tone"
    ]
    assert echo == [0.3, 0.4, 0.2]
    assert medians(points) == {"ratio_vs_echo": {"10": 0.3}, "ratio_vs_tone": {"10": 0.6}}


def test_the_load_generators_dtx_sends_what_webrtc_does_and_counts_the_frames_it_covers() -> None:
    from bench.loadgen import FrameCounts, encode_silence_dtx, frame_counts, on_time_share

    packets = encode_silence_dtx()
    sizes = [len(p) if p is not None else 0 for p in packets]
    # Two whole cycles of libopus' DTX: an update, the first packet of no audio, nothing more.
    sent = [n for n in sizes if n]
    assert len(sent) == 4 and sent[0] > 2 and sent[1] <= 2 and sent[2] > 2 and sent[3] <= 2
    assert sizes[:2] == sent[:2] and len(packets) > 30
    # Two seconds of it, on time: every frame is covered, though few were sent (the packet
    # after the window ends the last gap).
    n = 100
    frames = [i for i in range(2 * n) if packets[i % len(packets)] is not None]
    rows = [(10 + i * 0.02, i * 960, sizes[i % len(packets)] <= 2) for i in frames]
    assert len([f for f in frames if f < n]) < 15
    assert on_time_share(rows, 10.0, 10.0 + n * 0.02 - 0.001) == (n, n)
    # Read at the window's end, before the next packet came: the latest covers up to it.
    assert on_time_share([r for r in rows if r[0] < 12.0], 10.0, 11.999) == (n, n)
    # A window that opens inside a silence: the packet before it covers its first frames.
    assert on_time_share(rows, 10.5, 10.5 + n * 0.02 - 0.001) == (n, n)
    # A plain stream that lost a packet: the loss is not covered by the packet before it.
    plain = [(10 + i * 0.02, i * 960, False) for i in range(n) if i != 40]
    assert on_time_share(plain, 10.0, 10.0 + n * 0.02) == (n - 1, n)
    # A receiver that stalled: ten frames taken at once, 120-300 ms late, were received all
    # the same (what the smoke run counts), but not on time.
    stalled = [(10 + i * 0.02 if not 40 <= i < 50 else 11.1, i * 960, False) for i in range(n)]
    assert frame_counts(stalled, 10.0, 10.0 + n * 0.02) == FrameCounts(n - 10, n, n)
