"""What both WhatsApp-side legs are to the engine and the pump, written once: the DTLS leg
(:class:`~.peer.WhatsAppPeer`) and the SDES leg (:class:`~.sdes.SdesPeer`) differ in how
packets reach Meta, not in this: the :class:`~.channel.LegPort` the pump plugs the call into,
the receive counters, RFC 4733 both ways (the detector, and the bounded key presses the leg's
track sends in place of audio), how Meta's offer or answer sets its codec and DTMF payload
type, ``on_media`` and ``on_closed``, the channel it opens, its report's numbers and the last
steps of its close.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from ...audio.pcm import Pcm
from ...errors import BadOffer
from ...media import BusStats, ReceiveStats
from ...rtc.protection import LossProtection
from ...rtc.rfc4733 import DtmfDetector, KeyPresses
from ...rtc.tracks import OpusBusTrack
from ..base import EngineStats
from ..channels import MediaClosed
from .channel import LegPort, PeerChannel
from .sdp import DTMF_PT, RemoteAudio, answer_codec, answered_codec, read_remote

DTMF_QUEUE = 64
"""Key presses waiting to be sent as RFC 4733 events; more are refused (409)."""
OPUS_COMPLEXITY = 6
"""Encoder complexity for the WhatsApp leg, like the browser leg's default
(``BRIDGE_OPUS_COMPLEXITY``). Picked by ear on the quality bench's encoder curve
(docs/quality.md): at Meta's 20 kbit/s, PESQ-WB 2.51 at complexity 1 and 3.56 at 6, for about
100 µs more per 20 ms frame (0.5 % of a core per call)."""


class WhatsAppLeg:
    """Mixed into each WhatsApp-side leg (module docstring); the leg calls :meth:`_open_shell`
    in its ``__init__``, and :meth:`_detach` runs first thing in its close (``PeerLeg``'s hook,
    which the SDES leg calls itself)."""

    leg_words: ClassVar[str]
    """What the messages call the leg ("peer connection", "SDES leg")."""

    def _open_shell(
        self,
        stats: EngineStats,
        *,
        on_dtmf: Callable[[Any, str, int], None],
        on_media: Callable[[Any], None],
        on_closed: Callable[[Any], None] | None,
    ) -> None:
        self.wacid = ""
        """Meta's id of the call (set by the engine once known)."""
        self.stats = stats
        self.rx = BusStats()
        self.port = LegPort()
        """Where the pump plugs the call's bus in (``ChannelPeer``)."""
        self._on_media = on_media
        self._on_closed = on_closed
        self._media_seen = False
        self.dtmf = DtmfDetector(lambda digit, ms: on_dtmf(self, digit, ms))
        self.dtmf_pt = DTMF_PT
        self.codec = "opus"
        """What the leg speaks with Meta (``opus``, or the G.711 it answered with)."""
        self.offered: tuple[str, ...] = ("opus",)
        """The codecs our offer named (a business-initiated call), preferred first."""
        self.keys_out = KeyPresses(DTMF_QUEUE, lambda: self.dtmf_pt)
        """Key presses for Meta, sent by the leg's track on its clock (``rtc/tracks.py``)."""

    def _read_offer(self, offer: str, other_leg: tuple[str, ...]) -> RemoteAudio:
        """Meta's offer: its audio; the leg's codec the one :func:`.sdp.answer_codec` picks for
        ``other_leg``, its DTMF on Meta's payload type (else 126). :class:`BadOffer` without
        Opus."""
        remote = read_remote(offer)
        if remote.opus_pt is None:
            raise BadOffer("Meta's offer has no opus/48000")
        self.codec = answer_codec(remote, other_leg)
        self.dtmf_pt = remote.dtmf_pt or DTMF_PT
        return remote

    def _read_answer(self, answer: str) -> tuple[RemoteAudio, str]:
        """Meta's answer to our offer of :attr:`offered`: its audio and the codec it picked
        (:class:`BadOffer` when none of ours); its DTMF payload type, when it names one."""
        remote, codec = read_remote(answer), answered_codec(answer, self.offered)
        self.dtmf_pt = remote.dtmf_pt or self.dtmf_pt
        return remote, codec

    def _meta_track(self: Any, bitrate: int, fec: bool) -> OpusBusTrack:
        """The leg's track, in its codec at Meta's bit rate. FEC follows Meta's loss reports
        (``rtc/protection.py``): none before the first one (LBRR data at Meta's 20 kbit/s
        costs a clean link dearly)."""
        return OpusBusTrack(
            self.port.source,
            codec=self.codec,
            bitrate=bitrate,
            complexity=OPUS_COMPLEXITY,
            fec=fec,
            protection=LossProtection(fec=fec, unknown=0),
            keys=self.keys_out,
        )

    def _on_frame(self, pcm: Pcm) -> None:
        """The receiver's frame of this tick (the worker clock's receive phase)."""
        if not self._media_seen:
            self._media_seen = True
            self._on_media(self)
        self.port.received(pcm)

    def send_dtmf(
        self: Any, digits: str, duration_ms: int, gap_ms: int, done: Callable[[], None] | None
    ) -> None:
        """Queue key presses, each held ``duration_ms`` then ``gap_ms`` of audio; ``done`` is
        called once the last one (and its gap) went out. ``ValueError`` beyond
        ``DTMF_QUEUE`` waiting."""
        if self._track is None or self.dead:  # the leg's track sends them: not made yet
            raise MediaClosed(f"{self.name}: the WhatsApp-side {self.leg_words} is not up")
        keys: KeyPresses = self.keys_out
        if keys.queued + len(digits) > DTMF_QUEUE:
            raise ValueError("too many key presses queued")
        for i, digit in enumerate(digits):
            keys.press(digit, duration_ms, gap_ms, done if i == len(digits) - 1 else None)

    def _over(self: Any) -> str:
        why = f"{self.name}: the WhatsApp-side {self.leg_words} is {self.state}"
        return why + (f" ({self.failure})" if self.failure else "")

    def open_channel(self: Any) -> PeerChannel:
        if self.dead:
            raise MediaClosed(f"{self.name}: the WhatsApp-side {self.leg_words} is {self.state}")
        return PeerChannel(self)

    def leg_json(self: Any) -> dict[str, Any]:
        """The leg as a call's report shows it: every leg's numbers, then a WhatsApp leg's."""
        track = self._track
        return {
            **self.quality_json(),
            "failure": self.failure,
            "connectMs": self.connect_ms,
            "framesReceived": self.port.frames,
            "framesSent": track.frames_sent if track is not None else 0,
            "silentFramesSent": track.silent_frames if track is not None else 0,
            "framesForwarded": track.forwarded_frames if track is not None else 0,
            "packetsNotDecoded": self.not_decoded,
            "sendUnderruns": self.port.source.empty,
            "rtpLate": self.rx.uplink_rtp_late,
            "decodeErrors": self.rx.uplink_decode_errors,
            "dtmfPresses": self.dtmf.presses,
            "dtmfSent": self.keys_out.presses,
            "forwardNotCarried": track.refusals() if track is not None else {},
        }

    @property
    def receive_stats(self) -> ReceiveStats:
        """The Opus receiver's counters (summed with ``leg="whatsapp"``)."""
        return self.rx.receive

    def _detach(self: Any) -> None:
        """Stop feeding the pump, drop the key presses not sent, tell the engine."""
        self.port.end(f"{self.name}: the WhatsApp-side {self.leg_words} is closed")
        self.keys_out.clear()
        if self._on_closed is not None:
            self._on_closed(self)
