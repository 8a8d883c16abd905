"""The uplink's receive path, taken over from aiortc for speed and for loss behaviour.

aiortc hands each RTP frame to a decoder thread that decodes Opus to 48 kHz stereo and hops
back to the event loop with ``run_coroutine_threadsafe`` for every frame; before that its
jitter buffer holds frames until ``prefetch`` (4) later ones arrive, and stalls after a lost
packet until 16 later packets have come. For a relay into a WhatsApp engine (which has its own
playout buffer) none of that helps. Two small replacements, installed on a receiver by
:func:`take_over_receiver`:

* :class:`PassThroughBuffer` releases every RTP packet at once in sequence order; a packet
  older than one already released (reordered late, or duplicated) is dropped and counted.
  Loss never stalls the stream.
* :class:`DirectDecoder` sits where aiortc's decoder queue was: called on the event loop as each
  frame is released, it decodes Opus straight to 16 kHz mono with libopus (``audio/opus.py``;
  no 48 kHz decode and no resampler), cuts exact 20 ms frames and puts them on the bus — no
  stereo decode and no thread hop per frame.

aiortc keeps both in private attributes of ``RTCRtpReceiver``; :func:`take_over_receiver`
checks they exist, so a change in aiortc fails loudly rather than silently.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.utils import uint16_gt

from ..audio import FRAME_SAMPLES, SAMPLE_RATE, Reframer
from ..audio.opus import OpusDecoder, OpusError
from ..audio.pcm import Pcm
from ..media import BusStats

log = logging.getLogger(__name__)


class PassThroughBuffer:
    """Stands in for aiortc's audio ``JitterBuffer``: no hold, no stall (see module doc)."""

    capacity = 16

    def __init__(self, stats: BusStats) -> None:
        self._last: int | None = None
        self.stats = stats

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last is not None and not uint16_gt(seq, self._last):
            self.stats.uplink_rtp_late += 1  # late or duplicate: dropped, not reordered
            return False, None
        self._last = seq
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)


class DirectDecoder:
    """Stands in for aiortc's decoder queue: decodes on ``put`` and feeds ``on_frame``.

    aiortc's decoder thread still starts and blocks in :meth:`get` until the receiver stops
    (``put(None)``), so it costs nothing per frame and exits as it always did.
    """

    def __init__(self, on_frame: Callable[[Pcm], None], stats: BusStats) -> None:
        self.on_frame = on_frame
        self.stats = stats
        self._stop: queue.Queue[None] = queue.Queue()
        self._decoder = OpusDecoder(SAMPLE_RATE)
        self._framer = Reframer(FRAME_SAMPLES)
        self.frames = 0

    def put(self, task: tuple[Any, JitterFrame] | None) -> None:
        if task is None:
            self._stop.put(None)
            return
        _, encoded = task
        if not encoded.data:
            return  # an empty payload would read as end-of-stream and end the decoder
        try:
            decoded = self._decoder.decode(encoded.data)
        except OpusError as exc:
            self.stats.uplink_decode_errors += 1
            log.debug("uplink Opus frame failed to decode: %s", exc)
            return
        for chunk in self._framer.push(decoded):
            self.frames += 1
            try:
                self.on_frame(chunk)
            except Exception:  # never let a bus problem reach aiortc's DTLS loop
                log.exception("uplink frame handling failed")

    def get(self) -> None:
        """What aiortc's idle decoder thread blocks on; returns ``None`` at stop."""
        return self._stop.get()


_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_QUEUE = "_RTCRtpReceiver__decoder_queue"


def take_over_receiver(
    receiver: RTCRtpReceiver, on_frame: Callable[[Pcm], None], stats: BusStats
) -> DirectDecoder:
    """Install :class:`PassThroughBuffer` and :class:`DirectDecoder` on an audio receiver.

    Must run before the receiver starts (i.e. before the connection is up).
    """
    if not isinstance(getattr(receiver, _BUFFER, None), JitterBuffer) or not isinstance(
        getattr(receiver, _QUEUE, None), queue.Queue
    ):
        raise RuntimeError("aiortc's RTCRtpReceiver changed: cannot take over the uplink")
    decoder = DirectDecoder(on_frame, stats)
    setattr(receiver, _BUFFER, PassThroughBuffer(stats))
    setattr(receiver, _QUEUE, decoder)
    return decoder
