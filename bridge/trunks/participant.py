"""A SIP participant of a WhatsApp call (``POST /call/participants`` with ``sip``): a phone
behind the business's PBX, in the call's conference with a role like a browser (docs/sip.md,
*A phone in a WhatsApp call*).

It is an attachment of the call (kind ``sip``): closed with the call, in reverse order of what
it opened (the SIP leg hung up — ``BYE``, or ``CANCEL`` while it rings — the conference left,
the media stopped).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..audio.dtmf import DIGITS
from ..audio.pcm import Pcm
from ..calls.model import Call
from ..calls.samples import LegSources
from ..errors import BadOffer
from ..media import CallPort, Role
from ..numbers.trunks import Trunk
from ..sip import Dialog, InviteServer, Response, UserAgent
from ..tasks import CloseOnce
from . import sdp
from .dialer import Dialer
from .media import TrunkMedia, timeline

if TYPE_CHECKING:
    from ..calls.runtime import CallRuntime

log = logging.getLogger(__name__)

LEFT = {
    486: "busy",
    600: "busy",
    408: "no_answer",
    480: "no_answer",
    487: "no_answer",
    603: "rejected",
}
"""A final response's reason for ``participant.left`` (others: ``failed`` or ``rejected``)."""
ENDED_KEPT = 1024
"""Ended dialogs remembered (:attr:`TrunkLine.ended`)."""


def left_reason(status: int) -> str:
    return LEFT.get(status) or ("rejected" if 400 <= status < 500 else "failed")


def caller_uri(call: Call, host: str) -> str:
    """Who calls, as the PBX sees it: the WhatsApp user's number, at our address."""
    user = re.sub(r"[^0-9]", "", call.peer)[:15] or "anonymous"
    return f"sip:+{user}@{host}"


@dataclass(frozen=True)
class TrunkLine:
    """What a SIP leg uses of the trunk user agent that carries it: made by ``TrunkService``,
    which owns the user agent and the two collections of legs shared here (a leg enters and
    leaves them; the service's BYE, INFO, REFER and re-INVITE handlers find it there)."""

    ua: UserAgent
    media_host: str
    """The address in our SDP and Contact."""
    bind_host: str
    """Where the legs' RTP sockets bind."""
    rtp_ports: str
    """The port range they bind in (``BRIDGE_RTP_PORTS``; empty: any)."""
    ring_timeout: float
    """Seconds a leg may ring before it is cancelled (``BRIDGE_RING_TIMEOUT``)."""
    opus_passthrough: bool
    """Whether WhatsApp's Opus may go to an Opus phone untouched (``BRIDGE_OPUS_PASSTHROUGH``)."""
    legs: dict[tuple[str, str], SipParticipant]
    """The joined legs by their dialog's key."""
    active: set[SipParticipant]
    """Every leg not yet gone (ringing ones too): hung up when the service closes."""
    ended: OrderedDict[tuple[str, str], str] = field(default_factory=OrderedDict)
    """The dialogs of legs gone lately (key → the phone's tag; the oldest forgotten past
    :data:`ENDED_KEPT`): a ``Replaces`` naming one is declined (``replacing.py``)."""

    def drop(self, dialog: Dialog) -> SipParticipant | None:
        """``dialog`` ended: its leg (if any) taken out of :attr:`legs`, the dialog out of the
        user agent's and remembered in :attr:`ended`."""
        self.ua.dialogs.pop(dialog.key, None)
        self.ended[dialog.key] = dialog.remote_tag
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)
        return self.legs.pop(dialog.key, None)


class SipParticipant:
    """One SIP leg in one call (see the module docstring)."""

    kind = "sip"
    wants_media = True

    def __init__(
        self,
        line: TrunkLine,
        runtime: CallRuntime,
        trunk: Trunk,
        participant_id: str,
        role: Role,
        target: str,
        headers: list[tuple[str, str]],
    ) -> None:
        self.line, self.runtime, self.trunk = line, runtime, trunk
        self.participant_id, self.role, self.target = participant_id, role, target
        self.id = f"sip:{participant_id}:{secrets.token_hex(4)}"
        self.headers = headers
        self.dialer: Dialer | None = None
        self.dialog: Dialog | None = None
        self.media: TrunkMedia | None = None
        self.offered_at = time.monotonic()  # our SDP made: the leg's set-up in the timeline
        self._opened: TrunkMedia | None = None
        """Its media from our SDP on, joined or not (:attr:`media` once joined): stopped as
        the leg goes."""
        self._port: CallPort | None = None
        """Its door into the call while it is in the call (joined, not yet released)."""
        self._rang = False
        self.silent = False
        """No events (a transfer's new leg until it has joined, the old one as it goes)."""
        self.replaces: SipParticipant | None = None
        """The leg this one takes the place of (a REFER): released as this one joins."""
        self.transferring = False
        self.rung_anew = False
        """A ring a move of its call ends here, rung anew by the worker carrying the call on
        (a desk route's ``sip`` step): it keeps the call here only once it has answered."""
        self._left = False
        self._ending: CloseOnce[None] = CloseOnce(f"{self.id}:end")
        self.state = "calling"
        self.on_left: Callable[[str], None] | None = None
        """Told the reason when the leg has gone (a call answered into the PBX ends too)."""
        self.remote: sdp.Remote | None = None
        self.sdp_sent = b""  # our last SDP (reinvite.py)
        self.on_hold = self.held_call = False
        """The phone holds (a re-INVITE, ``reinvite.py``); its hold held the call."""

    def snapshot(self) -> dict[str, Any]:
        return {
            "participantID": self.participant_id,
            "role": str(self.role),
            "sip": {
                "uri": self.target,
                "trunkID": self.trunk.trunk_id,
                "state": self.state,
                "codec": "" if self.media is None else self.media.codec,
                "leg": self.id,
            },
        }

    @property
    def keeps_call_here(self) -> bool:
        """Its dialog and RTP socket are this worker's: the call cannot move while it rings
        or is on the call, but for a ring the worker carrying the call on rings anew."""
        return self.state != "left" and (self.state == "joined" or not self.rung_anew)

    def timeline_sources(self) -> tuple[float, LegSources] | None:
        return None if self.media is None else (self.offered_at, timeline(self.media))

    # -- the leg
    async def _open(self, offer: sdp.Remote | None = None) -> tuple[TrunkMedia, bytes]:
        """The leg's media (not yet started), its socket bound, and our SDP: an offer, or the
        answer to ``offer`` (our key under the tag and suite of the line we took from it)."""
        self.offered_at = time.monotonic()  # our SDP is made now
        name = f"sip {self.participant_id} of call {self.runtime.call_id[:12]}"
        srtp = self.trunk.srtp == "sdes"
        media = self._opened = TrunkMedia(
            name, "PCMU", 0, None, self._to_call, self._from_call, self.press, srtp=srtp
        )
        offered = offer.crypto if offer is not None else None
        _, port = await media.socket.open(self.line.bind_host, self.line.rtp_ports, offered)
        self.sdp_sent = sdp.offer(
            self.line.media_host, port, self.trunk.codecs, media.socket.crypto, answer_to=offer
        )
        return media, self.sdp_sent

    async def run(self) -> None:
        """Call the target, then carry the media until either side hangs up."""
        media, offer = await self._open()
        if self._left:  # removed, or its call ended, before its INVITE went: ring nobody
            media.stop()
            return
        self.dialer = Dialer(
            self.line.ua,
            proxy=self.trunk.uri,
            target=self.target,
            from_uri=caller_uri(self.runtime.call, self.line.media_host),
            sdp=offer,
            username=self.trunk.username,
            password=self.trunk.password,
            headers=self.headers,
            ring_limit=self.line.ring_timeout,
        )
        resp = await self.dialer.run(self._progress)
        if not 200 <= resp.status < 300:
            if self.dialer.auth_failure:
                log.warning("SIP participant %s: %s", self.participant_id, self.dialer.auth_failure)
            await self._gone(left_reason(resp.status), resp)
            return
        self.dialog = self.dialer.dialog
        try:
            remote = sdp.read(resp.body, self.trunk.codecs, srtp=media.socket.srtp)
            media.socket.check_answer(remote.crypto)
        except BadOffer as exc:
            log.warning(
                "SIP participant %s: the answer cannot be used: %s", self.participant_id, exc
            )
            await self._gone("failed", None, detail=str(exc))  # (hung up first)
            return
        if self._left:  # removed while it rang
            await self._hang_up()
            return
        self._connect(media, remote)

    async def accept(self, tx: InviteServer, remote: sdp.Remote) -> bool:
        """Answer the PBX's own INVITE (its offer ``remote``) with ``200`` and our SDP: the
        PBX placed this WhatsApp call. ``False`` when the answer could not be sent."""
        media, answer = await self._open(offer=remote)
        if self._left:  # its call ended as it was answered: no 200 for a call that is gone
            media.stop()
            await tx.respond(480, "Temporarily Unavailable (the call has ended)")
            return False
        self.dialog = tx.dialog
        self.line.ua.dialogs[tx.dialog.key] = tx.dialog  # before its BYE can come
        if not await tx.respond(200, "OK", body=answer):
            self.line.ua.dialogs.pop(tx.dialog.key, None)
            self.dialog = None
            await self._gone("failed", None, detail="the 200 OK could not be sent")
            return False
        self._connect(media, remote)
        return True

    def take_remote(self, media: TrunkMedia, remote: sdp.Remote) -> None:
        """The far end's SDP (an answer, or a re-INVITE's offer) followed."""
        self.remote = remote
        media.follow(remote)

    def _connect(self, media: TrunkMedia, remote: sdp.Remote) -> None:
        """The far end's codec, key and address taken; the media joined and started."""
        self.take_remote(media, remote)
        self._join(media)
        self.state = "joined"
        self.runtime.participants.show_other(self.participant_id, self.snapshot())
        self.runtime.participants.add_other(self)  # roles, transfer, leave act on it now
        assert self.dialog is not None
        self.line.legs[self.dialog.key] = self
        self.line.ua.dialogs[self.dialog.key] = self.dialog  # its BYE finds it
        if self.silent:
            return
        self.runtime.emit(
            "participant.joined",
            participantID=self.participant_id,
            role=str(self.role),
            sip={"uri": self.target, "codec": remote.codec},
        )

    def _progress(self, resp: Response) -> None:
        if not self._rang and resp.status in (180, 183) and not self.silent:
            self._rang = True
            self.state = "ringing"
            self.runtime.emit(
                "participant.ringing", participantID=self.participant_id, sipCode=resp.status
            )

    def _join(self, media: TrunkMedia) -> None:
        if self.replaces is not None:  # the same tick: out with the old, in with the new
            self.replaces.release()
        self._port = self.runtime.bus.conference.join(self.participant_id, self.role)
        self.media = media
        self.runtime.bus.add_user(self.id)
        media.start(self.runtime.bus.stats)

    def _leave(self) -> None:
        """Out of the conference (once)."""
        port, self._port = self._port, None
        if port is not None:
            self.runtime.bus.remove_user(self.id)
            port.leave()

    def release(self) -> None:
        """Out of the conference, the media stopped; the dialog stays (to be hung up)."""
        self._leave()
        if self.media is not None:
            self.media.stop()

    def _to_call(self, pcm: Pcm) -> None:
        if self._port is not None and not self.on_hold:
            self._port.accept(pcm)

    def _from_call(self, now: float) -> Pcm | None:
        """The tick's frame for the phone (the media clock's send phase, ``now`` its time)."""
        return None if self._port is None else self._port.take(now)

    def press(self, digit: str, duration_ms: int) -> None:
        """A key pressed on the phone (RFC 4733, or SIP INFO): as a browser's key."""
        self.runtime.dtmf.on_browser(self.participant_id, self.role, digit, duration_ms)

    def dtmf(self, digit: str, duration_ms: int) -> None:
        """The WhatsApp user pressed a key: to the phone as RFC 4733 events."""
        if self.media is not None and digit in DIGITS:
            self.media.send_key(digit, duration_ms)

    def call_state(self, state: str, end_reason: str | None) -> None:
        """Follows the call only through :meth:`close`."""

    # -- the end
    async def remote_bye(self) -> None:
        """The phone hung up (its BYE is answered). While its REFER's transfer is under way
        the leg only leaves the conference: a blind transfer's transferor may hang up once
        the REFER is accepted (RFC 5589 §6.1), and the transfer ends the leg either way
        (``transfer.py``: as transferred, or as hung up when the new leg fails)."""
        self.dialog = None
        if self.transferring:
            self.release()
            return
        await self._gone("hung_up", None)

    def packets_in(self, codec: str) -> TrunkMedia | None:
        """Its RTP when WhatsApp's packets of ``codec`` may go to it untouched: joined, on
        that codec (Opus, or the G.711 Meta was answered with), the agent
        (``BRIDGE_OPUS_PASSTHROUGH``; ``calls/forwarding.py``)."""
        media, allowed = self.media, self.line.opus_passthrough
        agent = self._port is not None and self.role is Role.AGENT and allowed
        return media if media is not None and media.codec == codec and agent else None

    def set_role(self, role: Role) -> None:
        """A role change or a hand-off (``calls/participants.py``): heard and shown as it."""
        self.role = role
        conference = self.runtime.bus.conference
        if self.participant_id in conference.participants:
            conference.set_role(self.participant_id, role)
        if self.state != "left":
            self.runtime.participants.show_other(self.participant_id, self.snapshot())

    async def remove(self, reason: str = "removed") -> None:
        """Taken off the call by the API (``removed``) or by a hand-off (``transferred``):
        hang the leg up; the call stays."""
        await self._gone(reason, None)

    async def close(self) -> None:
        """The call ends (or the attachment is stopped): hang up, leave, stop (idempotent)."""
        await self._gone("call_ended", None, detach=False)

    async def _hang_up(self) -> None:
        dialog, self.dialog = self.dialog, None
        if dialog is not None:
            self.line.drop(dialog)
            credentials = self.trunk.credentials
            await self.line.ua.in_dialog(dialog, "BYE", timeout=4.0, credentials=credentials)
        elif self.dialer is not None and self.dialer.final is None:
            await self.dialer.cancel()

    async def _gone(
        self, reason: str, resp: Response | None, *, detail: str = "", detach: bool = True
    ) -> None:
        """The leg's end, whichever way it comes (idempotent; the first one's reason is told;
        concurrent callers share one teardown, which runs to its end even if a caller is
        cancelled: ``tasks.CloseOnce``): hung up if it is not yet (BYE, or CANCEL while it
        rings), out of the call, its media stopped, ``participant.left``."""
        self._left = True
        await self._ending.run(lambda: self._end(reason, resp, detail, detach))

    async def _end(self, reason: str, resp: Response | None, detail: str, detach: bool) -> None:
        await self._hang_up()
        self.state = "left"
        self.line.active.discard(self)
        self.runtime.participants.drop_other(self)
        shown = self.runtime.participants.others.get(self.participant_id)
        if shown is not None and shown.get("sip", {}).get("leg") == self.id:
            self.runtime.participants.show_other(self.participant_id, None)
        self._leave()
        if self.held_call and self.runtime.call.live:  # the phone left, WhatsApp is not held
            self.held_call = False
            await self.runtime.hold.set(False)
        if self._opened is not None:
            self._opened.stop()
        data: dict[str, Any] = {"participantID": self.participant_id, "reason": reason}
        if resp is not None:
            data["sipCode"] = resp.status
        if detail:
            data["detail"] = detail[:200]
        if not self.silent:
            self.runtime.emit("participant.left", **data)
        if self.on_left is not None:
            self.on_left(reason)
        if detach:
            self.runtime.detach(self)
