"""A leg's own RTP session sending (rtc/rtpsend.py on rtc/dtls_srtp.py) against a real aiortc
receiver over loopback DTLS-SRTP: it decodes the bridge's tone, sees one sequence with the key
press in it, and the sender reports it receives count exactly the packets that came before
them."""

from __future__ import annotations

import itertools

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtp import RtcpPacket, RtcpSrPacket, RtpPacket

from bridge.audio import FRAME_SAMPLES
from bridge.media import BusStats
from bridge.rtc import hooks
from bridge.rtc.dtls_srtp import DtlsSrtp
from bridge.rtc.rfc4733 import DtmfDetector, KeyPresses
from bridge.rtc.rtp_leg import RtpLeg
from bridge.rtc.rtp_session import RtpSession
from bridge.rtc.tracks import OpusBusTrack
from bridge.tasks import TaskSet
from tests.support.rtc_client import Recorder
from tests.support.spectrum import band_energy, levels_db

from ..support.waits import until

EVENT_PT = 101


class Tone:
    def __init__(self, freq: float) -> None:
        self.freq = freq
        self.n = 0

    def take(self, now: float) -> np.ndarray:
        t = (np.arange(FRAME_SAMPLES) + self.n * FRAME_SAMPLES) / 16_000
        self.n += 1
        return (np.sin(2 * np.pi * self.freq * t) * 8000).astype(np.int16)

    def detach(self) -> None:
        pass


async def test_an_aiortc_receiver_decodes_the_tone_the_lean_sender_sends() -> None:
    config = RTCConfiguration(iceServers=[])
    bridge_pc, far_pc = RTCPeerConnection(config), RTCPeerConnection(config)
    hooks.install()  # the hooks every leg installs (pinned ports, guard, DTLS)
    keys = KeyPresses(payload_type=lambda: EVENT_PT)
    track = OpusBusTrack(Tone(440.0), keys=keys)
    transceiver = bridge_pc.addTransceiver(track, direction="sendonly")
    tasks = TaskSet("test-leg")
    leg = RtpLeg(
        RtpSession(1, "test"),
        codec="opus",
        on_frame=lambda pcm: None,
        stats=BusStats(),
        tasks=tasks,
    )
    leg.carry(track)
    wire = DtlsSrtp(leg, transceiver, tasks, "test leg")
    recorder = Recorder()
    far_pc.on("track", recorder.start)

    # The far end, as it receives: every RTP packet (after SRTP) and each sender report, in
    # arrival order; key presses to a detector as the bridge's session takes them.
    arrived: list[RtpPacket] = []
    reports: list[tuple[int, RtcpSrPacket]] = []
    digits: list[tuple[str, int]] = []
    detector = DtmfDetector(lambda d, ms: digits.append((d, ms)))
    try:
        await bridge_pc.setLocalDescription(await bridge_pc.createOffer())
        await far_pc.setRemoteDescription(bridge_pc.localDescription)
        dtls = far_pc.getTransceivers()[0].receiver.transport
        handle_rtp, handle_rtcp = dtls._handle_rtp_data, dtls._handle_rtcp_data

        async def on_rtp(data: bytes, arrival_time_ms: int) -> None:
            packet = RtpPacket.parse(data)
            arrived.append(packet)
            if packet.payload_type == EVENT_PT:  # aiortc knows no telephone-event
                detector.feed(packet.timestamp, packet.payload)
                return
            await handle_rtp(data, arrival_time_ms=arrival_time_ms)

        async def on_rtcp(data: bytes) -> None:
            for p in RtcpPacket.parse(data):
                if isinstance(p, RtcpSrPacket):
                    reports.append((len(arrived), p))
            await handle_rtcp(data)

        dtls._handle_rtp_data, dtls._handle_rtcp_data = on_rtp, on_rtcp
        await far_pc.setLocalDescription(await far_pc.createAnswer())
        await bridge_pc.setRemoteDescription(far_pc.localDescription)

        await until(lambda: len(arrived) >= 25, 20.0, "25 packets")
        keys.press("7", 120)  # on the track's clock, in place of 6 ticks of audio
        await until(lambda: not keys.pending)
        await until(
            lambda: len(reports) >= 2 and sum(c.size for c in recorder.chunks) >= 2 * recorder.rate,
            20.0,
            "two RTCP reports and 2 s of audio",
        )
        t0 = recorder.times[0] if recorder.times else 0.0
    finally:
        await tasks.close()
        leg.stop(bye=True)
        wire.close()
        await bridge_pc.close()
        await far_pc.close()
        await recorder.stop()

    # The tone, decoded by aiortc's own receiver (Opus at 48 kHz): 440 Hz and nothing else.
    heard = recorder.since(t0)[recorder.rate // 2 :]
    assert heard.size >= recorder.rate  # at least a second of it
    assert band_energy(heard, recorder.rate, 440.0) > 0.9
    assert levels_db(heard, recorder.rate, [440.0, 880.0, 1320.0])[880.0] < -40
    # The key press reached the far end's detector, from packets in the audio's stream.
    assert digits == [("7", 120)]
    seqs = [p.sequence_number for p in arrived]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    audio = [p for p in arrived if p.payload_type != EVENT_PT]
    # 20 ms per audio packet, but across the press: its 6 ticks went to events instead.
    ts_steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(audio)]
    assert set(ts_steps) == {960, 7 * 960} and ts_steps.count(7 * 960) == 1
    # Marker: the first packet, and the audio's first after the press (a new talkspurt).
    resumed = ts_steps.index(7 * 960) + 1
    assert [i for i, p in enumerate(audio) if p.marker] == [0, resumed]
    events = [p for p in arrived if p.payload_type == EVENT_PT]
    assert events[0].timestamp == (audio[resumed - 1].timestamp + 960) & 0xFFFFFFFF
    assert sum(p.payload_type == EVENT_PT for p in arrived) == 8  # 6 × 20 ms + 2 more ends
    # Each sender report counts the packets (and payload octets) that arrived before it, and
    # maps its NTP time to the RTP clock from the newest audio packet's (RFC 3550 §6.4.1: its
    # RTP time carried on to the report's send time, within a few ticks here; loopback:
    # nothing lost, nothing reordered).
    for n, sr in reports:
        before = arrived[:n]
        assert sr.sender_info.packet_count == n
        assert sr.sender_info.octet_count == sum(len(p.payload) for p in before)
        newest = [p for p in before if p.payload_type != EVENT_PT][-1]
        assert 0 <= (sr.sender_info.rtp_timestamp - newest.timestamp) & 0xFFFFFFFF < 48_000 // 5
