"""The ``Engine`` protocol every WhatsApp engine adapter implements, its event types, and the
capabilities an engine may add: each a protocol below, which the app and the API check with
``isinstance``, never by the engine's kind or by probing for attributes. A call's media
channel and what it may add are in ``engines/channels.py``. What every engine uses: its
events' queue (:func:`emit`), its stats, and the bounded memory of its ended calls
(:class:`Remembered`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..media import FixedHistogram
from ..sip.front import Doors
from .channels import MediaChannel

log = logging.getLogger(__name__)


class EngineEventKind(enum.StrEnum):
    INCOMING = "incoming"  # a new inbound call is ringing
    RINGING = "ringing"  # our outbound call rings at the peer
    ANSWERED = "answered"  # the call is up (either side answered)
    ENDED = "ended"  # the call ended on the engine's side
    DTMF = "dtmf"  # the WhatsApp user pressed a key (data: digit, durationMs)
    PERMISSION = "permission"  # a user answered a call-permission request (about no call)
    NUMBER = "number"  # Meta said something about the number (data: the event's type, fields)
    ARTIFACT = "artifact"  # Meta's recording, transcript or voicemail of a call (data: artifact, …)


@dataclass(frozen=True)
class EngineEvent:
    """A call event reported by an engine, keyed by the engine's own call id."""

    kind: EngineEventKind
    engine_call_id: str
    peer: str = ""
    reason: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    """Extra fields for the call event (``call.dtmf``'s digit, an end's errors)."""
    detail: str = ""
    """An end's ``endDetail`` (Meta's code and message)."""
    number_id: str = ""
    """The number whose engine reported it (set by the switchboard; empty: the default)."""
    webhook_call_id: str = ""
    """Another id the engine's webhooks name the call by, once the engine knows it (Meta's
    wacid of a call placed on the SIP road, which Meta's answer names): a cluster's directory
    finds the call by it too, so those webhooks reach the worker that carries it."""


RINGING_STATES = frozenset({"ringing", "connecting", "calling", "offer", "incoming"})
ACTIVE_STATES = frozenset({"active", "connected", "answered", "in_progress"})
ENDED_STATES = frozenset({"ended", "terminated", "rejected", "completed", "failed"})


class CallingSettingsPort(Protocol):
    """A number's calling settings at its WhatsApp provider (camelCase fields)."""

    async def read(self) -> dict[str, Any]: ...

    async def write(self, patch: Mapping[str, Any]) -> dict[str, Any]: ...

    async def enable_sip(self, hostname: str, port: int, *, rotate: bool = False) -> str:
        """Point the provider's SIP at ``hostname:port``; the number's SIP password."""
        ...

    async def mismatches(self) -> list[str]:
        """What the provider's settings say that this engine does not do (empty: none)."""
        ...


@runtime_checkable
class SipLineEngine(Protocol):
    """Serves its number at the worker's shared SIP listener (:class:`~bridge.sip.Doors`:
    the switchboard hands every such engine the same)."""

    doors: Doors
    password_required: bool
    """Refuse Meta's INVITEs (403) while the number has no SIP password (run-time numbers)."""

    def use_password(self, password: str) -> None:
        """Challenge Meta's INVITEs and answer Meta's challenges with ``password`` from now on
        (the settings' number after ``/numbers/default/sip/enable``; idempotent); ``""``: no
        password any more (removed with ``null``)."""

    def take_no_new_calls(self) -> None:
        """Retired (its number rebuilt or deleted): Meta's new INVITEs to its number get the
        ``404`` of a number the listener does not serve; its live calls' dialogs stay its own."""


class CallsOver(Protocol):
    """Where the engine remembers the calls its provider ended before they reached a worker,
    for every worker of the app (the call directory: a cluster's Redis, for a minute; one
    process keeps nothing there, its engine's memory is all). Both raise
    ``DirectoryUnavailable`` when the directory cannot be asked (bounded)."""

    async def mark_over(self, engine_call_id: str) -> None: ...
    async def marked_over(self, engine_call_id: str) -> bool: ...


@runtime_checkable
class EndsBeforeArrival(Protocol):
    """Its provider may end a call before the call reaches the bridge, and the call may then
    reach another worker (Meta's ``terminate`` webhook overtakes its INVITE, or its connect)."""

    calls_over: Callable[[], CallsOver | None]
    """The app's :class:`CallsOver`, asked at each use (the switchboard sets it: ``None``
    before the directory exists)."""


@runtime_checkable
class SettingsEngine(Protocol):
    """The number's calling settings can be read and changed through the bridge."""

    calling_settings: CallingSettingsPort


@runtime_checkable
class LegCodecEngine(Protocol):
    """Its WhatsApp leg's codec can follow the call's other leg (a PBX phone's G.711, when
    Meta takes it: ``audio.additional_codecs``): the two legs' packets then go through."""

    other_leg_codecs: Callable[[], tuple[str, ...]]
    """The codecs of the leg the number's inbound calls go to, preferred first (the
    answering trunk's); empty when none is known (a browser, a model: Opus)."""

    async def dial(self, phone: str, *, call_id: str = "", other_leg: tuple[str, ...] = ()) -> str:
        """:meth:`Engine.dial` for a leg of ``other_leg``'s codecs (a PBX phone's)."""


class ArtifactsPort(Protocol):
    """Meta's own recording/transcription of calls (``recording``/``transcription``)."""

    def ask(self, key: str, options: dict[str, Any]) -> None:
        """Ask for them (the API's ``{"recording": {purpose, announcementLanguage}, …}``;
        ``BadRequest`` naming a bad field) on the call's next ``connect`` (``key``: the user
        dialled) or ``accept`` (the engine's call id)."""

    def fields(self, key: str) -> dict[str, Any]:
        """Take back what waits for ``key`` (the call's action has been sent, or failed)."""


@runtime_checkable
class ArtifactsEngine(Protocol):
    """The provider records and transcribes calls itself, when asked per call."""

    artifacts: ArtifactsPort


@runtime_checkable
class CallButtonEngine(Protocol):
    """The provider can send a user a "call us" button whose payload comes back on the call
    it starts (Meta's ``voice_call`` interactive message, on either of Meta's roads)."""

    async def send_call_button(self, phone: str, button: Mapping[str, Any]) -> str:
        """Send the user a button that calls the business (``{text, buttonText, ttlMinutes,
        payload}``); the provider's message id."""


@runtime_checkable
class StandingEngine(Protocol):
    """Meta may pause the number's business-initiated calling (a quality penalty)."""

    def calling_pause(self) -> dict[str, Any] | None:
        """``{reason, until, retryAfter}`` while paused, else ``None``."""
        ...


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
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

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
FILE_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Upper bounds (seconds) of the provider-file fetch histogram (Meta's target: 10 s)."""


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
    artifact_seconds: FixedHistogram = field(default_factory=lambda: FixedHistogram(FILE_BUCKETS))
    """From a provider's webhook announcing a call's recording or transcript to the file here."""


class Engine(Protocol):
    """A WhatsApp VoIP engine: dial, answer, hang up, call events, and per-call media."""

    name: str
    events: asyncio.Queue[EngineEvent]
    stats: EngineStats
    media_before_answer: bool
    """Open the call's media as soon as the call exists (its socket carries call state)."""

    @property
    def up(self) -> bool:
        """Whether the engine answered its last request (``bridge_engine_up``)."""

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


@runtime_checkable
class PermissionEngine(Protocol):
    """An engine whose business-initiated calls need the WhatsApp user's call permission
    (Meta's Cloud API): it asks for it, reads it, and reports the user's answers as
    ``PERMISSION`` events (data: ``phone``, ``response``, ``permanent``, ``expiresAt``,
    ``source``)."""

    async def request_permission(
        self, phone: str, template: Mapping[str, str] | None, text: str = ""
    ) -> str:
        """Send the user a call-permission request (``text``: why, in its body); Meta's
        message id."""

    async def read_permission(self, phone: str) -> dict[str, Any]:
        """The user's permission: ``status``, ``expiresAt``, ``canCall``, ``canRequest``,
        ``limits`` (cached briefly)."""


@runtime_checkable
class BilledEngine(Protocol):
    """An engine whose business-initiated calls are billed by the connected time in pulses
    (Meta's Cloud API: 6-second pulses, rounded up; user-initiated calls are free)."""

    billing_pulse_s: int


REMEMBERED = 4096
"""Ended calls and handled events remembered, so a redelivered webhook changes nothing."""


@runtime_checkable
class PolledEngine(Protocol):
    """An engine whose calls are discovered by polling one list every worker reads: every
    worker sees each new inbound call, so one worker claims it (and may place it on
    another)."""

    async def list_calls(self) -> list[RemoteCall]:
        """The engine's live calls."""


@runtime_checkable
class OffersAgain(Protocol):
    """An engine that reports a new inbound call once, as it first lists it ringing, and can
    report it again: a call no worker could claim (the directory away) is offered again at
    each poll, until one worker claims it or it stops ringing."""

    def offer_again(self, engine_call_id: str) -> None:
        """Report the call ``INCOMING`` again at the next poll that lists it ringing."""


@runtime_checkable
class MovableCalls(Protocol):
    """An engine whose calls outlive the worker that carries them: the WhatsApp call lives in
    the engine, and its media is a socket any worker may open again (ZuckZapGo's and WADial's
    media WebSockets), so a live call can be handed to another worker at a deploy, or adopted
    after a crash, without the WhatsApp user noticing more than a short gap."""

    def can_move(self, engine_call_id: str) -> bool:
        """Whether this call can be carried on by another worker."""


@runtime_checkable
class OpusEngine(Protocol):
    """An engine whose media is itself Opus over WebRTC (Meta's Cloud API): a browser's
    packets can be forwarded to it untouched if the browser sends what it takes."""

    opus_bitrate: int
    """The most the WhatsApp side takes (its ``maxaveragebitrate``), bit/s: the bridge asks
    the browser for no more, so its packets can be forwarded as they are."""


class CallLeg(Protocol):
    """A per-call resource an engine makes before the call's runtime exists (the Cloud API's
    WhatsApp-side peer connection: made at the connect webhook, so ICE and DTLS come up while
    the call rings) and hands over to the runtime, which closes it when the call ends."""

    async def close(self) -> None:
        """Close it (idempotent); the engine drops what it kept about the call."""


@runtime_checkable
class LegEngine(Protocol):
    """An engine whose calls each have a :class:`CallLeg` in this process. The call's runtime
    takes it when it is created and owns it from then on; the engine keeps only signalling
    state (what it needs to match its webhooks), dropped when the call ends or the leg
    closes."""

    def take_leg(self, engine_call_id: str) -> CallLeg | None:
        """Hand the call's leg over to the caller, who closes it from now on; ``None`` when
        the engine has none for that call (it ended meanwhile)."""


@runtime_checkable
class SimulatedNetwork(Protocol):
    """The simulated WhatsApp network (``POST /call/sim/incoming`` rings us through it)."""

    def incoming(self, phone: str) -> str:
        """Make ``phone`` call us; returns the engine call id of the ringing call."""


class Remembered(OrderedDict[str, Any]):
    """A bounded memory: the ``size`` keys written last (each with its value, ``None`` when
    only the key matters); the one written longest ago is forgotten first. An engine's ended
    calls are kept in one, so a late or repeated event about them changes nothing."""

    def __init__(self, size: int = REMEMBERED) -> None:
        super().__init__()
        self.size = size

    def add(self, key: str, value: Any = None) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def emit(queue: asyncio.Queue[EngineEvent], event: EngineEvent) -> None:
    """Report an event without blocking; a full queue (a stuck consumer) is logged."""
    try:
        queue.put_nowait(event)
    except asyncio.QueueFull:
        log.error("engine event queue full, dropping %s", event)
