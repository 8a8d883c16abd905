"""The ports tests hand their children: never the same in two live processes."""

from __future__ import annotations

import subprocess
import sys

from ..support import ports


def test_two_processes_never_hand_out_the_same_port() -> None:
    mine = {ports.free_port() for _ in range(ports.LEASE + 5)}  # two leases of this process
    theirs = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tests.support.ports import free_port;"
            f"print(*[free_port() for _ in range({ports.LEASE + 5})])",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ports.Path(__file__).parents[2],
    ).stdout.split()
    assert len(mine) == ports.LEASE + 5 and len(set(theirs)) == ports.LEASE + 5
    assert not mine & {int(p) for p in theirs}
    assert all(ports.FIRST_PORT <= p < ports.LAST_PORT for p in mine)


def test_consecutive_ports_never_straddle_a_lease() -> None:
    first = ports.free_ports(2)
    assert ports.free_ports(ports.LEASE) % ports.LEASE == 0  # a whole lease of its own
    lease = (first - ports.FIRST_PORT) // ports.LEASE
    assert (first + 1 - ports.FIRST_PORT) // ports.LEASE == lease
