"""An INVITE from a trunk with ``Replaces`` (RFC 3891): a phone takes one of the bridge's trunk
legs over — the other end of an attended transfer made at the PBX, or a pickup of a leg still
ringing.

The bridge supports the header (it sends it itself, ``transfer.py``; its user agent takes
``Require: replaces``), so it honours it whether or not the INVITE requires it (§3): an INVITE
that names one of our dialogs never places a new WhatsApp call. The dialog is matched as §3
says, the ``to-tag`` against our tag and the ``from-tag`` against the phone's:

* more than one ``Replaces`` (refused by the user agent before, ``sip/extensions.py``
  ``misplaced_replaces``), or one without both tags: ``400``;
* no leg's dialog — an early dialog the PBX began (its INVITE still unanswered here), or a
  leg of another trunk (not found, as another tenant's object is) included: ``481``;
* a dialog whose leg has gone (remembered a while, ``TrunkLine.ended``): ``603``;
* a confirmed dialog and ``early-only``: ``486``;
* else the INVITE is answered in the old leg's place: the same participant, role and trunk,
  ``200`` with our SDP (an offer we cannot take: ``488``, and the old leg stays), the old leg
  hung up — ``BYE`` for a confirmed dialog, ``CANCEL`` for one still ringing — and
  ``participant.transferred`` names the phone that took over.

Each refusal is counted (``replaces_refused``) and said once per trunk while it lasts
(:class:`~.refusals.TrunkRefusals`): a PBX that retries one would fill the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import BadOffer
from ..numbers.trunks import Trunk
from ..sip import Address, InviteServer, SipParseError
from ..sip.headers import warning
from . import sdp
from .participant import SipParticipant, TrunkLine
from .refusals import TrunkRefusals
from .transfer import take_over

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Replaces:
    """A ``Replaces`` header (RFC 3891 §6.1): the dialog named, from the sender's side."""

    call_id: str
    to_tag: str
    """Our tag in that dialog."""
    from_tag: str
    """The phone's tag in it."""
    early_only: bool

    @classmethod
    def parse(cls, values: list[str]) -> Replaces | None:
        """The one header of ``values`` (every ``Replaces`` value of the request), or
        ``None`` when there are several or it lacks a tag."""
        if len(values) != 1:
            return None
        call_id, *params = (part.strip() for part in values[0].split(";"))
        tags: dict[str, str] = {}
        for param in params:
            name, _, value = param.partition("=")
            tags[name.strip().lower()] = value.strip()
        to_tag, from_tag = tags.get("to-tag", ""), tags.get("from-tag", "")
        if not call_id or not to_tag or not from_tag:
            return None
        return cls(call_id, to_tag, from_tag, "early-only" in tags)


def ringing(line: TrunkLine, wanted: Replaces) -> SipParticipant | None:
    """A leg of ours still ringing in the early dialog ``wanted`` names (our INVITE, the
    phone's tag from its provisional response); a REFER's new leg is not one to take over."""
    for leg in line.active:
        dialer = leg.dialer
        if dialer is None or dialer.final is not None or leg.replaces is not None:
            continue
        try:
            ours = Address.parse(dialer.from_).tag
        except SipParseError:
            continue
        if (dialer.call_id, ours, dialer.early_tag) == (
            wanted.call_id,
            wanted.to_tag,
            wanted.from_tag,
        ):
            return leg
    return None


def refusal(line: TrunkLine, trunk: Trunk, wanted: Replaces | None) -> tuple[int, str] | None:
    """Why the INVITE cannot take the dialog ``wanted`` names over (see the module
    docstring), or ``None`` when it may."""
    if wanted is None:
        return 400, "Bad Request (one Replaces, with to-tag and from-tag)"
    key = (wanted.call_id, wanted.to_tag)
    leg = line.legs.get(key)
    if leg is None or leg.dialog is None or leg.dialog.remote_tag != wanted.from_tag:
        leg = ringing(line, wanted)
    if leg is None or leg.trunk.trunk_id != trunk.trunk_id:
        if line.ended.get(key) == wanted.from_tag:
            return 603, "Decline (the dialog to replace has ended)"
        return 481, "Call/Transaction Does Not Exist (no dialog to replace)"
    if leg.dialog is not None and wanted.early_only:
        return 486, "Busy Here (the dialog to replace is no longer early)"
    if leg.transferring:
        return 491, "Request Pending (the leg is being transferred)"
    return None


async def replace(line: TrunkLine, trunk: Trunk, refusals: TrunkRefusals, tx: InviteServer) -> None:
    """Answer a trunk's INVITE with ``Replaces`` (see the module docstring); one refused is
    counted and said once per trunk while it lasts (``refusals``)."""
    wanted = Replaces.parse(tx.req.values("Replaces"))
    refused = refusal(line, trunk, wanted)
    sender, method = f"trunk {trunk.trunk_id}", "INVITE with Replaces"
    if refused is not None or wanted is None:
        status, reason = refused or (400, "Bad Request")
        why = f"{status} {reason} (Call-ID {tx.req.call_id[:64]})"
        refusals.refused(sender, "replaces_refused", why, method)
        await tx.respond(status, reason)
        return
    old = line.legs.get((wanted.call_id, wanted.to_tag)) or ringing(line, wanted)
    assert old is not None
    try:
        remote = sdp.read(tx.req.body, trunk.codecs, srtp=trunk.srtp == "sdes")
    except BadOffer as exc:  # §3: the replaced dialog is not torn down
        why = f"488 {exc} (Call-ID {tx.req.call_id[:64]})"
        refusals.refused(sender, "replaces_refused", why, method)
        await tx.respond(488, "Not Acceptable Here", extra=[warning(exc)])
        return
    refusals.taken(sender, method, "replaces_refused")
    target = str(tx.req.get("From")).partition("<")[2].partition(">")[0] or "sip:pbx"
    new = SipParticipant(line, old.runtime, old.trunk, old.participant_id, old.role, target, [])
    new.silent, new.replaces = True, old
    old.transferring = True
    old.runtime.attach(new)
    line.active.add(new)
    if not await new.accept(tx, remote):
        old.transferring = False
        return
    log.info("SIP participant %s: taken over by %s (Replaces)", old.participant_id, target)
    await take_over(old, new, target)
