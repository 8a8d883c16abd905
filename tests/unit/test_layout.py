"""The package layout keeps the data path readable: imports only run down the flow
api → (webhooks →) calls → (rtc | engines | attachments) → media → audio, and importing the
DSP layer stays cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"

# What each layer may import from inside the package. Base modules (config, errors, tasks,
# metrics, media_metrics, logs, http, timefmt, sealer, countries) sit beside the path and may be
# used by any layer.
BASE = {
    "config",
    "errors",
    "tasks",
    "metrics",
    "media_metrics",
    "logs",
    "http",
    "timefmt",
    "sealer",
    "countries",
}
ALLOWED = {
    "api": {
        "desk",
        "cluster",
        "webhooks",
        "calls",
        "numbers",
        "rtc",
        "engines",
        "agents",
        "attachments",
        "trunks",
        "media",
        "audio",
    },
    "cluster": {"calls", "numbers", "media", "audio"},
    "webhooks": {"calls", "numbers", "media", "audio"},
    "calls": {"numbers", "rtc", "engines", "attachments", "media", "audio"},
    "numbers": {"engines", "rtc", "sip", "media", "audio"},  # a number is an engine's identity
    "rtc": {"media", "audio"},
    "engines": {"rtc", "sip", "media", "audio"},
    # call-aware SIP: trunks' calls and SIP participants, above the calls they join
    "trunks": {"calls", "numbers", "sip", "rtc", "media", "audio"},
    "sip": set(),  # a wire protocol: messages, transport, dialogs; no media, no calls
    "agents": {"attachments", "media", "audio"},  # model connectors: attachments of a call
    # people: a call's routes; a leg lent across workers runs a call's PCM stream as an engine's
    "desk": {"calls", "numbers", "engines", "attachments", "media", "audio"},
    "attachments": {"media", "audio"},
    "media": {"audio"},
    "audio": set(),
}


def bridge_imports(path: Path) -> set[str]:
    """Top-level ``bridge`` subpackages/modules a file imports."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(BRIDGE).parts
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[:-1])[: len(package) - node.level]
            target = base + (node.module.split(".") if node.module else [])
            if target:
                found.add(target[0])
            else:  # from .. import x
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bridge."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
    return found


def test_imports_follow_the_data_path() -> None:
    wrong = []
    for layer, allowed in ALLOWED.items():
        for path in (BRIDGE / layer).rglob("*.py"):
            for target in bridge_imports(path) - {layer} - BASE:
                if target not in allowed:
                    wrong.append(f"{path.relative_to(BRIDGE)} imports {target}")
    assert not wrong, wrong


def test_base_modules_import_no_layer_above_media() -> None:
    """Not even the engines: the metrics read the engines' counters through a protocol."""
    wrong = []
    for name in BASE:
        path = BRIDGE / f"{name}.py"
        if not path.exists():
            path = BRIDGE / name / "__init__.py"
        files = [path] if path.name != "__init__.py" else list(path.parent.rglob("*.py"))
        for f in files:
            for target in bridge_imports(f) - BASE - {name}:
                if target not in {"media", "audio"}:
                    wrong.append(f"{f.relative_to(BRIDGE)} imports {target}")
    assert not wrong, wrong


def test_importing_the_dsp_layer_is_cheap() -> None:
    code = (
        "import sys, bridge.audio.pcm;"
        "print(','.join(m for m in ('aiohttp', 'aiortc', 'prometheus_client') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


ENGINE_MODULES = {"sim", "zuckzapgo", "wadial", "cloudapi"}


def test_nothing_above_the_engines_imports_one_engine() -> None:
    """Code above ``engines/`` sees engines through their protocols and the registry (the
    relay between workers is the neutral ``PcmStreamMedia``, not ZuckZapGo's channel)."""
    wrong = []
    for path in BRIDGE.rglob("*.py"):
        if path.relative_to(BRIDGE).parts[0] == "engines":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if "engines" in parts and set(parts[parts.index("engines") + 1 :]) & ENGINE_MODULES:
                    wrong.append(f"{path.relative_to(BRIDGE)} imports {node.module}")
    assert not wrong, wrong


SEAM = BRIDGE / "rtc" / "aiortc_seam.py"


def library_submodule_imports(path: Path) -> list[str]:
    """``aiortc.x``/``aioice.x`` modules a file imports (``import aiortc.rtp``,
    ``from aiortc.rtp import …``, ``from aioice import stun``), with their line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
            if node.module in ("aiortc", "aioice"):  # a submodule imported by name
                lib = __import__(node.module)
                exported = set(getattr(lib, "__all__", ()))
                names += [f"{node.module}.{a.name}" for a in node.names if a.name not in exported]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("aiortc", "aioice") and "." in name:
                found.append(f"{path.relative_to(BRIDGE)}:{node.lineno}: {name}")
    return found


def test_only_the_seam_imports_aiortc_or_aioice_submodules() -> None:
    """What aiortc and aioice do not export at their top level (``__all__``) is theirs to
    change: only ``rtc/aiortc_seam.py`` names it, so an upgrade is a change to one file."""
    wrong = []
    for path in sorted(BRIDGE.rglob("*.py")):
        if path != SEAM:
            wrong += library_submodule_imports(path)
    assert wrong == [], wrong
    assert library_submodule_imports(SEAM)  # the check sees the seam's own imports
