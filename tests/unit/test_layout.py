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
# metrics, media_metrics, logs, http, timefmt) sit beside the path and may be used by any layer.
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


SEAM = {BRIDGE / "rtc" / "aiortc_seam.py", BRIDGE / "rtc" / "aiortc_types.py"}
LIBRARIES = ("aiortc", "aioice")


def library_submodules(source: str) -> list[str]:
    """The aiortc/aioice submodules ``source`` imports (``import aiortc.rtp``, ``from
    aioice.ice import …``); what the packages' top levels export is fine."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        else:
            continue
        found += [n for n in names if n.split(".")[0] in LIBRARIES and "." in n]
    return found


def test_the_submodule_check_catches_both_forms() -> None:
    planted = "import aiortc.rtp\nfrom aioice.ice import Connection\n"
    planted += "from aiortc import RTCPeerConnection\nimport aioice\n"
    assert library_submodules(planted) == ["aiortc.rtp", "aioice.ice"]


def test_only_the_seam_imports_aiortc_and_aioice_submodules() -> None:
    """Issue 47: aiortc and aioice supply ICE, DTLS and the SRTP keys through
    ``rtc/aiortc_seam.py``; the public classes of their submodules the bridge needs (packets,
    the receiver's statistics) are named once, in ``rtc/aiortc_types.py``."""
    offenders = {
        str(path.relative_to(BRIDGE)): found
        for path in sorted(BRIDGE.rglob("*.py"))
        if path not in SEAM and (found := library_submodules(path.read_text()))
    }
    assert offenders == {}
