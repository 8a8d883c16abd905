"""The ``Engine`` protocol every WhatsApp engine adapter implements, and its event types."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..audio.pcm import Pcm
from ..media import FixedHistogram

log = logging.getLogger(__name__)


class EngineEventKind(enum.StrEnum):
    INCOMING = "incoming"  # a new inbound call is ringing
    RINGING = "ringing"  # our outbound call rings at the peer
    ANSWERED = "answered"  # the call is up (either side answered)
    ENDED = "ended"  # the call ended on the engine's side
    DTMF = "dtmf"  # the WhatsApp user pressed a key (data: digit, durationMs)


@dataclass(frozen=True)
class EngineEvent:
    """A call event reported by an engine, keyed by the engine's own call id."""

    kind: EngineEventKind
    engine_call_id: str
    peer: str = ""
    reason: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    """Extra fields for the call event (``call.dtmf``'s digit, an end's errors)."""


RINGING_STATES = frozenset({"ringing", "connecting", "calling", "offer", "incoming"})
ACTIVE_STATES = frozenset({"active", "connected", "answered", "in_progress"})
ENDED_STATES = frozenset({"ended", "terminated", "rejected", "completed", "failed"})


@dataclass(frozen=True)
class RemoteCall:
    """One entry of an engine's list of live calls, normalised."""

    id: str
    peer: str
    state: str
    direction: str

    @property
    def ringing_inbound(self) -> bool:
        """A new inbound call still ringing (offered to us, not answered by anyone yet)."""
        return self.direction == "inbound" and self.state in RINGING_STATES

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES


@dataclass
class EngineHealth:
    """Whether the engine can be used now, and why not."""

    up: bool
    detail: str = ""
    info: dict[str, object] = field(default_factory=dict)


REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds (seconds) of the engine request-latency histogram."""


@dataclass
class EngineStats:
    """Counters of an engine and its media legs (read by the metrics collector)."""

    reconnects: int = 0
    bad_frames: int = 0
    bad_messages: int = 0
    uplink_dropped: int = 0
    requests: int = 0
    request_errors: int = 0
    request_seconds: FixedHistogram = field(default_factory=lambda: FixedHistogram(REQUEST_BUCKETS))


class MediaClosed(ConnectionError):
    """The engine's media channel for a call has closed."""


class MediaFatal(MediaClosed):
    """The media channel cannot work (e.g. a format mismatch): do not reconnect."""


class MediaChannel(Protocol):
    """A full-duplex 16 kHz mono s16 PCM channel to the engine for one call."""

    async def send(self, pcm: Pcm) -> None:
        """Send one 20 ms bus frame towards the WhatsApp peer."""

    async def recv(self) -> Pcm:
        """Next chunk of the peer's audio (any length); raises :class:`MediaClosed` at end."""

    async def close(self) -> None:
        """Close the channel (idempotent)."""


@runtime_checkable
class WebRTCLeg(Protocol):
    """A media channel that is itself a WebRTC peer connection (the cloudapi engine's): the
    runtime samples its RTP/RTCP quality like the browser's, labelled ``leg="whatsapp"``."""

    mos: float | None

    async def sample_quality(self) -> Any:
        """The change of its RTP/RTCP counters since the last sample (an ``rtc`` Quality)."""

    def leg_json(self) -> dict[str, Any]:
        """Its numbers for ``GET /call/{callID}/stats``."""


@runtime_checkable
class DtmfLeg(Protocol):
    """A media channel that carries DTMF out of band (cloudapi: RFC 4733 events); on the
    others the runtime mixes in-band tones into the uplink instead."""

    def send_dtmf(
        self, digits: str, duration_ms: int, gap_ms: int, done: Callable[[], None] | None = None
    ) -> None:
        """Queue key presses (``ValueError`` when the queue is full, ``MediaClosed`` when the
        leg is down); ``done`` is called once the last one was sent."""


class Engine(Protocol):
    """A WhatsApp VoIP engine: dial, answer, hang up, call events, and per-call media."""

    name: str
    events: asyncio.Queue[EngineEvent]
    stats: EngineStats
    media_before_answer: bool
    """Open the call's media as soon as the call exists (its socket carries call state)."""

    async def start(self) -> None:
        """Connect and start reporting events (must not fail if the engine is down)."""

    async def close(self) -> None:
        """Stop every task and connection (idempotent)."""

    async def health(self) -> EngineHealth:
        """Whether the engine is reachable and usable."""

    async def dial(self, phone: str, *, call_id: str = "") -> str:
        """Place an outbound call to ``phone`` (E.164 digits); returns the engine call id.

        ``call_id`` is the bridge's id of the call being made; engines that can carry an
        opaque value with the call (Cloud API's ``biz_opaque_callback_data``) send it."""

    async def answer(self, engine_call_id: str) -> None:
        """Answer a ringing inbound call."""

    async def hangup(self, engine_call_id: str) -> None:
        """End (or decline) a call."""

    async def open_media(self, engine_call_id: str) -> MediaChannel:
        """Open the call's PCM channel."""

    def hangup_later(self, engine_call_id: str, why: str) -> None:
        """The bridge ended this call but its hang-up failed (the engine was unreachable):
        hang it up once the engine is back (bounded retries with backoff)."""

    async def startup_calls(self) -> list[RemoteCall]:
        """The engine's calls as first listed after :meth:`start` (waits until the engine
        answers); the manager finds the orphans among them."""


def emit(queue: asyncio.Queue[EngineEvent], event: EngineEvent) -> None:
    """Report an event without blocking; a full queue (a stuck consumer) is logged."""
    try:
        queue.put_nowait(event)
    except asyncio.QueueFull:
        log.error("engine event queue full, dropping %s", event)
