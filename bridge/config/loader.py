"""Reading the settings: ``BRIDGE_*`` environment variables and CLI flags, validated.

Every setting is an environment variable (``BRIDGE_PORT``) and a CLI flag (``--port``); a flag
wins over the environment, which wins over the default. Booleans have both ``--x`` and
``--no-x``. :func:`load_settings` validates everything at start and raises
:class:`ConfigError` with a one-line message naming the bad setting (a bad flag too);
:func:`unknown_settings` tells the ``BRIDGE_*`` variables that are no setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

from .groups import GROUPS, ConfigError, Settings, env_name, number_text, setting_fields


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def all_fields() -> Iterator[dataclasses.Field[Any]]:
    """Every setting's field, group by group."""
    for group in GROUPS.values():
        yield from setting_fields(group)


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


def describe_kind(f: dataclasses.Field[Any]) -> str:
    """The value's type as ``--help`` shows it."""
    default = f.default
    if isinstance(default, enum.Enum):
        return "{" + ",".join(m.value for m in type(default)) + "}"
    if isinstance(default, bool):
        return "BOOL"
    if isinstance(default, int):
        return "INT"
    if isinstance(default, float):
        return "SECONDS" if f.metadata["help"].startswith("seconds") else "NUMBER"
    if isinstance(default, tuple):
        return "LIST"
    return "TEXT"


def describe_limits(f: dataclasses.Field[Any]) -> str:
    """A number setting's range as ``--help`` and the guide show it after its type
    (`` (1-32)``, `` (at least 600)``; empty: none declared)."""
    if "limits" not in f.metadata:
        return ""
    low, high = f.metadata["limits"]
    if high is None:
        return f" (at least {number_text(low)})"
    return f" ({number_text(low)}-{number_text(high)})"


def describe_default(f: dataclasses.Field[Any]) -> str:
    default = f.default
    if f.metadata.get("secret"):
        return "unset"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, enum.Enum):
        return str(default.value)
    if isinstance(default, tuple):
        return ",".join(default) or "empty"
    return str(default) if default != "" else "empty"


class _Parser(argparse.ArgumentParser):
    """argparse whose own errors (a flag that is none, one without its value) are a
    :class:`ConfigError`, one line like any bad setting, not its whole usage and an exit."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (webrtc-bridge --help lists the flags)")


def build_arg_parser() -> argparse.ArgumentParser:
    """The CLI: one flag per setting (``--no-…`` too for booleans), defaults left to the env."""
    parser = _Parser(
        prog="webrtc-bridge",
        description="WebRTC media bridge for WhatsApp calls. Every flag is also an environment "
        "variable (shown with each); a flag wins over the environment.",
    )
    for group_name, group in GROUPS.items():
        section = parser.add_argument_group(f"{group_name} settings")
        for f in setting_fields(group):
            helptext = (
                f"{f.metadata['help']} [{describe_kind(f)}{describe_limits(f)}, "
                f"default {describe_default(f)}; "
                f"env {env_name(f.name)}]"
            )
            if isinstance(f.default, bool):
                section.add_argument(
                    flag_name(f.name),
                    dest=f.name,
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=helptext,
                )
            else:
                section.add_argument(
                    flag_name(f.name), dest=f.name, metavar=describe_kind(f), help=helptext
                )
    return parser


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``) and ``argv`` flags, validated."""
    env = os.environ if environ is None else environ
    args = vars(build_arg_parser().parse_args(list(argv) if argv is not None else []))
    values: dict[str, Any] = {}
    for f in all_fields():
        raw = args.get(f.name)
        source = flag_name(f.name)
        if isinstance(raw, bool):  # --x / --no-x
            values[f.name] = raw
            continue
        if raw is None:
            raw = env.get(env_name(f.name))
            source = env_name(f.name)
        if raw is None:
            continue
        try:
            values[f.name] = _parser_for(f)(raw)
        except ValueError as exc:
            shown = " (its value not shown)" if f.metadata["secret"] else f"={raw!r}"
            raise ConfigError(f"{source}{shown}: {exc}") from None
    settings = Settings.from_flat(values)
    settings.validate()
    return settings


PROCESS_VARIABLES = frozenset({"BRIDGE_WORKER_INDEX", "BRIDGE_WORKERS_TOTAL", "BRIDGE_WORKER_ID"})
"""``BRIDGE_*`` variables that are no setting: the supervisor's for its workers, and a
process's identity as a call owner (docs/configuration.md lists them)."""

_SERVICE_LINK = re.compile(r"_SERVICE_(HOST|PORT)(_\w+)?$|_PORT(_\d+_(TCP|UDP|SCTP)(_\w+)?)?$")
"""What Kubernetes sets for each Service of the namespace (``BRIDGE_REDIS_SERVICE_HOST``,
``BRIDGE_REDIS_PORT_6379_TCP`` … for one named ``bridge-redis``)."""


def unknown_settings(environ: Mapping[str, str] | None = None) -> list[str]:
    """Each ``BRIDGE_*`` variable of ``environ`` that is no setting, as a line saying so and
    naming the closest setting: a misspelled name sets nothing, and its setting keeps its
    default without a word."""
    env = os.environ if environ is None else environ
    names = [env_name(f.name) for f in all_fields()]
    told = []
    for name in sorted(env):
        if (
            not name.startswith("BRIDGE_")
            or name in names
            or name in PROCESS_VARIABLES
            or _SERVICE_LINK.search(name)
        ):
            continue
        # Compared without the prefix every name shares (all would look alike).
        close = difflib.get_close_matches(name[7:], [n[7:] for n in names], n=1)
        told.append(f"{name} is no setting (ignored)" + (f": BRIDGE_{close[0]}?" if close else ""))
    return told


def settings_for_tests(**overrides: Any) -> Settings:
    """Settings with test-friendly defaults (loopback ICE, no STUN), validated."""
    base: dict[str, Any] = {
        "stun_urls": (),
        "ice_addresses": ("127.0.0.1",),
        "sim_answer_delay": 0.2,
        "rate_limit": 1000.0,
        "rate_burst": 1000,
        # Call records add call.media_warning and call.report to every call's events: only
        # the tests about them turn them on.
        "call_reports": False,
    }
    base.update(overrides)
    settings = Settings.from_flat(base)
    settings.validate()
    return settings
