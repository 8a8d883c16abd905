"""Settings: frozen dataclasses read from ``BRIDGE_*`` environment variables and CLI flags.

Every setting is an environment variable (``BRIDGE_PORT``) and a CLI flag (``--port``); a flag
wins over the environment, which wins over the default. :func:`load_settings` validates
everything at start and raises :class:`ConfigError` with a one-line message naming the bad
setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A setting has a bad value; the message names it and says what is expected."""


class EngineKind(enum.StrEnum):
    """Which WhatsApp engine carries the call leg."""

    SIM = "sim"
    ZUCKZAPGO = "zuckzapgo"
    WADIAL = "wadial"


class SimPeer(enum.StrEnum):
    """What the simulated remote party sends back."""

    ECHO = "echo"
    TONE = "tone"
    SILENCE = "silence"


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


class IcePolicy(enum.StrEnum):
    ALL = "all"
    RELAY = "relay"


def _opt(default: Any, help: str, *, secret: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """All runtime configuration of the bridge. Immutable once loaded."""

    host: str = _opt("127.0.0.1", "listen address")
    port: int = _opt(8080, "listen port")
    api_tokens: tuple[str, ...] = _opt((), "comma-separated API tokens", secret=True)
    insecure_no_auth: bool = _opt(
        False, "allow a non-loopback BRIDGE_HOST with no API token (unsafe)"
    )
    engine: EngineKind = _opt(EngineKind.SIM, "WhatsApp engine: sim, zuckzapgo, wadial")
    engine_url: str = _opt("", "the engine's base URL")
    engine_token: str = _opt("", "the engine's token", secret=True)
    engine_session: str = _opt("", "WADial session id (BRIDGE_ENGINE=wadial)")
    engine_poll_interval: float = _opt(1.0, "seconds between polls of the engine's call list")
    engine_reconnect_attempts: int = _opt(5, "media socket reconnect attempts per drop")
    stun_urls: tuple[str, ...] = _opt(
        ("stun:stun.l.google.com:19302",),
        "STUN servers advertised to clients (empty: none)",
    )
    server_stun_urls: tuple[str, ...] = _opt((), "STUN servers the bridge itself gathers with")
    ice_addresses: tuple[str, ...] = _opt(
        (), "local addresses to gather host candidates on (empty: all non-loopback)"
    )
    public_ip: str = _opt("", "address advertised in the bridge's candidates behind 1:1 NAT")
    ice_policy: IcePolicy = _opt(IcePolicy.ALL, "iceTransportPolicy for clients: all or relay")
    turn_urls: tuple[str, ...] = _opt((), "TURN URLs advertised to clients")
    turn_secret: str = _opt("", "TURN REST API shared secret (ephemeral credentials)", secret=True)
    turn_username: str = _opt("", "static TURN username")
    turn_password: str = _opt("", "static TURN password", secret=True)
    turn_ttl: int = _opt(3600, "lifetime of ephemeral TURN credentials, seconds")
    turn_provider: str = _opt(
        "", "none, static, rest-secret, http or package.module:Class (empty: from the above)"
    )
    turn_http_url: str = _opt("", "credential service returning iceServers (provider http)")
    turn_http_token: str = _opt("", "bearer token for BRIDGE_TURN_HTTP_URL", secret=True)
    rtp_ports: str = _opt(
        "",
        "UDP port range for media (ICE host and TURN sockets), e.g. 40000-40999 "
        "(empty: the OS's ephemeral ports)",
    )
    ice_gather_timeout: float = _opt(
        0.7, "seconds the bridge waits for STUN/TURN candidates before answering"
    )
    max_calls: int = _opt(200, "live calls before /call/make and /offer answer 503")
    rate_limit: float = _opt(
        2.0, "requests per second per client (token, else address) on /call/make and /offer"
    )
    rate_burst: int = _opt(20, "burst allowed above BRIDGE_RATE_LIMIT")
    cors_origins: tuple[str, ...] = _opt((), "origins allowed by CORS (empty: none)")
    connect_timeout: float = _opt(20.0, "seconds a WebRTC session may take to connect")
    media_timeout: float = _opt(10.0, "seconds without RTP before a WebRTC session is failed")
    ring_timeout: float = _opt(60.0, "seconds a call may ring before it is given up")
    max_call_duration: float = _opt(14_400.0, "seconds an answered call may last (0: no limit)")
    shutdown_calls: str = _opt(
        "hangup", "at shutdown: hangup (end calls) or keep (leave WhatsApp calls up for handover)"
    )
    opus_direct: bool = _opt(
        True, "encode the downlink as 16 kHz mono Opus ourselves (false: aiortc's encoder)"
    )
    opus_bitrate: int = _opt(24_000, "downlink Opus bitrate, bit/s")
    opus_complexity: int = _opt(1, "downlink Opus complexity 0-10 (CPU vs quality)")
    opus_fec: bool = _opt(True, "downlink Opus in-band FEC")
    opus_dtx: bool = _opt(False, "downlink Opus DTX (discontinuous transmission in silence)")
    uplink_direct: bool = _opt(
        True, "decode the uplink ourselves at 16 kHz on the event loop (false: aiortc's path)"
    )
    rtp_prefetch: int = _opt(
        1, "RTP frames aiortc holds before decoding the uplink (its default: 4)"
    )
    data_dir: str = _opt("data", "where recordings and audio assets are stored")
    media_dir: str = _opt("media", "directory /call/play may read files from")
    play_url_allow: tuple[str, ...] = _opt((), "hosts /call/play may fetch audioUrl from")
    play_url_max_bytes: int = _opt(32 * 1024 * 1024, "largest audio fetched or uploaded")
    play_url_timeout: float = _opt(10.0, "seconds to fetch an audioUrl")
    record_all: bool = _opt(False, "record every call from answer to end")
    fork_url_allow: tuple[str, ...] = _opt((), "hosts media forks may connect to (empty: none)")
    recording_retention_days: float = _opt(30.0, "days recordings are kept")
    retention_sweep_interval: float = _opt(3600.0, "seconds between retention sweeps")
    log_format: LogFormat = _opt(LogFormat.TEXT, "log format: text or json")
    metrics_token: str = _opt("", "token /metrics requires (empty: /metrics is open)", secret=True)
    stats_interval: float = _opt(5.0, "seconds between RTP/RTCP quality samples per session")
    log_level: str = _opt("info", "log level: debug, info, warning, error")
    ended_call_ttl: float = _opt(900.0, "seconds an ended call stays readable (min 600)")
    sim_peer: SimPeer = _opt(SimPeer.ECHO, "simulated remote party: echo, tone, silence")
    sim_answer_delay: float = _opt(0.5, "seconds the simulated callee rings before answering")
    sim_echo_delay: float = _opt(0.3, "seconds before the simulated echo plays back")
    sim_tone_hz: float = _opt(660.0, "frequency of the simulated peer's tone")
    sim_hangup_after: float = _opt(
        0.0, "seconds after answer the simulated peer hangs up (0: never)"
    )

    def __post_init__(self) -> None:
        # Accept plain strings for enum settings (programmatic construction, tests).
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, enum.Enum) and not isinstance(value, enum.Enum):
                object.__setattr__(self, f.name, type(f.default)(value))

    def public(self) -> dict[str, Any]:
        """Settings as a dict with secrets masked, for logs."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = "***"
            out[f.name] = value
        return out

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_tokens)


def env_name(name: str) -> str:
    return "BRIDGE_" + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected true or false")


def _parse_int(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError("expected an integer") from None


def _parse_float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("expected a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number")
    return value


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _parser_for(f: dataclasses.Field[Any]) -> Callable[[str], Any]:
    default = f.default
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, enum.Enum):
        enum_type = type(default)

        def parse_enum(raw: str) -> Any:
            try:
                return enum_type(raw.strip().lower())
            except ValueError:
                choices = ", ".join(m.value for m in enum_type)
                raise ValueError(f"expected one of {choices}") from None

        return parse_enum
    if isinstance(default, int):
        return _parse_int
    if isinstance(default, float):
        return _parse_float
    if isinstance(default, tuple):
        return _parse_list
    return lambda raw: raw.strip()


_STUN_RE = re.compile(r"^stuns?:[^\s:]+(:\d{1,5})?$")
_TURN_RE = re.compile(r"^turns?:[^\s:?]+(:\d{1,5})?(\?transport=(udp|tcp))?$")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate(s: Settings) -> None:
    def bad(name: str, why: str) -> ConfigError:
        return ConfigError(f"{env_name(name)}={getattr(s, name)!r}: {why}")

    if not 1 <= s.port <= 65535:
        raise bad("port", "must be a port number 1-65535")
    if not s.host:
        raise bad("host", "must not be empty")
    for url in s.stun_urls:
        if not _STUN_RE.match(url):
            raise ConfigError(f"BRIDGE_STUN_URLS: {url!r} is not a stun: URL")
    for url in s.server_stun_urls:
        if not _STUN_RE.match(url):
            raise ConfigError(f"BRIDGE_SERVER_STUN_URLS: {url!r} is not a stun: URL")
    for url in s.turn_urls:
        if not _TURN_RE.match(url):
            raise ConfigError(f"BRIDGE_TURN_URLS: {url!r} is not a turn: or turns: URL")
    for addr in s.ice_addresses:
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ConfigError(f"BRIDGE_ICE_ADDRESSES: {addr!r} is not an IP address") from None
    if s.public_ip:
        try:
            ipaddress.ip_address(s.public_ip)
        except ValueError:
            raise bad("public_ip", "must be an IP address") from None
    if s.turn_urls and not (
        s.turn_secret or (s.turn_username and s.turn_password) or s.turn_provider
    ):
        raise ConfigError(
            "BRIDGE_TURN_URLS: needs BRIDGE_TURN_SECRET or BRIDGE_TURN_USERNAME and "
            "BRIDGE_TURN_PASSWORD"
        )
    if s.turn_provider in ("static", "rest-secret") and not s.turn_urls:
        raise bad("turn_provider", "needs BRIDGE_TURN_URLS")
    if s.turn_provider == "rest-secret" and not s.turn_secret:
        raise bad("turn_provider", "rest-secret needs BRIDGE_TURN_SECRET")
    if s.turn_provider == "static" and not (s.turn_username and s.turn_password):
        raise bad("turn_provider", "static needs BRIDGE_TURN_USERNAME and BRIDGE_TURN_PASSWORD")
    if s.turn_provider == "http" and not s.turn_http_url:
        raise bad("turn_provider", "http needs BRIDGE_TURN_HTTP_URL")
    if s.turn_provider not in ("", "none", "static", "rest-secret", "http") and not re.match(
        r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", s.turn_provider
    ):
        raise bad("turn_provider", "expected none, static, rest-secret, http or module:Class")
    if s.turn_http_url and not re.match(r"^https?://", s.turn_http_url):
        raise bad("turn_http_url", "must be an http(s):// URL")
    if s.rtp_ports:
        m = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", s.rtp_ports)
        if not m or not 1024 <= int(m.group(1)) <= int(m.group(2)) <= 65535:
            raise bad(
                "rtp_ports", "expected a range first-last within 1024-65535, e.g. 40000-40999"
            )
    if not 0.05 <= s.ice_gather_timeout <= 10:
        raise bad("ice_gather_timeout", "must be between 0.05 and 10 seconds")
    if s.turn_ttl < 60:
        raise bad("turn_ttl", "must be at least 60 seconds")
    if not 6_000 <= s.opus_bitrate <= 128_000:
        raise bad("opus_bitrate", "must be between 6000 and 128000 bit/s")
    if not 0 <= s.opus_complexity <= 10:
        raise bad("opus_complexity", "must be between 0 and 10")
    if not 1 <= s.rtp_prefetch <= 8:
        raise bad("rtp_prefetch", "must be between 1 and 8 frames")
    if s.recording_retention_days <= 0:
        raise bad("recording_retention_days", "must be positive")
    if not 1 <= s.retention_sweep_interval <= 86400:
        raise bad("retention_sweep_interval", "must be between 1 and 86400 seconds")
    if not 1024 <= s.play_url_max_bytes <= 512 * 1024 * 1024:
        raise bad("play_url_max_bytes", "must be between 1 KiB and 512 MiB")
    if s.rate_limit <= 0 or s.rate_burst < 1:
        raise bad("rate_limit", "BRIDGE_RATE_LIMIT must be > 0 and BRIDGE_RATE_BURST >= 1")
    for origin in s.cors_origins:
        if not re.match(r"^https?://[^/\s]+$", origin):
            raise ConfigError(
                f"BRIDGE_CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port])"
            )
    for name in ("connect_timeout", "media_timeout", "ring_timeout"):
        if not 0.5 <= getattr(s, name) <= 3600:
            raise bad(name, "must be between 0.5 and 3600 seconds")
    if s.max_call_duration < 0:
        raise bad("max_call_duration", "must not be negative")
    if s.shutdown_calls not in ("hangup", "keep"):
        raise bad("shutdown_calls", "expected hangup or keep")
    if s.max_calls < 1:
        raise bad("max_calls", "must be at least 1")
    if s.ended_call_ttl < 600:
        raise bad("ended_call_ttl", "must be at least 600 seconds")
    if s.log_level.lower() not in {"debug", "info", "warning", "error"}:
        raise bad("log_level", "expected one of debug, info, warning, error")
    if s.engine is not EngineKind.SIM:
        if not re.match(r"^https?://[^\s/]+", s.engine_url):
            raise bad("engine_url", f"an http(s):// URL is required with BRIDGE_ENGINE={s.engine}")
    if s.engine is EngineKind.WADIAL and not s.engine_session:
        raise bad("engine_session", "the WADial session id is required with BRIDGE_ENGINE=wadial")
    if not 0.2 <= s.stats_interval <= 300:
        raise bad("stats_interval", "must be between 0.2 and 300 seconds")
    if not 0.05 <= s.engine_poll_interval <= 60:
        raise bad("engine_poll_interval", "must be between 0.05 and 60 seconds")
    if not 0 <= s.engine_reconnect_attempts <= 100:
        raise bad("engine_reconnect_attempts", "must be between 0 and 100")
    if s.sim_answer_delay < 0 or s.sim_echo_delay < 0 or s.sim_hangup_after < 0:
        raise ConfigError("BRIDGE_SIM_*: delays must not be negative")
    if not 20 <= s.sim_tone_hz <= 7900:
        raise bad("sim_tone_hz", "must be between 20 and 7900 Hz")
    if not s.api_tokens and not _is_loopback(s.host) and not s.insecure_no_auth:
        raise ConfigError(
            f"BRIDGE_HOST={s.host!r}: refusing to listen beyond loopback with no "
            "BRIDGE_API_TOKENS; set a token or pass --insecure-no-auth"
        )


def build_arg_parser() -> argparse.ArgumentParser:
    """The CLI: one flag per setting, defaults left to the environment."""
    parser = argparse.ArgumentParser(
        prog="webrtc-bridge",
        description="WebRTC media bridge for WhatsApp calls",
    )
    for f in dataclasses.fields(Settings):
        flag = flag_name(f.name)
        helptext = f"{f.metadata['help']} (env {env_name(f.name)})"
        if isinstance(f.default, bool):
            parser.add_argument(
                flag, dest=f.name, action="store_const", const="true", help=helptext
            )
        else:
            parser.add_argument(flag, dest=f.name, metavar="VALUE", help=helptext)
    return parser


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``) and ``argv`` flags, validated."""
    env = os.environ if environ is None else environ
    args = vars(build_arg_parser().parse_args(list(argv) if argv is not None else []))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = args.get(f.name)
        source = flag_name(f.name)
        if raw is None:
            raw = env.get(env_name(f.name))
            source = env_name(f.name)
        if raw is None:
            continue
        try:
            values[f.name] = _parser_for(f)(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}={raw!r}: {exc}") from None
    settings = Settings(**values)
    _validate(settings)
    return settings


def settings_for_tests(**overrides: Any) -> Settings:
    """Settings with test-friendly defaults (loopback ICE, no STUN), validated."""
    base: dict[str, Any] = {
        "stun_urls": (),
        "ice_addresses": ("127.0.0.1",),
        "sim_answer_delay": 0.2,
        "rate_limit": 1000.0,
        "rate_burst": 1000,
    }
    base.update(overrides)
    settings = Settings(**base)
    _validate(settings)
    return settings
