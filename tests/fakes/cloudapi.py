"""A fake of Meta's WhatsApp Cloud API Calling, written from Meta's Cloud API Calling documentation.

* Graph API: ``POST /v23.0/{PHONE_NUMBER_ID}/calls`` with the bearer token, the actions
  ``connect``, ``pre_accept``, ``accept``, ``reject``, ``terminate``, Meta's error envelope,
  138006 for users without call permission, and 100/2494010 for any SDP whose fingerprints are
  not sha-256 only (exactly as Meta refuses them). ``accept`` must repeat ``pre_accept``'s SDP;
  ``pre_accept`` (once), ``accept`` and ``reject`` answer user-initiated calls only, the first
  two with ``session`` ``{sdp_type: "answer", sdp}``; ``biz_opaque_callback_data`` is at most
  512 characters; each action takes its own parameters only (each else 100); with SIP on for
  the number every action is 131055; a ``connect`` past the number's concurrent calls (1 000,
  either direction) is 138002.
* A user's call opens or refreshes their 24 h service window, as a message does; once
  accepted it resets the permission-request limits, as a business's call that connects does.
  With ``callback_permission_status`` ``ENABLED`` in the number's settings, the fake itself
  then posts Meta's automatic 7-day grant (none for a call from a companion device). The
  business's calls that end unanswered or rejected count toward the user's revocation: at
  the fourth in a row the fake posts Meta's automatic reject itself.
* Webhooks: signed with the app secret (``X-Hub-Signature-256``) in Meta's envelope.
* Users: by phone number, or by business-scoped user id (a BSUID) for a user who shows no
  phone — ``recipient`` in ``connect``, ``from_user_id``/``to_user_id``/``recipient_user_id``
  in webhooks (:mod:`.cloudapi_users`).
* SIP + WebRTC: the same peer plays Meta's media behind SIPp (``tests/sip``); its offer goes
  into SIPp's INVITE, :func:`sip_answer` makes the answer SIPp's 200 OK carries.
* Media: each call's WhatsApp side is a real aiortc peer on loopback playing Meta's part: its
  offers carry only a sha-256 fingerprint, ``a=ice-lite``, Opus on 111 with Meta's fmtp and
  ``telephone-event/8000`` on 126, and G.711 (``PCMA`` on 8, ``PCMU`` on 0, in the settings'
  order) after Opus when the number's settings have ``audio.additional_codecs`` (Meta accepts
  G.711 then and transcodes; its payload types are G.711's static ones, RTP/SAVP ``9 0 8
  101`` in the SIP summary); it answers a business's offer in one codec, the first of the
  offer's that it takes (Opus, or a G.711 the settings name), or refuses it; it plays a tone
  and records what it hears, and can send RFC 4733 DTMF packets crafted here in its own RTP
  stream (same SSRC and sequence space). Like Meta, it sends no RTP before the business's
  first packet has arrived, on calls of either direction, and on Graph calls none before the
  call connects (ICE and DTLS come up at ``pre_accept``, media flows after ``accept``; on
  ours, once the user picks up).
* A number whose settings say ``srtp_key_exchange_protocol: SDES`` has SDES media on Graph
  signalling too (:class:`MetaSdesPeer`: ``RTP/SAVP`` with ``a=crypto``, no ICE or DTLS);
  Meta refuses a business SDP of the other kind there (100), as it refuses any fingerprint
  but sha-256 on a DTLS number.
* Meta reports every end with a ``terminate`` webhook, the business's own ``terminate`` and
  ``reject`` too, and every settings change with ``account_settings_update``: the fake posts
  each after its Graph answer, to the business's subscription (:meth:`FakeMeta.subscribe`,
  else the client a test last posted a webhook through), a call's end with the connected
  seconds. The ``status`` of a terminate (``COMPLETED``, ``FAILED``, ``REJECTED``) and of a
  call's progress (``RINGING``, ``ACCEPTED``, ``REJECTED``) is one Meta sends.
* Meta ends a connected call the business sends no media on (:attr:`FakeMeta.media_timeouts`:
  none within 20 s of its start, 138023; none for 30 s mid-call, 138021), with a terminate
  ``FAILED`` carrying the code, as Meta's troubleshooting pages say.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientError, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtp import RtpPacket

from bridge.engines.cloudapi import SIGNATURE_HEADER, sign
from bridge.rtc import restrict_host_addresses
from bridge.rtc.leg import RELEASE_WAIT
from bridge.rtc.release import release_peer_connection

from ..support.rtc_client import Recorder, ToneTrack
from ..support.sdes_peer import SdesEndpoint
from .cloudapi_account import MetaAccount
from .cloudapi_media import MetaMedia
from .cloudapi_permissions import MetaPermissions
from .cloudapi_users import addressee, contact, named
from .common import BusinessFirst, FakeServer

META_OPUS_FMTP = (
    "maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;"
    "useinbandfec=1"
)


OPAQUE_MAX = 512
"""``biz_opaque_callback_data``: at most 512 characters."""
TERMINATE_STATUSES = {"COMPLETED", "FAILED", "REJECTED"}
"""A terminate webhook's ``status`` (Meta sends no other)."""
CALL_STATUSES = {"RINGING", "ACCEPTED", "REJECTED"}
"""A business-initiated call's progress in ``statuses`` (Meta sends no other)."""
USER_INITIATED_ONLY = {"pre_accept", "accept", "reject"}
"""The actions that answer a user's call: Meta takes them for no business-initiated call."""
_EVERY = {"messaging_product", "action"}
_MEDIA_OPTIONS = {"recording", "transcription"}
ACTION_PARAMS = {
    "connect": {*_EVERY, "to", "recipient", "session", "biz_opaque_callback_data", *_MEDIA_OPTIONS},
    "pre_accept": {*_EVERY, "call_id", "session"},
    "accept": {*_EVERY, "call_id", "session", "biz_opaque_callback_data", *_MEDIA_OPTIONS},
    "reject": {*_EVERY, "call_id"},
    "terminate": {*_EVERY, "call_id"},
}
"""The parameters each call action takes (Meta's call actions table; ``recording`` and
``transcription``: Meta's call recording and transcription); another is Meta's 100."""


def _action_problem(action: str, call: MetaCall, session: Any) -> str:
    """Why Meta refuses ``action`` on ``call`` with this ``session`` (``""``: it takes it):
    ``pre_accept``, ``accept`` and ``reject`` answer a user's call only; ``pre_accept`` once,
    before ``accept``; the first two carry ``session`` ``{sdp_type: "answer", sdp}``."""
    if action in USER_INITIATED_ONLY and call.direction != "USER_INITIATED":
        return f"{action} applies to user-initiated calls only"
    if action == "pre_accept" and (call.pre_accept_sdp is not None or call.accepted):
        return "pre_accept not allowed now"
    if action in ("pre_accept", "accept"):
        if not isinstance(session, dict) or session.get("sdp_type") != "answer":
            return "session.sdp_type must be answer"
        if not isinstance(session.get("sdp"), str) or not session["sdp"]:
            return "session.sdp is required"
    return ""


def _session_refusal(sdp: str, key_exchange: str) -> web.Response | None:
    """Meta's refusal of a business's SDP for a number whose media is ``key_exchange``
    (``DTLS``: fingerprints sha-256 only, else 100/2494010; ``SDES``: ``RTP/SAVP`` with an
    ``a=crypto`` key and no DTLS fingerprint), or ``None``."""
    lines = _lines(sdp)
    algorithms = {
        ln.split(":", 1)[1].split(" ", 1)[0].lower()
        for ln in lines
        if ln.startswith("a=fingerprint:")
    }
    if key_exchange == "SDES":
        savp = any(ln.startswith("m=audio ") and ln.split()[2:3] == ["RTP/SAVP"] for ln in lines)
        if not savp or algorithms or not any(ln.startswith("a=crypto:") for ln in lines):
            return meta_error(
                400, 100, "(#100) Invalid parameter: SDES media needs RTP/SAVP with a=crypto"
            )
        return None
    if algorithms != {"sha-256"}:
        return meta_error(
            400,
            100,
            "(#100) Invalid parameter: SDP fingerprint must use the sha-256 algorithm",
            subcode=2494010,
        )
    return None


def meta_error(status: int, code: int, message: str, subcode: int | None = None) -> web.Response:
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "A" + str(random.randrange(10**9)),
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return web.json_response({"error": error}, status=status)


def _lines(sdp: str) -> list[str]:
    return [ln for ln in sdp.replace("\r\n", "\n").split("\n") if ln]


def sha256_only(sdp: str) -> str:
    return (
        "\r\n".join(
            ln
            for ln in _lines(sdp)
            if not ln.startswith("a=fingerprint:") or ln.startswith("a=fingerprint:sha-256 ")
        )
        + "\r\n"
    )


G711_PT = {"PCMU": 0, "PCMA": 8}


def meta_offer(sdp: str, additional_codecs: tuple[str, ...] = ()) -> str:
    """aiortc's offer rewritten as Meta writes one (see the module docstring)."""
    lines = _lines(sha256_only(sdp))
    opus = next(
        int(m.group(1)) for ln in lines if (m := re.match(r"a=rtpmap:(\d+) opus/48000", ln))
    )
    out = []
    for ln in lines:
        if ln.startswith("m=audio "):
            parts = ln.split()
            g711 = [str(G711_PT[c]) for c in additional_codecs]
            ln = " ".join([*parts[:3], "111", *g711, "126"])
        elif ln.startswith("a=rtpmap:") or ln.startswith("a=fmtp:") or ln.startswith("a=rtcp-fb:"):
            if ln.startswith(f"a=rtpmap:{opus} "):
                out += ["a=rtpmap:111 opus/48000/2", f"a=fmtp:111 {META_OPUS_FMTP}"]
                out += [f"a=rtpmap:{G711_PT[c]} {c}/8000" for c in additional_codecs]
                out += ["a=rtpmap:126 telephone-event/8000", "a=ptime:20"]
            continue
        elif ln.startswith("t="):
            out += [ln, "a=ice-lite"]
            continue
        out.append(ln)
    return "\r\n".join(out) + "\r\n"


def meta_answer(sdp: str) -> str:
    """aiortc's answer as Meta's: sha-256 only, ice-lite, telephone-event on 126 kept."""
    out = []
    for ln in _lines(sha256_only(sdp)):
        if ln.startswith("m=audio "):
            ln = ln + " 126"
        out.append(ln)
        if ln.startswith("t="):
            out.append("a=ice-lite")
        if re.match(r"a=rtpmap:\d+ (opus/48000|PCM[AU]/8000)", ln):
            out.append("a=rtpmap:126 telephone-event/8000")
    return "\r\n".join(out) + "\r\n"


def meta_choice(offer: str, takes: tuple[str, ...]) -> str | None:
    """The codec Meta answers a business's offer with: the first of the offer's audio
    m-line that it takes (Opus; G.711 only with the number's ``audio.additional_codecs``).
    The offerer's order is its preference, which an answerer keeps when it has none of its
    own (RFC 3264 §6.1): Meta transcodes whichever. ``None``: nothing it takes."""
    lines = _lines(offer)
    names = {
        m.group(1): m.group(2)
        for ln in lines
        if (m := re.match(r"a=rtpmap:(\d+) (opus|PCMA|PCMU)/", ln, re.I))
    }
    names.update({str(pt): c for c, pt in G711_PT.items() if str(pt) not in names})
    m_line = next((ln for ln in lines if ln.startswith("m=audio ")), "")
    for pt in m_line.split()[3:]:
        codec = names.get(pt, "")
        codec = "opus" if codec.lower() == "opus" else codec.upper()
        if codec and codec in takes:
            return codec
    return None


BRIDGE_MID = "0"
"""The ``mid`` of the bridge's own offers (aiortc's first)."""


def sip_answer(meta_offer: str, opus_pt: int) -> str:
    """Meta's SDP answer on the SIP road (SIP + WebRTC: ICE-lite, sha-256 only, as in a Graph
    call), made from a :class:`MetaPeer`'s own offer before the bridge's offer exists (SIPp
    sends it in a scripted 200 OK; ``offer(mid=BRIDGE_MID)``: an answer keeps the offer's
    ``mid``): the bridge's Opus payload type and ``a=setup:passive``
    (the bridge, as offerer, is then the DTLS client). The peer then takes the bridge's offer
    as its answer with ``a=setup:active``."""
    sdp = meta_offer.replace("a=setup:actpass", "a=setup:passive")
    sdp = re.sub(r"^(m=audio \d+ \S+) 111 126", rf"\1 {opus_pt} 126", sdp, flags=re.M)
    return sdp.replace("a=rtpmap:111 ", f"a=rtpmap:{opus_pt} ").replace(
        "a=fmtp:111 ", f"a=fmtp:{opus_pt} "
    )


class MetaPeer:
    """The WhatsApp user's side of one call, as Meta's media server relays it."""

    def __init__(self, freq: float) -> None:
        restrict_host_addresses(["127.0.0.1"])
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = ToneTrack(freq) if freq else None
        self.recorder = Recorder()
        self.connected = asyncio.Event()
        self._seq = random.randrange(1 << 16)
        self._send: Any = None
        self.dtmf_received: list[RtpPacket] = []
        """RFC 4733 packets from the bridge (payload type 126), as they arrived."""
        self.connected_at: float | None = None
        """When ICE and DTLS were up on Meta's side (monotonic)."""
        self.gate = BusinessFirst()
        """Meta sends nothing before the bridge's first RTP packet (its times, its count)."""
        self.rtp_count = 0
        self.rtcp_count = 0
        self.last_rtcp_at: float | None = None
        self.audio_sent: list[bytes] = []
        """The payloads of the first 2000 audio packets it sent (bit-exact checks)."""

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self.recorder.start(track)

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self.connected_at = self.connected_at or time.monotonic()
                self.connected.set()

    def _add_track(self) -> None:
        if self.track is not None:
            self.pc.addTrack(self.track)
        else:
            self.pc.addTransceiver("audio", direction="recvonly")

    def _renumber(self) -> None:
        """Own the RTP sequence numbers, so crafted DTMF packets share the audio's stream."""
        sender = self.pc.getTransceivers()[0].sender
        dtls = sender.transport
        original = dtls._send_rtp

        async def send_rtp(data: bytes) -> None:
            # aiortc sends its RTCP (reports, and the BYE its sender's stop awaits) through
            # the same call: RTCP keeps its own header (bytes 2-3 are its length, RFC 3550
            # §6.4.1) and is no audio (RFC 5761 §4: packet types 192-223 are RTCP's).
            if 192 <= data[1] <= 223:
                await original(data)
                return
            if not self.gate.may_send():  # Meta waits for the business's first packet
                return
            b = bytearray(data)
            b[2:4] = self._seq.to_bytes(2, "big")
            self._seq = (self._seq + 1) & 0xFFFF
            if len(self.audio_sent) < 2000 and b[1] & 0x7F != 126:
                self.audio_sent.append(RtpPacket.parse(bytes(b)).payload)
            await original(bytes(b))

        dtls._send_rtp = send_rtp
        self._send = send_rtp
        self.ssrc = sender._ssrc
        self.audio_received: list[RtpPacket] = []
        receive = self.pc.getTransceivers()[0].receiver.transport
        handle = receive._handle_rtp_data

        async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
            self.gate.heard()
            self.rtp_count += 1
            if len(data) >= 12 and not 192 <= data[1] <= 208:
                packet = RtpPacket.parse(data)
                if packet.payload_type == 126:
                    self.dtmf_received.append(packet)
                    return  # aiortc would drop it (no such codec)
                if len(self.audio_received) < 2000:
                    self.audio_received.append(packet)
            await handle(data, arrival_time_ms=arrival_time_ms)

        receive._handle_rtp_data = handle_rtp_data
        handle_rtcp = receive._handle_rtcp_data

        async def handle_rtcp_data(data: bytes) -> None:
            self.rtcp_count += 1
            self.last_rtcp_at = time.monotonic()
            await handle_rtcp(data)

        receive._handle_rtcp_data = handle_rtcp_data

    async def offer(self, additional_codecs: tuple[str, ...] = (), mid: str = "audio") -> str:
        """Meta's offer (:func:`meta_offer`), its one m-line named ``mid``: ``audio`` as
        Meta names it (aiortc would say ``0``); for :func:`sip_answer`, the bridge's."""
        self._add_track()
        made = (await self.pc.createOffer()).sdp
        made = made.replace("a=group:BUNDLE 0\r\n", f"a=group:BUNDLE {mid}\r\n")
        made = made.replace("a=mid:0\r\n", f"a=mid:{mid}\r\n")
        await self.pc.setLocalDescription(RTCSessionDescription(sdp=made, type="offer"))
        ice = self.pc.getTransceivers()[0].sender.transport.transport
        ice._connection.ice_controlling = False  # Meta is ICE-lite: never controlling
        ice._role_set = True
        self._renumber()
        return meta_offer(self.pc.localDescription.sdp, additional_codecs)

    async def answer_offer(self, sdp: str, codec: str = "") -> str:
        """Meta's answer to a business's offer; ``codec`` (:func:`meta_choice`'s): the one
        audio codec it names (beside telephone-event), else whatever aiortc keeps."""
        if codec:  # made first, it takes the offer's m-line, with only that codec
            transceiver = self.pc.addTransceiver("audio", direction="sendrecv")
            mime = f"audio/{codec}".lower()
            caps = RTCRtpSender.getCapabilities("audio").codecs
            transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() == mime])
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        if not codec:
            self._add_track()
        transceiver = self.pc.getTransceivers()[0]
        if self.track is not None:
            transceiver.sender.replaceTrack(self.track)
        transceiver.direction = "sendrecv"
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._renumber()
        return meta_answer(self.pc.localDescription.sdp)

    async def apply_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def send_dtmf(self, digit: str, *, steps: int = 3, end_repeats: int = 3) -> None:
        """One key press as RFC 4733 packets: growing durations, then the end packet sent
        ``end_repeats`` times (the retransmissions RFC 4733 §2.5.1.4 asks for)."""
        event = "0123456789*#ABCD".index(digit)
        timestamp = random.randrange(1 << 32)
        for i in range(steps + end_repeats):
            end = i >= steps
            duration = 1600 if end else 400 * (i + 1)  # 8 kHz units: 50, 100, 150 ms, 200
            packet = RtpPacket(
                payload_type=126, sequence_number=0, timestamp=timestamp, marker=int(i == 0)
            )
            packet.ssrc = self.ssrc
            packet.payload = bytes([event, (0x80 if end else 0) | 10]) + duration.to_bytes(2, "big")
            await self._send(packet.serialize())
            await asyncio.sleep(0.02)

    async def drop(self) -> None:
        """Meta's media server drops the call (its ``terminate`` or ``reject`` taken)."""
        await self.pc.close()

    async def close(self) -> None:
        await self.recorder.stop()
        await self.pc.close()
        # As the bridge's own legs do: a connection closed while aioice still finished its
        # checks keeps a consent task running after the close (aioice starts it once the
        # checks end, close or not), and waiting the default 5 s for it held every test whose
        # call ended in that window (five Meta tests, 5 s of teardown each).
        await release_peer_connection(self.pc, RELEASE_WAIT)


class MetaSdesPeer:
    """The WhatsApp user's side of a call on a number whose settings say
    ``srtp_key_exchange_protocol: SDES`` (Graph signalling takes SDES too): Meta's SDES SDP
    (``RTP/SAVP``, ``a=crypto``, no ICE or DTLS) from the tests' SDES endpoint, which like
    Meta sends nothing before the business's first packet. ``media`` plays and records."""

    def __init__(self) -> None:
        self.media = SdesEndpoint()

    async def offer(self, additional_codecs: tuple[str, ...] = ()) -> str:
        await self.media.start()
        return self.media.sdp(codecs=("opus", *additional_codecs))

    async def answer_offer(self, sdp: str, codec: str = "opus") -> str:
        await self.media.start()
        self.media.take(sdp)
        return self.media.sdp(codecs=(codec,))

    async def apply_answer(self, sdp: str) -> None:
        self.media.take(sdp)

    @property
    def gate(self) -> BusinessFirst:
        return self.media.gate

    async def drop(self) -> None:
        self.media.close()

    async def close(self) -> None:
        self.media.close()


@dataclass
class MetaCall:
    wacid: str
    user: str
    direction: str
    peer: Any
    """:class:`MetaPeer` (DTLS), or :class:`MetaSdesPeer` on a number set to SDES."""
    state: str = "ringing"
    pre_accept_sdp: str | None = None
    offer_sdp: str | None = None
    """The business's offer in ``connect`` (a business-initiated call)."""
    pre_accept_at: float | None = None
    accepted: bool = False
    offered_at: float = field(default_factory=time.monotonic)
    actions: list[str] = field(default_factory=list)
    opaque: str = ""
    """``biz_opaque_callback_data`` of our ``connect`` (the bridge's callID)."""
    number: str = ""
    """The business number's ``phone_number_id`` (``""``: the app's first)."""
    connected_at: float | None = None
    """When the call connected (accepted, or the user answered ours): its duration's start."""
    missed: bool = False
    """A business's call that ended unanswered or rejected (counted once toward the user's
    revocation: :meth:`FakeMeta._missed`)."""


class FakeMeta(FakeServer):
    """Graph API + webhook sender + the WhatsApp users' media (see the module docstring)."""

    def __init__(
        self,
        *,
        token: str = "graph-token",
        phone_number_id: str = "1098765432",
        app_secret: str = "app-secret",
        user_tone_hz: float = 660.0,
    ) -> None:
        super().__init__()
        self.token = token
        self.phone_number_id = phone_number_id
        self.app_secret = app_secret
        self.numbers: dict[str, str] = {phone_number_id: token}
        """The app's business numbers: ``phone_number_id`` → its Graph token (one app holds
        many numbers, each with a system-user token of its own; webhooks of all of them are
        signed with the app's one secret)."""
        self.user_tone_hz = user_tone_hz
        self.no_permission: set[str] = set()
        self.meta_calls: dict[str, MetaCall] = {}
        self.concurrent_calls = 1000
        """Calls a business number may have at once, either direction (Meta: 1 000; a
        ``connect`` past it is 138002)."""
        self.actions: list[dict[str, Any]] = []
        self.action_numbers: list[str] = []
        """The ``phone_number_id`` each of :attr:`actions` was posted to."""
        self.refused: list[dict[str, Any]] = []
        self.accounts: dict[str, MetaAccount] = {phone_number_id: MetaAccount()}
        """Each business number's standing and calling settings, by ``phone_number_id``
        (pauses, messaging limit, rate limit, settings, SIP password: :mod:`.cloudapi_account`);
        Meta keeps them per number."""
        self.media = MetaMedia()
        """Meta's own recordings and transcripts (:mod:`.cloudapi_media`)."""
        self.fail_next: dict[str, tuple[int, str]] = {}
        """action → Meta's error code and message for the next request of that action."""
        self.permission_reads = 0
        self.grants_sent = 0
        """Callback grants Meta sent by itself (a user's call, callback permission on)."""
        self.webhook_client: Any = None
        """Where Meta's own webhooks go: the client a test last posted one through (the
        business's webhook subscription)."""
        self.ends_reported: list[tuple[str, int]] = []
        """The terminate webhooks Meta sent by itself (wacid, the bridge's HTTP status)."""
        self.media_timeouts = (20.0, 30.0)
        """Meta ends a connected call with no media from the business within the first
        seconds of it, or none for the second mid-call (Meta's 20 s and 30 s, unconfirmed in
        our summary of its documentation; tests shorten them)."""
        self.media_ended: list[tuple[str, int]] = []
        """The calls Meta ended for want of the business's media (wacid, Meta's code)."""
        self.told: list[tuple[str, int]] = []
        """Every webhook Meta sent by itself: its field, the bridge's HTTP status."""
        self._sending: set[asyncio.Task[None]] = set()
        """Meta's own webhooks and media watches in progress (owned, cancelled at stop)."""
        self.before_connect_answer: Any = None
        """``async (call) -> None`` awaited before ``connect`` is answered (webhook races)."""

    @property
    def account(self) -> MetaAccount:
        """The app's first number's (:attr:`accounts`)."""
        return self.accounts[self.phone_number_id]

    @property
    def perms(self) -> MetaPermissions:
        """The app's first number's users' call permissions (Meta keeps them per
        business number and user: each :class:`MetaAccount` has its number's)."""
        return self.account.perms

    def _account(self, call: MetaCall) -> MetaAccount:
        return self.accounts[call.number or self.phone_number_id]

    @property
    def graph_url(self) -> str:
        return f"{self.url}/v23.0"

    def bridge_settings(self, verify_token: str = "verify-me") -> dict[str, Any]:
        return {
            "engine": "cloudapi",
            "engine_url": self.graph_url,
            "engine_token": self.token,
            "cloudapi_phone_number_id": self.phone_number_id,
            "cloudapi_app_secret": self.app_secret,
            "cloudapi_verify_token": verify_token,
        }

    def build(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v23.0/{pnid}/calls", self.calls_endpoint)
        app.router.add_post("/v23.0/{pnid}/messages", self.messages_endpoint)
        app.router.add_get("/v23.0/{pnid}/call_permissions", self.call_permissions_endpoint)
        app.router.add_get("/v23.0/{pnid}", self.number_endpoint)
        app.router.add_route("*", "/v23.0/{pnid}/settings", self.settings_endpoint)
        app.router.add_get("/whatsapp_business/attachments/", self.media.download)
        return app

    async def start(self) -> None:
        await super().start()
        self.media.base_url = self.url
        self.media.tokens = set(self.numbers.values())

    def number_fields(self, phone_number_id: str) -> dict[str, str]:
        """The ``cloudapi`` block of ``POST /numbers`` for one of this app's numbers."""
        return {
            "phoneNumberID": phone_number_id,
            "accessToken": self.numbers[phone_number_id],
            "appSecret": self.app_secret,
            "verifyToken": f"verify-{phone_number_id}",
            "graphURL": self.graph_url,
        }

    def add_number(self, phone_number_id: str, token: str, phone: str = "15550783000") -> None:
        """Another business number of this app, with its own token, settings and standing."""
        self.numbers[phone_number_id] = token
        self.accounts[phone_number_id] = MetaAccount(phone)
        self.media.tokens.add(token)

    def _check_number(self, request: web.Request) -> web.Response | None:
        # Meta checks the token first (190), then that the node exists for it (100).
        token = self.numbers.get(request.match_info["pnid"])
        presented = request.headers.get("Authorization", "")
        if presented not in {f"Bearer {t}" for t in self.numbers.values()}:
            return meta_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if token is None or presented != f"Bearer {token}":
            return meta_error(400, 100, "Unsupported post request. Object does not exist")
        return None

    async def settings_endpoint(self, request: web.Request) -> web.Response:
        """``GET``/``POST /{PHONE_NUMBER_ID}/settings`` (:mod:`.cloudapi_account`); a change
        taken is told with Meta's ``account_settings_update`` webhook, as Meta tells it."""
        refusal = self._check_number(request)
        if refusal is not None:
            return refusal
        pnid = request.match_info["pnid"]
        account = self.accounts[pnid]
        answer = await account.settings_endpoint(request)
        if request.method == "POST" and answer.status == 200:
            calling = json.loads(json.dumps(account.calling))
            self._later(self._tell(account.settings_changed(pnid, calling)))
        return answer

    def subscribe(self, client: Any) -> None:
        """The business's webhook subscription: where Meta's own webhooks go (each
        :meth:`post` of a test subscribes its client too)."""
        self.webhook_client = client

    async def _tell(self, body: dict[str, Any]) -> int | None:
        """Post a webhook Meta sends by itself (a settings change, a call's end) to the
        subscription: the bridge's HTTP status (0: it went away, Meta would retry later;
        ``None``: no subscription yet, the fake does not know where the business listens)."""
        client = self.webhook_client
        if client is None:
            return None
        field = body["entry"][0]["changes"][0]["field"]
        try:
            status = int((await self.post(client, body)).status)
        except (OSError, RuntimeError, ClientError):
            status = 0
        self.told.append((field, status))
        return status

    async def number_endpoint(self, request: web.Request) -> web.Response:
        """``GET /{PHONE_NUMBER_ID}``: the number's node (what a token check reads); ``GET
        /{MEDIA_ID}``: a media asset's fresh URL (:mod:`.cloudapi_media`)."""
        if request.match_info["pnid"] in self.media.assets:
            return self.media.node(request)
        refusal = self._check_number(request)
        if refusal is not None:
            return refusal
        return web.json_response({"id": request.match_info["pnid"]})

    def _refuse(self, request: web.Request) -> web.Response | None:
        return self._check_number(request)

    async def messages_endpoint(self, request: web.Request) -> web.Response:
        refusal = self._refuse(request)
        if refusal is not None:
            return refusal
        try:
            body = await request.json()
        except ValueError:
            return meta_error(400, 100, "Invalid JSON")
        self.actions.append({"edge": "messages", **body})
        self.action_numbers.append(request.match_info["pnid"])
        return await self.accounts[request.match_info["pnid"]].perms.messages_endpoint(body)

    async def call_permissions_endpoint(self, request: web.Request) -> web.Response:
        refusal = self._refuse(request)
        if refusal is not None:
            return refusal
        unknown = sorted(set(request.query) - {"user_wa_id", "recipient"})
        wa_id, problem = addressee(dict(request.query), "user_wa_id")
        if unknown or problem:
            name = unknown[0] if unknown else "user_wa_id"
            return meta_error(400, 100, f"(#100) The parameter {name} is invalid or missing")
        self.permission_reads += 1
        return web.json_response(self.accounts[request.match_info["pnid"]].perms.read(wa_id))

    def _peer(self, account: MetaAccount) -> MetaPeer | MetaSdesPeer:
        """The user's media for a call on a number: DTLS, or SDES as its settings say."""
        if account.key_exchange == "SDES":
            return MetaSdesPeer()
        return MetaPeer(self.user_tone_hz)

    def _wacid(self) -> str:
        # uuid4, not ``random``: unique even where a test seeds ``random`` (Hypothesis does).
        return "wacid.HBgL" + uuid.uuid4().hex[:24].upper()

    async def calls_endpoint(self, request: web.Request) -> web.Response:
        refusal = self._check_number(request)
        if refusal is not None:
            return refusal
        try:
            body = await request.json()
        except ValueError:
            return meta_error(400, 100, "Invalid JSON")
        self.actions.append(body)
        self.action_numbers.append(request.match_info["pnid"])
        if body.get("messaging_product") != "whatsapp":
            return meta_error(400, 100, "(#100) The parameter messaging_product is required.")
        account = self.accounts[request.match_info["pnid"]]
        session = body.get("session")
        if isinstance(session, dict):
            refusal = _session_refusal(str(session.get("sdp", "")), account.key_exchange)
            if refusal is not None:
                self.refused.append(body)
                return refusal
        action = body.get("action")
        unknown = sorted(set(body) - ACTION_PARAMS.get(str(action), set(body)))
        if unknown:
            return meta_error(400, 100, f"(#100) Param {unknown[0]} is not a valid parameter")
        standing = account.refusal(str(action))
        if standing is not None:
            return standing
        failure = self.fail_next.pop(str(action), None)
        if failure is not None:  # the next such action fails as Meta fails it
            code, message = failure
            return meta_error(400, code, f"(#{code}) {message}")
        bad_option = self.media.refusal(body)
        if bad_option is not None:
            return meta_error(400, 100, bad_option)
        opaque = body.get("biz_opaque_callback_data", "")
        if not isinstance(opaque, str) or len(opaque) > OPAQUE_MAX:  # connect's and accept's
            return meta_error(
                400, 100, f"(#100) biz_opaque_callback_data: a string of at most {OPAQUE_MAX}"
            )
        if action == "connect":
            return await self._connect(body, account, request.match_info["pnid"])
        call = self.meta_calls.get(str(body.get("call_id")))
        pnid = request.match_info["pnid"]
        if call is None or call.state == "ended" or (call.number or self.phone_number_id) != pnid:
            # (a call of another of the app's numbers is not one Meta knows on this one)
            return meta_error(400, 138001, "(#138001) Call not found or already ended")
        call.actions.append(str(action))
        problem = _action_problem(str(action), call, session)
        if problem:  # Meta's "invalid parameter" (138002 is the number's call limit)
            return meta_error(400, 100, f"(#100) {problem}")
        if action == "pre_accept":
            sdp = session["sdp"]
            call.pre_accept_sdp = sdp
            call.pre_accept_at = time.monotonic()
            await call.peer.apply_answer(sdp)
        elif action == "accept":
            if call.pre_accept_sdp is not None and session["sdp"] != call.pre_accept_sdp:
                return meta_error(400, 100, "(#100) accept SDP differs from pre_accept's")
            if call.pre_accept_sdp is None:
                call.pre_accept_sdp = session["sdp"]
                await call.peer.apply_answer(session["sdp"])
            call.accepted = True
            call.state = "active"
            self._connected(call)
            self._account(call).perms.any_call_connected(call.user)
            self.media.heard(call.wacid, body)
        elif action in ("reject", "terminate"):
            call.state = "ended"
            # Meta's media server drops the call's media as it takes the action: the bridge
            # sees its DTLS close before this answer (and must not count it as a failure).
            await call.peer.drop()
            # ... and reports the end with a terminate webhook, as in every case.
            self._later(self._report_end(call, "REJECTED" if action == "reject" else "COMPLETED"))
            self._missed(call)
        else:
            return meta_error(400, 100, f"(#100) Invalid action {action!r}")
        return web.json_response({"success": True})

    async def _connect(
        self, body: dict[str, Any], account: MetaAccount, number: str
    ) -> web.Response:
        to, problem = addressee(body)  # ``to`` (digits) or ``recipient`` (a BSUID)
        if problem:
            return meta_error(400, 100, f"(#100) {problem}")
        live = sum(c.state != "ended" for c in self.meta_calls.values())
        if live >= self.concurrent_calls:
            return meta_error(400, 138002, "(#138002) Concurrent calls limit reached")
        if to in self.no_permission:
            return meta_error(
                400,
                138006,
                "(#138006) No approved call permission from the recipient",
            )
        refusal = account.perms.connect_refusal(to)
        if refusal is not None:
            return refusal
        session = body.get("session") or {}
        if session.get("sdp_type") != "offer":
            return meta_error(400, 100, "(#100) session.sdp_type must be offer")
        codec = meta_choice(str(session.get("sdp", "")), ("opus", *account.additional_codecs))
        if codec is None:
            return meta_error(400, 100, "(#100) the SDP offer has no audio codec Meta accepts")
        peer = self._peer(account)
        answer = await peer.answer_offer(session["sdp"], codec)
        call = MetaCall(self._wacid(), to, "BUSINESS_INITIATED", peer, state="calling")
        peer.gate.unanswered = True  # no media until the user picks up (answer_event)
        call.pre_accept_sdp = answer  # Meta's answer, sent in the connect webhook
        call.offer_sdp = session["sdp"]
        call.opaque = str(body.get("biz_opaque_callback_data", ""))
        call.number = number
        self.meta_calls[call.wacid] = call
        self.media.heard(call.wacid, body)
        if self.before_connect_answer is not None:
            await self.before_connect_answer(call)
        return web.json_response({"messaging_product": "whatsapp", "calls": [{"id": call.wacid}]})

    # -- webhooks
    def envelope(
        self, *values: dict[str, Any], field: str = "calls", number: str | None = None
    ) -> dict[str, Any]:
        """A webhook body about ``number`` (a ``phone_number_id`` of this app; default: its
        first number)."""
        pnid = number or self.phone_number_id
        account = self.accounts.get(pnid)  # (a test may name a number the app does not have)
        phone = account.phone if account is not None else self.account.phone
        changes = [
            {
                "field": field,
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": phone, "phone_number_id": pnid},
                    **value,
                },
            }
            for value in values
        ]
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA123", "changes": changes}],
        }

    async def post(self, client: Any, body: Any, *, signature: str | None = "sign") -> Any:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if signature == "sign":
            headers[SIGNATURE_HEADER] = sign(self.app_secret, raw)
        elif signature is not None:
            headers[SIGNATURE_HEADER] = signature
        self.webhook_client = client  # Meta's own webhooks go there from now on (subscribe)
        return await client.post("/engine/webhook", data=raw, headers=headers)

    def _later(self, work: Any) -> None:
        """Run ``work`` (a webhook Meta sends after answering a request) as an owned task."""
        task = asyncio.ensure_future(work)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _report_end(self, call: MetaCall, status: str, **extra: Any) -> None:
        """Meta's terminate webhook for a call the business ended (``terminate``, or
        ``reject`` of a user's call), after its Graph answer, or that Meta ended itself: with
        the connected seconds when the call had connected."""
        if call.connected_at is not None:
            end = time.time()
            extra.update(
                start_time=str(int(call.connected_at)),
                end_time=str(int(end)),
                duration=int(end - call.connected_at),
            )
        if call.direction == "BUSINESS_INITIATED":
            extra["biz_opaque_callback_data"] = call.opaque
        body = self.envelope(
            self.terminate_event(call, status, **extra), number=call.number or None
        )
        answer = await self._tell(body)
        if answer is not None:
            self.ends_reported.append((call.wacid, answer))

    def _missed(self, call: MetaCall) -> None:
        """A business's call to the user ended without connecting (unanswered, rejected, or
        given up): one more in a row for the user; at the fourth Meta revokes their
        permission and says so with an automatic reject (a ``messages`` webhook it sends)."""
        if call.direction != "BUSINESS_INITIATED" or call.connected_at is not None or call.missed:
            return
        call.missed = True
        revoked = self._account(call).perms.unanswered_call(call.user)
        if revoked is not None:
            number = call.number or None
            self._later(self._tell(self.envelope(revoked, field="messages", number=number)))

    def _connected(self, call: MetaCall) -> None:
        """The call connected (its ``accept``, or the user answered ours): its seconds count
        from now, and Meta watches the business's media on it (:meth:`_watch_media`)."""
        if call.connected_at is not None:
            return  # said again (a test's answer event delivered twice)
        call.connected_at = time.time()
        call.peer.gate.unanswered = False  # Meta's media flows from now on
        self._later(self._watch_media(call))

    async def _watch_media(self, call: MetaCall) -> None:
        """Meta ends a connected call the business sends no media on: none within
        :attr:`media_timeouts`' first seconds (138023, accepted but no media), or none for
        its second mid-call (138021, media receive timeout)."""
        start_s, gap_s = self.media_timeouts
        started = time.monotonic()
        gate = call.peer.gate
        while call.state != "ended":
            now = time.monotonic()
            if gate.last_rtp_at is None and now - started > start_s:
                code, message = 138023, "Call accepted but no media received"
            elif gate.last_rtp_at is not None and now - max(gate.last_rtp_at, started) > gap_s:
                code, message = 138021, "Media receive timeout"
            else:
                await asyncio.sleep(min(start_s, gap_s) / 5)
                continue
            await call.peer.drop()
            error = {"code": code, "message": message, "error_data": {"details": message}}
            self.media_ended.append((call.wacid, code))
            await self._report_end(call, "FAILED", errors=[error])
            return

    async def user_offer(
        self, user: str, number: str | None = None
    ) -> tuple[MetaCall, dict[str, Any]]:
        """A WhatsApp user calls the business number ``number`` (default: the app's first):
        the call and its connect event (not sent)."""
        account = self.accounts[number or self.phone_number_id]
        peer = self._peer(account)
        offer = await peer.offer(account.additional_codecs)
        call = MetaCall(self._wacid(), user, "USER_INITIATED", peer, number=number or "")
        peer.gate.unanswered = True  # no media until the business's accept
        self.meta_calls[call.wacid] = call
        account.perms.user_called(user)  # any inbound call opens or refreshes the window
        event = {
            "calls": [
                {
                    "id": call.wacid,
                    **named("from", user),  # a user who shows no phone: from_user_id
                    "to": account.phone,
                    "event": "connect",
                    "timestamp": str(int(time.time())),
                    "direction": "USER_INITIATED",
                    "session": {"sdp_type": "offer", "sdp": offer},
                }
            ],
            "contacts": [contact(user)],
        }
        return call, event

    async def user_calls(
        self,
        client: Any,
        user: str = "15550001111",
        number: str | None = None,
        *,
        companion: bool = False,
    ) -> MetaCall:
        """``user`` calls the business number ``number`` (default: the app's first), from
        their phone or from a ``companion`` device; Meta's callback grant follows
        (:meth:`_callback_grant`)."""
        call, event = await self.user_offer(user, number)
        resp = await self.post(client, self.envelope(event, number=number))
        assert resp.status == 200, await resp.text()
        call.offered_at = time.monotonic()
        await self._callback_grant(client, user, number, companion)
        return call

    async def user_presses_call_button(self, client: Any, user: str) -> MetaCall:
        """``user`` starts a call from the business's call button: the connect carries the
        button's payload as ``cta_payload`` (none once it expired)."""
        call, event = await self.user_offer(user)
        payload = self.perms.pressed_button(user)
        if payload:
            event["calls"][0]["cta_payload"] = payload
        resp = await self.post(client, self.envelope(event))
        assert resp.status == 200, await resp.text()
        await self._callback_grant(client, user, None, False)
        return call

    async def _callback_grant(
        self, client: Any, user: str, number: str | None, companion: bool
    ) -> None:
        """Meta's own webhook after a user's call to a number whose settings have
        ``callback_permission_status: ENABLED`` (answered or missed): a 7-day grant, an
        automatic ``call_permission_reply`` in a ``messages`` webhook. None from a companion
        device (Meta supports no callback permission there), none over a permanent one."""
        account = self.accounts[number or self.phone_number_id]
        if account.calling.get("callback_permission_status") != "ENABLED" or companion:
            return
        if account.perms.user(user).status == "permanent" and account.perms.permitted(user):
            return
        grant = self.envelope(account.perms.callback_grant(user), field="messages", number=number)
        self.subscribe(client)
        assert await self._tell(grant) == 200
        self.grants_sent += 1

    def terminate_event(self, call: MetaCall, status: str = "COMPLETED", **extra: Any) -> dict:
        assert status in TERMINATE_STATUSES, f"Meta sends no terminate status {status!r}"
        self._missed(call)
        business = self._account(call).phone
        if call.direction == "USER_INITIATED":
            ends = {**named("from", call.user), "to": business}
        else:
            ends = {"from": business, **named("to", call.user)}
        item = {
            "id": call.wacid,
            **ends,
            "event": "terminate",
            "direction": call.direction,
            "timestamp": str(int(time.time())),
            "status": status,
            **extra,
        }
        call.state = "ended"
        return {"calls": [item]}

    def status_event(self, call: MetaCall, status: str) -> dict:
        assert status in CALL_STATUSES, f"Meta sends no call status {status!r}"
        if status == "REJECTED":
            self._missed(call)
        item = {
            "id": call.wacid,
            "timestamp": str(int(time.time())),
            "type": "call",
            "status": status,
            **named("recipient_id", call.user),
            "biz_opaque_callback_data": getattr(call, "opaque", ""),
        }
        return {"statuses": [item]}

    def answer_event(self, call: MetaCall) -> dict:
        """The user picked up our call (Meta's connect webhook with its answer): it counts
        as a connected call with the user."""
        self._account(call).perms.call_connected(call.user)
        self._connected(call)
        return {
            "calls": [
                {
                    "id": call.wacid,
                    "from": self._account(call).phone,  # the business called, the user answers
                    **named("to", call.user),
                    "event": "connect",
                    "direction": "BUSINESS_INITIATED",
                    "timestamp": str(int(time.time())),
                    "session": {"sdp_type": "answer", "sdp": call.pre_accept_sdp},
                    "biz_opaque_callback_data": getattr(call, "opaque", ""),
                }
            ]
        }

    async def stop(self) -> None:
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        for call in self.meta_calls.values():
            await call.peer.close()
        await super().stop()
