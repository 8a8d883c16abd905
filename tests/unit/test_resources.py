"""The app's resources (bridge/resources.py): each cleanup_ctx entry reads only what
create_app or an earlier entry has put in the app; what runs the other way is bound late,
explicitly."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest

from bridge import app as app_module
from bridge import resources
from bridge.calls import Recovery


def _keys(fn: object) -> tuple[set[str], set[str]]:
    """The app keys ``fn`` reads (``app[K]``, ``K in app``) and writes (``app[K] = …``)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))  # type: ignore[arg-type]
    reads: set[str] = set()
    writes: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == "app"
            and isinstance(node.slice, ast.Name)
        ):
            (writes if isinstance(node.ctx, ast.Store) else reads).add(node.slice.id)
        elif (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Name)
            and isinstance(node.ops[0], ast.In)
            and isinstance(node.comparators[0], ast.Name)
            and node.comparators[0].id == "app"
        ):
            reads.add(node.left.id)
    return reads, writes


def test_each_entry_reads_only_keys_made_before_it() -> None:
    _, made = _keys(app_module.create_app)
    assert {"SETTINGS", "METRICS", "TURN", "CALL_REGISTRY", "CALL_EVENTS"} <= made
    made.add("ENGINE_OVERRIDE")  # optional: the entry asks whether it is there
    made.add("STOP")  # optional: set by __main__ (StopSignals.install), asked whether there
    for entry in resources.CLEANUP_CTX:
        reads, writes = _keys(entry)
        assert reads - writes <= made, (entry.__name__, sorted(reads - writes - made))
        made |= writes
    # Every key an entry documents as made is made, and the late ones are bound.
    assert {"MANAGER", "DIRECTORY", "HANDOVER", "LATER_RECOVERY", "LATER_HANDOVER"} <= made


def test_the_late_bindings_are_explicit() -> None:
    later = resources.Later[Recovery]("recovery")
    assert not later.bound
    with pytest.raises(RuntimeError, match="recovery is used before the entry that makes it"):
        later.get()
    sentinel = object()
    later.bind(sentinel)  # type: ignore[arg-type]
    assert later.bound and later.get() is sentinel
    # The entry that makes each binds it: calls binds recovery, call_handover the handover.
    assert "app[LATER_RECOVERY].bind(recovery)" in inspect.getsource(resources.calls)
    assert "app[LATER_HANDOVER].bind(handover)" in inspect.getsource(resources.call_handover)
