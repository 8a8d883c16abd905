"""The ownership rule (docs/architecture.md): everything a live call has belongs to its runtime,
and every background task to the object that started it. Read from the source:

* **call-keyed state** — a dict that outlives a function (on ``self``, on a class, or at module
  level) written with a call id for its key (``self.x[call.id] = …``,
  ``self.x.setdefault((runtime.call.id, leg), …)``), or a map annotated to hold calls, runtimes or
  call reports (``dict[str, Timeline]``), or named for calls (``*_by_call``);
* **task creation** — ``create_task`` or ``ensure_future`` anywhere but in ``bridge/tasks.py``
  (``TaskSet``, the one way to own a task) and the few places below that own theirs.

What may keep call-keyed state is listed with why; what does but should not yet is in
``NOT_YET_OWNED``, which only shrinks (the test fails when one of it is gone)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"

CALL_KEYED_OWNERS = {
    "calls/registry.py:_live": "the registry: where calls are looked up",
    "calls/registry.py:_ended": "the registry: ended calls stay readable for a while",
    "calls/live.py:_by_id": "the manager's live runtimes (its child), the owners themselves",
    "engines/sim.py:calls": "an engine's signalling state by its own call id (no media)",
    "engines/call_list.py:_known": "an engine's signalling state: the calls it polls for",
    "engines/call_list.py:_unlisted_since": "an engine's signalling state: when each went unlisted",
    "desk/store.py:_claims": "the desk's store (Redis in a cluster): who took each call",
    "desk/store.py:_rings": "the desk's store (Redis in a cluster): each call's ring round",
    "desk/session.py:rings": "an agent's session: the round that rang it for each call (bounded)",
    "desk/lending.py:_lent": "this worker's agents' legs on other workers' calls (no runtime here)",
}
"""``module:attribute`` that may hold state by call id, and why."""

NOT_YET_OWNED = {
    "cluster/handover.py:_gaps": "a moved call's wait for its browser: its runtime's to time",
}
"""Call-keyed state still outside its owner (take one out once it moved into its owner)."""

TASK_OWNERS = {
    "tasks.py": "TaskSet: named, tracked, cancelled and awaited with its owner; CloseOnce: an "
    "owner's close (a leg's, a recorder's), one task every caller awaits, run to its end",
    "cluster/redis_reaper.py": "a reap's claim renewal, cancelled in the finally of that reap",
    "cluster/redis_lease.py": "a fenced worker's ending of its calls, beside which it beats; "
    "cancelled in the finally of that beat",
}
"""Modules that create tasks themselves, and why they own them."""

STARTS = {"create_task", "ensure_future"}
MAPS = {"dict", "Dict", "OrderedDict", "defaultdict", "Mapping", "MutableMapping"}
PER_CALL = {"Call", "CallRuntime", "LiveReport", "Timeline", "MediaWatch"}
"""What exists once per call: a map of them is a map of calls."""
CALLISH_NAME = re.compile(r"by_call")


def _is_call_id(key: ast.AST) -> bool:
    """Whether a key is built from a call id: ``call_id``, ``x.call_id``, ``call.id``,
    ``runtime.call.id`` (alone or in a tuple)."""
    for node in ast.walk(key):
        if isinstance(node, ast.Name) and node.id == "call_id":
            return True
        if isinstance(node, ast.Attribute) and node.attr == "call_id":
            return True
        if isinstance(node, ast.Attribute) and node.attr == "id":
            holder = node.value
            name = holder.attr if isinstance(holder, ast.Attribute) else getattr(holder, "id", "")
            if name == "call":
                return True
    return False


def _held(target: ast.AST, module_names: set[str]) -> str | None:
    """The attribute a dict outliving a function is held in (``self.x``, ``cls.x``, a module
    name), else ``None`` (a local)."""
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
        if target.value.id in ("self", "cls"):
            return target.attr
    if isinstance(target, ast.Name) and target.id in module_names:
        return target.id
    return None


def _annotated_map(node: ast.AnnAssign) -> str | None:
    """The name of an attribute annotated as a map of calls (or named for calls)."""
    target = node.target
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
    annotation = node.annotation
    head = annotation.value if isinstance(annotation, ast.Subscript) else annotation
    head_name = head.attr if isinstance(head, ast.Attribute) else getattr(head, "id", "")
    if name is None or head_name not in MAPS or not isinstance(annotation, ast.Subscript):
        return None
    args = annotation.slice
    value = args.elts[-1] if isinstance(args, ast.Tuple) and args.elts else args
    holds = {n.id for n in ast.walk(value) if isinstance(n, ast.Name)}
    holds |= {n.attr for n in ast.walk(value) if isinstance(n, ast.Attribute)}
    return name if holds & PER_CALL or CALLISH_NAME.search(name) else None


def call_keyed_state(source: str) -> list[tuple[int, str]]:
    """``(line, attribute)`` of each place a module keeps state by call id (module doc)."""
    tree = ast.parse(source)
    module_names = {
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and (name := _annotated_map(node)):
            found.append((node.lineno, name))
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Subscript) and _is_call_id(target.slice):
                if held := _held(target.value, module_names):
                    found.append((node.lineno, held))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setdefault"
            and node.args
            and _is_call_id(node.args[0])
            and (held := _held(node.func.value, module_names))
        ):
            found.append((node.lineno, held))
    return found


def task_creations(source: str) -> list[int]:
    """Lines that start a task themselves (``create_task``, ``ensure_future``)."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr in STARTS)
            or (isinstance(node.func, ast.Name) and node.func.id in STARTS)
        )
    ]


def _modules() -> list[tuple[str, str]]:
    return [
        (path.relative_to(BRIDGE).as_posix(), path.read_text())
        for path in sorted(BRIDGE.rglob("*.py"))
    ]


def test_call_keyed_state_lives_with_its_owner() -> None:
    found = {
        f"{module}:{name}": line
        for module, source in _modules()
        for line, name in call_keyed_state(source)
    }
    outside = {k: v for k, v in found.items() if k not in CALL_KEYED_OWNERS | NOT_YET_OWNED}
    assert outside == {}, "move this state into the call's runtime (or list its owner here)"
    gone = (set(CALL_KEYED_OWNERS) | set(NOT_YET_OWNED)) - set(found)
    assert gone == set(), "these keep nothing by call id now: take them out of the lists"


def test_tasks_are_started_by_their_owners() -> None:
    found = {module: lines for module, source in _modules() if (lines := task_creations(source))}
    outside = {m: lines for m, lines in found.items() if m not in TASK_OWNERS}
    assert outside == {}, "start tasks through the owner's TaskSet (bridge/tasks.py)"
    assert set(TASK_OWNERS) - set(found) == set(), "these start no task now: take them out"


OLD_CALL_REPORTS = """
class CallReports:
    def __init__(self) -> None:
        self.timelines: dict[str, Timeline] = {}
        self._calls: dict[str, Call] = {}
        self._unseen: dict[str, int] = {}
        self._legs: dict[tuple[str, str], LegCounters] = {}

    def observe(self, event, call) -> None:
        timeline = self.timelines[call.id] = Timeline(call.mono_created)
        self._calls[call.id] = call

    def _sample_leg(self, runtime, timeline, now, name, src) -> None:
        counters = self._legs.setdefault((runtime.call.id, name), LegCounters())

    def _forget_gone(self, here) -> None:
        for call_id, call in list(self._calls.items()):
            self._unseen[call_id] = self._unseen.get(call_id, 0) + 1

    def _finish(self, call) -> None:
        task = asyncio.get_running_loop().create_task(self._write(call.id))
"""
"""How call reports kept their calls before each runtime owned its report (issue 47)."""


def test_the_checks_see_state_kept_by_call_id_outside_the_runtime() -> None:
    """The checks flag the pattern the runtime's report replaced: timelines, calls, counters
    and passes unseen kept by call id in a service, and a task started by hand — and not a
    runtime's own per-leg map or a local dict."""
    names = {name for _, name in call_keyed_state(OLD_CALL_REPORTS)}
    assert names == {"timelines", "_calls", "_unseen", "_legs"}
    assert len(task_creations(OLD_CALL_REPORTS)) == 1
    owned = """
class LiveReport:
    def __init__(self) -> None:
        self._counters: dict[str, LegCounters] = {}

    def sample(self, name: str, call_id: str) -> None:
        self._counters.setdefault(name, LegCounters())
        pending = {}
        pending[call_id] = 1
"""
    assert call_keyed_state(owned) == []
