"""The settings table of ``docs/configuration.md``, generated from the settings themselves (a
test keeps the guide equal to it: ``python -m bridge.config.docs`` prints it)."""

from __future__ import annotations

from .groups import GROUPS, env_name, setting_fields
from .loader import describe_default, describe_kind, describe_limits, flag_name


def settings_table() -> str:
    rows = ["| variable | flag | group · type | default | meaning |", "|---|---|---|---|---|"]
    for group_name, group in GROUPS.items():
        for f in setting_fields(group):
            flag = flag_name(f.name)
            if isinstance(f.default, bool):
                flag += "` / `--no-" + f.name.replace("_", "-")
            default = describe_default(f)
            shown = f"({default})" if default in ("unset", "empty") else default
            kind = describe_kind(f).strip("{}").replace(",", " \\| ") + describe_limits(f)
            rows.append(
                f"| `{env_name(f.name)}` | `{flag}` | {group_name} · {kind} | `{shown}` "
                f"| {f.metadata['help']} |"
            )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")
