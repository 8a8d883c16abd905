"""Who a request is about: a WhatsApp user named by ``phone`` (digits) or, for a user who
shows no phone number, by ``recipient`` (their business-scoped user id, Meta's BSUID):
exactly one of the two (``/call/make``, ``/call/permissions``; the call button's ``to``)."""

from __future__ import annotations

from typing import Any

from ..calls import normalize_phone
from ..calls.model import normalize_user
from ..errors import BadRequest


def user_of(body: dict[str, Any], phone_key: str = "phone") -> str:
    """The user ``body`` names: ``phone_key``'s digits or ``recipient``'s BSUID (400
    ``invalid_phone`` unless exactly one is given, and well formed)."""
    phone, recipient = body.get(phone_key), body.get("recipient")
    if (recipient is None) == (phone is None):
        raise BadRequest(
            f"give one of '{phone_key}' (digits) and 'recipient' (a WhatsApp user's "
            f"business-scoped user id): {'neither was given' if phone is None else 'not both'}",
            code="invalid_phone",
        )
    return normalize_phone(phone) if phone is not None else normalize_user(recipient)
