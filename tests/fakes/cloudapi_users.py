"""WhatsApp users in the fake Meta, by phone number or, for a user who shows none, by their
business-scoped user id (BSUID), written from Meta's "Business-scoped user IDs" documentation:

* A BSUID is an ISO 3166 alpha-2 country code, a dot and up to 128 alphanumerics
  (``US.13491208655302741918``); a parent BSUID has ``ENT.`` after the country.
* Graph requests name the user by ``to`` (a phone number, ASCII digits) or ``recipient`` (a
  BSUID or parent BSUID); with both, ``to`` wins; with neither, 100. ``GET call_permissions`` takes
  ``user_wa_id`` or ``recipient``.
* Webhooks name a user who shows no phone by ``from_user_id`` (a message, a user's call),
  ``to_user_id`` (a business-initiated call), ``recipient_user_id`` (a call's status) and
  ``user_id`` in ``contacts`` — with the phone field (``from``, ``to``, ``recipient_id``,
  ``wa_id``) left out.
* A user's new BSUID comes as a ``messages`` webhook with a ``system`` message of type
  ``user_changed_user_id``: the message's ``from_user_id`` is the old BSUID, ``system.user_id``
  the new one (Meta's "System messages" webhook reference).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

BSUID = re.compile(r"^[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}$")
_USER_ID_FIELD = {
    "from": "from_user_id",
    "to": "to_user_id",
    "recipient_id": "recipient_user_id",
    "wa_id": "user_id",
}


def is_bsuid(user: str) -> bool:
    return bool(BSUID.match(user))


def named(field: str, user: str) -> dict[str, str]:
    """``user`` in a webhook's ``field`` (``from``, ``to``, ``recipient_id``, ``wa_id``): the
    phone there, or the BSUID in the field Meta names it by when the user shows no phone."""
    return {_USER_ID_FIELD[field]: user} if is_bsuid(user) else {field: user}


def contact(user: str, name: str = "Ana") -> dict[str, Any]:
    """The ``contacts`` entry of a webhook about ``user``."""
    return {"profile": {"name": name}, **named("wa_id", user)}


def addressee(fields: dict[str, Any], phone_key: str = "to") -> tuple[str, str]:
    """Who a Graph request names (``phone_key`` digits, else ``recipient``, a BSUID), and
    Meta's error message when it names nobody it can reach (``""``: fine)."""
    phone, recipient = fields.get(phone_key), fields.get("recipient")
    if phone is not None:
        if not isinstance(phone, str) or not (phone.isascii() and phone.isdigit()):
            return "", f"Invalid parameter {phone_key}"
        return phone, ""
    if recipient is not None:
        if not isinstance(recipient, str) or not is_bsuid(recipient):
            return "", "Invalid parameter recipient: not a business-scoped user ID"
        return recipient, ""
    return "", f"The parameter {phone_key} is required."


def user_id_changed(old: str, new: str) -> dict[str, Any]:
    """The ``messages`` webhook value telling that the user ``old`` is ``new`` now."""
    assert is_bsuid(old) and is_bsuid(new)
    message = {
        "from_user_id": old,
        "id": "wamid.HBgM" + uuid.uuid4().hex.upper(),
        "timestamp": str(int(time.time())),
        "type": "system",
        "system": {
            "body": f"User changed from {old} to {new}",
            "user_id": new,
            "type": "user_changed_user_id",
        },
    }
    return {"messages": [message]}
