"""``CallingSettings``: a number's calling settings read and written through the Graph API
(``GET``/``POST /{PHONE_NUMBER_ID}/settings``; the wire is :mod:`.settings_wire`). A change is
checked against Meta's rules, sent, then read back, so the answer is what Meta keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ...errors import EngineError, GraphApiError, MetaSettingsRefused, NotFound
from .graph import GraphClient
from .settings_wire import from_meta, to_meta

HINT = (
    "check the field Meta names against Meta Cloud API Calling's call settings (calling must "
    "be enabled, which needs a messaging limit of at least 2 000, before its other settings)"
)


class CallingSettings:
    """One number's calling settings at Meta (``media``: this engine's SRTP key exchange,
    ``dtls`` or ``sdes``, which Meta's ``srtp_key_exchange_protocol`` must match)."""

    def __init__(
        self,
        graph: GraphClient,
        media: str = "dtls",
        *,
        sip: bool = False,
        on_read: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        """``sip``: the number signals on Meta's SIP road (SIP must be on at Meta);
        ``on_read``: given Meta's ``calling`` object at every read (the number's standing
        learns Meta's ``restrictions`` from it)."""
        self.graph = graph
        self.media = media
        self.sip = sip
        self.on_read = on_read

    async def read(self) -> dict[str, Any]:
        """Meta's settings as the bridge shows them (no SIP password)."""
        return from_meta(await self._read())

    async def _read(self) -> dict[str, Any]:
        answer = await self._request("GET", "read settings")
        if self.on_read is not None:
            self.on_read(_object(answer, "calling"))
        return answer

    async def _request(
        self, method: str, what: str, body: dict[str, Any] | None = None, **params: str
    ) -> dict[str, Any]:
        """``method /{PHONE_NUMBER_ID}/settings``; :class:`NotFound` for a SIP number run
        without the Graph API (no token or phone number id: nothing to read them with)."""
        if self.graph.http is None:
            raise NotFound(
                "a SIP number's calling settings go through the Graph API: set "
                "BRIDGE_ENGINE_TOKEN and BRIDGE_CLOUDAPI_PHONE_NUMBER_ID",
                code="settings_not_supported",
            )
        return await self.graph.request(method, "settings", what, body, params or None)

    async def write(self, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Apply ``patch`` (the bridge's names) at Meta; the settings Meta then keeps."""
        await self._post(to_meta(patch))
        return await self.read()

    async def _post(self, calling: dict[str, Any]) -> None:
        try:
            await self._request("POST", "settings", {"calling": calling})
        except GraphApiError as exc:
            meta = exc.details.get("metaMessage") or exc.message
            code = exc.details.get("metaCode")
            raise MetaSettingsRefused(
                f"Meta refused the settings: {code}: {meta}. {HINT}", details=exc.details
            ) from None

    async def enable_sip(self, hostname: str, port: int, *, rotate: bool = False) -> str:
        """Point Meta's SIP for this number at ``hostname:port`` (one server per number) and
        return the SIP password Meta made for it (``include_sip_credentials``). ``rotate``:
        disable SIP and clear its servers first, so Meta makes a new password (Meta Cloud
        API Calling: SIP, "rotate the SIP password")."""
        if rotate:
            await self._post({"sip": {"status": "DISABLED", "servers": []}})
        server = {"hostname": hostname, "port": port}
        await self._post({"status": "ENABLED", "sip": {"status": "ENABLED", "servers": [server]}})
        answer = await self._request("GET", "read SIP credentials", include_sip_credentials="true")
        password = sip_password(answer, hostname)
        if not password:
            raise EngineError("Meta's settings show no SIP password for this number's server")
        return password

    async def mismatches(self) -> list[str]:
        """What Meta's settings say that this Graph engine does not do: another SRTP key
        exchange than ours, or SIP switched on (Meta then refuses Graph calling, 131055)."""
        calling = _object(await self._read(), "calling")
        found = []
        theirs = str(calling.get("srtp_key_exchange_protocol") or "DTLS")
        if theirs.lower() != self.media:
            found.append(
                f"Meta's srtp_key_exchange_protocol is {theirs} but this number's media is "
                f"{self.media} (cloudapi.media / BRIDGE_CLOUDAPI_MEDIA): calls will fail"
            )
        sip = _object(calling, "sip")
        if self.sip and sip.get("status") != "ENABLED":
            found.append(
                "Meta's SIP is not ENABLED while this number signals on SIP: Meta sends its "
                "calls over Graph (POST /numbers/{numberID}/sip/enable)"
            )
        elif not self.sip and sip.get("status") == "ENABLED":
            hosts = ", ".join(
                f"{s.get('hostname')}:{s.get('port')}"
                for s in sip.get("servers") or []
                if isinstance(s, dict)
            )
            found.append(
                f"Meta's SIP is ENABLED (servers: {hosts or 'none'}) while this number signals "
                "on Graph: Meta refuses Graph calling actions (131055)"
            )
        return found


def sip_password(answer: dict[str, Any], hostname: str) -> str:
    """The ``sip_user_password`` Meta shows for ``hostname``'s server ("" when none)."""
    sip = _object(_object(answer, "calling"), "sip")
    for server in sip.get("servers") or []:
        if isinstance(server, dict) and server.get("hostname") == hostname:
            return str(server.get("sip_user_password") or "")
    return ""


def _object(holder: dict[str, Any], name: str) -> dict[str, Any]:
    value = holder.get(name)
    return value if isinstance(value, dict) else {}
