"""A business number's standing in the fake Meta, written from Meta Cloud API Calling's public
pages (Business initiated calling quality, Call settings, the Webhooks reference for
``account_update`` and ``account_settings_update``, and the calling error codes). Meta keeps
all of it per phone number id, and its users' call permissions too (``MetaAccount.perms``):
``FakeMeta.accounts`` holds one :class:`MetaAccount` a number.

* a pause of business-initiated calling (after repeated warnings): ``connect`` refused with
  138014 until it ends; Meta tells the business with an ``account_update`` webhook,
  ``ACCOUNT_VIOLATION`` first (a warning), then ``ACCOUNT_RESTRICTION`` with
  ``restriction_info: [{restriction_type: RESTRICTED_BUSINESS_INITIATED_CALLING, expiration}]``;
* a messaging limit below 2 000: calling is refused with 138015;
* Graph's rate limit: the next request refused with 613 (Meta documents no ``Retry-After``;
  ``rate_limit_retry_after`` sends one, in either form HTTP allows, for the bridge's reader);
* SIP on for the number (``sip.status`` ``ENABLED``): Graph's call actions refused with 131055;
* ``account_settings_update`` when the number's calling settings change;
* ``GET``/``POST /{PHONE_NUMBER_ID}/settings`` with Meta's checks of ``calling`` (error 100
  naming the parameter): no field Meta does not take, at any depth (``restrictions`` is
  Meta's, read only); enums; ``call_hours`` with ``status``, a tz database ``timezone_id`` and
  the week when ``ENABLED``, slots and holidays of HHMM times the first earlier, at most two
  slots a day and 20 holidays; ``voicemail`` with ``status``, ``timeout_seconds`` at most 30
  and ``triggers`` of distinct ``REJECT`` / ``TIMEOUT`` (voicemail as the issues describe
  Meta's field); ``audio.additional_codecs`` of distinct ``PCMA`` / ``PCMU``; ``call_icons``
  of country codes; ``sip`` with one server (a host name, a port, string user parameters)
  and ``webhook_delivery``. A SIP password per number shown only with
  ``include_sip_credentials=true``, made anew when SIP is disabled with its servers cleared
  and enabled again (a rotation).

``account_update`` names the number by its phone (``phone_number``), not by
``metadata.phone_number_id``; neither webhook has ``messaging_product`` or ``metadata``.
"""

from __future__ import annotations

import re
import time
import uuid
import zoneinfo
from collections import Counter
from typing import Any

from aiohttp import web

from .cloudapi_permissions import MetaPermissions

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
        self.rate_limit_retry_after = ""
        """A ``Retry-After`` sent with those refusals (seconds or an HTTP date, RFC 9110
        §10.2.3); none when empty, as Meta documents none."""
        self.connects_refused = 0
        self.calling: dict[str, Any] = {
            "status": "ENABLED",
            "call_icon_visibility": "DEFAULT",
            "callback_permission_status": "DISABLED",
            "srtp_key_exchange_protocol": "DTLS",
            "sip": {"status": "DISABLED", "servers": []},
        }
        self.sip_password = uuid.uuid4().hex
        self._sip_cleared = False
        self.perms = MetaPermissions(phone)
        """The number's users' call permissions and service windows (Meta keeps them per
        business number and user: :mod:`.cloudapi_permissions`)."""
        self.settings_posts: list[dict[str, Any]] = []
        self.refuse_settings = ""
        """Meta's reason to refuse the next settings (a rule the fake does not model)."""

    # -- /{PHONE_NUMBER_ID}/settings
    async def settings_endpoint(self, request: web.Request) -> web.Response:
        from .cloudapi import meta_error

        if request.method == "GET":
            unknown = set(request.query) - {"include_sip_credentials", "fields"}
            if unknown:
                return meta_error(400, 100, f"(#100) Unknown parameter {sorted(unknown)[0]}")
            calling = json_copy(self.calling)
            if self.paused_until is not None and time.time() < self.paused_until:
                calling["restrictions"] = {
                    "restrictions_list": [
                        {"type": CALLING_RESTRICTION, "expiration": int(self.paused_until)}
                    ]
                }
            if request.query.get("include_sip_credentials") == "true":
                for server in calling.get("sip", {}).get("servers", []):
                    server["sip_user_password"] = self.sip_password
            return web.json_response({"calling": calling})
        try:
            body = await request.json()
        except ValueError:
            return meta_error(400, 100, "(#100) Invalid JSON")
        self.settings_posts.append(body)
        calling = body.get("calling") if isinstance(body, dict) else None
        if not isinstance(calling, dict) or set(body) != {"calling"}:
            return meta_error(400, 100, "(#100) The parameter calling is required")
        problem, self.refuse_settings = _calling_problem(calling) or self.refuse_settings, ""
        if problem:
            return meta_error(400, 100, f"(#100) Invalid parameter: {problem}")
        if calling.get("status") == "ENABLED" and (
            self.messaging_limit < CALLING_MIN_MESSAGING_LIMIT
        ):
            return meta_error(
                400, 138015, "(#138015) Business messaging limit too low to use calling"
            )
        self.calling.update(calling)
        sip = calling.get("sip")
        if isinstance(sip, dict) and sip.get("servers") == []:
            self._sip_cleared = True  # the password is made anew when SIP is enabled again
        elif isinstance(sip, dict) and sip.get("status") == "ENABLED" and self._sip_cleared:
            self.sip_password, self._sip_cleared = uuid.uuid4().hex, False
        return web.json_response({"success": True})

    @property
    def key_exchange(self) -> str:
        """``srtp_key_exchange_protocol`` of the number's settings: ``DTLS`` or ``SDES``."""
        return str(self.calling.get("srtp_key_exchange_protocol", "DTLS"))

    @property
    def additional_codecs(self) -> tuple[str, ...]:
        """``audio.additional_codecs`` of the number's settings (G.711 in Meta's offers)."""
        audio = self.calling.get("audio")
        codecs = audio.get("additional_codecs") if isinstance(audio, dict) else None
        return tuple(codecs) if isinstance(codecs, list) else ()

    def refusal(self, action: str) -> web.Response | None:
        """Meta's refusal of a ``calls`` action, if the number's standing refuses it."""
        from .cloudapi import meta_error

        if self.rate_limited > 0:
            self.rate_limited -= 1
            refused = meta_error(400, 613, "(#613) Calls to this api have exceeded the rate limit.")
            if self.rate_limit_retry_after:
                refused.headers["Retry-After"] = self.rate_limit_retry_after
            return refused
        sip = self.calling.get("sip")
        if isinstance(sip, dict) and sip.get("status") == "ENABLED":
            # One number is Graph or SIP, never both: Graph's calling actions are refused.
            return meta_error(
                400, 131055, "(#131055) Method not allowed: calling on this number is over SIP"
            )
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


VOICEMAIL_TRIGGERS = {"REJECT", "TIMEOUT"}
DAYS = {"MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"}
ENUMS = {
    "status": {"ENABLED", "DISABLED"},
    "call_icon_visibility": {"DEFAULT", "DISABLE_ALL"},
    "callback_permission_status": {"ENABLED", "DISABLED"},
    "srtp_key_exchange_protocol": {"DTLS", "SDES"},
}


def json_copy(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value))


_HHMM = re.compile(r"^([01]\d|2[0-3])[0-5]\d$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SIP_KEYS = {"status", "servers", "webhook_delivery"}
SERVER_KEYS = {"hostname", "port", "request_uri_user_params"}


def _calling_problem(calling: dict[str, Any]) -> str:
    """What Meta would refuse in a ``calling`` object ("" when nothing): an unknown field at
    any depth, a value outside its enum, a malformed time, date, host or port, or one of the
    limits (slots a day, holidays, one SIP server). ``restrictions`` is Meta's to set (read
    only), so it is unknown here as any other field Meta does not take."""
    known = {*ENUMS, "call_hours", "sip", "audio", "voicemail", "call_icons"}
    for key, value in calling.items():
        if key not in known:
            return f"unknown field {key}"
        if key in ENUMS and value not in ENUMS[key]:
            return f"{key} must be one of {sorted(ENUMS[key])}"
    for name in ("call_hours", "sip", "audio", "voicemail", "call_icons"):
        if name in calling and not isinstance(calling[name], dict):
            return f"{name} must be an object"
    return (
        _icons_problem(calling.get("call_icons"))
        or _hours_problem(calling.get("call_hours"))
        or _voicemail_problem(calling.get("voicemail"))
        or _audio_problem(calling.get("audio"))
        or _sip_problem(calling.get("sip"))
    )


def _icons_problem(icons: dict[str, Any] | None) -> str:
    if icons is None:
        return ""
    countries = icons.get("restrict_to_user_countries")
    if set(icons) != {"restrict_to_user_countries"}:
        return "call_icons takes restrict_to_user_countries"
    if not isinstance(countries, list) or not all(
        isinstance(c, str) and len(c) == 2 and c.isalpha() and c.isupper() for c in countries
    ):
        return "call_icons.restrict_to_user_countries must be ISO 3166-1 alpha-2 codes"
    return ""


def _span_problem(item: Any, keys: tuple[str, str, str], where: str) -> str:
    """One opening slot or holiday: exactly its three fields, HHMM times, the first earlier."""
    first, start, end = keys
    if not isinstance(item, dict) or set(item) != set(keys):
        return f"{where} takes {', '.join(keys)}"
    if not all(isinstance(item[k], str) and _HHMM.match(item[k]) for k in (start, end)):
        return f"{where}.{start} and {end} must be HHMM times"
    if item[start] >= item[end]:
        return f"{where}.{start} must be before {end}"
    if first == "day_of_week" and item[first] not in DAYS:
        return f"{where}.day_of_week"
    if first == "date" and not (isinstance(item[first], str) and _DATE.match(item[first])):
        return f"{where}.date must be YYYY-MM-DD"
    return ""


def _hours_problem(hours: dict[str, Any] | None) -> str:
    if hours is None:
        return ""
    extra = sorted(
        set(hours) - {"status", "timezone_id", "weekly_operating_hours", "holiday_schedule"}
    )
    if extra:
        return f"unknown field call_hours.{extra[0]}"
    if hours.get("status") not in ENUMS["status"]:
        return "call_hours.status must be one of ['DISABLED', 'ENABLED']"
    zone = hours.get("timezone_id")
    if zone is not None and zone not in zoneinfo.available_timezones():
        return "call_hours.timezone_id is not a valid timezone"
    if hours["status"] == "ENABLED" and (zone is None or "weekly_operating_hours" not in hours):
        return "call_hours.timezone_id and weekly_operating_hours are required when ENABLED"
    slots, holidays = hours.get("weekly_operating_hours", []), hours.get("holiday_schedule", [])
    if not isinstance(slots, list) or not isinstance(holidays, list):
        return "call_hours.weekly_operating_hours and holiday_schedule are lists"
    for i, slot in enumerate(slots):
        problem = _span_problem(
            slot, ("day_of_week", "open_time", "close_time"), f"weekly_operating_hours[{i}]"
        )
        if problem:
            return f"call_hours.{problem}"
    if max(Counter(s["day_of_week"] for s in slots).values(), default=0) > 2:
        return "call_hours allows at most 2 operating slots per day"
    if len(holidays) > 20:
        return "call_hours allows at most 20 holidays"
    for i, day in enumerate(holidays):
        problem = _span_problem(day, ("date", "start_time", "end_time"), f"holiday_schedule[{i}]")
        if problem:
            return f"call_hours.{problem}"
    return ""


def _voicemail_problem(voicemail: dict[str, Any] | None) -> str:
    if voicemail is None:
        return ""
    if voicemail.get("status") not in ENUMS["status"]:
        return "voicemail.status must be one of ['DISABLED', 'ENABLED']"
    extra = sorted(set(voicemail) - {"status", "timeout_seconds", "triggers"})
    if extra:
        return f"unknown field voicemail.{extra[0]}"
    timeout = voicemail.get("timeout_seconds", 30)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 0 < timeout <= 30:
        return "voicemail.timeout_seconds must be at most 30"
    triggers = voicemail.get("triggers", list(VOICEMAIL_TRIGGERS))
    if (
        not isinstance(triggers, list)
        or not triggers
        or not set(triggers) <= VOICEMAIL_TRIGGERS
        or len(set(triggers)) != len(triggers)
    ):
        return f"voicemail.triggers must be distinct values of {sorted(VOICEMAIL_TRIGGERS)}"
    return ""


def _audio_problem(audio: dict[str, Any] | None) -> str:
    if audio is None:
        return ""
    codecs = audio.get("additional_codecs")
    if (
        set(audio) != {"additional_codecs"}
        or not isinstance(codecs, list)
        or not set(codecs) <= {"PCMA", "PCMU"}
        or len(set(codecs)) != len(codecs)
    ):
        return "audio.additional_codecs must be distinct values of ['PCMA', 'PCMU']"
    return ""


def _sip_problem(sip: dict[str, Any] | None) -> str:
    if sip is None:
        return ""
    extra = sorted(set(sip) - SIP_KEYS)
    if extra:
        return f"unknown field sip.{extra[0]}"
    for key in ("status", "webhook_delivery"):
        if key in sip and sip[key] not in ENUMS["status"]:
            return f"sip.{key} must be one of ['DISABLED', 'ENABLED']"
    servers = sip.get("servers", [])
    if not isinstance(servers, list):
        return "sip.servers must be a list"
    if len(servers) > 1:
        return "sip allows one server per number"
    for server in servers:
        if not isinstance(server, dict) or set(server) - SERVER_KEYS:
            return f"sip.servers takes {sorted(SERVER_KEYS)}"
        host, port = server.get("hostname"), server.get("port", 5061)
        if not isinstance(host, str) or not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
            return "sip.servers.hostname must be a host name"
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            return "sip.servers.port must be a port number"
        params = server.get("request_uri_user_params", {})
        if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()
        ):
            return "sip.servers.request_uri_user_params must map names to strings"
    return ""
