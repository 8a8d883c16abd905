"""A call as clients see it: its states, directions, end reasons and the state machine."""

from __future__ import annotations

import enum
import math
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..countries import BSUID, country_of
from ..errors import BadRequest, CallStateError
from ..numbers.model import engine_key
from ..timefmt import iso_utc_or_none as _iso
from ..timefmt import parse_iso_utc


class CallState(enum.StrEnum):
    CALLING = "calling"
    RINGING = "ringing"
    ACTIVE = "active"
    ENDED = "ended"


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class EndReason(enum.StrEnum):
    HANGUP = "hangup"  # we hung up an active call
    REMOTE_HANGUP = "remote_hangup"  # the WhatsApp peer hung up
    CANCELED = "canceled"  # we hung up our outbound call before it was answered
    DECLINED = "declined"  # we declined an inbound call
    REMOTE_CANCELED = "remote_canceled"  # the caller gave up before we answered
    REJECTED = "rejected"  # the peer did not take our call
    BUSY = "busy"  # refused: the bridge was at capacity
    FAILED = "failed"  # the engine or the media failed
    NO_ANSWER = "no_answer"  # our outbound call rang past BRIDGE_RING_TIMEOUT
    MISSED = "missed"  # an inbound call rang past BRIDGE_RING_TIMEOUT unanswered
    MAX_DURATION = "max_duration"  # the call reached BRIDGE_MAX_CALL_DURATION
    SHUTDOWN = "shutdown"  # the bridge shut down and hung up
    HANDOVER = "handover"  # the bridge shut down and left the WhatsApp call up
    # Meta ended or refused the call (Cloud API; its code and message in endDetail):
    MEDIA_TIMEOUT = "media_timeout"  # 138021/138022: media stopped reaching one side
    NO_MEDIA = "no_media"  # 138023: accepted, but no media ever flowed
    SETUP_FAILED = "setup_failed"  # 138007/138019: the call could not be set up
    RELAY_FAILED = "relay_failed"  # 138020: Meta's relay could not connect
    NUMBER_AT_CAPACITY = "number_at_capacity"  # 138002: the number's concurrent-call limit
    NO_CALL_PERMISSION = "no_call_permission"  # 138006: the user gave no call permission
    PERMISSION_REQUEST_LIMIT = "permission_request_limit"  # 138009
    CALL_LIMIT_REACHED = "call_limit_reached"  # 138012: calls with this user per 24 h
    WRONG_SIGNALLING = "wrong_signalling"  # 131055: Graph calling on a SIP number
    CALLING_PAUSED = "calling_paused"  # 138014: business-initiated calling paused (penalty)
    MESSAGING_LIMIT_TOO_LOW = "messaging_limit_too_low"  # 138015: below 2 000 a day
    META_RATE_LIMIT = "meta_rate_limit"  # 613: too many Graph API requests


_TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.CALLING: frozenset({CallState.RINGING, CallState.ACTIVE, CallState.ENDED}),
    CallState.RINGING: frozenset({CallState.ACTIVE, CallState.ENDED}),
    CallState.ACTIVE: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}

_PHONE_RE = re.compile(r"^\+?([0-9]{6,15})(@s\.whatsapp\.net)?$")
"""ASCII digits only, as Meta's WhatsApp ids are (``\\d`` also takes Arabic-Indic and other
Unicode digits, which went to Meta as ``to`` and became a call's peer)."""


def normalize_phone(raw: object) -> str:
    """E.164 digits from ``5521…``, ``+5521…`` or ``5521…@s.whatsapp.net``."""
    if not isinstance(raw, str):
        raise BadRequest("phone must be a string of digits", code="invalid_phone")
    m = _PHONE_RE.match(raw.strip())
    if m is None:
        raise BadRequest(
            f"phone {raw[:40]!r} is not a phone number: give 6-15 digits with the country code, "
            "optionally with a leading + or as a …@s.whatsapp.net JID",
            code="invalid_phone",
        )
    return m.group(1)


def normalize_user(raw: object) -> str:
    """:func:`normalize_phone`'s digits, or a BSUID as it is (``/call/make``'s and
    ``/call/permissions``' ``recipient``, only to a number on Meta's Graph road); either may
    come as the JID a call's ``peer`` names it by (``…@s.whatsapp.net``), so a peer given back
    calls the same user."""
    if isinstance(raw, str):
        user = raw.strip().removesuffix("@s.whatsapp.net")
        if BSUID.match(user):
            return user
    return normalize_phone(raw)


_BOOT = uuid.uuid4().hex[:8]
"""Tells two runs of a process apart: a restarted container keeps its host name and often
its pid, and a new worker must never inherit a dead one's id (its calls would never be
reaped)."""


def default_owner() -> str:
    """This process's identity as a call owner: ``host:pid.boot``."""
    return os.environ.get("BRIDGE_WORKER_ID") or f"{socket.gethostname()}:{os.getpid()}.{_BOOT}"


class MediaControls(Protocol):
    """Where a call's mute and hold live: its runtime while the call is live (the bus and
    the conference act on them), :class:`Controls` once it is gone."""

    @property
    def muted(self) -> bool: ...

    @property
    def held(self) -> bool: ...


@dataclass(frozen=True)
class Controls:
    """Mute and hold as a call's runtime left them (or as a record in the directory says)."""

    muted: bool = False
    held: bool = False


@dataclass
class Call:
    """One WhatsApp call as the API shows it.

    Mute and hold are not copied here: :attr:`controls` is the call's runtime while it lives
    (``CallRuntime.set_muted`` / ``set_held`` change them), and what it left them at after."""

    id: str
    peer: str
    direction: Direction
    owner: str
    engine_call_id: str
    state: CallState
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: EndReason | None = None
    end_detail: str | None = None
    """Why, beyond the reason (``worker_lost``: the owning worker died)."""
    controls: MediaControls = field(default_factory=Controls, repr=False)
    transport: str | None = None
    webrtc_state: str | None = None
    participants: list[dict[str, Any]] = field(default_factory=list)
    """The browsers on the call: ``{participantID, role, webrtc: {state}}`` each."""
    speaking: dict[str, bool] | None = None
    """Who is talking (``whatsapp``, ``agent``), with ``BRIDGE_SPEECH_EVENTS`` on."""
    agents: Callable[[], list[dict[str, Any]]] | None = field(default=None, repr=False)
    """The call's model agents as the snapshot lists them (once one was started)."""
    final_stats: dict[str, Any] | None = field(default=None, repr=False)
    mono_created: float = field(default_factory=time.monotonic, repr=False)
    mono_answered: float | None = field(default=None, repr=False)
    status_callback: str | None = field(default=None, repr=False)
    """Where this call's events are POSTed instead of ``BRIDGE_WEBHOOK_URL`` (checked by the
    API: ``WebhookService.check_callback``)."""
    pulse_s: int | None = field(default=None, repr=False)
    """Billed in pulses of this many seconds, rounded up (a business-initiated call on Meta's
    Cloud API: 6); ``None`` for a call nobody bills by the pulse."""
    billed_s: int | None = field(default=None, repr=False)
    """The connected seconds the engine's side counted (Meta's ``duration``), when it said."""
    webhook_status: dict[str, Any] | None = field(default=None, repr=False)
    """The outcome of the latest webhook delivery of this call's events (``GET /call/{id}``)."""
    webhook_call_id: str = field(default="", repr=False)
    """Another id the engine's webhooks name the call by (``EngineEvent.webhook_call_id``):
    the directory indexes the call by it too."""
    number_id: str = "default"
    """The WhatsApp number the call is on (``numberID``; the settings' number: ``default``)."""
    tenant_id: str = ""
    """The tenant that owns the number (empty: the service's own)."""

    @property
    def live(self) -> bool:
        return self.state is not CallState.ENDED

    @property
    def muted(self) -> bool:
        """The browsers' audio does not reach the WhatsApp peer."""
        return self.controls.muted

    @property
    def held(self) -> bool:
        """The WhatsApp peer is on hold."""
        return self.controls.held

    def transition(self, new: CallState, reason: EndReason | None = None) -> None:
        """Move to ``new`` or raise :class:`CallStateError` if the state machine forbids it."""
        if new not in _TRANSITIONS[self.state]:
            raise CallStateError(f"call {self.id} is {self.state}; it cannot become {new}")
        self.state = new
        now = time.time()
        if new is CallState.ACTIVE:
            self.answered_at = now
            self.mono_answered = time.monotonic()
        elif new is CallState.ENDED:
            self.ended_at = now
            self.end_reason = reason or EndReason.FAILED

    @property
    def duration(self) -> int | None:
        """Whole seconds from answer to end (0 if never answered); ``None`` until ended."""
        if self.ended_at is None:
            return None
        if self.answered_at is None:
            return 0
        return max(0, int(self.ended_at - self.answered_at))

    @property
    def billable_pulses(self) -> int | None:
        """Pulses billed for the call (the engine's count of seconds when it gave one, else
        answer to end), rounded up; 0 if never answered; ``None`` until ended or unbilled."""
        if self.pulse_s is None or self.ended_at is None:
            return None
        if self.billed_s is not None:
            seconds = float(self.billed_s)
        elif self.answered_at is None:
            return 0
        else:
            seconds = max(0.0, self.ended_at - self.answered_at)
        return math.ceil(round(seconds, 3) / self.pulse_s)

    @property
    def destination_country(self) -> str | None:
        """The ISO country Meta bills a business-initiated call by: the callee's, from their
        number's calling code or their BSUID (:func:`country_of`); ``None`` when unknown."""
        return country_of(self.peer)

    def billing(self) -> dict[str, Any]:
        """What the call costs, on a billed call (``pulse_s`` set) only: its pulses, their
        length and the country they are billed in. The length travels with the snapshot, so a
        call that moves to another worker, or that a survivor ends for a dead one, is still
        billed (:meth:`from_snapshot`)."""
        if not self.pulse_s:
            return {}
        return {
            "billablePulses": self.billable_pulses,
            "pulseSeconds": self.pulse_s,
            "destinationCountry": self.destination_country,
        }

    @property
    def engine_key(self) -> str:
        """:func:`engine_key` of this call (what the registry and the directory index)."""
        return engine_key(self.number_id, self.engine_call_id)

    def snapshot(self) -> dict[str, Any]:
        return {
            "callID": self.id,
            "numberID": self.number_id,
            "tenantID": self.tenant_id or None,
            "owner": self.owner,
            "peer": self.peer,
            "direction": str(self.direction),
            "state": str(self.state),
            "transport": self.transport,
            "webrtc": {"state": self.webrtc_state} if self.webrtc_state else None,
            "muted": self.muted,
            "held": self.held,
            "participants": self.participants,
            "metadata": self.metadata,
            "createdAt": _iso(self.created_at),
            "answeredAt": _iso(self.answered_at),
            "endedAt": _iso(self.ended_at),
            "endReason": str(self.end_reason) if self.end_reason else None,
            "endDetail": self.end_detail,
            "duration": self.duration,
            **self.billing(),
            **({"speaking": self.speaking} if self.speaking is not None else {}),
            **({"agents": self.agents()} if self.agents is not None else {}),
        }

    @classmethod
    def from_snapshot(
        cls,
        snap: dict[str, Any],
        engine_call_id: str,
        status_callback: str | None = None,
    ) -> Call:
        """A call rebuilt from its snapshot (a dead worker's call, read from the shared
        directory, so a survivor can end it and emit its events)."""

        def when(key: str) -> float | None:
            value = snap.get(key)
            return parse_iso_utc(value) if isinstance(value, str) else None

        pulse = snap.get("pulseSeconds")

        return cls(
            id=snap["callID"],
            peer=snap["peer"],
            direction=Direction(snap["direction"]),
            owner=snap.get("owner") or "",
            engine_call_id=engine_call_id,
            state=CallState(snap["state"]),
            metadata=dict(snap.get("metadata") or {}),
            created_at=when("createdAt") or time.time(),
            answered_at=when("answeredAt"),
            controls=Controls(muted=bool(snap.get("muted")), held=bool(snap.get("held"))),
            transport=snap.get("transport"),
            participants=list(snap.get("participants") or []),
            status_callback=status_callback,
            number_id=str(snap.get("numberID") or "default"),
            tenant_id=str(snap.get("tenantID") or ""),
            pulse_s=pulse if type(pulse) is int and pulse > 0 else None,
        )
