"""Regressions found in review: each case once broke (or could break) a call."""

from __future__ import annotations

import av
import numpy as np
from aiortc.jitterbuffer import JitterFrame

from bridge.attachments.queued_source import QueuedSource
from bridge.audio import FRAME_SAMPLES, tone
from bridge.media import BusStats, CallBus
from bridge.rtc.uplink import DirectDecoder


def opus_packets(n: int) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = 48_000, "mono", "s16"
    codec.open()
    out = []
    pcm = tone(440, 960 * n, 48_000)
    for i in range(n):
        f = av.AudioFrame.from_ndarray(pcm[i * 960 : (i + 1) * 960].reshape(1, -1), "s16", "mono")
        f.sample_rate, f.pts = 48_000, i * 960
        out += [bytes(p) for p in codec.encode(f)]
    return out


def test_empty_rtp_payload_does_not_end_the_uplink_decoder() -> None:
    frames: list[np.ndarray] = []
    decoder = DirectDecoder(frames.append, BusStats())
    packets = opus_packets(10)
    decoder.put((None, JitterFrame(packets[0], 0)))
    decoder.put((None, JitterFrame(b"", 0)))  # padding-only RTP
    for p in packets[1:]:
        decoder.put((None, JitterFrame(p, 0)))
    assert len(frames) >= 8 and {f.size for f in frames} == {FRAME_SAMPLES}


def test_late_rtp_and_undecodable_opus_are_counted() -> None:
    from types import SimpleNamespace

    from bridge.rtc.uplink import PassThroughBuffer

    stats = BusStats()
    buffer = PassThroughBuffer(stats)
    for seq in (1, 2, 2, 1, 3, 65535):  # a duplicate, a late one, a wrap-around-old one
        buffer.add(SimpleNamespace(sequence_number=seq, _data=b"x", timestamp=seq * 960))
    assert stats.uplink_rtp_late == 3
    frames: list[np.ndarray] = []
    decoder = DirectDecoder(frames.append, stats)
    decoder.put((None, JitterFrame(b"\xff" * 3, 0)))  # not Opus
    for p in opus_packets(3):
        decoder.put((None, JitterFrame(p, 0)))
    assert stats.uplink_decode_errors == 1 and len(frames) >= 2


async def test_a_failing_tap_is_removed_and_audio_goes_on() -> None:
    bus = CallBus("t")
    seen = []

    def broken(frame) -> None:
        raise OSError("disk full")

    bus.add_uplink_tap(broken)
    bus.add_uplink_tap(lambda f: seen.append(f))
    bus.open_uplink()
    for _ in range(3):
        bus.push_uplink(np.ones(FRAME_SAMPLES, dtype=np.int16))
    assert len(seen) == 3 and bus.stats.uplink_frames == 3
    assert broken not in bus._uplink_taps
    await bus.aclose()


def test_mark_waits_for_the_partial_frame_and_clear_reports_cleared() -> None:
    acks = []
    src = QueuedSource(on_mark=lambda n, s: acks.append((n, s)))
    src.push(np.ones(FRAME_SAMPLES + 100, dtype=np.int16))  # one frame and a 100-sample tail
    src.mark("m")
    assert acks == [] and src.buffered_ms == 40  # the tail was padded and queued before it
    assert src.next_frame() is not None and acks == []
    tail = src.next_frame()
    assert tail is not None and tail[:100].all() and not tail[100:].any()
    assert acks == [("m", "played")]
    src.push(np.ones(FRAME_SAMPLES * 5, dtype=np.int16))
    src.mark("n")
    assert src.clear() == 5 and acks[-1] == ("n", "cleared")
    src.finished()
    src.mark("late")
    assert acks[-1] == ("late", "cleared")


async def test_sources_wait_for_the_leg() -> None:
    bus = CallBus("t")
    src = QueuedSource()
    src.push(np.ones(FRAME_SAMPLES * 3, dtype=np.int16))
    bus.add_source(src)
    bus.push_uplink(np.zeros(FRAME_SAMPLES, dtype=np.int16))  # no leg yet: nothing consumed
    assert src.buffered_ms == 60
    bus.open_uplink()
    bus.push_uplink(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    assert src.buffered_ms == 40
    await bus.aclose()


async def test_recording_paths_stay_under_files_and_are_not_reused(make_client, tmp_path) -> None:
    client = await make_client(data_dir=str(tmp_path / "data"))
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    for bad in (".", "", "../x", "/abs/x"):
        resp = await client.post("/call/record", json={"callID": call["callID"], "path": bad})
        assert resp.status == 400, bad
    resp = await client.post("/call/record", json={"callID": call["callID"], "path": "mine/one"})
    assert resp.status == 201
    assert (tmp_path / "data" / "files" / "mine" / "one-inbound.wav").exists()
    resp = await client.post("/call/record/stop", json={"callID": call["callID"]})
    assert resp.status == 200
    resp = await client.post("/call/record", json={"callID": call["callID"], "path": "mine/one"})
    assert resp.status == 409


async def test_cors_headers_reach_streamed_responses(make_client) -> None:
    client = await make_client(cors_origins=("https://app.example",))
    resp = await client.get("/call/events", headers={"Origin": "https://app.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    resp.close()


async def test_mixing_clips_at_full_scale_never_wraps() -> None:
    bus = CallBus("t")
    src = QueuedSource()
    src.push(np.full(FRAME_SAMPLES, 30_000, dtype=np.int16))
    bus.add_source(src)
    bus.open_uplink()
    out = []
    bus.add_uplink_tap(lambda f: out.append(f.pcm))
    bus.push_uplink(np.full(FRAME_SAMPLES, 30_000, dtype=np.int16))
    assert out[0].dtype == np.int16 and (out[0] == 32767).all()  # 60 000 clipped, not wrapped
    src.push(np.full(FRAME_SAMPLES, -30_000, dtype=np.int16))
    bus.push_uplink(np.full(FRAME_SAMPLES, -30_000, dtype=np.int16))
    assert (out[1] == -32768).all()
    await bus.aclose()


async def test_large_json_bodies_are_read_whole(make_client) -> None:
    # A ~700 KB audioBase64 body arrives in many chunks; it must be read to its end.
    from ..support.audio_files import make

    client = await make_client()
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    import base64

    b64 = base64.b64encode(make("wav", 1000.0, 4.0)).decode()
    assert len(b64) > 500_000
    resp = await client.post("/call/play", json={"callID": call["callID"], "audioBase64": b64})
    assert resp.status == 201, await resp.text()
