"""``PeerLeg``: one aiortc peer connection the bridge terminates, written once for every leg.

A browser's session (:mod:`.session`) and the Cloud API's WhatsApp-side peer
(``engines/cloudapi/peer.py``) are both a leg. What they share lives here: the set-up (the
transport hooks, ICE configuration, port scope, public address, :meth:`PeerLeg.start_media`);
the media, an :class:`~.rtp_leg.RtpLeg` on the ICE connection with DTLS's keys
(:mod:`.dtls_srtp`: aiortc's sender and receiver never start); why it failed, logged once and
counted in ``bridge_webrtc_failures_total``; the stats (:mod:`.quality`); and an idempotent
close, children in reverse order of creation, aiortc's objects released at once
(:mod:`.release`).

A subclass adds what is its own (offer/answer, RED, key presses) and its hooks,
:meth:`PeerLeg._state_changed` and :meth:`PeerLeg._detach`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver

from ..audio.pcm import Pcm
from ..audio.receiver import ReceiverStats
from ..config import IceSettings
from ..media import BusStats, LevelMeter
from ..tasks import CloseOnce, TaskSet
from . import counters, hooks
from .dtls import CONNECTION_LOST, diagnose, reason_label
from .dtls_srtp import DtlsSrtp
from .ice import advertise_public_ip, server_rtc_configuration
from .passthrough import PassThrough
from .ports import port_scope
from .quality import Quality, sample
from .release import release_peer_connection
from .rtcp_schedule import AVPF_MIN_INTERVAL
from .rtp_leg import RtpLeg
from .rtp_session import RtpSession
from .tracks import OpusBusTrack
from .uplink import Playout

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0
"""Seconds ``RTCPeerConnection.close()`` may take before the leg gives up on it."""
RELEASE_WAIT = 0.5
"""Seconds a closed leg waits for aiortc's leftover tasks before freeing its objects at once;
past it they are left to the collector. aiortc's connect task of a leg closed while ICE still
checks runs for seconds, and a call's end (and the engine events behind it) must not wait."""

FINAL = ("closed", "failed")


class RtpLegOwner:
    """What every leg that owns an :class:`~.rtp_leg.RtpLeg` shows and lends, written once: its
    quality samples, its packets forwarded both ways (``calls/forwarding.py``), its receiver's
    counters. A peer connection (:class:`PeerLeg`) is one, and so is Meta's SDES leg
    (``engines/cloudapi/sdes.py``)."""

    state: str
    session: RtpSession

    def __init__(self) -> None:
        self.created_at = time.monotonic()
        self.connected_at: float | None = None
        self.totals = Quality()
        """Cumulative RTP counters (absolute, not deltas)."""
        self.last: Quality | None = None
        self.mos: float | None = None
        self.leg: RtpLeg | None = None
        """The leg's RTP (``rtp_leg.py``: the session, its receiver, the sender playing its
        track, its reports), once its media is set up."""
        self._closed = False
        self._close_expected = False

    # -- pass-through (rtc/passthrough.py)
    def forward_to(
        self,
        offer: Callable[[int, int, bytes, float], bool] | None,
        needs_pcm: Callable[[float], bool] | None = None,
        meters: tuple[LevelMeter, ...] = (),
    ) -> None:
        """Packets from here go there (another leg's :meth:`forward_from`):
        :meth:`.RtpLeg.forward_to`."""
        if self.leg is not None:
            self.leg.forward_to(offer, needs_pcm, meters)

    @property
    def not_decoded(self) -> int:
        """Packets received and forwarded but not decoded: nothing on the bus needed them."""
        return self.leg.playout.not_decoded if self.leg is not None else 0

    def report_loss_beyond(self, loss: Callable[[], float] | None) -> None:
        """:meth:`.RtpLeg.report_loss_beyond`."""
        if self.leg is not None:
            self.leg.report_loss_beyond(loss)

    def forward_from(self, allowed: Callable[[], bool]) -> PassThrough | None:
        """Packets from there go here (:meth:`.RtpLeg.forward_from`); ``None`` once closed or
        before its media is set up."""
        if self._closed or self.leg is None:
            return None
        return self.leg.forward_from(allowed)

    def expect_close(self) -> None:
        """The call is over in signalling (a hang-up sent, the far end's end received): the
        far end closing the connection from now on is the normal end, not a failure."""
        self._close_expected = True

    @property
    def last_media(self) -> float | None:
        """When the latest RTP packet arrived (monotonic)."""
        return self.leg.playout.last_packet if self.leg is not None else None

    @property
    def receiver_stats(self) -> ReceiverStats | None:
        """The receiver's counters (``None`` before the media was set up)."""
        return self.leg.receiver_stats if self.leg is not None else None

    @property
    def octets_sent(self) -> int | None:
        """Payload octets sent on its Opus stream (the session's count, RFC 3550 §6.4.1);
        ``None`` before its media was set up."""
        return self.leg.stream.octets if self.leg is not None else None

    @property
    def connect_ms(self) -> float | None:
        """Milliseconds from the leg's creation to its connection being up."""
        if self.connected_at is None:
            return None
        return round((self.connected_at - self.created_at) * 1000, 1)

    async def sample_quality(self) -> Quality | None:
        """Read the session's RTP/RTCP counters while connected; returns the change since the
        last sample. (The encoder hears the far end's loss report by report: ``start_media``.)"""
        if self._closed or self.state != "connected":
            return None
        now = self.session.quality()
        delta = sample(now, self.totals, self.leg.playout if self.leg is not None else None)
        self.totals = now
        self.last = delta
        return delta

    def quality_json(self) -> dict[str, Any]:
        """The numbers every leg has, for ``GET /call/{callID}/stats``."""
        last = self.last
        return {
            "state": self.state,
            "totals": self.totals.as_json(),
            "lastSample": last.as_json() if last else None,
            "lossFraction": last.loss_fraction if last else None,
            "mos": None if self.mos is None else round(self.mos, 2),
            # The receiver, in W3C RTCInboundRtpStreamStats names (audio/receiver.py).
            "receiver": None if self.leg is None else self.leg.receiver_stats.as_w3c(),
        }


class PeerLeg(RtpLegOwner):
    """One peer connection of a call, with the bridge's sender track and receive path.

    ``state`` follows aiortc's ``connectionState`` (``new``, ``connecting``, ``connected``,
    ``failed``, ``closed``); ``failed`` and ``closed`` are final. See the module docstring.
    """

    what: ClassVar[str] = "WebRTC leg"
    """What the logs call this kind of leg."""
    far_end: ClassVar[str] = "the far end"
    """Who is at the other end (in a failure's reason)."""
    far_end_close_fails: ClassVar[bool] = False
    """Whether the connection closing when nobody here closed it is a failure: aioice closes
    it when ICE consent expires (RFC 7675), and the far end's DTLS close ends it too. A
    browser closing its connection is a normal end; Meta ends a call with a webhook."""

    def __init__(
        self,
        name: str,
        ice: IceSettings | None,
        configuration: RTCConfiguration | None = None,
        *,
        tasks: str,
        log_extra: Mapping[str, Any] | None = None,
    ) -> None:
        # The process-wide hooks every leg relies on (idempotent): pinned ports, the UDP
        # guard, DTLS ciphers and failure reasons.
        hooks.install()
        super().__init__()
        self.name = name
        """What the logs call this leg."""
        self.public_ip = ice.public_ip if ice is not None else ""
        self.rtp_ports = ice.rtp_ports if ice is not None else ""
        if configuration is None and ice is not None:
            configuration = server_rtc_configuration(ice)
        self.pc = RTCPeerConnection(configuration or RTCConfiguration(iceServers=[]))
        self.state = "new"
        self.failure_stage: str | None = None
        self.failure_reason: str | None = None
        """Why the leg failed (``ice``/``dtls``/``timeout`` and a reason), else ``None``."""
        self._track: OpusBusTrack | None = None
        self.session = RtpSession.new()
        """The leg's RTP session: RTP and RTCP both ways (``rtp_session.py``)."""
        self._wire: DtlsSrtp | None = None
        """The leg's wire: the ICE connection, with DTLS's keys (``dtls_srtp.py``)."""
        self._tasks = TaskSet(tasks)
        self._closing: CloseOnce[None] = CloseOnce(f"{tasks}:close")
        self._log_extra = dict(log_extra or {})
        self.pc.on("connectionstatechange", self._pc_state_changed)

    # -- set-up
    @contextmanager
    def ports(self) -> Iterator[None]:
        """Negotiate inside this: aioice binds inside ``BRIDGE_RTP_PORTS``."""
        with port_scope(self.rtp_ports):
            yield

    def audio_transceiver(self) -> RTCRtpTransceiver | None:
        """The connection's (first) audio transceiver, if it has one."""
        return next((t for t in self.pc.getTransceivers() if t.kind == "audio"), None)

    def start_media(
        self,
        transceiver: RTCRtpTransceiver,
        track: OpusBusTrack,
        on_frame: Callable[[Pcm], None],
        stats: BusStats,
    ) -> Playout:
        """The leg's sender plays ``track`` once DTLS is up; what arrives goes through the
        bridge's receiver (``uplink.py``) to ``on_frame``, one 16 kHz frame every 20 ms,
        counted in ``stats``, decoded as the track codes (Opus; G.711 where the far end
        negotiated it). Before negotiation ends (aiortc starts the transceiver then)."""
        # For the SDP's msid only: our sender plays it, aiortc's never starts (rtc/dtls_srtp.py).
        transceiver.sender.replaceTrack(track)
        self._track = track
        leg = self.leg = RtpLeg(
            self.session,
            codec=track.codec,
            on_frame=on_frame,
            stats=stats,
            tasks=self._tasks,
            rtcp_interval=AVPF_MIN_INTERVAL,
        )
        leg.carry(track)
        self._wire = DtlsSrtp(leg, transceiver, self._tasks, self.name)
        transceiver.direction = "sendrecv"
        return leg.playout

    def advertise(self, sdp: str) -> str:
        """``sdp`` with the bridge's public address in its candidates (1:1 NAT)."""
        return advertise_public_ip(sdp, self.public_ip)

    @property
    def far_end_loss(self) -> float:
        """The share of what this leg sent that the far end's receiver reports say was lost
        (the latest quality sample)."""
        return self.last.far_end_loss if self.last is not None else 0.0

    # -- state and diagnosis
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has begun."""
        return self._closed

    @property
    def failure(self) -> str | None:
        """``"stage: reason"`` once the leg failed, else ``None``."""
        if self.failure_reason is None:
            return None
        return f"{self.failure_stage}: {self.failure_reason}"

    def _pc_state_changed(self) -> None:
        state = self.pc.connectionState
        lost = not self._closed and not self._close_expected and self.far_end_close_fails
        if state == "closed" and lost:
            # Nobody here closed it: consent expired (aioice closed it) or the far end did.
            detail = f"consent expired or {self.far_end} closed it"
            self.record_failure("ice", CONNECTION_LOST, detail)
            state = "failed"
        elif state == "failed":
            self.record_failure(*diagnose(self.pc, self.connected_at is not None))
        self._set_state(state)

    def _set_state(self, state: str) -> None:
        if state == self.state or self.state in FINAL:
            return  # both are final
        self.state = state
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
        self._state_changed(state)

    def _state_changed(self, state: str) -> None:
        """A subclass's hook: ``state`` is the leg's new state."""

    def record_failure(self, stage: str, reason: str, detail: str = "") -> None:
        """Log (WARNING) and count (``bridge_webrtc_failures_total{stage, reason}``, a reason
        ``dtls.REASON_LABELS`` does not name as ``other``) the first failure of this leg; later
        ones are echoes of it. ``reason`` is a fixed text, what varies (a time limit's
        seconds) goes in ``detail``, which only the log and the leg's reason carry."""
        if self.failure_reason is not None:
            return
        self.failure_stage = stage
        self.failure_reason = f"{reason} ({detail})" if detail else reason
        # A DTLS reason is the peer's handshake's OpenSSL text: labelled from a bounded set.
        counters.failure(stage, reason_label(reason))
        log.warning(
            "%s: %s failed (%s): %s",
            self.name,
            self.what,
            stage,
            self.failure_reason,
            extra=self._log_extra,
        )

    # -- close
    def _detach(self) -> None:
        """A subclass's hook, first thing in :meth:`close`: stop feeding and being fed."""

    async def close(self) -> None:
        """Close the leg (idempotent; concurrent callers share one teardown, which runs to its
        end even if a caller is cancelled: ``tasks.CloseOnce``): what the subclass attached,
        then in reverse order of creation the owned tasks, the track, the leg's RTP (its
        receiver, a last report with BYE once it reported), its wire and the peer connection
        (its aiortc/aioice objects released at once)."""
        self._closed = True
        await self._closing.run(self._teardown)

    async def _teardown(self) -> None:
        self._detach()
        leg = self.leg
        if leg is not None:
            leg.sender.stop()  # off the clock (its track stopped) before anything else goes
        await self._tasks.close()
        if leg is not None:
            schedule = leg.rtcp_schedule
            leg.stop(bye=schedule.started or schedule.sent > 0)
        if self._wire is not None:
            self._wire.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.pc.close()
        except TimeoutError:
            log.warning("%s: closing the peer connection timed out", self.name)
        else:
            # Free it (and the codec threads it owns) now, not at the next gc run.
            await release_peer_connection(self.pc, RELEASE_WAIT)
        self._set_state("closed")
