"""The settings, in groups: each a frozen dataclass that validates itself.

A component receives only its group (the engine its ``EngineSettings``, the WebRTC session
its ``MediaSettings`` and ``IceSettings`` …). Field names are unique across groups: each is
also the name of its environment variable (``BRIDGE_`` + upper case) and CLI flag.

(Over 400 lines on purpose: the whole configuration surface, with its checks, reads in one
place.)
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from ..http import HostAllow, url_parts

GRAPH_URL = "https://graph.facebook.com/v23.0"
"""The Graph API base (with its version) the cloudapi engine uses by default."""


class ConfigError(ValueError):
    """A setting has a bad value; the message names it and says what is expected."""


class EngineKind(enum.StrEnum):
    """Which WhatsApp engine carries the call leg."""

    SIM = "sim"
    ZUCKZAPGO = "zuckzapgo"
    WADIAL = "wadial"
    CLOUDAPI = "cloudapi"


class CloudSignalling(enum.StrEnum):
    """How the Cloud API engine signals calls with Meta (one number is one or the other)."""

    GRAPH = "graph"
    SIP = "sip"


class CloudMedia(enum.StrEnum):
    """The Cloud API engine's media leg to Meta."""

    DTLS = "dtls"
    SDES = "sdes"


class SimPeer(enum.StrEnum):
    """What the simulated remote party sends back."""

    ECHO = "echo"
    TONE = "tone"
    SILENCE = "silence"


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class IcePolicy(enum.StrEnum):
    ALL = "all"
    RELAY = "relay"


class ShutdownCalls(enum.StrEnum):
    """What SIGTERM does to live calls (``auto``: ``handover`` with a shared call directory,
    else ``hangup``; resolved when the settings are built)."""

    AUTO = "auto"
    HANGUP = "hangup"
    KEEP = "keep"
    HANDOVER = "handover"


class AgentFallback(enum.StrEnum):
    """What a call does when its model agent cannot be reached again."""

    KEEP = "keep"
    MESSAGE = "message"
    HUMAN = "human"
    HANGUP = "hangup"


class RecordingSetting(enum.StrEnum):
    """Whether the default number's calls may be recorded (``api``: the operator leaves it to
    ``PATCH /numbers/default {"recording"}``, allowed until that says otherwise)."""

    API = "api"
    ALLOWED = "allowed"
    FORBIDDEN = "forbidden"


class OrphanCalls(enum.StrEnum):
    """What start-up does to engine calls no live call of this bridge owns."""

    HANGUP = "hangup"
    KEEP = "keep"


def _opt(
    default: Any,
    help: str,
    *,
    secret: bool = False,
    limits: tuple[float, float | None] | None = None,
    unit: str = "",
) -> Any:
    """A setting: its default, its help, and for a number the range it keeps (``limits``:
    lowest and highest allowed, ``None`` for no highest), checked for every group by
    :meth:`_Group.check_limits` and shown by ``--help`` and the guide's table."""
    metadata: dict[str, Any] = {"help": help, "secret": secret}
    if limits is not None:
        metadata |= {"limits": limits, "unit": unit}
    return field(default=default, metadata=metadata)


def number_text(value: float) -> str:
    """``600``, ``0.5``: a bound as the guide and the errors show it."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def env_name(name: str) -> str:
    return "BRIDGE_" + name.upper()


class _Group:
    """What every group shares: enum coercion, and a one-line error naming the setting."""

    def __post_init__(self) -> None:
        # Accept plain strings for enum settings (programmatic construction, tests).
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(f.default, enum.Enum) and not isinstance(value, enum.Enum):
                object.__setattr__(self, f.name, type(f.default)(value))

    def bad(self, name: str, why: str) -> ConfigError:
        value = getattr(self, name)
        if self.__dataclass_fields__[name].metadata["secret"]:  # type: ignore[attr-defined]
            return ConfigError(f"{env_name(name)} (its value not shown): {why}")
        shown = value.value if isinstance(value, enum.Enum) else value  # the word as written
        return ConfigError(f"{env_name(name)}={shown!r}: {why}")

    def paired(self, *names: str) -> None:
        """Settings that only mean something together: one set alone is refused."""
        given = [n for n in names if getattr(self, n)]
        if given and len(given) < len(names):
            missing = " and ".join(env_name(n) for n in names if n not in given)
            raise ConfigError(f"{env_name(given[0])} is set without {missing}")

    def between(self, name: str, low: float, high: float | None, unit: str = "") -> None:
        value = getattr(self, name)
        if high is None and value < low:
            raise self.bad(name, f"must be at least {number_text(low)}{unit}")
        if high is not None and not low <= value <= high:
            raise self.bad(
                name, f"must be between {number_text(low)} and {number_text(high)}{unit}"
            )

    def check_limits(self) -> None:
        """Each number setting within the range its field declares."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if "limits" in f.metadata:
                low, high = f.metadata["limits"]
                self.between(f.name, low, high, f.metadata["unit"])

    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first bad value: a number out of its declared
        range, then what the group checks itself."""
        self.check_limits()
        self.check()

    def check(self) -> None:
        """The group's own checks (forms, settings that go together)."""


_STUN_RE = re.compile(r"^stuns?:[^\s:]+(:\d{1,5})?$")
_TURN_RE = re.compile(r"^turns?:[^\s:?]+(:\d{1,5})?(\?transport=(udp|tcp))?$")
_ORIGIN_RE = re.compile(r"^https?://[^/\s]+$")
_DNS_NAME = r"[A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?)*"
"""A DNS host name: dot-separated labels (RFC 1123 §2.1)."""


def _url_ok(url: str, *schemes: str) -> bool:
    """Whether ``url`` is one of ``schemes`` with a host, and readable the way every client of
    the bridge reads it (``http.url_parts``: a port that is a number 0-65535, a whole IPv6
    host) with no white space: a pattern on its start took ``http://h:port/`` and ``http://``."""
    parts = url_parts(url)
    return (
        parts is not None
        and parts.scheme in schemes
        and bool(parts.hostname)
        and not any(c.isspace() for c in url)
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerSettings(_Group):
    """The HTTP server: where it listens, who may call it, logs."""

    host: str = _opt("127.0.0.1", "listen address")
    port: int = _opt(8080, "listen port", limits=(1, 65535))
    api_tokens: tuple[str, ...] = _opt((), "comma-separated API tokens", secret=True)
    insecure_no_auth: bool = _opt(
        False, "allow a non-loopback BRIDGE_HOST with no API token (unsafe)"
    )
    rate_limit: float = _opt(
        2.0,
        "requests per second per client (token, else address) on /call/make and /offer (above 0)",
    )
    rate_burst: int = _opt(20, "burst allowed above BRIDGE_RATE_LIMIT", limits=(1, None))
    cors_origins: tuple[str, ...] = _opt((), "origins allowed by CORS (empty: none)")
    metrics_token: str = _opt("", "token /metrics requires (empty: /metrics is open)", secret=True)
    body_timeout: float = _opt(
        10.0,
        "seconds a client has to send a whole request body (else 408)",
        limits=(0.5, 600),
        unit=" seconds",
    )
    log_format: LogFormat = _opt(LogFormat.TEXT, "log format: text or json")
    log_level: LogLevel = _opt(LogLevel.INFO, "log level: debug, info, warning, error")
    uvloop: bool = _opt(True, "run on uvloop when it is installed (off: asyncio's own loop)")

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_tokens)

    def check(self) -> None:
        if not self.host:
            raise self.bad("host", "must not be empty")
        if self.rate_limit <= 0:
            raise self.bad("rate_limit", "must be above 0")
        for origin in self.cors_origins:
            if not _ORIGIN_RE.match(origin):
                raise ConfigError(
                    f"BRIDGE_CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port])"
                )
        if not self.api_tokens and not _is_loopback(self.host) and not self.insecure_no_auth:
            raise ConfigError(
                f"BRIDGE_HOST={self.host!r}: refusing to listen beyond loopback with no "
                "BRIDGE_API_TOKENS; set a token or pass --insecure-no-auth"
            )


@dataclass(frozen=True)
class CallSettings(_Group):
    """Call control: capacity, time limits, shutdown policy, how long ended calls are kept."""

    max_calls: int = _opt(
        200, "live calls before /call/make and /offer answer 503", limits=(1, None)
    )
    connect_timeout: float = _opt(
        20.0, "seconds a WebRTC session may take to connect", limits=(0.5, 3600), unit=" seconds"
    )
    media_timeout: float = _opt(
        10.0,
        "seconds without RTP before a WebRTC session is failed (one whose browser sends: a "
        "recvonly listener's is ended by ICE consent)",
        limits=(0.5, 3600),
        unit=" seconds",
    )
    ring_timeout: float = _opt(
        60.0, "seconds a call may ring before it is given up", limits=(0.5, 3600), unit=" seconds"
    )
    max_call_duration: float = _opt(
        14_400.0,
        "seconds an answered call may last (0: no limit)",
        limits=(0, None),
        unit=" seconds",
    )
    shutdown_calls: ShutdownCalls = _opt(
        ShutdownCalls.AUTO,
        "at shutdown: auto (handover with a shared BRIDGE_DIRECTORY, else hangup), "
        "hangup (end calls), keep (leave WhatsApp calls up, ended here), or "
        "handover (with a shared directory: move calls on ZuckZapGo/WADial to another worker "
        "with room, serve the others until they end, at most BRIDGE_DRAIN_TIMEOUT; what "
        "cannot move or wait is hung up)",
    )
    drain_timeout: float = _opt(
        7200.0,
        "seconds a worker draining with BRIDGE_SHUTDOWN_CALLS=handover keeps serving the calls "
        "that cannot move (Cloud API, or with a phone on a trunk) before it hangs them up",
        limits=(0, 86_400),
        unit=" seconds",
    )
    max_participants: int = _opt(
        4, "browser participants one call may have (agent, supervisors)", limits=(1, 32)
    )
    max_routes: int = _opt(
        100,
        "desk routes one tenant may have (the service's own count as one tenant's); POST /routes "
        "past it answers 409 too_many_routes",
        limits=(1, 10_000),
    )
    orphan_calls: OrphanCalls = _opt(
        OrphanCalls.HANGUP,
        "at start-up: hangup (end engine calls no live call of this bridge owns: answered "
        "calls and outbound calls; ringing inbound calls are offered as new calls) or keep",
    )
    ended_call_ttl: float = _opt(
        900.0, "seconds an ended call stays readable", limits=(600, None), unit=" seconds"
    )
    stats_interval: float = _opt(
        5.0,
        "seconds between RTP/RTCP quality samples per session",
        limits=(0.2, 300),
        unit=" seconds",
    )
    call_reports: bool = _opt(
        True,
        "follow every call: its timeline a second, the media watchdog (call.media_warning), "
        "its record at the end (GET /call/{callID}/report) and call.report after call.ended",
    )
    media_warning_after: float = _opt(
        3.0,
        "seconds a side of an answered call may send (next to) no audio packets, or packets "
        "of digital silence, before call.media_warning",
        limits=(1, 600),
        unit=" seconds",
    )


@dataclass(frozen=True)
class EngineSettings(_Group):
    """The WhatsApp engine the call legs go through."""

    engine: EngineKind = _opt(EngineKind.SIM, "WhatsApp engine: sim, zuckzapgo, wadial, cloudapi")
    engine_url: str = _opt(
        "", "the engine's base URL (cloudapi: the Graph API with its version, " + GRAPH_URL + ")"
    )
    engine_token: str = _opt(
        "", "the engine's token (cloudapi: the Graph API access token)", secret=True
    )
    engine_session: str = _opt("", "WADial session id (BRIDGE_ENGINE=wadial)")
    engine_poll_interval: float = _opt(
        1.0, "seconds between polls of the engine's call list", limits=(0.05, 60), unit=" seconds"
    )
    engine_reconnect_window: float = _opt(
        30.0,
        "seconds the engine media keeps reconnecting after a drop while the engine may still "
        "have the call (backoff 0.2 s doubling, at most 2 s)",
        limits=(0, 3600),
        unit=" seconds",
    )
    cloudapi_phone_number_id: str = _opt(
        "", "Cloud API: the business number's PHONE_NUMBER_ID (BRIDGE_ENGINE=cloudapi)"
    )
    cloudapi_app_secret: str = _opt(
        "", "Cloud API: the Meta app secret that signs webhooks (X-Hub-Signature-256)", secret=True
    )
    cloudapi_verify_token: str = _opt(
        "", "Cloud API: the token Meta echoes when it verifies the webhook URL", secret=True
    )
    cloudapi_signalling: CloudSignalling = _opt(
        CloudSignalling.GRAPH,
        "Cloud API signalling: graph (webhooks + Graph API) or sip (SIP over TLS, BRIDGE_SIP_*)",
    )
    cloudapi_media: CloudMedia = _opt(
        CloudMedia.DTLS,
        "Cloud API media leg: dtls (ICE + DTLS-SRTP, WebRTC) or sdes (SDES-SRTP, a=crypto)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.engine is EngineKind.CLOUDAPI and not self.engine_url:
            object.__setattr__(self, "engine_url", GRAPH_URL)

    @property
    def sip(self) -> bool:
        """Meta's SIP road: the Graph settings are not needed (``SipSettings`` are)."""
        return (
            self.engine is EngineKind.CLOUDAPI and self.cloudapi_signalling is CloudSignalling.SIP
        )

    def check(self) -> None:
        # The default number's engine-specific settings mean nothing with another engine: set
        # while BRIDGE_ENGINE is forgotten (sim, its default) they were taken without a word.
        own = {
            EngineKind.CLOUDAPI: (
                "cloudapi_phone_number_id",
                "cloudapi_app_secret",
                "cloudapi_verify_token",
                "cloudapi_signalling",
                "cloudapi_media",
            ),
            EngineKind.WADIAL: ("engine_session",),
        }
        for kind, names in own.items():
            for name in names if self.engine is not kind else ():
                default = self.__dataclass_fields__[name].default
                if getattr(self, name) != default:
                    raise ConfigError(
                        f"{env_name(name)} is set, but BRIDGE_ENGINE={self.engine}: it is "
                        f"read with BRIDGE_ENGINE={kind} only"
                    )
        if self.engine is EngineKind.CLOUDAPI and not self.sip:
            for name in (
                "engine_token",
                "cloudapi_phone_number_id",
                "cloudapi_app_secret",
                "cloudapi_verify_token",
            ):
                if not getattr(self, name):
                    raise ConfigError(f"{env_name(name)} is required with BRIDGE_ENGINE=cloudapi")
            if not re.fullmatch(r"[0-9]{1,32}", self.cloudapi_phone_number_id):
                raise self.bad("cloudapi_phone_number_id", "must be the number's numeric id")
        if self.engine is not EngineKind.SIM and not _url_ok(self.engine_url, "http", "https"):
            raise self.bad(
                "engine_url", f"an http(s):// URL is required with BRIDGE_ENGINE={self.engine}"
            )
        if self.engine is EngineKind.WADIAL and not self.engine_session:
            raise self.bad(
                "engine_session", "the WADial session id is required with BRIDGE_ENGINE=wadial"
            )


@dataclass(frozen=True)
class IceSettings(_Group):
    """STUN/TURN for clients and for the bridge's own ICE agent."""

    stun_urls: tuple[str, ...] = _opt(
        ("stun:stun.l.google.com:19302",),
        "STUN servers advertised to clients (empty: none)",
    )
    server_stun_urls: tuple[str, ...] = _opt((), "STUN servers the bridge itself gathers with")
    ice_addresses: tuple[str, ...] = _opt(
        (),
        "addresses of this machine to gather host candidates on, each checked at start (empty: "
        "all non-loopback)",
    )
    public_ip: str = _opt("", "address advertised in the bridge's candidates behind 1:1 NAT")
    ice_policy: IcePolicy = _opt(IcePolicy.ALL, "iceTransportPolicy for clients: all or relay")
    turn_urls: tuple[str, ...] = _opt((), "TURN URLs advertised to clients")
    turn_secret: str = _opt("", "TURN REST API shared secret (ephemeral credentials)", secret=True)
    turn_username: str = _opt("", "static TURN username (set with BRIDGE_TURN_PASSWORD)")
    turn_password: str = _opt(
        "", "static TURN password (set with BRIDGE_TURN_USERNAME)", secret=True
    )
    turn_ttl: int = _opt(
        3600, "lifetime of ephemeral TURN credentials, seconds", limits=(60, None), unit=" seconds"
    )
    turn_provider: str = _opt(
        "", "none, static, rest-secret, http or package.module:Class (empty: from the above)"
    )
    turn_http_url: str = _opt("", "credential service returning iceServers (provider http)")
    turn_http_token: str = _opt("", "bearer token for BRIDGE_TURN_HTTP_URL", secret=True)
    rtp_ports: str = _opt(
        "10000-20000",
        "UDP port range for media (ICE host and TURN sockets), outside the kernel's ephemeral "
        "range (empty: the OS's ephemeral ports)",
    )
    ice_gather_timeout: float = _opt(
        0.7,
        "seconds the bridge waits for STUN/TURN candidates before answering",
        limits=(0.05, 10),
        unit=" seconds",
    )
    udp_poll: bool = _opt(
        True,
        "read the media sockets once per 20 ms media tick while datagrams come faster than "
        "the ticks, instead of waking for each one (off: a wake-up per datagram)",
    )

    def check(self) -> None:
        if self.rtp_ports:
            m = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", self.rtp_ports)
            if not m or not 1024 <= int(m.group(1)) <= int(m.group(2)) <= 65535:
                raise self.bad(
                    "rtp_ports", "expected a range first-last within 1024-65535, e.g. 10000-20000"
                )
        for url in self.stun_urls:
            if not _STUN_RE.match(url):
                raise ConfigError(f"BRIDGE_STUN_URLS: {url!r} is not a stun: URL")
        for url in self.server_stun_urls:
            if not _STUN_RE.match(url):
                raise ConfigError(f"BRIDGE_SERVER_STUN_URLS: {url!r} is not a stun: URL")
        for url in self.turn_urls:
            if not _TURN_RE.match(url):
                raise ConfigError(f"BRIDGE_TURN_URLS: {url!r} is not a turn: or turns: URL")
        for addr in self.ice_addresses:
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise ConfigError(f"BRIDGE_ICE_ADDRESSES: {addr!r} is not an IP address") from None
        if self.public_ip:
            try:
                ipaddress.ip_address(self.public_ip)
            except ValueError:
                raise self.bad("public_ip", "must be an IP address") from None
        self._validate_turn()

    def _validate_turn(self) -> None:
        kind = self.turn_provider
        self.paired("turn_username", "turn_password")
        if self.turn_urls and not (
            self.turn_secret or (self.turn_username and self.turn_password) or kind
        ):
            raise ConfigError(
                "BRIDGE_TURN_URLS: needs BRIDGE_TURN_SECRET or BRIDGE_TURN_USERNAME and "
                "BRIDGE_TURN_PASSWORD"
            )
        if kind in ("static", "rest-secret") and not self.turn_urls:
            raise self.bad("turn_provider", "needs BRIDGE_TURN_URLS")
        if kind == "rest-secret" and not self.turn_secret:
            raise self.bad("turn_provider", "rest-secret needs BRIDGE_TURN_SECRET")
        if kind == "static" and not (self.turn_username and self.turn_password):
            raise self.bad(
                "turn_provider", "static needs BRIDGE_TURN_USERNAME and BRIDGE_TURN_PASSWORD"
            )
        if kind == "http" and not self.turn_http_url:
            raise self.bad("turn_provider", "http needs BRIDGE_TURN_HTTP_URL")
        if kind not in ("", "none", "static", "rest-secret", "http") and not re.match(
            r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", kind
        ):
            raise self.bad(
                "turn_provider", "expected none, static, rest-secret, http or module:Class"
            )
        if self.turn_http_url and not _url_ok(self.turn_http_url, "http", "https"):
            raise self.bad("turn_http_url", "must be an http(s):// URL")
        has_turn = bool(self.turn_urls or self.turn_http_url) or kind not in ("", "none")
        if self.ice_policy is IcePolicy.RELAY and not has_turn:
            raise self.bad(
                "ice_policy", "relay needs a TURN server (BRIDGE_TURN_URLS or a TURN provider)"
            )


@dataclass(frozen=True)
class MediaSettings(_Group):
    """How the bridge encodes the browser's downlink."""

    opus_bitrate: int = _opt(
        40_000,
        "downlink Opus bitrate in SILK, bit/s: under RED, or without the clean-link CELT "
        "setting (lowered to the browser's maxaveragebitrate)",
        limits=(6_000, 128_000),
        unit=" bit/s",
    )
    opus_complexity: int = _opt(
        5,
        "downlink Opus complexity 0-10 in SILK (CPU vs quality: docs/quality.md has the curve)",
        limits=(0, 10),
    )
    opus_fec: bool = _opt(
        True, "downlink Opus in-band FEC, planned for the loss the browser's RTCP reports"
    )
    opus_fec_bitrate: int = _opt(
        48_000,
        "downlink Opus bitrate while in-band FEC is on, bit/s (FEC data takes bits from the "
        "frame; lowered to the browser's maxaveragebitrate)",
        limits=(6_000, 128_000),
        unit=" bit/s",
    )
    opus_fec_complexity: int = _opt(
        8, "downlink Opus complexity 0-10 while in-band FEC is on", limits=(0, 10)
    )
    opus_celt_bitrate: int = _opt(
        72_000,
        "downlink Opus bitrate on a clean link, bit/s (0, or 6000-510000), coded in CELT "
        "(better than SILK at BRIDGE_OPUS_BITRATE for a third of its CPU: docs/quality.md); 0, "
        "DTX on, or a browser "
        "whose maxaveragebitrate is lower: SILK at BRIDGE_OPUS_BITRATE",
    )
    opus_celt_complexity: int = _opt(
        2, "downlink Opus complexity 0-10 on a clean link (CELT)", limits=(0, 10)
    )
    opus_dtx: bool = _opt(
        False,
        "downlink Opus DTX to every browser, also on quiet sound (libopus' DTX, in SILK); "
        "a browser that asks for it (usedtx=1) gets DTX on digital silence without this",
    )
    opus_uplink_dtx: bool = _opt(
        False,
        "ask browsers for Opus DTX (usedtx=1 in the answer): a silent microphone sends a "
        "packet every 400 ms instead of 50 a second; costs 0.1 PESQ-WB at 3 percent loss "
        "(docs/quality.md)",
    )
    opus_red: bool = _opt(
        True,
        "RED (RFC 2198) with browsers that offer it: taken from them, and sent to them while "
        "their reports show loss (the previous one or two frames again in each packet)",
    )
    opus_passthrough: bool = _opt(
        True,
        "Cloud API calls: forward WhatsApp's Opus to the agent's browser untouched while "
        "nothing else is mixed into what it hears (false: always decode and encode again)",
    )
    speech_events: bool = _opt(
        False, "call.speech.started/stopped events per side from a VAD (the 'vad' extra)"
    )

    def check(self) -> None:
        if self.opus_celt_bitrate:
            self.between("opus_celt_bitrate", 6_000, 510_000, " bit/s")


@dataclass(frozen=True)
class StorageSettings(_Group):
    """Files: recordings and assets, what playback may read or fetch, where forks may go."""

    data_dir: str = _opt("data", "where recordings and audio assets are stored")
    media_dir: str = _opt("media", "directory /call/play may read files from")
    play_url_allow: tuple[str, ...] = _opt((), "hosts /call/play may fetch audioUrl from")
    play_url_max_bytes: int = _opt(
        32 * 1024 * 1024,
        "largest audio /call/play fetches (audioUrl) or takes (audioBase64: its body may be as "
        "much base64 and 64 KiB) and largest audio asset uploaded",
        limits=(1024, 512 * 1024 * 1024),
        unit=" bytes",
    )
    play_url_timeout: float = _opt(
        10.0, "seconds to fetch an audioUrl", limits=(0.1, 600), unit=" seconds"
    )
    record_all: bool = _opt(False, "record every call from answer to end")
    recording_policy: RecordingSetting = _opt(
        RecordingSetting.API,
        "the default number's recording policy: allowed, forbidden (no recording of any kind), "
        "or api (PATCH /numbers/default decides; allowed until it does)",
    )
    fork_url_allow: tuple[str, ...] = _opt((), "hosts media forks may connect to (empty: none)")
    recording_retention_days: float = _opt(30.0, "days recordings are kept (above 0)")
    retention_sweep_interval: float = _opt(
        3600.0, "seconds between retention sweeps", limits=(1, 86_400), unit=" seconds"
    )
    numbers_file: str = _opt(
        "", "YAML file of tenants and numbers applied at start (secrets as ${ENV} references)"
    )

    def check(self) -> None:
        if self.recording_retention_days <= 0:
            raise self.bad("recording_retention_days", "must be positive")
        for name in ("play_url_allow", "fork_url_allow"):
            try:
                HostAllow(getattr(self, name))
            except ValueError as exc:
                raise self.bad(name, str(exc)) from None


@dataclass(frozen=True)
class SimSettings(_Group):
    """The simulated WhatsApp network (``BRIDGE_ENGINE=sim``)."""

    sim_peer: SimPeer = _opt(SimPeer.ECHO, "simulated remote party: echo, tone, silence")
    sim_answer_delay: float = _opt(
        0.5,
        "seconds the simulated callee rings before answering",
        limits=(0, None),
        unit=" seconds",
    )
    sim_echo_delay: float = _opt(
        0.3, "seconds before the simulated echo plays back", limits=(0, None), unit=" seconds"
    )
    sim_tone_hz: float = _opt(
        660.0, "frequency of the simulated peer's tone", limits=(20, 7900), unit=" Hz"
    )
    sim_hangup_after: float = _opt(
        0.0,
        "seconds after answer the simulated peer hangs up (0: never)",
        limits=(0, None),
        unit=" seconds",
    )


_WHSEC_RE = re.compile(r"^whsec_[A-Za-z0-9+/]{24,}={0,2}$")


def webhook_secret_ok(secret: str) -> bool:
    """Whether ``secret`` is a Standard Webhooks signing key the ``standardwebhooks`` package
    signs with: ``whsec_`` and base64 of 18+ bytes (``BRIDGE_WEBHOOK_SECRET``, a tenant's
    ``webhookSecret``). The form alone let through a key that is no base64 (a length one more
    than a multiple of four), which the package refused only when it came to sign."""
    if not _WHSEC_RE.match(secret):
        return False
    try:  # as the package reads it: padding added, extra padding ignored
        return bool(base64.b64decode(secret.removeprefix("whsec_") + "=="))
    except binascii.Error:
        return False


@dataclass(frozen=True)
class WebhookSettings(_Group):
    """Signed call-event webhooks out (Standard Webhooks): where, with which key, how hard."""

    webhook_url: str = _opt("", "service-wide http(s) URL every call event is POSTed to")
    webhook_secret: str = _opt(
        "", "signing key in whsec_<base64> form (Standard Webhooks)", secret=True
    )
    webhook_url_allow: tuple[str, ...] = _opt(
        (),
        "hosts a per-call statusCallback may point at besides BRIDGE_WEBHOOK_URL and the call's "
        "tenant's own webhookURL: host (any port), host:port, [IPv6] or [IPv6]:port",
    )
    webhook_timeout: float = _opt(
        10.0, "seconds one delivery attempt may take", limits=(0.1, 120), unit=" seconds"
    )
    webhook_max_attempts: int = _opt(
        6, "tries per event (network errors, timeouts, 5xx, 429)", limits=(1, 20)
    )
    webhook_retry_base: float = _opt(
        2.0,
        "seconds before the first retry; doubled each time, with jitter",
        limits=(0.001, 600),
        unit=" seconds",
    )
    webhook_queue_size: int = _opt(
        1000,
        "events queued per destination URL, and as many waiting for a retry (oldest dropped)",
        limits=(1, 100_000),
    )
    webhook_flush_timeout: float = _opt(
        5.0, "seconds pending deliveries get at shutdown", limits=(0, 60), unit=" seconds"
    )

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url or self.webhook_url_allow)

    def check(self) -> None:
        if self.webhook_url and not _url_ok(self.webhook_url, "http", "https"):
            raise self.bad("webhook_url", "must be an http(s):// URL")
        try:
            HostAllow(self.webhook_url_allow)
        except ValueError as exc:
            raise ConfigError(f"BRIDGE_WEBHOOK_URL_ALLOW: {exc}") from None
        if self.enabled and not self.webhook_secret:
            raise ConfigError(
                "BRIDGE_WEBHOOK_SECRET: required with BRIDGE_WEBHOOK_URL or "
                "BRIDGE_WEBHOOK_URL_ALLOW (whsec_ followed by a base64 key of 24+ bytes)"
            )
        if self.webhook_secret and not webhook_secret_ok(self.webhook_secret):
            raise ConfigError(
                "BRIDGE_WEBHOOK_SECRET: must be whsec_ followed by a base64 key (24+ characters)"
            )


@dataclass(frozen=True)
class ClusterSettings(_Group):
    """Past one process: worker processes, the shared call directory, routing between them."""

    workers: str = _opt(
        "1", "worker processes: a number or auto (usable cores); more than 1 needs Redis"
    )
    directory: str = _opt(
        "memory",
        "call directory: memory (this process only) or redis://[:password@]host:port/db",
        secret=True,  # the URL may carry Redis's password
    )
    internal_url: str = _opt(
        "",
        "where other instances reach this one, http://host:port (worker i of N listens on "
        "port+i); empty: http://127.0.0.1:<BRIDGE_PORT+1>",
    )
    internal_secret: str = _opt(
        "",
        "secret that requests between instances carry, and that seals agents' API keys in the "
        "directory (required with Redis)",
        secret=True,
    )
    heartbeat_ttl: float = _opt(
        5.0,
        "seconds a worker's heartbeat lives: a worker silent that long is dead",
        limits=(1, 300),
        unit=" seconds",
    )
    event_backlog: int = _opt(
        10_000,
        "call events kept for SSE clients that reconnect with Last-Event-ID",
        limits=(100, 1_000_000),
    )
    adopt_lost_calls: bool = _opt(
        True,
        "when a worker dies, a survivor adopts its calls on ZuckZapGo/WADial (re-opens their "
        "engine media, waits for the browser's new offer) instead of ending them (worker_lost)",
    )
    adopt_offer_timeout: float = _opt(
        30.0,
        "seconds a worker that adopted a dead worker's call waits for a browser's new offer "
        "before it ends the call as worker_lost",
        limits=(1, 3600),
        unit=" seconds",
    )

    @property
    def shared(self) -> bool:
        """Whether calls live in a directory other processes share (Redis)."""
        return self.directory != "memory"

    def worker_count(self, cores: int) -> int:
        return cores if self.workers == "auto" else int(self.workers)

    def check(self) -> None:
        if self.workers != "auto" and not (
            self.workers.isdigit() and 1 <= int(self.workers) <= 256
        ):
            raise self.bad("workers", "must be a number 1-256 or auto")
        if self.directory != "memory" and not (
            re.match(r"^rediss?://[^\s/]+(/\d+)?$", self.directory)
            and _url_ok(self.directory, "redis", "rediss")
        ):
            raise self.bad("directory", "must be memory or redis://host:port[/db]")
        if self.workers != "1" and not self.shared:
            raise ConfigError(
                f"BRIDGE_WORKERS={self.workers}: several workers need a shared call directory "
                "(BRIDGE_DIRECTORY=redis://host:port)"
            )
        if self.internal_url and not (
            re.match(r"^http://[^\s/:]+:\d{1,5}$", self.internal_url)
            and _url_ok(self.internal_url, "http")
        ):
            raise self.bad("internal_url", "must be http://host:port")
        if self.shared and len(self.internal_secret) < 16:
            raise ConfigError(
                "BRIDGE_INTERNAL_SECRET: required with a shared directory (16+ characters; "
                "every instance sharing the directory uses the same one)"
            )


@dataclass(frozen=True)
class SipSettings(_Group):
    """Meta's SIP road for the Cloud API engine (``BRIDGE_CLOUDAPI_SIGNALLING=sip``): our
    SIP-over-TLS listener and certificate, the business number's credentials, Meta's host."""

    sip_listen: str = _opt("0.0.0.0:5061", "host:port of the SIP-over-TLS listener")
    sip_hostname: str = _opt(
        "", "our SIP host name, as configured at Meta (From host, Contact, certificate name)"
    )
    sip_cert: str = _opt(
        "",
        "PEM certificate (chain) of the SIP listener (set with BRIDGE_SIP_KEY); reloaded when "
        "the file changes",
    )
    sip_key: str = _opt(
        "",
        "PEM private key of the SIP listener (set with BRIDGE_SIP_CERT); reloaded when it changes",
    )
    sip_key_password: str = _opt(
        "",
        "passphrase of BRIDGE_SIP_KEY (and of a number's own sipKey without its own "
        "sipKeyPassword) when it is encrypted; "
        "an encrypted key without it stops the start (the bridge never prompts for one)",
        secret=True,
    )
    sip_number: str = _opt(
        "", "the business number in E.164 digits (our From user, the digest username)"
    )
    sip_password: str = _opt(
        "",
        "the number's SIP password from Meta (answers Meta's 407; challenges Meta's INVITEs)",
        secret=True,
    )
    sip_meta_uri: str = _opt(
        "sip:wa.meta.vc;transport=tls", "Meta's SIP URI: where business-initiated INVITEs go"
    )
    sip_ca: str = _opt("", "extra trusted CA file (PEM) for Meta's side (private test peers)")
    sip_trusted_networks: tuple[str, ...] = _opt(
        (),
        "CIDRs Meta's SIP may connect from (Meta's published ranges); a request on a connection "
        "from elsewhere gets 403 before any digest work, and such connections are at most 32 at "
        "once, each closed after 10 s of silence (empty: any source)",
    )
    sip_max_connections_per_source: int = _opt(
        32,
        "connections one source address (an IPv6 one: its /64) may hold on the SIP listeners at "
        "once, handshakes included; more are closed as they arrive. Sources in "
        "BRIDGE_SIP_TRUSTED_NETWORKS are not counted",
        limits=(1, 512),  # the listener's 512 places
    )
    sip_first_message_timeout: float = _opt(
        30.0,
        "seconds a connection accepted by a SIP listener has, after its TLS handshake, to send "
        "its first whole SIP message (CRLF keep-alives do not count); then it is closed",
        limits=(1, 900),  # 900: the idle timeout
        unit=" seconds",
    )
    sip_verify_client: str = _opt(
        "",
        "a name Meta's TLS client certificate must carry (client.sip.fbclientcerts.com): the "
        "listener asks for one, verifies its chain (system CAs + BRIDGE_SIP_CA) and answers 403 "
        "on a connection without it (empty: no certificate asked for, Meta's default)",
    )
    sip_trunk_ca: str = _opt(
        "",
        "extra trusted CA file (PEM) for TLS trunks (a PBX's private CA); their certificate and "
        "name are verified against the system's CAs and this",
    )
    sip_trunk_listen: str = _opt(
        "",
        "host:port where the SIP trunks' requests arrive (UDP and TCP on that port; a TLS trunk "
        "uses BRIDGE_SIP_LISTEN); empty: no trunk listener (trunks can still be called out to)",
    )

    sip_max_trunks: int = _opt(
        100,
        "SIP trunks one tenant may have (the service's own count as one tenant's); POST /trunks "
        "past it answers 409 too_many_trunks",
        limits=(1, 10_000),
    )

    @property
    def listen(self) -> tuple[str, int]:
        host, _, port = self.sip_listen.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def trunk_listen(self) -> tuple[str, int] | None:
        """``sip_trunk_listen`` parsed (``None`` when unset)."""
        if not self.sip_trunk_listen:
            return None
        host, _, port = self.sip_trunk_listen.rpartition(":")
        return host.strip("[]"), int(port)

    def check(self) -> None:
        if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]*):[0-9]{1,5}", self.sip_listen):
            raise self.bad("sip_listen", "must be host:port (port 0-65535)")
        if self.listen[1] > 65535:
            raise self.bad("sip_listen", "must be host:port (port 0-65535)")
        trunk = self.sip_trunk_listen
        if trunk and not (
            re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]*):[0-9]{1,5}", trunk)
            and int(trunk.rpartition(":")[2]) <= 65535
        ):
            raise self.bad("sip_trunk_listen", "must be host:port (port 0-65535)")
        # Both or neither: a number put on SIP through the API uses this pair too.
        self.paired("sip_cert", "sip_key")
        if self.sip_number and not re.fullmatch(r"[1-9][0-9]{6,14}", self.sip_number):
            raise self.bad("sip_number", "must be the number in E.164 digits, without +")
        if not re.fullmatch(r"sips?:[^\s<>]+", self.sip_meta_uri):
            raise self.bad("sip_meta_uri", "must be a sip: URI")
        hop = re.search(r";transport=([^;?]*)", self.sip_meta_uri, re.I)
        if hop and hop.group(1).lower() != "tls":
            # Anything else was dialled as plain TCP: the digest and SDES keys in clear text.
            raise self.bad("sip_meta_uri", "Meta's SIP is over TLS: transport=tls, or none")
        for net in self.sip_trusted_networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise self.bad(
                    "sip_trusted_networks", f"{net!r} is not a network (CIDR, e.g. 192.0.2.0/24)"
                ) from None
        name = self.sip_verify_client
        if name and not re.fullmatch(rf"(\*\.)?{_DNS_NAME}", name):
            raise self.bad("sip_verify_client", "must be a DNS name")
        if self.sip_hostname and not re.fullmatch(_DNS_NAME, self.sip_hostname):
            # It is our Via, Contact and From host: a port or scheme in it made every one wrong.
            raise self.bad("sip_hostname", "must be a DNS host name (no scheme, no port)")

    @property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``sip_trusted_networks`` parsed (host bits allowed: ``10.1.2.3/8`` is ``10/8``)."""
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.sip_trusted_networks)

    def require(self) -> None:
        """What ``BRIDGE_CLOUDAPI_SIGNALLING=sip`` cannot start without."""
        for name in ("sip_hostname", "sip_cert", "sip_key", "sip_number"):
            if not getattr(self, name):
                raise ConfigError(
                    f"{env_name(name)} is required with BRIDGE_CLOUDAPI_SIGNALLING=sip"
                )


AGENT_PROVIDERS = (
    "openai-realtime",
    "gemini-live",
    "xai",
    "azure-voice-live",
    "deepgram",
    "elevenlabs",
    "ultravox",
    "openai-live",
)
"""The model protocols an agent speaks (``provider`` of ``POST /call/{callID}/agents`` and of a
route's agent step; ``agents/service.py`` has a dialect for each). Here, among the settings
(each has its ``BRIDGE_AGENT_<PROVIDER>_API_KEY``), so that the desk, which does not import
the agents, checks a route against the same list."""


@dataclass(frozen=True)
class AgentSettings(_Group):
    """Model agents on calls (``POST /call/{callID}/agents``): default keys, reconnection,
    the fallback when a model cannot be reached again. Their URLs are checked against
    BRIDGE_FORK_URL_ALLOW, like media forks."""

    agent_openai_api_key: str = _opt(
        "", "key for openai-realtime agents whose request has no apiKey", secret=True
    )
    agent_gemini_api_key: str = _opt(
        "", "key for gemini-live agents whose request has no apiKey", secret=True
    )
    agent_xai_api_key: str = _opt("", "key for xai agents whose request has no apiKey", secret=True)
    agent_azure_voice_live_api_key: str = _opt(
        "",
        "key (or Entra token) for azure-voice-live agents whose request has no apiKey",
        secret=True,
    )
    agent_deepgram_api_key: str = _opt(
        "",
        "key (or temporary token) for deepgram agents whose request has no apiKey",
        secret=True,
    )
    agent_elevenlabs_api_key: str = _opt(
        "",
        "xi-api-key for elevenlabs agents whose request has no apiKey (a private agent: "
        "its signed URL is asked for with it)",
        secret=True,
    )
    agent_ultravox_api_key: str = _opt(
        "",
        "X-API-Key that creates the calls of ultravox agents whose request has no apiKey",
        secret=True,
    )
    agent_openai_live_api_key: str = _opt(
        "",
        "key for openai-live agents whose request has no apiKey (else BRIDGE_AGENT_OPENAI_API_KEY)",
        secret=True,
    )
    agent_openai_live_buffer_ms: int = _opt(
        100,
        "the most delay GPT-Live's continuous stream may wait in the receiver, whose delay "
        "otherwise follows the stream's jitter (its voice is gone within that delay after the "
        "stream turns silent; past it the oldest audio goes: raise it only for a server that "
        "sends faster than real time)",
        limits=(60, 60_000),
        unit=" ms",
    )
    agent_xai_session_s: int = _opt(
        3600,
        "seconds an xai session lasts at most (about an hour, unconfirmed): the bridge opens a "
        "new one 2 minutes before",
        limits=(60, 86_400),
        unit=" seconds",
    )
    agent_retries: int = _opt(
        5, "attempts to reopen a dropped model socket before agent.failed (0: none)", limits=(0, 50)
    )
    agent_fallback: AgentFallback = _opt(
        AgentFallback.KEEP,
        "after agent.failed: keep (the call goes on), message (play BRIDGE_AGENT_FALLBACK_FILE), "
        "human (transfer to the first browser participant), or hangup",
    )
    agent_fallback_file: str = _opt(
        "", "file of BRIDGE_MEDIA_DIR played with BRIDGE_AGENT_FALLBACK=message (there at start)"
    )

    def check(self) -> None:
        if self.agent_fallback is AgentFallback.MESSAGE and not self.agent_fallback_file:
            raise self.bad("agent_fallback", "message needs BRIDGE_AGENT_FALLBACK_FILE")


GROUPS: dict[str, type[_Group]] = {
    "server": ServerSettings,
    "calls": CallSettings,
    "engine": EngineSettings,
    "ice": IceSettings,
    "media": MediaSettings,
    "storage": StorageSettings,
    "sim": SimSettings,
    "webhooks": WebhookSettings,
    "cluster": ClusterSettings,
    "sip": SipSettings,
    "agents": AgentSettings,
}


@dataclass(frozen=True)
class Settings:
    """All runtime configuration of the bridge, one group per concern. Immutable once loaded."""

    server: ServerSettings = field(default_factory=ServerSettings)
    calls: CallSettings = field(default_factory=CallSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    ice: IceSettings = field(default_factory=IceSettings)
    media: MediaSettings = field(default_factory=MediaSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    sim: SimSettings = field(default_factory=SimSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    sip: SipSettings = field(default_factory=SipSettings)
    agents: AgentSettings = field(default_factory=AgentSettings)

    def __post_init__(self) -> None:
        # BRIDGE_SHUTDOWN_CALLS=auto: calls move at SIGTERM where there is somewhere to move
        # them (a shared directory), and end where there is not (a lone instance).
        if self.calls.shutdown_calls is ShutdownCalls.AUTO:
            mode = ShutdownCalls.HANDOVER if self.cluster.shared else ShutdownCalls.HANGUP
            object.__setattr__(self, "calls", dataclasses.replace(self.calls, shutdown_calls=mode))

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> Settings:
        """Settings from flat field names (``{"port": 9000, "sim_peer": "tone"}``)."""
        owner = {f.name: group for group, gcls in GROUPS.items() for f in setting_fields(gcls)}
        per_group: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
        for name, value in values.items():
            if name not in owner:
                raise ConfigError(f"unknown setting {name!r}")
            per_group[owner[name]][name] = value
        groups: dict[str, Any] = {g: GROUPS[g](**kw) for g, kw in per_group.items()}
        return cls(**groups)

    def validate(self) -> None:
        for group in GROUPS:
            getattr(self, group).validate()
        if self.engine.sip:
            self.sip.require()
            if self.cluster.workers != "1":
                raise ConfigError(
                    f"BRIDGE_WORKERS={self.cluster.workers}: a SIP listener is one process "
                    "(BRIDGE_CLOUDAPI_SIGNALLING=sip needs BRIDGE_WORKERS=1)"
                )

    def public(self) -> dict[str, Any]:
        """Every setting by its flat name, secrets masked, for logs."""
        out: dict[str, Any] = {}
        for group in GROUPS:
            g = getattr(self, group)
            for f in setting_fields(type(g)):
                value = getattr(g, f.name)
                out[f.name] = "***" if f.metadata.get("secret") and value else value
        return out


def setting_fields(group: type[Any]) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(group)
