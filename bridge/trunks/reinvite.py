"""A PBX's re-INVITE in a SIP participant's dialog (RFC 3261 §14.2): the phone holds the call,
resumes it, refreshes the session, or asks for a change the bridge refuses (what each does to
the call is docs/sip.md, *Hold from the phone*).

The answer (RFC 3264), built by :func:`answer` alone (no I/O): the offer's direction mirrored
(§6.1), a connection address of ``0.0.0.0`` (RFC 2543's hold, §8.4) read as receiving nothing;
the codec in use kept (the offer must still carry it), while the address and port (within
their family), the ``telephone-event`` payload type and the SDES key may change (our key kept
while the line chosen from the re-offer has our tag and suite, else a fresh one under that
line's: RFC 4568 §7.1.4); our ``o=``
version one up only when the SDP differs from the last we sent (§8), so a session refresh gets
the very SDP sent last. Anything else is ``488`` with a ``Warning`` naming it, and the session
goes on as it was (§14.2); counted (``reinvite_refused``) and said once per dialog while it
lasts (:class:`~.refusals.TrunkRefusals`).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..calls.hold import Music, StartMusic
from ..errors import BadOffer, BridgeError, CallStateError
from ..media import Role
from ..numbers.catalog import Catalog
from ..rtc.sdes import Crypto, answer_crypto
from ..rtc.sdp import origin
from ..sip import InviteServer
from ..sip.headers import warning
from . import sdp
from .sdp import MIRROR, offered_direction

if TYPE_CHECKING:
    from .participant import SipParticipant, TrunkLine
    from .refusals import TrunkRefusals

log = logging.getLogger(__name__)

HOLDING = ("sendonly", "inactive")
"""Offer directions that put the call on hold (RFC 3264 §8.4)."""


class Plays(Protocol):
    """What starts the hold music (the app's ``PlaybackService``)."""

    async def start(self, host: Any, body: dict[str, Any]) -> Music: ...


@dataclass(frozen=True)
class Answer:
    """What a re-INVITE's offer asks and the SDP we answer it with."""

    remote: sdp.Remote
    offered: str
    """The offer's direction (:func:`offered_direction`)."""
    direction: str
    """Ours (:data:`MIRROR`)."""
    body: bytes
    crypto: Crypto | None
    """Our key in ``body`` (:func:`our_key`)."""

    @property
    def holding(self) -> bool:
        return self.offered in HOLDING

    @property
    def sending(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")


def our_key(current: Crypto | None, chosen: Crypto | None) -> Crypto | None:
    """Our key for an answer that accepts the re-offer's ``chosen`` line: the one in use while
    that line has its tag and suite (the usual re-INVITE: hold, resume, a refresh), else a fresh
    key under the line's tag and suite (RFC 4568 §7.1.2: the answer names the line it takes)."""
    if current is None or chosen is None:
        return current
    if (chosen.tag, chosen.suite) == (current.tag, current.suite):
        return current
    return answer_crypto(chosen)


def answer(
    offer: bytes,
    current: sdp.Remote,
    sent: bytes,
    *,
    address: str,
    port: int,
    crypto: Crypto | None,
) -> Answer:
    """The answer to a re-INVITE's ``offer`` in a session whose far end is ``current`` and
    whose last SDP from us is ``sent`` (module docstring); :class:`BadOffer` naming what the
    bridge cannot follow."""
    try:
        remote = sdp.read(offer, (current.codec,), srtp=crypto is not None)
    except BadOffer as exc:
        if str(exc).startswith("no common codec"):
            raise BadOffer(
                f"the offer drops {current.codec}, the codec in use (the bridge changes no "
                f"codec mid-call); {exc}"
            ) from None
        raise
    if remote.port == 0:
        raise BadOffer("the offer removes the audio stream (port 0, RFC 3264 §8.2)")
    family = ipaddress.ip_address(remote.address).version
    if family != ipaddress.ip_address(current.address).version:
        raise BadOffer(f"the offer moves the audio to IPv{family} ({remote.address}): not followed")
    offered = offered_direction(remote)
    direction = MIRROR[offered]
    session, version = origin(sent)
    key = our_key(crypto, remote.crypto)

    def ours(version: int) -> bytes:
        return sdp.offer(
            address,
            port,
            (),
            key,
            answer_to=remote,
            origin=(session, version),
            direction=direction,
        )

    body = ours(version)
    if body != sent:  # RFC 3264 §8: a changed SDP is the next version
        body = ours(version + 1)
    return Answer(remote, offered, direction, body, key)


async def reinvited(
    line: TrunkLine,
    catalog: Catalog,
    playback: Plays | None,
    refusals: TrunkRefusals,
    tx: InviteServer,
) -> None:
    """The trunk user agent's ``reinvites``: answer a re-INVITE in one of ``line``'s legs'
    dialogs and follow it, a hold playing the trunk's music (:func:`music`); one refused is
    counted and said once per dialog while it lasts (``refusals``: a PBX that retries it sends
    it again and again). A failure of ours is a ``500`` (§21.5.1), so the dialog's next
    re-INVITE is not refused as one arriving while this one is pending."""
    try:
        await _reinvited(line, catalog, playback, refusals, tx)
    except Exception as exc:
        log.warning("SIP re-INVITE %s: failed: %s", tx.req.call_id, exc)
        await tx.respond(500, "Server Internal Error")


async def _reinvited(
    line: TrunkLine,
    catalog: Catalog,
    playback: Plays | None,
    refusals: TrunkRefusals,
    tx: InviteServer,
) -> None:
    leg = line.legs.get(tx.dialog.key)
    if leg is None or leg.remote is None or leg.media is None:
        await tx.respond(481, "Call/Transaction Does Not Exist")
        return
    dialog = f"trunk {leg.trunk.trunk_id}'s dialog {tx.req.call_id[:64]}"
    socket = leg.media.socket
    try:
        got = answer(
            tx.req.body,
            leg.remote,
            leg.sdp_sent,
            address=line.media_host,
            port=socket.local[1],
            crypto=socket.crypto,
        )
    except (BadOffer, ValueError) as exc:
        why = f"488 for participant {leg.participant_id}: {str(exc)[:200]}"
        refusals.refused(dialog, "reinvite_refused", why, "re-INVITE")
        await tx.respond(488, "Not Acceptable Here", extra=[warning(exc)])
        return
    refusals.taken(dialog, "re-INVITE", "reinvite_refused")
    if not await tx.respond(200, "OK", body=got.body):
        return
    leg.sdp_sent, socket.crypto = got.body, got.crypto
    leg.take_remote(leg.media, got.remote)  # sending as our answer says (TrunkMedia.follow)
    await set_hold(leg, got, music(catalog, playback, leg))


async def set_hold(leg: SipParticipant, got: Answer, music: StartMusic | None) -> None:
    """The phone's hold or resume, when it changes: the events, and the call's hold when the
    phone is its agent, with ``music`` (docs/sip.md, *Hold from the phone*)."""
    if got.holding == leg.on_hold:
        return
    leg.on_hold = got.holding
    runtime = leg.runtime
    runtime.emit(
        "participant.held" if got.holding else "participant.unheld",
        participantID=leg.participant_id,
        sip={"direction": got.offered},
    )
    try:
        if got.holding and leg.role is Role.AGENT and not runtime.hold.held:
            leg.held_call = True
            try:
                await runtime.hold.set(True, music)
            except CallStateError:
                raise
            except BridgeError as exc:  # the asset deleted since: held all the same, in silence
                log.warning(
                    "SIP participant %s: hold music not played: %s", leg.participant_id, exc
                )
                await runtime.hold.set(True)
        elif not got.holding and leg.held_call:
            leg.held_call = False
            await runtime.hold.set(False)
    except CallStateError:  # the call ended as the phone held or resumed: nothing to change
        log.debug("SIP participant %s: hold not changed: the call ended", leg.participant_id)


def music(catalog: Catalog, playback: Plays | None, leg: SipParticipant) -> StartMusic | None:
    """Starts the trunk's ``holdMusic`` (as the trunk is now in ``catalog``: a PATCH counts)
    looped on the call, as ``POST /call/hold`` does."""
    trunk = catalog.trunks.get(leg.trunk.trunk_id) or leg.trunk
    asset = trunk.hold_music
    if not asset or playback is None:
        return None

    async def start() -> Music:
        return await playback.start(leg.runtime, {"assetId": asset, "loop": True})

    return start
