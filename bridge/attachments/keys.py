"""The WhatsApp user's key presses, passed to the attachments that carry them to an app (a
Twilio-dialect fork's ``dtmf`` event, a PCM socket's ``dtmf`` message).

Every ``call.dtmf`` event with ``source`` ``whatsapp`` — in-band tones found on a PCM engine's
downlink or RFC 4733 events from the Cloud API leg — is published once on the call's events;
:func:`dtmf_observer` is a ``CallEvents`` observer that hands it to the call's attachments
that :class:`~bridge.attachments.base.CarriesKeys`, so none of them needs its own detector.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import AttachmentHost, CarriesKeys

KINDS = ("fork", "socket", "agent", "sip")
"""Attachment kinds that may carry key presses to an app (or to a model, as text; or to a
SIP phone as RFC 4733 events)."""


def dtmf_observer(find_host: Callable[[str], AttachmentHost | None]) -> Callable[[Any, Any], None]:
    """An observer for ``CallEvents.observe``; ``find_host(call_id)`` is the call's runtime."""

    def observe(event: Any, call: Any) -> None:
        if event.type != "call.dtmf" or event.data.get("source") != "whatsapp":
            return
        digit = event.data.get("digit")
        host = find_host(call.id)
        if host is None or not isinstance(digit, str):
            return
        duration = int(event.data.get("durationMs") or 0)
        for kind in KINDS:
            for attachment in host.attached(kind):
                if isinstance(attachment, CarriesKeys):
                    attachment.dtmf(digit, duration)

    return observe
