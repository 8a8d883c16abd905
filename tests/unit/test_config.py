"""Configuration: env and flags, validation with one-line errors naming the setting."""

from __future__ import annotations

import pytest

from bridge.config import ConfigError, EngineKind, ShutdownCalls, env_name, load_settings


def test_defaults_match_design() -> None:
    s = load_settings([], {})
    assert (s.server.host, s.server.port) == ("127.0.0.1", 8080)
    assert s.engine.engine is EngineKind.SIM
    assert s.ice.stun_urls == ("stun:stun.l.google.com:19302",)
    assert s.ice.server_stun_urls == () and s.ice.ice_addresses == () and s.server.api_tokens == ()
    assert s.ice.turn_ttl == 3600 and s.calls.max_calls == 200 and s.server.log_format == "text"
    # The documented defaults of the media switches.
    assert s.media.opus_fec is True and s.media.opus_dtx is False


def test_env_and_flags_flag_wins() -> None:
    env = {"BRIDGE_PORT": "9000", "BRIDGE_API_TOKENS": "a, b,", "BRIDGE_SIM_PEER": "tone"}
    s = load_settings(["--port", "9100", "--ice-addresses", "127.0.0.1,::1"], env)
    assert s.server.port == 9100
    assert s.server.api_tokens == ("a", "b")
    assert s.sim.sim_peer == "tone"
    assert s.ice.ice_addresses == ("127.0.0.1", "::1")


def test_boolean_flags_turn_both_ways() -> None:
    env = {"BRIDGE_OPUS_FEC": "true", "BRIDGE_RECORD_ALL": "false"}
    s = load_settings(["--no-opus-fec", "--record-all"], env)
    assert s.media.opus_fec is False and s.storage.record_all is True
    assert load_settings(["--no-opus-fec"], {}).media.opus_fec is False
    assert load_settings([], {}).server.uvloop is True
    assert load_settings(["--no-uvloop"], {"BRIDGE_UVLOOP": "true"}).server.uvloop is False


def test_the_event_loop_follows_the_uvloop_setting() -> None:
    import asyncio

    from bridge.loop import install_event_loop

    try:
        assert install_event_loop(False) == "asyncio"
        loop = asyncio.new_event_loop()
        assert type(loop).__module__.startswith("asyncio")
        loop.close()
        pytest.importorskip("uvloop")
        assert install_event_loop(True) == "uvloop"
        loop = asyncio.new_event_loop()
        assert type(loop).__module__.startswith("uvloop")
        loop.close()
    finally:
        asyncio.set_event_loop_policy(None)


def test_help_shows_types_and_defaults() -> None:
    from bridge.config import build_arg_parser

    text = " ".join(build_arg_parser().format_help().split())  # as wrapped at any width
    assert "--port INT" in text and "default 8080" in text and "env BRIDGE_PORT" in text
    assert "[INT (1-65535), default 8080" in text  # the range it keeps
    assert "--no-opus-fec" in text and "--log-format {text,json}" in text


def test_every_setting_has_env_and_flag() -> None:
    from bridge.config import all_fields, build_arg_parser

    flags = {a.dest for a in build_arg_parser()._actions}
    for f in all_fields():
        assert f.name in flags
        assert env_name(f.name).startswith("BRIDGE_")


def test_empty_stun_urls_means_none() -> None:
    assert load_settings([], {"BRIDGE_STUN_URLS": ""}).ice.stun_urls == ()


WEBHOOK_SECRET = {"BRIDGE_WEBHOOK_SECRET": "whsec_" + "a" * 43 + "="}
SECRET = {"BRIDGE_INTERNAL_SECRET": "0123456789abcdef"}
SHARED = {"BRIDGE_DIRECTORY": "redis://127.0.0.1:6379", **SECRET}


@pytest.mark.parametrize(
    "env,name",
    [
        ({"BRIDGE_PORT": "abc"}, "BRIDGE_PORT"),
        ({"BRIDGE_PORT": "70000"}, "BRIDGE_PORT"),
        ({"BRIDGE_ENGINE": "skype"}, "BRIDGE_ENGINE"),
        ({"BRIDGE_STUN_URLS": "http://x"}, "BRIDGE_STUN_URLS"),
        ({"BRIDGE_ICE_ADDRESSES": "localhost"}, "BRIDGE_ICE_ADDRESSES"),
        ({"BRIDGE_MAX_CALLS": "0"}, "BRIDGE_MAX_CALLS"),
        ({"BRIDGE_LOG_FORMAT": "xml"}, "BRIDGE_LOG_FORMAT"),
        ({"BRIDGE_TURN_URLS": "turn:t.example:3478"}, "BRIDGE_TURN_URLS"),
        ({"BRIDGE_INSECURE_NO_AUTH": "maybe"}, "BRIDGE_INSECURE_NO_AUTH"),
        ({"BRIDGE_SIM_ECHO_DELAY": "nan"}, "BRIDGE_SIM_ECHO_DELAY"),
        ({"BRIDGE_ENGINE": "zuckzapgo"}, "BRIDGE_ENGINE_URL"),
        ({"BRIDGE_ENGINE": "cloudapi"}, "BRIDGE_ENGINE_TOKEN"),
        (
            {
                "BRIDGE_ENGINE": "cloudapi",
                "BRIDGE_ENGINE_TOKEN": "t",
                "BRIDGE_CLOUDAPI_APP_SECRET": "s",
                "BRIDGE_CLOUDAPI_VERIFY_TOKEN": "v",
            },
            "BRIDGE_CLOUDAPI_PHONE_NUMBER_ID",
        ),
        (
            {
                "BRIDGE_ENGINE": "cloudapi",
                "BRIDGE_ENGINE_TOKEN": "t",
                "BRIDGE_CLOUDAPI_PHONE_NUMBER_ID": "1",
                "BRIDGE_CLOUDAPI_VERIFY_TOKEN": "v",
            },
            "BRIDGE_CLOUDAPI_APP_SECRET",
        ),
        (
            {
                "BRIDGE_ENGINE": "cloudapi",
                "BRIDGE_ENGINE_TOKEN": "t",
                "BRIDGE_CLOUDAPI_PHONE_NUMBER_ID": "1",
                "BRIDGE_CLOUDAPI_APP_SECRET": "s",
            },
            "BRIDGE_CLOUDAPI_VERIFY_TOKEN",
        ),
        ({"BRIDGE_ICE_POLICY": "relay"}, "BRIDGE_ICE_POLICY"),
        ({"BRIDGE_SHUTDOWN_CALLS": "later"}, "BRIDGE_SHUTDOWN_CALLS"),
        ({"BRIDGE_LOG_LEVEL": "loud"}, "BRIDGE_LOG_LEVEL"),
        ({"BRIDGE_RTP_PORTS": "40000"}, "BRIDGE_RTP_PORTS"),
        ({"BRIDGE_RTP_PORTS": "41000-40000"}, "BRIDGE_RTP_PORTS"),
        ({"BRIDGE_RTP_PORTS": "80-90"}, "BRIDGE_RTP_PORTS"),
        ({"BRIDGE_SIP_TRUSTED_NETWORKS": "10.0.0.0/8,meta"}, "BRIDGE_SIP_TRUSTED_NETWORKS"),
        ({"BRIDGE_SIP_TRUSTED_NETWORKS": "10.0.0.0/33"}, "BRIDGE_SIP_TRUSTED_NETWORKS"),
        ({"BRIDGE_SIP_VERIFY_CLIENT": "meta client"}, "BRIDGE_SIP_VERIFY_CLIENT"),
        ({"BRIDGE_SIP_TRUNK_LISTEN": "pbx"}, "BRIDGE_SIP_TRUNK_LISTEN"),
        ({"BRIDGE_SIP_MAX_CONNECTIONS_PER_SOURCE": "0"}, "BRIDGE_SIP_MAX_CONNECTIONS_PER_SOURCE"),
        ({"BRIDGE_SIP_MAX_CONNECTIONS_PER_SOURCE": "513"}, "BRIDGE_SIP_MAX_CONNECTIONS_PER_SOURCE"),
        ({"BRIDGE_SIP_FIRST_MESSAGE_TIMEOUT": "0.5"}, "BRIDGE_SIP_FIRST_MESSAGE_TIMEOUT"),
        ({"BRIDGE_SIP_FIRST_MESSAGE_TIMEOUT": "901"}, "BRIDGE_SIP_FIRST_MESSAGE_TIMEOUT"),
        # URLs urlsplit cannot read: every call event then failed in the webhooks' observer.
        ({"BRIDGE_WEBHOOK_URL": "http://[::1/hooks", **WEBHOOK_SECRET}, "BRIDGE_WEBHOOK_URL"),
        ({"BRIDGE_WEBHOOK_URL": "http://h:port/hooks", **WEBHOOK_SECRET}, "BRIDGE_WEBHOOK_URL"),
        # Each simulated delay by its own name (it was "BRIDGE_SIM_*", naming none of them).
        ({"BRIDGE_SIM_ANSWER_DELAY": "-1"}, "BRIDGE_SIM_ANSWER_DELAY="),
        ({"BRIDGE_SIM_ECHO_DELAY": "-0.5"}, "BRIDGE_SIM_ECHO_DELAY="),
        ({"BRIDGE_SIM_HANGUP_AFTER": "-1"}, "BRIDGE_SIM_HANGUP_AFTER="),
        # Taken unchecked: a negative or zero timeout failed every audioUrl fetch at once.
        ({"BRIDGE_PLAY_URL_TIMEOUT": "-1"}, "BRIDGE_PLAY_URL_TIMEOUT"),
        ({"BRIDGE_PLAY_URL_TIMEOUT": "0"}, "BRIDGE_PLAY_URL_TIMEOUT"),
        # Half a pair, taken and then never used (no TURN URL, no number on SIP yet).
        ({"BRIDGE_TURN_USERNAME": "u"}, "BRIDGE_TURN_PASSWORD"),
        ({"BRIDGE_TURN_PASSWORD": "p"}, "BRIDGE_TURN_USERNAME"),
        ({"BRIDGE_SIP_CERT": "/tls/cert.pem"}, "BRIDGE_SIP_KEY"),
        ({"BRIDGE_SIP_KEY": "/tls/key.pem"}, "BRIDGE_SIP_CERT"),
        # URLs no client can read (a port that is no number or out of range, a broken IPv6
        # host, no host at all), taken by a pattern that looked at their start only.
        ({"BRIDGE_ENGINE": "zuckzapgo", "BRIDGE_ENGINE_URL": "http://h:port/"}, "ENGINE_URL"),
        ({"BRIDGE_ENGINE": "zuckzapgo", "BRIDGE_ENGINE_URL": "http://[::1"}, "ENGINE_URL"),
        ({"BRIDGE_TURN_HTTP_URL": "http://"}, "BRIDGE_TURN_HTTP_URL"),
        ({"BRIDGE_TURN_HTTP_URL": "http://h:99999/creds"}, "BRIDGE_TURN_HTTP_URL"),
        ({"BRIDGE_INTERNAL_URL": "http://10.0.0.5:99999", **SHARED}, "BRIDGE_INTERNAL_URL"),
        ({"BRIDGE_DIRECTORY": "redis://h:port/0", **SECRET}, "BRIDGE_DIRECTORY"),
        ({"BRIDGE_DIRECTORY": "redis://[::1/0", **SECRET}, "BRIDGE_DIRECTORY"),
        # The default number's Cloud API (or WADial) settings, set while BRIDGE_ENGINE names
        # another engine (forgotten, or misspelled away): taken, and the bridge ran on sim.
        ({"BRIDGE_CLOUDAPI_PHONE_NUMBER_ID": "1234"}, "BRIDGE_CLOUDAPI_PHONE_NUMBER_ID"),
        ({"BRIDGE_CLOUDAPI_APP_SECRET": "s"}, "BRIDGE_CLOUDAPI_APP_SECRET"),
        ({"BRIDGE_CLOUDAPI_VERIFY_TOKEN": "v"}, "BRIDGE_CLOUDAPI_VERIFY_TOKEN"),
        ({"BRIDGE_CLOUDAPI_SIGNALLING": "sip"}, "BRIDGE_CLOUDAPI_SIGNALLING"),
        ({"BRIDGE_CLOUDAPI_MEDIA": "sdes"}, "BRIDGE_CLOUDAPI_MEDIA"),
        ({"BRIDGE_ENGINE_SESSION": "s1"}, "BRIDGE_ENGINE_SESSION"),
    ],
)
def test_bad_values_name_the_setting(env, name) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings([], env)
    message = str(info.value)
    assert name in message and "\n" not in message


def test_a_refused_secret_setting_is_not_shown() -> None:
    """BRIDGE_DIRECTORY may carry Redis's password: refused, it was printed whole on stderr
    (and so in the supervisor's and the container's logs)."""
    with pytest.raises(ConfigError) as info:
        load_settings([], {"BRIDGE_DIRECTORY": "redis://:hunter2hunter2@h:port/0", **SECRET})
    assert "BRIDGE_DIRECTORY" in str(info.value) and "hunter2" not in str(info.value)


def test_an_enum_setting_is_shown_as_written() -> None:
    """A refused enum setting is shown as the word the operator wrote, not Python's repr
    (``BRIDGE_AGENT_FALLBACK=<AgentFallback.MESSAGE: 'message'>``)."""
    with pytest.raises(ConfigError) as info:
        load_settings([], {"BRIDGE_AGENT_FALLBACK": "message"})
    assert str(info.value).startswith("BRIDGE_AGENT_FALLBACK='message': "), info.value


@pytest.mark.parametrize(
    ("argv", "named"),
    [(["--prot", "9000"], "--prot"), (["--port"], "--port")],
)
def test_a_flag_that_is_none_or_has_no_value_is_one_line(argv, named) -> None:
    """argparse's own errors (a flag that is none, one without its value) printed its whole
    usage, every flag of every setting, and exited from inside the parser: now they are a
    ConfigError like any bad setting, one line that points at --help."""
    with pytest.raises(ConfigError) as info:
        load_settings(argv, {})
    message = str(info.value)
    assert named in message and "--help" in message and "\n" not in message


def test_non_loopback_without_token_refused() -> None:
    with pytest.raises(ConfigError, match="BRIDGE_HOST"):
        load_settings([], {"BRIDGE_HOST": "0.0.0.0"})
    insecure = load_settings(["--insecure-no-auth"], {"BRIDGE_HOST": "0.0.0.0"})
    assert insecure.server.insecure_no_auth
    assert load_settings([], {"BRIDGE_HOST": "0.0.0.0", "BRIDGE_API_TOKENS": "t"}).server.api_tokens
    assert load_settings([], {"BRIDGE_HOST": "::1"}).server.host == "::1"


def test_cloudapi_defaults_to_the_graph_api() -> None:
    env = {
        "BRIDGE_ENGINE": "cloudapi",
        "BRIDGE_ENGINE_TOKEN": "t",
        "BRIDGE_CLOUDAPI_PHONE_NUMBER_ID": "1234",
        "BRIDGE_CLOUDAPI_APP_SECRET": "s",
        "BRIDGE_CLOUDAPI_VERIFY_TOKEN": "v",
    }
    s = load_settings([], env)
    assert s.engine.engine is EngineKind.CLOUDAPI
    assert s.engine.engine_url == "https://graph.facebook.com/v23.0"
    shown = repr(s.public())
    assert "'cloudapi_app_secret': '***'" in shown and "'cloudapi_verify_token': '***'" in shown


def test_public_masks_secrets() -> None:
    s = load_settings([], {"BRIDGE_API_TOKENS": "topsecret", "BRIDGE_ENGINE_TOKEN": "x"})
    shown = repr(s.public())
    assert "topsecret" not in shown and "***" in shown


def test_the_configuration_guide_documents_every_setting() -> None:
    from pathlib import Path

    from bridge.config import all_fields

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    guide = (root / "docs" / "configuration.md").read_text()
    for f in all_fields():
        assert f"`{env_name(f.name)}`" in guide, env_name(f.name)


def test_the_configuration_guide_table_is_generated_from_the_settings() -> None:
    from pathlib import Path

    from bridge.config.docs import settings_table

    guide = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert settings_table() in guide, (
        "run: python -m bridge.config.docs, paste into docs/configuration.md"
    )


# Written out by hand (not derived from the code's own field list), so a setting that the
# parser silently stopped reading, or read into the wrong group, fails here.
ENV_SAMPLES = [
    ("BRIDGE_PORT", "9001", "server", "port", 9001),
    ("BRIDGE_API_TOKENS", "t1,t2", "server", "api_tokens", ("t1", "t2")),
    ("BRIDGE_RATE_LIMIT", "3.5", "server", "rate_limit", 3.5),
    ("BRIDGE_RATE_BURST", "7", "server", "rate_burst", 7),
    (
        "BRIDGE_CORS_ORIGINS",
        "https://app.example",
        "server",
        "cors_origins",
        ("https://app.example",),
    ),
    ("BRIDGE_METRICS_TOKEN", "m", "server", "metrics_token", "m"),
    ("BRIDGE_BODY_TIMEOUT", "3", "server", "body_timeout", 3.0),
    ("BRIDGE_LOG_FORMAT", "json", "server", "log_format", "json"),
    ("BRIDGE_LOG_LEVEL", "debug", "server", "log_level", "debug"),
    ("BRIDGE_UVLOOP", "false", "server", "uvloop", False),
    ("BRIDGE_MAX_CALLS", "12", "calls", "max_calls", 12),
    ("BRIDGE_MAX_PARTICIPANTS", "3", "calls", "max_participants", 3),
    ("BRIDGE_MAX_ROUTES", "7", "calls", "max_routes", 7),
    ("BRIDGE_CONNECT_TIMEOUT", "21", "calls", "connect_timeout", 21.0),
    ("BRIDGE_MEDIA_TIMEOUT", "11", "calls", "media_timeout", 11.0),
    ("BRIDGE_RING_TIMEOUT", "61", "calls", "ring_timeout", 61.0),
    ("BRIDGE_MAX_CALL_DURATION", "100", "calls", "max_call_duration", 100.0),
    ("BRIDGE_SHUTDOWN_CALLS", "keep", "calls", "shutdown_calls", "keep"),
    ("BRIDGE_SHUTDOWN_CALLS", "handover", "calls", "shutdown_calls", "handover"),
    ("BRIDGE_DRAIN_TIMEOUT", "600", "calls", "drain_timeout", 600.0),
    ("BRIDGE_ORPHAN_CALLS", "keep", "calls", "orphan_calls", "keep"),
    ("BRIDGE_ENDED_CALL_TTL", "700", "calls", "ended_call_ttl", 700.0),
    ("BRIDGE_STATS_INTERVAL", "2", "calls", "stats_interval", 2.0),
    ("BRIDGE_MEDIA_WARNING_AFTER", "5", "calls", "media_warning_after", 5.0),
    ("BRIDGE_CALL_REPORTS", "false", "calls", "call_reports", False),
    ("BRIDGE_ENGINE_TOKEN", "e", "engine", "engine_token", "e"),
    ("BRIDGE_ENGINE_SESSION", "s1", "engine", "engine_session", "s1"),
    ("BRIDGE_ENGINE_URL", "http://e.example", "engine", "engine_url", "http://e.example"),
    ("BRIDGE_ENGINE_POLL_INTERVAL", "0.5", "engine", "engine_poll_interval", 0.5),
    ("BRIDGE_ENGINE_RECONNECT_WINDOW", "4.5", "engine", "engine_reconnect_window", 4.5),
    (
        "BRIDGE_CLOUDAPI_PHONE_NUMBER_ID",
        "1234567890",
        "engine",
        "cloudapi_phone_number_id",
        "1234567890",
    ),
    ("BRIDGE_CLOUDAPI_APP_SECRET", "appsecret", "engine", "cloudapi_app_secret", "appsecret"),
    ("BRIDGE_CLOUDAPI_VERIFY_TOKEN", "vtok", "engine", "cloudapi_verify_token", "vtok"),
    ("BRIDGE_CLOUDAPI_SIGNALLING", "sip", "engine", "cloudapi_signalling", "sip"),
    ("BRIDGE_CLOUDAPI_MEDIA", "sdes", "engine", "cloudapi_media", "sdes"),
    ("BRIDGE_SIP_LISTEN", "[::]:5062", "sip", "sip_listen", "[::]:5062"),
    ("BRIDGE_SIP_HOSTNAME", "sip.example.com", "sip", "sip_hostname", "sip.example.com"),
    ("BRIDGE_SIP_CERT", "/tls/cert.pem", "sip", "sip_cert", "/tls/cert.pem"),
    ("BRIDGE_SIP_KEY", "/tls/key.pem", "sip", "sip_key", "/tls/key.pem"),
    ("BRIDGE_SIP_KEY_PASSWORD", "open sesame", "sip", "sip_key_password", "open sesame"),
    ("BRIDGE_SIP_NUMBER", "15550009999", "sip", "sip_number", "15550009999"),
    ("BRIDGE_SIP_PASSWORD", "pw", "sip", "sip_password", "pw"),
    (
        "BRIDGE_SIP_META_URI",
        "sip:meta.test:5070;transport=tls",
        "sip",
        "sip_meta_uri",
        "sip:meta.test:5070;transport=tls",
    ),
    ("BRIDGE_SIP_CA", "/tls/ca.pem", "sip", "sip_ca", "/tls/ca.pem"),
    ("BRIDGE_SIP_TRUNK_LISTEN", "127.0.0.1:5070", "sip", "sip_trunk_listen", "127.0.0.1:5070"),
    ("BRIDGE_SIP_MAX_TRUNKS", "5", "sip", "sip_max_trunks", 5),
    (
        "BRIDGE_SIP_MAX_CONNECTIONS_PER_SOURCE",
        "64",
        "sip",
        "sip_max_connections_per_source",
        64,
    ),
    ("BRIDGE_SIP_FIRST_MESSAGE_TIMEOUT", "12.5", "sip", "sip_first_message_timeout", 12.5),
    ("BRIDGE_SIP_TRUNK_CA", "/etc/pbx-ca.pem", "sip", "sip_trunk_ca", "/etc/pbx-ca.pem"),
    (
        "BRIDGE_SIP_TRUSTED_NETWORKS",
        "31.13.24.0/21, 2a03:2880::/32",
        "sip",
        "sip_trusted_networks",
        ("31.13.24.0/21", "2a03:2880::/32"),
    ),
    (
        "BRIDGE_SIP_VERIFY_CLIENT",
        "client.sip.fbclientcerts.com",
        "sip",
        "sip_verify_client",
        "client.sip.fbclientcerts.com",
    ),
    ("BRIDGE_AGENT_OPENAI_API_KEY", "sk-x", "agents", "agent_openai_api_key", "sk-x"),
    ("BRIDGE_AGENT_GEMINI_API_KEY", "g-x", "agents", "agent_gemini_api_key", "g-x"),
    ("BRIDGE_AGENT_XAI_API_KEY", "xai-x", "agents", "agent_xai_api_key", "xai-x"),
    ("BRIDGE_AGENT_DEEPGRAM_API_KEY", "dg-x", "agents", "agent_deepgram_api_key", "dg-x"),
    ("BRIDGE_AGENT_ELEVENLABS_API_KEY", "xi-x", "agents", "agent_elevenlabs_api_key", "xi-x"),
    ("BRIDGE_AGENT_ULTRAVOX_API_KEY", "uv-x", "agents", "agent_ultravox_api_key", "uv-x"),
    (
        "BRIDGE_AGENT_AZURE_VOICE_LIVE_API_KEY",
        "az-x",
        "agents",
        "agent_azure_voice_live_api_key",
        "az-x",
    ),
    ("BRIDGE_AGENT_OPENAI_LIVE_API_KEY", "sk-l", "agents", "agent_openai_live_api_key", "sk-l"),
    ("BRIDGE_AGENT_OPENAI_LIVE_BUFFER_MS", "160", "agents", "agent_openai_live_buffer_ms", 160),
    ("BRIDGE_AGENT_XAI_SESSION_S", "1800", "agents", "agent_xai_session_s", 1800),
    ("BRIDGE_AGENT_RETRIES", "3", "agents", "agent_retries", 3),
    ("BRIDGE_AGENT_FALLBACK", "human", "agents", "agent_fallback", "human"),
    ("BRIDGE_AGENT_FALLBACK_FILE", "sorry.wav", "agents", "agent_fallback_file", "sorry.wav"),
    ("BRIDGE_STUN_URLS", "stun:a.example:3478", "ice", "stun_urls", ("stun:a.example:3478",)),
    (
        "BRIDGE_SERVER_STUN_URLS",
        "stun:b.example:1",
        "ice",
        "server_stun_urls",
        ("stun:b.example:1",),
    ),
    ("BRIDGE_ICE_ADDRESSES", "127.0.0.1", "ice", "ice_addresses", ("127.0.0.1",)),
    ("BRIDGE_PUBLIC_IP", "203.0.113.9", "ice", "public_ip", "203.0.113.9"),
    ("BRIDGE_TURN_USERNAME", "u", "ice", "turn_username", "u"),
    ("BRIDGE_TURN_PASSWORD", "p", "ice", "turn_password", "p"),
    ("BRIDGE_TURN_SECRET", "s", "ice", "turn_secret", "s"),
    ("BRIDGE_TURN_TTL", "120", "ice", "turn_ttl", 120),
    ("BRIDGE_TURN_HTTP_URL", "http://t.example/c", "ice", "turn_http_url", "http://t.example/c"),
    ("BRIDGE_TURN_HTTP_TOKEN", "h", "ice", "turn_http_token", "h"),
    ("BRIDGE_ICE_GATHER_TIMEOUT", "1.5", "ice", "ice_gather_timeout", 1.5),
    ("BRIDGE_RTP_PORTS", "40000-40999", "ice", "rtp_ports", "40000-40999"),
    ("BRIDGE_UDP_POLL", "false", "ice", "udp_poll", False),
    ("BRIDGE_OPUS_BITRATE", "32000", "media", "opus_bitrate", 32000),
    ("BRIDGE_OPUS_COMPLEXITY", "5", "media", "opus_complexity", 5),
    ("BRIDGE_OPUS_FEC_BITRATE", "40000", "media", "opus_fec_bitrate", 40000),
    ("BRIDGE_OPUS_FEC_COMPLEXITY", "6", "media", "opus_fec_complexity", 6),
    ("BRIDGE_OPUS_CELT_BITRATE", "0", "media", "opus_celt_bitrate", 0),
    ("BRIDGE_OPUS_CELT_COMPLEXITY", "4", "media", "opus_celt_complexity", 4),
    ("BRIDGE_OPUS_FEC", "false", "media", "opus_fec", False),
    ("BRIDGE_OPUS_DTX", "true", "media", "opus_dtx", True),
    ("BRIDGE_OPUS_UPLINK_DTX", "true", "media", "opus_uplink_dtx", True),
    ("BRIDGE_OPUS_PASSTHROUGH", "false", "media", "opus_passthrough", False),
    ("BRIDGE_OPUS_RED", "false", "media", "opus_red", False),
    ("BRIDGE_SPEECH_EVENTS", "true", "media", "speech_events", True),
    ("BRIDGE_DATA_DIR", "/tmp/d", "storage", "data_dir", "/tmp/d"),
    ("BRIDGE_MEDIA_DIR", "/tmp/m", "storage", "media_dir", "/tmp/m"),
    ("BRIDGE_PLAY_URL_ALLOW", "a.example", "storage", "play_url_allow", ("a.example",)),
    ("BRIDGE_PLAY_URL_MAX_BYTES", "2048", "storage", "play_url_max_bytes", 2048),
    ("BRIDGE_PLAY_URL_TIMEOUT", "3", "storage", "play_url_timeout", 3.0),
    ("BRIDGE_RECORD_ALL", "yes", "storage", "record_all", True),
    ("BRIDGE_RECORDING_POLICY", "Forbidden", "storage", "recording_policy", "forbidden"),
    ("BRIDGE_FORK_URL_ALLOW", "f.example", "storage", "fork_url_allow", ("f.example",)),
    ("BRIDGE_RECORDING_RETENTION_DAYS", "2", "storage", "recording_retention_days", 2.0),
    ("BRIDGE_RETENTION_SWEEP_INTERVAL", "60", "storage", "retention_sweep_interval", 60.0),
    ("BRIDGE_NUMBERS_FILE", "/etc/numbers.yaml", "storage", "numbers_file", "/etc/numbers.yaml"),
    ("BRIDGE_SIM_PEER", "tone", "sim", "sim_peer", "tone"),
    ("BRIDGE_SIM_ANSWER_DELAY", "1.5", "sim", "sim_answer_delay", 1.5),
    ("BRIDGE_SIM_ECHO_DELAY", "0.1", "sim", "sim_echo_delay", 0.1),
    ("BRIDGE_SIM_TONE_HZ", "440", "sim", "sim_tone_hz", 440.0),
    ("BRIDGE_SIM_HANGUP_AFTER", "9", "sim", "sim_hangup_after", 9.0),
    (
        "BRIDGE_WEBHOOK_URL",
        "https://hooks.example/in",
        "webhooks",
        "webhook_url",
        "https://hooks.example/in",
    ),
    (
        "BRIDGE_WEBHOOK_SECRET",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "webhooks",
        "webhook_secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ),
    (
        "BRIDGE_WEBHOOK_URL_ALLOW",
        "a.example,b.example",
        "webhooks",
        "webhook_url_allow",
        ("a.example", "b.example"),
    ),
    ("BRIDGE_WEBHOOK_TIMEOUT", "3", "webhooks", "webhook_timeout", 3.0),
    ("BRIDGE_WEBHOOK_MAX_ATTEMPTS", "4", "webhooks", "webhook_max_attempts", 4),
    ("BRIDGE_WEBHOOK_RETRY_BASE", "0.5", "webhooks", "webhook_retry_base", 0.5),
    ("BRIDGE_WEBHOOK_QUEUE_SIZE", "50", "webhooks", "webhook_queue_size", 50),
    ("BRIDGE_WEBHOOK_FLUSH_TIMEOUT", "2", "webhooks", "webhook_flush_timeout", 2.0),
    ("BRIDGE_WORKERS", "auto", "cluster", "workers", "auto"),
    (
        "BRIDGE_DIRECTORY",
        "redis://10.0.0.5:6379/2",
        "cluster",
        "directory",
        "redis://10.0.0.5:6379/2",
    ),
    (
        "BRIDGE_INTERNAL_URL",
        "http://10.0.0.5:8181",
        "cluster",
        "internal_url",
        "http://10.0.0.5:8181",
    ),
    (
        "BRIDGE_INTERNAL_SECRET",
        "0123456789abcdef",
        "cluster",
        "internal_secret",
        "0123456789abcdef",
    ),
    ("BRIDGE_HEARTBEAT_TTL", "2.5", "cluster", "heartbeat_ttl", 2.5),
    ("BRIDGE_EVENT_BACKLOG", "500", "cluster", "event_backlog", 500),
    ("BRIDGE_ADOPT_LOST_CALLS", "false", "cluster", "adopt_lost_calls", False),
    ("BRIDGE_ADOPT_OFFER_TIMEOUT", "12", "cluster", "adopt_offer_timeout", 12.0),
]


@pytest.mark.parametrize("env,raw,group,name,expected", ENV_SAMPLES)
def test_each_setting_is_read_from_its_environment_variable(env, raw, group, name, expected):
    extra = {"BRIDGE_TURN_URLS": "turn:t.example:3478"} if group == "ice" else {}
    if "BRIDGE_TURN_SECRET" not in extra and env not in ("BRIDGE_TURN_USERNAME",):
        extra["BRIDGE_TURN_SECRET"] = "s" if group == "ice" else ""
    if env == "BRIDGE_TURN_USERNAME":
        extra["BRIDGE_TURN_PASSWORD"] = "p"
    partner = {
        "BRIDGE_TURN_PASSWORD": "BRIDGE_TURN_USERNAME",
        "BRIDGE_SIP_CERT": "BRIDGE_SIP_KEY",
        "BRIDGE_SIP_KEY": "BRIDGE_SIP_CERT",
    }
    if env in partner:  # half a pair is refused (test_bad_values_name_the_setting)
        extra[partner[env]] = "x"
    if group == "cluster":
        extra.update(
            {
                "BRIDGE_DIRECTORY": "redis://127.0.0.1:6379",
                "BRIDGE_INTERNAL_SECRET": "0123456789abcdef",
            }
        )
    if env.startswith("BRIDGE_CLOUDAPI_"):  # the default number's, with its engine only
        extra |= {"BRIDGE_ENGINE": "cloudapi", "BRIDGE_CLOUDAPI_SIGNALLING": "sip"}
        extra |= {k: v for k, v in SIP_ROAD.items() if k != env}
    if env == "BRIDGE_ENGINE_SESSION":
        extra |= {"BRIDGE_ENGINE": "wadial", "BRIDGE_ENGINE_URL": "http://e.example"}
    if group == "webhooks" and env != "BRIDGE_WEBHOOK_SECRET":
        extra["BRIDGE_WEBHOOK_SECRET"] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    settings = load_settings([], {**extra, env: raw})
    assert getattr(getattr(settings, group), name) == expected


def test_samples_cover_every_setting() -> None:
    from bridge.config import all_fields

    sampled = {name for _, _, _, name, _ in ENV_SAMPLES}
    special = {"host", "insecure_no_auth", "engine", "turn_provider", "ice_policy", "turn_urls"}
    assert {f.name for f in all_fields()} - special == sampled


SIP_ROAD = {
    "BRIDGE_ENGINE": "cloudapi",
    "BRIDGE_CLOUDAPI_SIGNALLING": "sip",
    "BRIDGE_SIP_HOSTNAME": "sip.example.com",
    "BRIDGE_SIP_CERT": "/tls/cert.pem",
    "BRIDGE_SIP_KEY": "/tls/key.pem",
    "BRIDGE_SIP_NUMBER": "15550009999",
}


def test_the_sip_road_needs_no_graph_settings_but_its_own() -> None:
    settings = load_settings([], SIP_ROAD)
    assert settings.engine.sip and settings.sip.listen == ("0.0.0.0", 5061)
    assert settings.sip.sip_meta_uri == "sip:wa.meta.vc;transport=tls"
    for name in ("BRIDGE_SIP_HOSTNAME", "BRIDGE_SIP_CERT", "BRIDGE_SIP_KEY", "BRIDGE_SIP_NUMBER"):
        env = {k: v for k, v in SIP_ROAD.items() if k != name}
        with pytest.raises(ConfigError, match=name):
            load_settings([], env)
    with pytest.raises(ConfigError, match="BRIDGE_SIP_NUMBER"):
        load_settings([], {**SIP_ROAD, "BRIDGE_SIP_NUMBER": "+15550009999"})
    with pytest.raises(ConfigError, match="BRIDGE_SIP_LISTEN"):
        load_settings([], {**SIP_ROAD, "BRIDGE_SIP_LISTEN": "5061"})
    with pytest.raises(ConfigError, match="BRIDGE_WORKERS"):
        env = {**SIP_ROAD, "BRIDGE_WORKERS": "2", "BRIDGE_DIRECTORY": "redis://127.0.0.1:6379"}
        load_settings([], {**env, "BRIDGE_INTERNAL_SECRET": "0123456789abcdef"})
    with pytest.raises(ConfigError, match="BRIDGE_CLOUDAPI_SIGNALLING"):
        load_settings([], {**SIP_ROAD, "BRIDGE_CLOUDAPI_SIGNALLING": "h323"})


@pytest.mark.parametrize(
    "hostname", ["sip.example.com:5061", "sips:sip.example.com", "sip example.com", "-x.example"]
)
def test_the_sip_host_name_is_a_host_name(hostname: str) -> None:
    """BRIDGE_SIP_HOSTNAME is the host of our Via, Contact and From: a port or a scheme in it
    (accepted before) made each of them wrong for every call; a number's sipHostname was
    already refused so (numbers/model.py)."""
    with pytest.raises(ConfigError, match="BRIDGE_SIP_HOSTNAME"):
        load_settings([], {**SIP_ROAD, "BRIDGE_SIP_HOSTNAME": hostname})
    assert load_settings([], {**SIP_ROAD, "BRIDGE_SIP_HOSTNAME": "sip-1.example.com"})


@pytest.mark.parametrize("hop", ["tcp", "udp", "TCP", "ws"])
def test_metas_sip_uri_is_over_tls(hop: str) -> None:
    """Meta's SIP road is TLS only: a BRIDGE_SIP_META_URI with another transport was dialled
    as plain TCP, the INVITE's digest answer and SDES keys (RFC 4568) in clear text."""
    uri = f"sip:wa.meta.vc;transport={hop}"
    with pytest.raises(ConfigError, match="BRIDGE_SIP_META_URI"):
        load_settings([], {**SIP_ROAD, "BRIDGE_SIP_META_URI": uri})
    for good in ("sip:wa.meta.vc;transport=tls", "sip:wa.meta.vc:5061", "sips:wa.meta.vc"):
        assert load_settings([], {**SIP_ROAD, "BRIDGE_SIP_META_URI": good})


def test_shutdown_calls_hand_over_by_default_only_where_calls_can_move() -> None:
    lone = load_settings([], {})
    assert lone.calls.shutdown_calls is ShutdownCalls.HANGUP
    shared = load_settings(
        [],
        {
            "BRIDGE_DIRECTORY": "redis://127.0.0.1:6379",
            "BRIDGE_INTERNAL_SECRET": "0123456789abcdef",
        },
    )
    assert shared.calls.shutdown_calls is ShutdownCalls.HANDOVER
    told = load_settings(
        [],
        {
            "BRIDGE_DIRECTORY": "redis://127.0.0.1:6379",
            "BRIDGE_INTERNAL_SECRET": "0123456789abcdef",
            "BRIDGE_SHUTDOWN_CALLS": "hangup",
        },
    )
    assert told.calls.shutdown_calls is ShutdownCalls.HANGUP


@pytest.mark.parametrize("raw", ["5000", "600000"])
def test_a_clean_link_bitrate_outside_opus_range_is_refused_and_0_turns_it_off(raw) -> None:
    with pytest.raises(ConfigError, match="BRIDGE_OPUS_CELT_BITRATE"):
        load_settings([], {"BRIDGE_OPUS_CELT_BITRATE": raw})
    assert load_settings([], {"BRIDGE_OPUS_CELT_BITRATE": "0"}).media.opus_celt_bitrate == 0


@pytest.mark.parametrize("bad", ["missing", "not a certificate"])
async def test_a_trunk_ca_that_does_not_load_stops_the_start_naming_it(tmp_path, bad) -> None:
    """BRIDGE_SIP_TRUNK_CA is read as the trunks' user agent is made, at start: a file that
    is not there was a FileNotFoundError traceback (exit 1) naming no setting; now it is a
    ConfigError, one line from ``webrtc-bridge`` (exit 2), as BRIDGE_SIP_CA's is."""
    from aiohttp import web

    from bridge.app import create_app
    from bridge.config import settings_for_tests

    ca = tmp_path / "pbx-ca.pem"
    if bad == "not a certificate":
        ca.write_text("not a certificate\n")
    settings = settings_for_tests(data_dir=str(tmp_path / "data"), sip_trunk_ca=str(ca))
    runner = web.AppRunner(create_app(settings))
    try:  # as web.run_app starts and cleans up
        with pytest.raises(ConfigError) as info:
            await runner.setup()
    finally:
        await runner.cleanup()
    message = str(info.value)
    assert message.startswith(f"BRIDGE_SIP_TRUNK_CA={str(ca)!r}: ") and "\n" not in message


@pytest.mark.parametrize("name", ["sorry.wav", "../sorry.wav"])
async def test_a_fallback_message_not_in_the_media_dir_stops_the_start(make_client, tmp_path, name):
    """BRIDGE_AGENT_FALLBACK=message plays BRIDGE_AGENT_FALLBACK_FILE from BRIDGE_MEDIA_DIR:
    a file that is not there (or a name that leaves the directory) was found only when a
    model could not be reached again, and the caller then heard nothing (a WARNING)."""
    from bridge.startup import StartupError

    media = tmp_path / "media"
    media.mkdir()
    (tmp_path / "sorry.wav").write_bytes(b"RIFF")  # beside the directory, not in it
    fallback = {"agent_fallback": "message", "agent_fallback_file": name}
    with pytest.raises(StartupError) as info:
        await make_client(media_dir=str(media), **fallback)
    message = str(info.value)
    assert message.startswith(f"BRIDGE_AGENT_FALLBACK_FILE={name!r}: ") and "\n" not in message
    assert str(media) in message
    (media / "sorry.wav").write_bytes(b"RIFF")
    if name == "sorry.wav":  # there now: the bridge starts
        assert await make_client(media_dir=str(media), **fallback)


NAMED_AS_NO_SETTING = {
    "BRIDGE_OPUS_DIRECT",  # gone: performance.md tells its history
    "BRIDGE_RECORD_AL",  # configuration.md: a misspelling, and what the start says of it
    "BRIDGE_REDIS_SERVICE_HOST",  # configuration.md: Kubernetes' service links
    "BRIDGE_REDIS_PORT_6379_TCP",
}
"""Names the pages give as examples of what is no setting."""


def test_every_bridge_name_the_docs_and_deploy_files_use_is_read_by_the_code() -> None:
    """A ``BRIDGE_*`` name in the guides, the README, deploy/, the Dockerfile or examples/ is a
    setting or one of the process's own variables (``BRIDGE_SIP_*``, ``BRIDGE_AGENT_<…>``
    stand for several): a name misspelled or renamed there sets nothing at all."""
    import re
    from pathlib import Path

    from bridge.config import PROCESS_VARIABLES, all_fields

    root = Path(__file__).resolve().parents[2]
    known = {env_name(f.name) for f in all_fields()} | PROCESS_VARIABLES
    files = [root / "README.md", root / "Dockerfile"]
    for where in ("docs", "deploy", "examples"):
        files += [
            p
            for p in (root / where).rglob("*")
            # (what running examples/ leaves there, __pycache__, is no text)
            if p.is_file() and p.suffix not in (".png", ".pyc") and "__pycache__" not in p.parts
        ]
    unknown = set()
    for path in files:
        for m in re.finditer(r"BRIDGE_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_]*[*<])", path.read_text()):
            if m.group() not in known | NAMED_AS_NO_SETTING:
                unknown.add(f"{path.relative_to(root)}: {m.group()}")
    assert sorted(unknown) == []
    guide = (root / "docs" / "configuration.md").read_text()
    assert all(f"`{name}`" in guide for name in PROCESS_VARIABLES)
    for path in (root / "bridge").rglob("*.py"):  # what the code reads by name
        for name in re.findall(r"[\"'](BRIDGE_[A-Z0-9_]+)[\"']", path.read_text()):
            assert name in known, f"{path.relative_to(root)}: {name}"


@pytest.mark.parametrize("listen", ["203.0.113.7:5070", "no-such-host.invalid:5070"])
async def test_a_trunk_listen_address_not_ours_stops_the_start_naming_it(tmp_path, listen):
    """BRIDGE_SIP_TRUNK_LISTEN on an address that is not this machine's, or a name that does
    not resolve, was said as a port "taken" by another worker, and then the retry on a port of
    its own failed the same way: a traceback, exit 1. Only a port in use falls back so."""
    from aiohttp import web

    from bridge.app import create_app
    from bridge.config import settings_for_tests

    settings = settings_for_tests(data_dir=str(tmp_path / "data"), sip_trunk_listen=listen)
    runner = web.AppRunner(create_app(settings))
    try:  # as web.run_app starts and cleans up
        with pytest.raises(ConfigError) as info:
            await runner.setup()
    finally:
        await runner.cleanup()
    message = str(info.value)
    assert message.startswith(f"BRIDGE_SIP_TRUNK_LISTEN={listen!r}: ") and "\n" not in message


async def test_a_trunk_port_another_worker_holds_still_falls_back(tmp_path) -> None:
    """Only a port in use (the first worker of several holds it) falls back to a port of the
    worker's own, said at WARNING."""
    import socket

    from aiohttp import web

    from bridge.api.keys import TRUNKS
    from bridge.app import create_app
    from bridge.config import settings_for_tests

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        listen = f"127.0.0.1:{port}"
        settings = settings_for_tests(data_dir=str(tmp_path / "data"), sip_trunk_listen=listen)
        app = create_app(settings)
        runner = web.AppRunner(app)
        try:
            await runner.setup()
            assert app[TRUNKS].port not in (0, port)
        finally:
            await runner.cleanup()


async def test_an_ice_address_not_this_machines_stops_the_start_naming_it(make_client) -> None:
    """Host candidates are gathered on sockets bound to BRIDGE_ICE_ADDRESSES: an address that
    is not this machine's was taken, and every call then failed to gather (no candidate)."""
    with pytest.raises(ConfigError) as info:
        await make_client(ice_addresses=("127.0.0.1", "203.0.113.7"))
    message = str(info.value)
    assert message.startswith("BRIDGE_ICE_ADDRESSES: '203.0.113.7' ") and "\n" not in message
    assert await make_client(ice_addresses=("127.0.0.1",))


OWN_RANGE_CHECK = {"rate_limit", "recording_retention_days", "opus_celt_bitrate"}
"""Number settings whose allowed values are no closed range (above 0; 0 or a range): their
help says them, their group's validate checks them."""


def test_every_number_setting_declares_the_range_it_keeps() -> None:
    """The allowed range of a number setting is data (shown in --help and the configuration
    guide's table, which is generated from it) and the check: its ends are taken, a value
    just outside is refused naming the setting. Before, each range lived only in a group's
    validate, and the guide showed none of them."""
    from bridge.config import all_fields

    for f in all_fields():
        if isinstance(f.default, bool) or not isinstance(f.default, int | float):
            continue
        if f.name in OWN_RANGE_CHECK:
            assert "limits" not in f.metadata, f.name
            continue
        assert "limits" in f.metadata, f"{env_name(f.name)} declares no range"
        low, high = f.metadata["limits"]
        step = 1 if isinstance(f.default, int) else max(abs(low) / 2, 0.001)
        outside = [low - step] + ([high + step] if high is not None else [])
        for value in outside:
            with pytest.raises(ConfigError, match=env_name(f.name)):
                load_settings([], {env_name(f.name): str(value)})
        for value in [low] + ([high] if high is not None else []):
            load_settings([], {env_name(f.name): str(value)})


def test_a_bridge_name_that_is_no_setting_is_told_with_the_setting_meant() -> None:
    """A misspelled variable (BRIDGE_RECORD_AL) set nothing, silently: the setting it meant kept
    its default. Each is told (the start logs it at WARNING), with the closest setting's name;
    the process's own variables and Kubernetes' service links (BRIDGE_REDIS_SERVICE_HOST … for
    a Service named bridge-redis) are not."""
    from bridge.config import unknown_settings

    env = {
        "BRIDGE_RECORD_AL": "true",
        "BRIDGE_WEBHOOK_URLS": "https://h.example/x",
        "BRIDGE_PORT": "8080",
        "BRIDGE_WORKER_INDEX": "0",
        "BRIDGE_REDIS_SERVICE_HOST": "10.0.0.9",
        "BRIDGE_REDIS_PORT": "tcp://10.0.0.9:6379",
        "BRIDGE_REDIS_PORT_6379_TCP_ADDR": "10.0.0.9",
        "HOME": "/root",
    }
    assert unknown_settings(env) == [
        "BRIDGE_RECORD_AL is no setting (ignored): BRIDGE_RECORD_ALL?",
        "BRIDGE_WEBHOOK_URLS is no setting (ignored): BRIDGE_WEBHOOK_URL?",
    ]
    assert unknown_settings({"BRIDGE_ZZZ": "1"}) == ["BRIDGE_ZZZ is no setting (ignored)"]
