"""What a PBX asks inside a call's dialog: a key by SIP INFO, a transfer by REFER.

* **INFO** (RFC 6086) with ``application/dtmf-relay`` or ``application/dtmf``: the phone's key,
  as its RFC 4733 keys are (``200``; another body ``415``).
* **REFER** (RFC 3515, docs/sip.md *Transfers from the PBX*): accepted (``202``), the
  ``Refer-To`` called through the same trunk and reported by ``NOTIFY`` (``message/sipfrag``).
  The new leg takes the old one's place in the conference in the same tick; a failed one leaves
  the old leg in the call. An attended transfer (RFC 3891 ``?Replaces=``) carries the
  ``Replaces`` header into the new INVITE, the only header of the URI taken (RFC 3515 §2.1).

Either refused for what it carries (``400``, ``415``) is counted and said once per trunk while
it lasts (:class:`~.refusals.TrunkRefusals`): a PBX sending its keys in a format we do not
take sends an INFO a key, and each key was lost without a word.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

from ..audio.dtmf import DIGITS
from ..sip import Address, Dialog, Request, SipParseError
from .participant import SipParticipant, TrunkLine
from .refusals import TrunkRefusals

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any], str], None]
"""Runs work as one of the trunk service's tasks (``TrunkService.spawn``)."""
INFO_TYPES = "application/dtmf-relay, application/dtmf"
"""The INFO bodies taken (a ``415``'s ``Accept``, RFC 3261 §21.4.13)."""


async def in_dialog(
    line: TrunkLine, spawn: Spawn, refusals: TrunkRefusals, dialog: Dialog, req: Request
) -> tuple[int, str, list[tuple[str, str]]]:
    """The user agent's ``in_dialog_requests``: the status to answer an INFO or a REFER (a
    transfer runs as a task ``spawn`` starts), a ``415`` with the INFO bodies taken; one
    refused for what it carries told to ``refusals``."""
    leg = line.legs.get(dialog.key)
    if leg is None:
        return 481, "Call/Transaction Does Not Exist", []
    if req.method == "INFO":
        status, reason = info(leg, req)
    else:
        status, reason = refer(line, spawn, leg, dialog, req)
    sender, kind = f"trunk {leg.trunk.trunk_id}", f"{req.method.lower()}_refused"
    if status in (400, 415):
        carried = req.get("Content-Type")[:60] if req.method == "INFO" else ""
        why = f"{status} {reason}" + (f" (Content-Type {carried!r})" if carried else "")
        refusals.refused(sender, kind, why, req.method)
    elif status < 300:
        refusals.taken(sender, req.method, kind)
    return status, reason, [("Accept", INFO_TYPES)] if status == 415 else []


def info(leg: SipParticipant, req: Request) -> tuple[int, str]:
    kind = req.get("Content-Type").split(";")[0].strip().lower()
    text = req.body[:256].decode("ascii", "replace")
    duration = 160
    if kind == "application/dtmf-relay":
        fields = {}
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if sep:
                fields[name.strip().lower()] = value.strip()
        digit = fields.get("signal", "")
        try:
            duration = max(40, min(int(fields.get("duration") or 160), 5000))
        except ValueError:
            pass
    elif kind == "application/dtmf":
        digit = text.strip()
    else:
        return 415, "Unsupported Media Type"
    if len(digit) != 1 or digit.upper() not in DIGITS:
        return 400, "Bad Request (no key in the INFO)"
    leg.press(digit.upper(), duration)
    return 200, "OK"


def refer(
    line: TrunkLine, spawn: Spawn, leg: SipParticipant, dialog: Dialog, req: Request
) -> tuple[int, str]:
    values = req.values("Refer-To")
    if len(values) != 1:
        return 400, "Bad Request (one Refer-To)"
    try:
        target = Address.parse(values[0]).uri
    except SipParseError:
        return 400, "Bad Request (Refer-To is not a SIP URI)"
    extra: list[tuple[str, str]] = []
    if target.headers:  # "?Replaces=<call-id>%3Bto-tag%3D…%3Bfrom-tag%3D…" (RFC 3891 §3)
        embedded = {k.lower(): v for k, v in parse_qsl(target.headers.lstrip("?"))}
        replaces = embedded.get("replaces", "")
        if not replaces or len(replaces) > 512 or not replaces.isprintable():
            return 400, "Bad Request (Refer-To headers without a usable Replaces)"
        extra.append(("Replaces", replaces))
        target = replace(target, headers="")
    if leg.transferring:
        return 491, "Request Pending"
    leg.transferring = True
    spawn(transfer(line, leg, dialog, str(target), extra), f"refer:{leg.participant_id}")
    return 202, "Accepted"


async def notify(
    line: TrunkLine, old: SipParticipant, dialog: Dialog, status: int, reason: str
) -> None:
    """RFC 3515 §2.4.4: the new leg's progress as a sipfrag (the last one ends it); none once
    ``old``'s phone hung up (its dialog, and the subscription with it, is over)."""
    if old.dialog is None:
        return
    state = "active;expires=60" if status < 200 else "terminated;reason=noresource"
    await line.ua.in_dialog(
        dialog,
        "NOTIFY",
        extra=[("Event", "refer"), ("Subscription-State", state)],
        body=f"SIP/2.0 {status} {reason}\r\n".encode(),
        content_type="message/sipfrag;version=2.0",
        timeout=4.0,
        credentials=old.trunk.credentials,
    )


async def transfer(
    line: TrunkLine,
    old: SipParticipant,
    dialog: Dialog,
    target: str,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    """Call ``target`` (with ``extra`` headers: an attended transfer's ``Replaces``); on its
    answer swap it in for ``old`` (see the module docstring)."""
    await notify(line, old, dialog, 100, "Trying")
    headers = old.headers + (extra or [])
    new = SipParticipant(
        line, old.runtime, old.trunk, old.participant_id, old.role, target, headers
    )
    new.silent, new.replaces = True, old
    old.runtime.attach(new)
    line.active.add(new)
    try:
        await new.run()
    except Exception as exc:  # as the service's own legs (TrunkService._run): the old stays
        log.warning("SIP transfer of %s: the new leg failed: %s", old.participant_id, exc)
        await new.remove()
    if new.state != "joined":
        final = new.dialer.final if new.dialer is not None else None
        status, reason = (final.status, final.reason) if final else (503, "Service Unavailable")
        log.warning("SIP transfer of %s to %s failed: %d", old.participant_id, target, status)
        await notify(line, old, dialog, status, reason)
        old.transferring = False
        if old.dialog is None:  # its phone hung up while the transfer went on
            await old.remote_bye()
        return
    await take_over(old, new, target, notify(line, old, dialog, 200, "OK"))


async def take_over(
    old: SipParticipant,
    new: SipParticipant,
    target: str,
    told: Coroutine[Any, Any, None] | None = None,
) -> None:
    """``new``, joined in ``old``'s place (its ``replaces``), takes over: its events and
    what ends with it (``on_left``) are ``old``'s now, ``old`` is hung up silently (after
    ``told``, the REFER's last NOTIFY), and ``participant.transferred`` names ``target``."""
    new.silent = False
    new.on_left, old.on_left = old.on_left, None
    old.silent = True
    if told is not None:
        await told
    await old.remove()
    old.runtime.emit(
        "participant.transferred", participantID=new.participant_id, sip={"uri": target}
    )
