"""The forwarding half of a sender track: another leg's packets sent, as they arrive, on the
track's own RTP stream (``rtc/passthrough.py``: a :class:`~bridge.rtc.passthrough.ForwardTarget`),
in runs (``rtc/forward_run.py``) whose lifetime the track's clocked tick decides
(``rtc/tracks.py`` ``OpusBusTrack.packets``). A forwarded packet goes out in the source leg's
receive callback: no queue, task, future or timer."""

from __future__ import annotations

import logging
import time

import pylibsrtp
from aiortc import MediaStreamTrack

from ..media import LevelMeter
from ..media.ports import FrameSource
from .forward_run import JUMP, LATE, ForwardRun
from .passthrough import PassThrough, one_20ms_packet
from .red import RedWrapper
from .rfc4733 import KeyPresses
from .rtpsend import LeanSender

log = logging.getLogger(__name__)


class ForwardingTrack(MediaStreamTrack):
    """A sender track's forwarding (module docstring); the track (``rtc/tracks.py``) encodes
    what it does not forward, and says how deep RED wraps every packet it sends
    (:attr:`red`, :attr:`red_depth`)."""

    kind = "audio"
    frame_ts: int
    """RTP time of one 20 ms packet on the codec's clock."""

    def __init__(self, sink: FrameSource, level: LevelMeter | None, keys: KeyPresses | None):
        super().__init__()
        self.sink = sink
        self.level = level
        """Where the level of what it sends is summed (a browser's; ``None``: not metered)."""
        self.keys = keys  # key presses to send on the clock (``OpusBusTrack``)
        self.red: RedWrapper | None = None
        """RFC 2198 copies of earlier payloads beside each one sent (``OpusBusTrack``'s)."""
        self.frames_sent = 0
        self.forwarded_frames = 0
        self._pts = 0
        """RTP time (from 0, on the codec's clock) of the next packet: 20 ms per packet."""
        self.pass_through: PassThrough | None = None
        self._sender: LeanSender | None = None
        self._run = ForwardRun()
        """The current forwarding run (``rtc/forward_run.py``), decided on each tick."""
        self.player: LeanSender | None = None
        """The clocked sender ticking the track (``OpusBusTrack.played_by``): it rests while
        a run carries its ticks (:meth:`carried_until`), woken when the run ends sooner."""
        self._encoder_stale = False
        """A forwarded packet went out since the encoder's last frame."""
        self.codec = "opus"
        self.phone = False
        """A trunk's phone leg (``trunks/media.py``): only packets of one 20 ms frame are
        forwarded, what the phone was told to expect (``minptime=20``); the WhatsApp and
        browser legs' SDPs say 20 ms already."""
        self.sending = True
        """False while the leg's SDP says we send nothing (a phone's hold, RFC 3264 §6.1): no
        packet goes out, forwarded or encoded (``OpusBusTrack.packets``)."""
        self.not_carried: dict[str, int] = {}
        """Packets a pass-through offered that it did not carry, by why (counted only there,
        off the forwarding route): ``old_source`` (a pass-through it no longer takes from),
        ``no_sender`` (none running yet), ``ended``, ``key`` (a press waiting), ``hold``,
        ``not_20ms`` (a phone leg), ``connection`` (the wire down), ``failed`` (a bug: it
        encodes from then on). A direction that never forwards says here which check refused
        (the pass-through counts what its policy refused: ``PassThrough.not_allowed``)."""

    def forward_from(self, pass_through: PassThrough, sender: LeanSender) -> None:
        """Send another leg's Opus packets untouched while ``pass_through.allowed()`` (see
        ``rtc/passthrough.py``) through ``sender``, the lean sender playing this track
        (``rtc/rtpsend.py``), whose stream numbers every packet: forwarded ones are mapped
        onto its numbers."""
        if self.pass_through is not None and self.pass_through is not pass_through:
            self.pass_through.target = None
        self._sender = sender
        self.pass_through = pass_through
        pass_through.target = self
        # A new source (a transfer) numbers its packets from its own random origin: its first
        # packet starts a new run, mapped afresh, never through the previous source's offsets
        # (a number mapped backwards is one SRTP refuses as replayed, RFC 3711 §3.3.2).
        self._end_run()

    @property
    def forwarding(self) -> bool:
        """Whether a forwarding run carries the ticks now."""
        return self._run.active

    def carried_until(self) -> float | None:
        """While a forwarding run carries the ticks and only its source's quiet can end it,
        the time that will (``ForwardRun.carried_until``): the sender rests until then."""
        return self._run.carried_until()

    def _end_run(self) -> None:
        """The run ends before its source went quiet: the sender's next tick is its own."""
        self._run.end()
        if self.player is not None:
            self.player.wake()

    def forward(self, source: PassThrough, seq: int, ts: int, payload: bytes, at: float) -> bool:
        """The source's packet that arrived ``at``, sent now from its receive callback
        (``ForwardTarget``): the first starts a forwarding run, carrying the ticks until it ends;
        whether the run carried it (sent, or a reordered packet it covers).

        The forwarding route's one function, from the pass-through to the sender's wire: every
        forwarded packet runs it, in a receive callback that finds the caches cold after 20 ms
        asleep (docs/performance.md), so what it needs is in locals and it calls only the
        owners of each job: the run's numbering (``RunNumbering.place``), the sink, the
        stream's numbers (``RtpStream.packetise``) and the wire (``LeanSender.send_rtp``)."""
        sender = self._sender
        if source is not self.pass_through or sender is None or not sender.running:
            # An old source (a transfer), or no sender running (yet).
            return self._not_carried(
                "old_source" if source is not self.pass_through else "no_sender"
            )
        if self.readyState != "live":
            return self._not_carried("ended")
        keys = self.keys
        if (
            (keys is not None and keys.pending)  # a key press: on the clock, not this
            or not self.sending
            or (self.phone and not one_20ms_packet(self.codec, payload))
        ):
            self._end_run()  # the next tick sends the press, or encodes
            return self._not_carried(
                "key"
                if keys is not None and keys.pending
                else "hold"
                if not self.sending
                else "not_20ms"
            )
        run = self._run
        numbering = run.numbering if run.source is source else None
        if numbering is None:
            numbering = run.start(source, seq, ts, self._pts, sender.stream, at)
        elif not numbering.follows(seq):  # reordered, late, or a jump: off the common path
            verdict = numbering.judge(seq, ts, self._pts, sender.stream)
            if verdict == LATE:  # a duplicate, or reordered across the switch: sent already
                source.late += 1
                return True
            if verdict == JUMP:  # the source's restart, or a stray: dropped, the run covers it
                source.jumps += 1
                return True
        try:
            stream = sender.stream
            number, pts, newest = numbering.place(seq, ts, stream, at)
            if newest:  # a reordered packet does not take our time back
                self._pts = pts + self.frame_ts
            # The decoded frame this packet stands for (kept fresh for a switch; its level is
            # what the browser hears). None while the source leg is idle (``rtc/uplink.py``):
            # its level samples reach this meter from there. Taken now, as the packet goes out,
            # not at ``at``: the sink times a frame's transit and lead to its playing
            # (``media/frames.py``), and a packet read on the clock's input phase arrived up to
            # a tick before.
            decoded = self.sink.take(time.monotonic())  # a receive callback: no tick's time
            if decoded is not None and self.level is not None:
                self.level.add(decoded)
            # A forwarded payload stays bit-exact: RED only puts earlier ones beside it.
            red = self.red
            if red is None:
                plain = stream.packetise(payload, pts, number)
            else:
                data, red_pt = red.wrap(payload, pts, self.red_depth)
                plain = stream.packetise(data, pts, number, audio_type=red_pt)
            sender.send_rtp(plain)
            self.frames_sent += 1
            self.forwarded_frames += 1
            self._encoder_stale = True
            source.forwarded += 1
            return True
        except pylibsrtp.Error as exc:
            if not str(exc).startswith("replay check failed"):
                return self._forwarding_failed(source)
            # A copy of a packet of the run's that went out already (the network duplicated
            # it; a phone's plain RTP passes it on), which the judge cannot tell from a
            # reordered one without a window of its own: the target's SRTP refuses the index
            # sent twice (RFC 3711 §3.3.2; an SDES leg's). Dropped, as the newest's copy is.
            source.late += 1
            return True
        except ConnectionError:
            # DTLS or the socket closing: the sender's own tick ends the track.
            return self._not_carried("connection")
        except Exception:
            return self._forwarding_failed(source)

    def _forwarding_failed(self, source: PassThrough) -> bool:
        """A bug, in the source leg's receive callback (called in its ``except``): it must not
        cost that leg its own audio. Forwarding stops here (the sender encodes again); said
        once, loudly."""
        log.exception("forwarding into this sender failed; it encodes from now on")
        source.target = None
        self.pass_through = None
        self._end_run()
        return self._not_carried("failed")

    def refusals(self) -> dict[str, int]:
        """:attr:`not_carried`, and what its pass-through's policy refused (``not_allowed``):
        a leg's stats (why a direction forwards less than it is offered)."""
        refused = dict(self.not_carried)
        pass_through = self.pass_through
        if pass_through is not None and pass_through.not_allowed:
            refused["not_allowed"] = pass_through.not_allowed
        return refused

    def _not_carried(self, why: str) -> bool:
        """Count an offered packet not carried (:attr:`not_carried`): ``False``, the answer."""
        self.not_carried[why] = self.not_carried.get(why, 0) + 1
        return False

    def forward_refused(self, source: PassThrough) -> None:
        """Mixing began in this direction (``PassThrough.offer``): the next tick encodes again,
        unless forwarding is permitted again by then (``ForwardRun.carries``)."""
        if self._run.numbering_for(source) is not None:
            self._run.refused = True
            if self.player is not None:
                self.player.wake()  # its next tick asks again

    @property
    def red_depth(self) -> int:
        """How many earlier payloads RED puts beside each one now (the track's protection)."""
        return 0

    def stop(self) -> None:
        super().stop()
        self._run.end()
        if self.pass_through is not None:
            self.pass_through.target = None
