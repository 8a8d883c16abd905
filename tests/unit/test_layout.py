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
# metrics, media_metrics, logs, http, timefmt, sealer, countries, stopping, disk) sit beside
# the path and may be used by any layer.
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
    "stopping",
    "disk",
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


# Import circles inside a package: modules that import each other, at run time, in a function
# or under TYPE_CHECKING alike (a child that names its parent's type still knows its parent).
# A child is handed what it uses (a Protocol it declares, or the narrow object itself: issue 47's
# calls/control.py, issue 61's trunks and desk); its owner imports it, never the other way.
CIRCLES_NOT_YET_GONE: set[frozenset[str]] = set()
"""Circles still there (take one out once it is broken: the test fails while it is listed)."""


def module_name(path: Path, root: Path) -> str:
    """``trunks.service`` for ``bridge/trunks/service.py``; a package is its ``__init__``."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, root: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` (dotted, below ``root``) that the file at ``path`` imports."""
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[: len(package) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
        elif (node.module or "").startswith(f"{root.name}."):
            target = node.module.split(".")[1:]  # type: ignore[union-attr]
        else:
            continue
        dotted = ".".join(target)
        for alias in node.names:  # ``from . import wire``: the module; else the package's own
            child = f"{dotted}.{alias.name}" if dotted else alias.name
            found.add(child if child in modules else dotted)
    return found & modules


def import_circles(root: Path) -> set[frozenset[str]]:
    """Each set of modules inside one top-level package of ``root`` that import each other
    (Tarjan's strongly connected components, those of more than one module)."""
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    graph = {
        name: {m for m in package_imports(path, root, set(paths)) if m != name}
        for name, path in paths.items()
    }
    graph = {  # only inside a package: across packages the layer rules above apply
        name: {m for m in targets if m.split(".")[0] == name.split(".")[0]}
        for name, targets in graph.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = set()

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for target in graph[name]:
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == name:
                    break
            if len(component) > 1:
                circles.add(frozenset(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return circles


def test_no_package_has_an_import_circle() -> None:
    """Children do not know their owner: no module of a package imports one that imports it
    back (``trunks/`` and ``desk/`` hand each child what it uses, issue 61)."""
    circles = import_circles(BRIDGE)
    assert circles - CIRCLES_NOT_YET_GONE == set(), sorted(map(sorted, circles))
    assert CIRCLES_NOT_YET_GONE - circles == set(), "broken: take it out of the list"


def test_a_circle_under_type_checking_counts(tmp_path: Path) -> None:
    """The check sees an owner whose child names it only for mypy, and a relative import."""
    package = tmp_path / "app" / "desk"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .service import Desk\n")
    (package / "service.py").write_text("from . import runner\nclass Desk: ...\n")
    (package / "runner.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .service import Desk\n"
    )
    (package / "wire.py").write_text("from app.desk import runner\n")
    assert import_circles(tmp_path / "app") == {frozenset({"desk.service", "desk.runner"})}
