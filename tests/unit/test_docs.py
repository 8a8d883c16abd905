"""The documentation stays walkable: every relative link in README.md and docs/ leads to a file
of this repository, and nothing points outside it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_relative_link_leads_to_a_file_of_the_repository() -> None:
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue  # a URL, or a place on the same page
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            if not path.exists() or ROOT not in path.parents:
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert broken == []


def test_no_doc_points_outside_the_repository() -> None:
    for doc in DOCS:
        text = doc.read_text()
        for outside in ("../shared", "/work/", "specs/"):
            assert outside not in text, f"{doc.relative_to(ROOT)} mentions {outside!r}"


def test_the_readme_stays_short_and_links_every_guide() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for doc in DOCS[1:]:
        rel = doc.relative_to(ROOT).as_posix()
        assert rel in readme or (doc.name == "README.md" and "docs/engines/" in readme), rel


def test_the_architecture_lists_every_module_of_the_package() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"^\| `(bridge/[^`]+\.py)` \|", text, re.M))
    on_disk = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "bridge").rglob("*.py")
        if p.name != "__init__.py"
    }
    assert on_disk - listed == set(), "add these to docs/architecture.md's module list"
    assert listed - on_disk == set(), "these are gone: take them out of the module list"


# Names the architecture uses that are not the bridge's own (libraries, products, protocols).
NOT_OURS = {
    "ClientSession",  # aiohttp
    "RTCPeerConnection",  # aiortc
    "Queue",  # asyncio's, queue's
    "OpenAPI",
    "WebRTC",
    "WebSocket",
    "WhatsApp",
    "ZuckZapGo",
    "WaGo",
}


def test_every_class_the_architecture_names_exists() -> None:
    """A class named in docs/architecture.md (in code spans, ``Owner.method`` forms included,
    and in the diagrams) is one the bridge defines: a renamed or removed class is renamed or
    removed there too."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    named: set[str] = set()
    for fence in re.findall(r"```.*?```", text, flags=re.S):  # the diagrams
        named |= set(re.findall(r"\b([A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+)\b", fence))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        match = re.match(r"^(?:[a-z_]+\.)*([A-Z][a-z0-9]+[A-Za-z0-9]*)(?:[.(\[]|$)", span)
        if match:
            named.add(match.group(1))
    defined: set[str] = set()
    for path in (ROOT / "bridge").rglob("*.py"):
        source = path.read_text()
        defined |= set(re.findall(r"^\s*class (\w+)", source, re.M))
        defined |= set(re.findall(r"^(\w+)\s*(?::[^=\n]+)?=", source, re.M))  # aliases
    assert named, "no class found: the pattern is wrong"
    assert sorted(named - defined - NOT_OURS) == []


def test_the_route_in_the_architecture_is_the_media_packages_list() -> None:
    """docs/architecture.md's route table is ``bridge/media/route.py``'s, and every hop there
    names a method that exists: a hop renamed, moved or gone fails here."""
    import importlib

    from bridge.media.route import ROUTE, table

    assert table() in (ROOT / "docs" / "architecture.md").read_text()
    for hops in ROUTE.values():
        for hop in hops:
            module, name = hop.where.split(":")
            obj: object = importlib.import_module(f"bridge.{module}")
            for part in name.split("."):
                obj = getattr(obj, part)
            assert callable(obj), hop


def _text(node: ast.AST) -> str | None:
    """``node``'s string, if it is a string literal."""
    value = node.value if isinstance(node, ast.Constant) else None
    return value if isinstance(value, str) else None


def _literals(path: Path, called: str) -> list[tuple[str, list[str]]]:
    """Each call of ``called`` (a function or a method) in ``path``: what it is called on
    (``""`` for a function) and the string literals of its arguments, lists opened."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if name != called:
            continue
        on = getattr(getattr(func, "value", None), "id", "")
        args = [e for a in node.args for e in (a.elts if isinstance(a, ast.List) else [a])]
        found.append((on, [t for a in args if (t := _text(a)) is not None]))
    return found


def test_the_metrics_table_names_every_reason_of_the_drop_and_refusal_counters() -> None:
    """docs/deployment.md's row of each counter of drops or refusals with a ``reason`` label
    names every value the code counts under it: a reason added in the code and not in the
    table (four of the UDP guard's, the SDES leg's ``no media``) fails here."""
    from bridge.sip.datagram import DROPS
    from bridge.sip.places import REASONS
    from bridge.trunks.refusals import REFUSALS

    rows = (ROOT / "docs" / "deployment.md").read_text().splitlines()

    def row(metric: str) -> str:
        (found,) = [r for r in rows if r.startswith("| ") and f"`{metric}" in r]
        return found

    code = ROOT / "bridge"
    bus = {s[1] for on, s in _literals(code / "media_metrics.py", "add_metric") if on == "dropped"}
    udp = {
        s for p in (code / "rtc").glob("*.py") for _, found in _literals(p, "drop") for s in found
    }
    for node in ast.walk(ast.parse((code / "rtc" / "guard.py").read_text())):
        # the guard's verdicts (``return "empty"``, ``return None if … else "…"``), and what
        # it counts when it reaches none (``reason = "unclassified"``)
        if isinstance(node, ast.Return) and node.value is not None:
            udp |= {t for c in ast.walk(node.value) if (t := _text(c)) is not None}
        elif isinstance(node, ast.Assign) and (t := _text(node.value)) is not None:
            udp.add(t)
    failures = {s[1] for p in code.rglob("*.py") for _, s in _literals(p, "failure") if len(s) == 2}
    expected = {
        "bridge_bus_frames_dropped_total": bus,
        "bridge_udp_dropped_total": udp,
        "bridge_webrtc_failures_total": failures,
        "bridge_sip_trunk_refused_total": {*REFUSALS, *REASONS, *DROPS},
    }
    assert len(bus) >= 10 and {"empty", "unknown_source", "oversize"} <= udp and failures
    missing = {
        metric: sorted(r for r in reasons if f"`{r}`" not in row(metric))
        for metric, reasons in expected.items()
    }
    assert missing == {metric: [] for metric in expected}


def test_the_cloud_api_coverage_count_is_its_tables() -> None:
    """docs/engines/cloudapi.md's *Coverage of Meta's Calling* says how many of its rows are
    supported, partly and missing: the sentence is the table's count (it said 61 of 64 while
    the table had grown to 70 rows)."""
    doc = (ROOT / "docs/engines/cloudapi.md").read_text()
    section = doc.split("## Coverage of Meta's Calling", 1)[1].split("\n## ", 1)[0]
    rows = [ln.split("|") for ln in section.splitlines() if ln.startswith("| ")][1:]
    statuses = [row[3].strip() for row in rows]
    supported = sum(s.startswith("supported") for s in statuses)
    missing = sum(s.startswith("missing") for s in statuses)
    said = re.search(r"(\d+) of (\d+) supported, (\d+) partly, (\d+) missing", section)
    assert said is not None
    counts = (supported, len(rows), len(rows) - supported - missing, missing)
    assert tuple(int(n) for n in said.groups()) == counts


_ROUTE = re.compile(
    r"\b((?:GET|POST|PUT|PATCH|DELETE)(?:[|/](?:GET|POST|PUT|PATCH|DELETE))*)\s+`?(/[^\s`,;)]*)"
)


def _routes_named(text: str) -> set[tuple[str, str]]:
    """The ``(method, path)`` pairs ``text`` names (``POST|GET /numbers`` is two; a path
    parameter's name aside: ``{recordingID}`` is ``{recordingId}``)."""
    named = set()
    for found in _ROUTE.finditer(text):
        path = re.sub(r"\{[^}]+\}", "{}", found.group(2).rstrip(".:"))
        named |= {(method.lower(), path) for method in re.split(r"[|/]", found.group(1))}
    return named


def test_every_route_the_bridge_serves_is_named_in_the_docs() -> None:
    """Each operation of the OpenAPI document (the router's routes: test_openapi.py) is named,
    method and path, in README.md or docs/: a route an app cannot find in a guide is one it
    does not know it has."""
    from bridge.api.schema import openapi_document

    named = _routes_named("\n".join(doc.read_text() for doc in DOCS))
    missing = [
        f"{method.upper()} {path}"
        for path, item in openapi_document()["paths"].items()
        for method in item
        if (method, re.sub(r"\{[^}]+\}", "{}", path)) not in named
    ]
    assert missing == []


def test_the_api_table_answers_with_the_status_the_document_gives() -> None:
    """docs/api.md's table of API v1: a row's answer starts with its routes' success status
    (``201 …``; none written is 200), the one the OpenAPI document gives each route of the
    row. ``POST /call/play/stop`` shared ``201 {"playbackId"}`` with ``/call/play`` while it
    answers ``200 {"callID", "stopped"}``, and the DELETEs of streams and agents shared
    their POST's 201."""
    from bridge.api.schema import openapi_document

    paths = openapi_document()["paths"]
    wrong = []
    rows = [r for r in (ROOT / "docs" / "api.md").read_text().splitlines() if r.startswith("| `")]
    assert len(rows) > 30, "the table is gone: this test reads the wrong rows"
    for row in rows:
        routes, _, answer = [cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:4]]
        said = re.match(r"`?(\d{3})\b", answer)
        status = said.group(1) if said else "200"
        for found in _ROUTE.finditer(routes):
            for method in re.split(r"[|/]", found.group(1)):
                op = paths[found.group(2)][method.lower()]
                success = {s for s in op["responses"] if s < "300"}
                if status not in success:
                    wrong.append(f"{method} {found.group(2)}: {status}, not {sorted(success)}")
    assert wrong == []
