"""The bridge's own Opus sender (rtc/tracks.py OpusBusTrack): FEC follows the loss the far end
reports, and the answer's Opus parameters (rtc/sdp.py)."""

from __future__ import annotations

import numpy as np

from bridge.audio import FRAME_SAMPLES
from bridge.audio.opus import has_fec
from bridge.rtc.sdp import opus_parameters, with_opus_fmtp
from bridge.rtc.tracks import OpusBusTrack


class Voice:
    """A wavering tone, 20 ms at a time (libopus codes it as voice, with FEC when asked)."""

    def __init__(self) -> None:
        self.n = 0

    def pop(self) -> np.ndarray:
        t = (np.arange(FRAME_SAMPLES) + self.n * FRAME_SAMPLES) / 16_000
        self.n += 1
        return (np.sin(2 * np.pi * (300 * t + 10 * np.sin(2 * np.pi * 4 * t))) * 8000).astype(
            np.int16
        )

    def detach(self) -> None:
        pass


async def test_fec_data_is_sent_only_once_the_far_end_reports_loss() -> None:
    track = OpusBusTrack(Voice())
    clean = [bytes(await track.recv()) for _ in range(25)]
    assert track.expected_loss == 0 and not any(has_fec(p) for p in clean)
    for _ in range(3):  # three RTCP samples of 8 % loss
        track.report_loss(0.08)
    assert 5 <= track.expected_loss <= 8
    lossy = [bytes(await track.recv()) for _ in range(25)]
    assert sum(has_fec(p) for p in lossy) > 12
    for _ in range(8):  # the network heals
        track.report_loss(0.0)
    assert track.expected_loss == 0
    track.stop()


def test_the_answer_asks_for_fec_mono_and_16_khz_in_place_of_aiortcs_bare_opus() -> None:
    answer = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96 0\r\na=rtpmap:96 opus/48000/2\r\n"
        "a=fmtp:96 minptime=10\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    out = with_opus_fmtp(answer)
    assert out.count("a=fmtp:96 ") == 1
    assert opus_parameters(out) == {
        "minptime": "10",
        "useinbandfec": "1",
        "stereo": "0",
        "sprop-stereo": "0",
        "maxplaybackrate": "16000",
        "sprop-maxcapturerate": "16000",
        "maxaveragebitrate": "32000",
    }
    lines = out.split("\r\n")
    assert (
        lines.index(
            "a=fmtp:96 minptime=10;useinbandfec=1;stereo=0;sprop-stereo=0;"
            "maxplaybackrate=16000;sprop-maxcapturerate=16000;maxaveragebitrate=32000"
        )
        == lines.index("a=rtpmap:96 opus/48000/2") + 1
    )
    assert with_opus_fmtp("v=0\r\nm=audio 9 RTP/AVP 0\r\n") == "v=0\r\nm=audio 9 RTP/AVP 0\r\n"
