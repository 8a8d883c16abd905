"""Settings: one frozen dataclass per concern (``groups``), read from ``BRIDGE_*`` environment
variables and CLI flags (``loader``)."""

from .groups import (
    GROUPS,
    CallSettings,
    ConfigError,
    EngineKind,
    EngineSettings,
    IcePolicy,
    IceSettings,
    LogFormat,
    LogLevel,
    MediaSettings,
    ServerSettings,
    Settings,
    ShutdownCalls,
    SimPeer,
    SimSettings,
    StorageSettings,
    env_name,
)
from .loader import all_fields, build_arg_parser, flag_name, load_settings, settings_for_tests

__all__ = [
    "GROUPS",
    "CallSettings",
    "ConfigError",
    "EngineKind",
    "EngineSettings",
    "IcePolicy",
    "IceSettings",
    "LogFormat",
    "LogLevel",
    "MediaSettings",
    "ServerSettings",
    "Settings",
    "ShutdownCalls",
    "SimPeer",
    "SimSettings",
    "StorageSettings",
    "all_fields",
    "build_arg_parser",
    "env_name",
    "flag_name",
    "load_settings",
    "settings_for_tests",
]
