"""A business number's standing in the fake Meta, written from Meta Cloud API Calling's public
pages (Business initiated calling quality, Call settings, the Webhooks reference for
``account_update`` and ``account_settings_update``, and the calling error codes):

* a pause of business-initiated calling (after repeated warnings): ``connect`` refused with
  138014 until it ends; Meta tells the business with an ``account_update`` webhook,
  ``ACCOUNT_VIOLATION`` first (a warning), then ``ACCOUNT_RESTRICTION`` with
  ``restriction_info: [{restriction_type: RESTRICTED_BUSINESS_INITIATED_CALLING, expiration}]``;
* a messaging limit below 2 000: calling is refused with 138015;
* Graph's rate limit: the next request refused with 613 (Meta sends no ``Retry-After``);
* ``account_settings_update`` when the number's calling settings change.

``account_update`` names the number by its phone (``phone_number``), not by
``metadata.phone_number_id``; neither webhook has ``messaging_product`` or ``metadata``.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

CALLING_RESTRICTION = "RESTRICTED_BUSINESS_INITIATED_CALLING"
CALLING_MIN_MESSAGING_LIMIT = 2000


class MetaAccount:
    """One business number's standing (see the module docstring)."""

    def __init__(self, phone: str = "15550009999") -> None:
        self.phone = phone
        self.paused_until: float | None = None
        self.messaging_limit = 100_000
        self.rate_limited = 0
        """How many of the next Graph requests are refused with 613."""
        self.connects_refused = 0

    def refusal(self, action: str) -> web.Response | None:
        """Meta's refusal of a ``calls`` action, if the number's standing refuses it."""
        from .cloudapi import meta_error

        if self.rate_limited > 0:
            self.rate_limited -= 1
            return meta_error(400, 613, "(#613) Calls to this api have exceeded the rate limit.")
        if action != "connect":
            return None
        if self.messaging_limit < CALLING_MIN_MESSAGING_LIMIT:
            self.connects_refused += 1
            return meta_error(
                400, 138015, "(#138015) Business messaging limit too low to use calling"
            )
        if self.paused_until is not None and time.time() < self.paused_until:
            self.connects_refused += 1
            return meta_error(400, 138014, "(#138014) Business initiated calling is paused")
        return None

    # -- webhooks (whole bodies: these have no messaging_product or metadata)
    def _body(self, field: str, value: dict[str, Any]) -> dict[str, Any]:
        change = {"field": field, "value": value}
        entry = {"id": "WABA123", "time": int(time.time()), "changes": [change]}
        return {"object": "whatsapp_business_account", "entry": [entry]}

    def warning(self, violation: str = "BUSINESS_INITIATED_CALLING_QUALITY") -> dict[str, Any]:
        value = {
            "phone_number": self.phone,
            "event": "ACCOUNT_VIOLATION",
            "violation_info": {"violation_type": violation},
        }
        return self._body("account_update", value)

    def pause(self, seconds: float = 7 * 86400) -> dict[str, Any]:
        """Pause business-initiated calling now; the webhook that says so."""
        self.paused_until = time.time() + seconds
        value = {
            "phone_number": self.phone,
            "event": "ACCOUNT_RESTRICTION",
            "restriction_info": [
                {"restriction_type": CALLING_RESTRICTION, "expiration": int(self.paused_until)}
            ],
        }
        return self._body("account_update", value)

    def settings_changed(self, phone_number_id: str, calling: dict[str, Any]) -> dict[str, Any]:
        value = {
            "timestamp": int(time.time()),
            "type": "phone_number_settings",
            "phone_number_settings": {"phone_number_id": phone_number_id, "calling": calling},
        }
        return self._body("account_settings_update", value)
